// cflags: -O2 -pthread
// ARCH_SET_GS, then "mov $0, %gs", then compare the CPU's GS base (read through a fault) with the
// kernel's (ARCH_GET_GS), with context switches forced in between. Prints the mismatch count.
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
static sigjmp_buf jb; static volatile unsigned long fault_addr;
static void onsegv(int s, siginfo_t *i, void *c) { fault_addr = (unsigned long)i->si_addr; siglongjmp(jb, 1); }
static void *spin(void *a) { for (;;) sched_yield(); return 0; }
static unsigned long cpu_gsbase(void) {
    // Reading %gs:0x1000 faults (nothing is mapped at base+0x1000 for these bases): CR2 = base+0x1000.
    if (sigsetjmp(jb, 1) == 0) { unsigned long v; asm volatile("mov %%gs:0x1000, %0" : "=r"(v)); return ~0UL; }
    return fault_addr - 0x1000;
}
int main(void) {
    struct sigaction sa = {0}; sa.sa_sigaction = onsegv; sa.sa_flags = SA_SIGINFO; sigaction(SIGSEGV, &sa, 0);
    pthread_t t; pthread_create(&t, 0, spin, 0);
    int bad = 0;
    for (int i = 0; i < 200; i++) {
        unsigned long base = 0x200000000UL, k = 0;
        syscall(SYS_arch_prctl, ARCH_SET_GS, base);
        sched_yield();
        asm volatile("mov %0, %%gs" :: "r"(0));
        unsigned long c = cpu_gsbase();
        sched_yield(); sched_yield();
        syscall(SYS_arch_prctl, ARCH_GET_GS, &k);
        unsigned long c2 = cpu_gsbase();
        if (c != k || c2 != k) bad++;
    }
    printf("segments: %d mismatches in 200\n", bad);
    return 0;
}
