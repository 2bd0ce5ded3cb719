#if canImport(Glibc)
import Glibc
#endif

/// A host thread that calls `kick` when a device timer falls due, for a backend whose vCPU sleeps
/// inside the hypervisor (KVM's in-kernel HLT) where its run loop cannot watch the clock itself.
/// The kick only interrupts the vCPU; the run loop then advances the timed devices on its own thread.
///
/// The thread starts in `init`, before the seccomp filter (which forbids creating threads), and
/// sleeps on a condition variable (futex) between deadlines.
public final class DeadlineKicker: @unchecked Sendable {
    private let clock: VirtualClock
    private let kick: @Sendable () -> Void
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var thread: pthread_t?
    // Guarded by `mutex`.
    private var deadline: UInt64?
    private var stopping = false

    /// Kicks so far (for tests and statistics). Guarded by `mutex`.
    public var kicks: Int { locked { kickCount } }
    private var kickCount = 0

    public init(clock: VirtualClock, kick: @escaping @Sendable () -> Void) {
        self.clock = clock
        self.kick = kick
        pthread_mutex_init(mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)   // the clock VirtualClock derives from
        pthread_cond_init(condition, &attr)
        pthread_condattr_destroy(&attr)
        var t = pthread_t()
        let started = pthread_create(&t, nil, { raw in
            Unmanaged<DeadlineKicker>.fromOpaque(raw!).takeUnretainedValue().loop()
            return nil
        }, Unmanaged.passUnretained(self).toOpaque())
        thread = started == 0 ? t : nil
    }

    deinit {
        locked { stopping = true }
        pthread_cond_signal(condition)
        if let thread { pthread_join(thread, nil) }
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Asks for one kick at `deadline` (VM clock ns), replacing any earlier request; nil cancels.
    public func arm(_ deadline: UInt64?) {
        let changed = locked { () -> Bool in
            guard self.deadline != deadline else { return false }
            self.deadline = deadline
            return true
        }
        if changed { pthread_cond_signal(condition) }
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }

    private func loop() {
        pthread_mutex_lock(mutex)
        while !stopping {
            guard let d = deadline else {
                pthread_cond_wait(condition, mutex)
                continue
            }
            let due = clock.hostMonotonicNs(at: d)
            if VirtualClock.hostMonotonicNs() >= due {
                deadline = nil
                kickCount += 1
                pthread_mutex_unlock(mutex)
                kick()
                pthread_mutex_lock(mutex)
                continue
            }
            var ts = timespec(tv_sec: Int(truncatingIfNeeded: due / 1_000_000_000), tv_nsec: Int(truncatingIfNeeded: due % 1_000_000_000))
            pthread_cond_timedwait(condition, mutex, &ts)
        }
        pthread_mutex_unlock(mutex)
    }
}
