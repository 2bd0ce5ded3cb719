// Host calls Swift's Glibc module does not export (they need _GNU_SOURCE).
#ifndef CHOST_H
#define CHOST_H

#include "chost_atomic.h"

/// memfd_create(2) with MFD_CLOEXEC: an anonymous file, for the translator's double-mapped code cache.
int chost_memfd_create(const char *name);

#endif
