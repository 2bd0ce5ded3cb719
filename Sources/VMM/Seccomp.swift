import CKVM
import CNet
import CSeccomp
import Glibc

/// The system-call filter swhv runs guests under (seccomp-BPF, as Firecracker's): once the VM is
/// built, every thread may make only the calls the run loop and device paths need. A guest that
/// takes over the VMM through some bug cannot open files, sockets or processes, or map executable
/// memory. A forbidden call raises SIGSYS; the handler restores the terminal and ends swhv with
/// one line naming the call. `open`/`stat`-style calls fail with EACCES instead, because libc may
/// try them on error paths (message catalogs) where failing quietly is the right outcome.
public enum Seccomp {
    /// Which filter: the vCPU's (and the whole process's without an API socket), or, with
    /// `--api-sock`, the process-wide one that also lets the API thread serve its socket and write
    /// snapshot files, with the vCPU's stacked on the vCPU thread (docs/security.md).
    public enum Profile: Sendable {
        case vcpu
        /// The vCPU thread under `--api-sock`: `vcpu` plus the clock ioctls pause/resume needs.
        case vcpuWithAPI
        /// Every thread under `--api-sock` (the API thread has only this one).
        case apiServer
    }

    /// Calls allowed with any arguments.
    static let allowed: [Int32] = [
        // Console, disk I/O and their completions.
        SYS_read, SYS_write, SYS_readv, SYS_writev, SYS_pread64, SYS_pwrite64, SYS_preadv, SYS_pwritev,
        SYS_fsync, SYS_fdatasync, SYS_lseek, SYS_close,
        // virtio-blk DISCARD / WRITE_ZEROES (punched holes, zeroed ranges).
        SYS_fallocate,
        // Locks, sleeping in HLT, time (when the vDSO falls back to the kernel).
        SYS_futex, SYS_poll, SYS_ppoll, SYS_nanosleep, SYS_clock_nanosleep, SYS_clock_gettime, SYS_gettimeofday, SYS_sched_yield,
        // Memory allocation (executable mappings are refused below).
        SYS_munmap, SYS_mremap, SYS_madvise, SYS_brk,
        // Signals: kicks (SIGUSR1), the fatal-signal path that restores the terminal, thread start/exit.
        SYS_rt_sigreturn, SYS_rt_sigprocmask, SYS_rt_sigaction, SYS_sigaltstack, SYS_restart_syscall,
        SYS_getpid, SYS_gettid, SYS_set_robust_list, SYS_rseq, SYS_getrandom,
        SYS_exit, SYS_exit_group,
    ].map { Int32($0) }

    /// What the hybrid backend adds (Sources/Hybrid): the interrupt timer that kicks KVM_RUN, and
    /// taking its signal. Its ioctls are in `hybridIoctls`.
    static let hybridAllowed: [Int32] = [SYS_timer_create, SYS_timer_settime, SYS_timer_delete, SYS_rt_sigtimedwait]
        .map { Int32($0) }

    /// The hybrid backend hands state to and from KVM at each switch (segment state, FPU), reads the
    /// dirty log and write-protects pages that hold decoded code, and re-creates a one-page memory
    /// slot to make KVM drop stale shadow page tables. KVM_SET_USER_MEMORY_REGION only maps this
    /// process's own memory into its own VM.
    static var hybridIoctls: [UInt32] {
        [CKVM_KVM_SET_SREGS(), CKVM_KVM_GET_XSAVE(), CKVM_KVM_SET_XSAVE(), CKVM_KVM_SET_USER_MEMORY_REGION(),
         CKVM_KVM_GET_DIRTY_LOG(), CKVM_KVM_CLEAR_DIRTY_LOG()].map { UInt32(truncatingIfNeeded: $0) }
    }

    /// What the API thread needs beyond the run loop: its socket, and creating, writing and
    /// renaming the snapshot files the API names (and reading disks' identities).
    static let apiAllowed: [Int32] = [
        SYS_accept, SYS_accept4, SYS_fcntl, SYS_sendto, SYS_recvfrom, SYS_setsockopt,
        SYS_open, SYS_openat, SYS_fstat, SYS_newfstatat, SYS_statx, SYS_ftruncate, SYS_fchmod,
        SYS_rename, SYS_renameat, SYS_renameat2, SYS_unlink, SYS_unlinkat,
        // The vCPU thread stacks its own filter on this one (filters can only ever add limits).
        SYS_seccomp,
    ].map { Int32($0) }

    /// Calls that fail with EACCES instead of ending swhv.
    static let refused: [Int32] = [SYS_open, SYS_openat, SYS_stat, SYS_lstat, SYS_newfstatat, SYS_fstat,
                                   SYS_statx, SYS_access, SYS_faccessat, SYS_readlink].map { Int32($0) }

    /// Pause and resume on KVM: kvmclock, the TSC (MSR and offset attribute), the LAPIC timer.
    static var pauseIoctls: [UInt32] {
        [CKVM_KVM_GET_CLOCK(), CKVM_KVM_SET_CLOCK(), CKVM_KVM_GET_MSRS(), CKVM_KVM_SET_MSRS(),
         CKVM_KVM_HAS_DEVICE_ATTR(), CKVM_KVM_GET_DEVICE_ATTR(), CKVM_KVM_SET_DEVICE_ATTR(),
         CKVM_KVM_GET_LAPIC(), CKVM_KVM_SET_LAPIC()].map { UInt32(truncatingIfNeeded: $0) }
    }

    /// ioctl requests used while the guest runs: the vCPU loop and interrupt injection (KVM), the
    /// offloads a virtio-net guest accepts (TUNSETOFFLOAD, when its driver starts), and the terminal
    /// restore on exit. Creating VMs, vCPUs, memory slots or network interfaces is not among them.
    static var allowedIoctls: [UInt32] {
        [CKVM_KVM_RUN(), CKVM_KVM_GET_REGS(), CKVM_KVM_SET_REGS(), CKVM_KVM_GET_SREGS(),
         CKVM_KVM_GET_VCPU_EVENTS(), CKVM_KVM_SET_VCPU_EVENTS(), CKVM_KVM_IRQ_LINE(), CKVM_KVM_SIGNAL_MSI(),
         cnet_tunsetoffload(),
         UInt(truncatingIfNeeded: TCGETS), UInt(truncatingIfNeeded: TCSETS), UInt(truncatingIfNeeded: TCSETSW),
         UInt(truncatingIfNeeded: TCSETSF)].map { UInt32(truncatingIfNeeded: $0) }
    }

    /// The BPF program. `pid` limits tgkill to this process's threads.
    static func program(pid: Int32, profile: Profile = .vcpu, hybrid: Bool = false) -> [sock_filter] {
        func stmt(_ code: Int32, _ k: UInt32) -> sock_filter {
            sock_filter(code: UInt16(truncatingIfNeeded: code), jt: 0, jf: 0, k: k)
        }
        func jeq(_ k: UInt32, _ jt: UInt8, _ jf: UInt8) -> sock_filter {
            sock_filter(code: UInt16(truncatingIfNeeded: BPF_JMP | BPF_JEQ | BPF_K), jt: jt, jf: jf, k: k)
        }
        let load = Int32(BPF_LD | BPF_W | BPF_ABS)
        let ret = Int32(BPF_RET | BPF_K)
        let allow = UInt32(SECCOMP_RET_ALLOW)
        let trap = UInt32(SECCOMP_RET_TRAP)
        let eacces = UInt32(SECCOMP_RET_ERRNO) | UInt32(bitPattern: EACCES)

        var p: [sock_filter] = []
        // Only x86-64 system calls (the 32-bit and x32 entry points have other numbers).
        p.append(stmt(load, cseccomp_offset_arch()))
        p.append(jeq(cseccomp_audit_arch(), 1, 0))
        p.append(stmt(ret, UInt32(SECCOMP_RET_KILL_PROCESS)))
        p.append(stmt(load, cseccomp_offset_nr()))
        let extra = (profile == .apiServer ? apiAllowed : []) + (hybrid ? hybridAllowed : [])
        for nr in allowed + extra {
            p.append(jeq(UInt32(bitPattern: nr), 0, 1))
            p.append(stmt(ret, allow))
        }
        for nr in refused where !extra.contains(nr) {
            p.append(jeq(UInt32(bitPattern: nr), 0, 1))
            p.append(stmt(ret, eacces))
        }
        // ioctl: the request (low 32 bits of arg 1; the kernel ignores the rest) must be listed.
        let ioctls = allowedIoctls + (profile == .vcpu ? [] : pauseIoctls) + (hybrid ? hybridIoctls : [])
        p.append(jeq(UInt32(bitPattern: SYS_ioctl), 0, UInt8(2 * ioctls.count + 2)))
        p.append(stmt(load, cseccomp_offset_arg(1)))
        for req in ioctls {
            p.append(jeq(req, 0, 1))
            p.append(stmt(ret, allow))
        }
        p.append(stmt(ret, trap))
        // mmap/mprotect: never PROT_EXEC (arg 2 in both).
        for nr in [SYS_mmap, SYS_mprotect] {
            p.append(jeq(UInt32(bitPattern: nr), 0, 4))
            p.append(stmt(load, cseccomp_offset_arg(2)))
            p.append(sock_filter(code: UInt16(truncatingIfNeeded: BPF_JMP | BPF_JSET | BPF_K), jt: 1, jf: 0,
                                  k: UInt32(bitPattern: PROT_EXEC)))
            p.append(stmt(ret, allow))
            p.append(stmt(ret, trap))
        }
        // tgkill: signals to this process's own threads only (kicks, raise()).
        p.append(jeq(UInt32(bitPattern: SYS_tgkill), 0, 3))
        p.append(stmt(load, cseccomp_offset_arg(0)))
        p.append(jeq(UInt32(bitPattern: pid), 0, 1))
        p.append(stmt(ret, allow))
        p.append(stmt(ret, trap))
        return p
    }

    /// Installs the filter on all threads of this process, or with `allThreads` false on the
    /// calling thread only (stacked on what it has: both filters must allow a call). Irreversible.
    /// `hybrid`: also allow what the hybrid backend needs while the guest runs.
    public static func install(_ profile: Profile = .vcpu, allThreads: Bool = true, hybrid: Bool = false) throws(MachineError) {
        installSigsysHandler()
        var p = program(pid: getpid(), profile: profile, hybrid: hybrid)
        let rc: Int32
        if allThreads {
            rc = p.withUnsafeMutableBufferPointer { cseccomp_install($0.baseAddress, UInt16($0.count)) }
        } else {
            // SECCOMP_SET_MODE_FILTER (1) without TSYNC; no_new_privs is already set by the first filter.
            rc = p.withUnsafeMutableBufferPointer { buf -> Int32 in
                var prog = sock_fprog(len: UInt16(truncatingIfNeeded: buf.count), filter: buf.baseAddress)
                return withUnsafeMutablePointer(to: &prog) { pp in
                    Int32(truncatingIfNeeded: syscall(Int(SYS_seccomp), 1, 0, Int(bitPattern: UnsafeMutableRawPointer(pp))))
                }
            }
        }
        guard rc == 0 else {
            throw .backendUnavailable("cannot install the seccomp filter: \(String(cString: strerror(errno))) "
                                      + "(--no-seccomp runs without it)")
        }
    }

    /// A raw system call, for `swhv seccomp-check` to try calls libc has no plain Swift API for.
    public static func syscall(_ nr: Int, _ a: Int = 0, _ b: Int = 0, _ c: Int = 0) -> Int {
        cseccomp_syscall3(nr, a, b, c)
    }

    /// SIGSYS from SECCOMP_RET_TRAP: one line naming the call, terminal restored, exit status 1.
    /// Async-signal-safe: no allocation, only write(2), the terminal ioctl and _exit.
    static func installSigsysHandler() {
        var sa = sigaction()
        sa.__sigaction_handler.sa_sigaction = { _, info, _ in
            let nr = info.map { Int(cseccomp_siginfo_syscall($0)) } ?? -1
            TerminalRestore.restoreNow()
            Seccomp.reportForbidden(nr)
            _exit(1)
        }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = SA_SIGINFO
        sigaction(SIGSYS, &sa, nil)
    }

    /// Writes "swhv: error: seccomp: forbidden system call N (name)" without allocating.
    static func reportForbidden(_ nr: Int) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 160) { buf in
            var n = 0
            func put(_ s: StaticString) {
                s.withUTF8Buffer { for b in $0 where n < buf.count { buf[n] = b; n += 1 } }
            }
            put("\rswhv: error: seccomp: forbidden system call ")
            var digits: (UInt8, UInt8, UInt8, UInt8, UInt8) = (0, 0, 0, 0, 0)
            var v = nr < 0 ? 0 : nr, count = 0
            withUnsafeMutableBytes(of: &digits) { d in
                repeat { d[count] = UInt8(48 + v % 10); v /= 10; count += 1 } while v > 0 && count < 5
                for i in stride(from: count - 1, through: 0, by: -1) where n < buf.count { buf[n] = d[i]; n += 1 }
            }
            put(" ")
            put(name(nr))
            put(" (a swhv bug or an exploit attempt; --no-seccomp runs without the filter)\n")
            _ = write(STDERR_FILENO, buf.baseAddress, n)
        }
    }

    /// Names of calls a compromised or buggy VMM would likely try.
    static func name(_ nr: Int) -> StaticString {
        switch nr {
        case Int(SYS_socket): return "(socket)"
        case Int(SYS_connect): return "(connect)"
        case Int(SYS_execve): return "(execve)"
        case Int(SYS_execveat): return "(execveat)"
        case Int(SYS_clone): return "(clone)"
        case Int(SYS_clone3): return "(clone3)"
        case Int(SYS_fork): return "(fork)"
        case Int(SYS_vfork): return "(vfork)"
        case Int(SYS_ptrace): return "(ptrace)"
        case Int(SYS_mmap): return "(mmap with PROT_EXEC)"
        case Int(SYS_mprotect): return "(mprotect with PROT_EXEC)"
        case Int(SYS_ioctl): return "(ioctl with a request not on the list)"
        case Int(SYS_kill), Int(SYS_tgkill): return "(a signal to another process)"
        case Int(SYS_unlink), Int(SYS_unlinkat): return "(unlink)"
        default: return ""
        }
    }
}
