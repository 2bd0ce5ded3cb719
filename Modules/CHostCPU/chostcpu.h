// CHostCPU: host CPU instructions and calls Swift has no spelling for. Only what the hybrid backend needs.
#ifndef CHOSTCPU_H
#define CHOSTCPU_H

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

// The host's time-stamp counter: what guest user code running natively under kvm-pvm reads with
// RDTSC (kvm-pvm applies no offset or scaling), so the software CPU can count the same.
static inline uint64_t chostcpu_rdtsc(void) {
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

// The calling thread's kernel id (for a timer that signals this thread: SIGEV_THREAD_ID).
static inline int chostcpu_gettid(void) {
    return (int)syscall(SYS_gettid);
}

#endif
