#if canImport(Glibc)
import Glibc
#endif
import Dispatch

/// A host thread running one closure (a vCPU), joined by `join`. vCPU threads are created before
/// the seccomp filter is installed (it allows no clone), so a backend starts them early and has
/// them wait for the run to begin.
public final class HostThread: @unchecked Sendable {
    private var thread: pthread_t?
    private final class Box { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }

    /// Starts `body` on a new thread. Nil if the host refuses a thread (the error number in `errno`).
    public init?(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { arg in
            guard let arg else { return nil }
            Unmanaged<Box>.fromOpaque(arg).takeRetainedValue().body()
            return nil
        }, box)
        guard rc == 0 else {
            Unmanaged<Box>.fromOpaque(box).release()
            errno = rc
            return nil
        }
        thread = t
    }

    /// Waits for the closure to return.
    public func join() {
        guard let t = thread else { return }
        pthread_join(t, nil)
        thread = nil
    }
}

/// Where a backend's application-processor threads wait between their creation (before seccomp)
/// and the run: `open` hands them the run's I/O handler and control, or tells them to give up (a VM
/// torn down without running).
public final class VcpuStartGate: @unchecked Sendable {
    private let lock = DeviceLock()
    private let semaphore = DispatchSemaphore(value: 0)
    private var io: IOHandler?
    private var control: VMControl?
    private var cancelled = false

    public init() {}

    /// Releases `n` waiting threads into the run (or, with `cancel`, out of it).
    public func open(_ n: Int, io: IOHandler?, control: VMControl?, cancel: Bool = false) {
        lock.withLock { self.io = io; self.control = control; cancelled = cancel }
        for _ in 0..<n { semaphore.signal() }
    }

    /// Blocks until `open`; nil when cancelled.
    public func wait() -> (IOHandler, VMControl)? {
        semaphore.wait()
        return lock.withLock {
            guard !cancelled, let io, let control else { return nil }
            return (io, control)
        }
    }
}
