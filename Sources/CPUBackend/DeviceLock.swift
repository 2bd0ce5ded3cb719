#if canImport(Glibc)
import Glibc
#endif

/// The lock that keeps devices consistent when several vCPU threads reach them: every port and MMIO
/// access, device timer, posted closure and interrupt acknowledge runs under it. Devices themselves
/// stay single-threaded code; with one vCPU the lock is never contended (an uncontended pthread mutex:
/// scripts/bench's port-I/O round-trip row includes it). Not recursive: device code never calls back into the backend's I/O path.
public final class DeviceLock: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) public func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
