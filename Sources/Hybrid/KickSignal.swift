import CHostCPU
import Glibc

/// How native user code is interrupted: a signal to the vCPU thread ends KVM_RUN with EINTR at an
/// instruction boundary. The signal is blocked in the thread except inside KVM_RUN
/// (KVM_SET_SIGNAL_MASK), so a kick that arrives just before KVM_RUN is not lost: it stays pending
/// and KVM_RUN returns at once. After each EINTR the pending signal is consumed (sigtimedwait).
/// Sources: a per-thread POSIX timer armed for the software CPU's next timer deadline, and kicks
/// from other threads (posted work, stop requests).
final class KickSignal: @unchecked Sendable {
    let signal: Int32
    let thread: pthread_t
    /// The POSIX timer (glibc's timer_t is a pointer-sized id; 0 is a valid one).
    private var timer: timer_t? = nil
    private var hasTimer = false
    private var oldMask = sigset_t()
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var armed = true

    /// Sets up the signal for the calling thread (the vCPU thread): a no-op handler, blocked here.
    init(signal: Int32) throws(HybridError) {
        self.signal = signal
        thread = pthread_self()
        pthread_mutex_init(lock, nil)
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        sigaction(signal, &sa, nil)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        pthread_sigmask(SIG_BLOCK, &set, &oldMask)
        var ev = sigevent()
        ev.sigev_notify = Int32(truncatingIfNeeded: SIGEV_THREAD_ID)
        ev.sigev_signo = signal
        ev._sigev_un._tid = chostcpu_gettid()
        var t: timer_t? = nil
        guard timer_create(CLOCK_MONOTONIC, &ev, &t) == 0 else {
            let e = errno
            pthread_sigmask(SIG_SETMASK, &oldMask, nil)
            throw .system("timer_create", e)
        }
        timer = t
        hasTimer = true
    }

    deinit {
        if hasTimer { timer_delete(timer) }
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// Restores the thread's signal mask (when the backend stops running on it).
    func release() {
        pthread_mutex_lock(lock)
        armed = false
        pthread_mutex_unlock(lock)
        disarmTimer()
        consumePending()
        pthread_sigmask(SIG_SETMASK, &oldMask, nil)
    }

    /// From any thread: interrupts KVM_RUN on the vCPU thread (or the next one).
    func kick() {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard armed else { return }
        pthread_kill(thread, signal)
    }

    /// Fires the signal `ns` from now (relative, CLOCK_MONOTONIC).
    func armTimer(inNs ns: UInt64) {
        guard hasTimer else { return }
        let n = max(ns, 1000)
        var spec = itimerspec()
        spec.it_value.tv_sec = Int(truncatingIfNeeded: n / 1_000_000_000)
        spec.it_value.tv_nsec = Int(n % 1_000_000_000)
        timer_settime(timer, 0, &spec, nil)
    }

    func disarmTimer() {
        guard hasTimer else { return }
        var spec = itimerspec()
        timer_settime(timer, 0, &spec, nil)
    }

    /// Takes a pending kick off the thread so the next KVM_RUN does not return at once.
    func consumePending() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, signal)
        var zero = timespec()
        while sigtimedwait(&set, nil, &zero) == signal {}
    }
}

/// Why the hybrid backend cannot be set up.
public enum HybridError: Error, CustomStringConvertible {
    case system(String, Int32)
    case unavailable(String)

    public var description: String {
        switch self {
        case .system(let call, let e): return "\(call) failed: \(String(cString: strerror(e)))"
        case .unavailable(let why): return why
        }
    }
}
