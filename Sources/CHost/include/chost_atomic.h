// Host atomics on raw guest memory, for the software CPU's LOCK-prefixed instructions when several
// vCPUs run on host threads. Swift's Synchronization atomics live in their own storage; guest RAM is
// a raw mapping, so these compile to the host's own LOCK CMPXCHG / XCHG / MFENCE. Unaligned
// operands are allowed (x86 locks them too, as a split lock across cache lines).
#ifndef CHOST_ATOMIC_H
#define CHOST_ATOMIC_H

#include <stdint.h>

/// Compare-and-swap: returns the value found (equal to `expected` when the swap happened).
static inline uint8_t chost_cas8(void *p, uint8_t expected, uint8_t desired) {
    __atomic_compare_exchange_n((uint8_t *)p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
static inline uint16_t chost_cas16(void *p, uint16_t expected, uint16_t desired) {
    __atomic_compare_exchange_n((uint16_t *)p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
static inline uint32_t chost_cas32(void *p, uint32_t expected, uint32_t desired) {
    __atomic_compare_exchange_n((uint32_t *)p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}
static inline uint64_t chost_cas64(void *p, uint64_t expected, uint64_t desired) {
    __atomic_compare_exchange_n((uint64_t *)p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

/// A full fence (MFENCE; what the guest's MFENCE and serialising instructions need).
static inline void chost_fence(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

/// Atomic increment of a 32-bit counter; returns the new value.
static inline uint32_t chost_increment32(uint32_t *p) { return __atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST); }

/// A byte store another thread may be reading (a vCPU's event flag set from another vCPU's thread).
static inline void chost_store8(void *p, uint8_t v) { __atomic_store_n((uint8_t *)p, v, __ATOMIC_SEQ_CST); }

/// Acquire loads and a release store for the shared page-generation and code-page arrays, which
/// one vCPU reads while another updates them.
static inline uint32_t chost_load32_acquire(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint8_t chost_load8_acquire(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void chost_store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }

#endif
