// CSeccomp: the kernel's seccomp-BPF headers for Swift, plus the two calls Swift cannot make
// itself (prctl and syscall are variadic). No libseccomp: swhv builds its small filter by hand.
#ifndef CSECCOMP_H
#define CSECCOMP_H

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// Offsets in struct seccomp_data (offsetof is not importable).
static inline unsigned int cseccomp_offset_nr(void) { return offsetof(struct seccomp_data, nr); }
static inline unsigned int cseccomp_offset_arch(void) { return offsetof(struct seccomp_data, arch); }
static inline unsigned int cseccomp_offset_arg(int i) { return offsetof(struct seccomp_data, args[0]) + 8 * i; }
static inline unsigned int cseccomp_audit_arch(void) { return AUDIT_ARCH_X86_64; }

/// Sets no_new_privs and installs `filter` on every thread of the process (TSYNC).
/// Returns 0, or -1 with errno set.
static inline int cseccomp_install(struct sock_filter *filter, unsigned short count) {
    struct sock_fprog prog = { .len = count, .filter = filter };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (r > 0) { errno = EAGAIN; return -1; }   // TSYNC: a thread could not be synchronised
    return r == 0 ? 0 : -1;
}

/// The system call that raised SIGSYS (SECCOMP_RET_TRAP).
static inline int cseccomp_siginfo_syscall(const siginfo_t *info) { return info->si_syscall; }

/// A system call by number with three arguments (the self-test's forbidden calls).
static inline long cseccomp_syscall3(long nr, long a, long b, long c) { return syscall(nr, a, b, c, 0, 0, 0); }

#endif
