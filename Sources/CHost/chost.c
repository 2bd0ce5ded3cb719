#define _GNU_SOURCE
#include <sys/mman.h>
#include "chost.h"

int chost_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
