import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A monotonic VM clock in nanoseconds since the VM was created. TSC, PIT, APIC timer and RTC all
/// derive from this one clock so the guest sees consistent time. It stops while the VM is paused
/// (`freeze`/`thaw`), so after a resume the guest's time has not jumped by the pause; a restored
/// VM's clock starts where the snapshot's stopped.
public final class VirtualClock: Sendable {
    /// Host monotonic ns at which this clock read 0; moved forward by each pause's length.
    private let origin: Atomic<UInt64>
    /// While frozen: 1 + the reading it is frozen at; 0 while running.
    private let frozen: Atomic<UInt64>

    /// A clock stopped at `ns` (tests that compare two runs need time not to move).
    public init(frozenAt ns: UInt64) { origin = Atomic(ns); frozen = Atomic(ns &+ 1) }

    public init() { origin = Atomic(VirtualClock.hostMonotonicNs()); frozen = Atomic(0) }
    /// A clock that reads `ns` now: a restored VM continues from the time its devices were saved at.
    public init(resumingAt ns: UInt64) { origin = Atomic(VirtualClock.hostMonotonicNs() &- ns); frozen = Atomic(0) }

    /// Nanoseconds of VM time since the clock was created, pauses excluded.
    @inline(__always)
    public var nowNs: UInt64 {
        let f = frozen.load(ordering: .acquiring)
        if f != 0 { return f &- 1 }
        return VirtualClock.hostMonotonicNs() &- origin.load(ordering: .relaxed)
    }

    /// The host's CLOCK_MONOTONIC time (ns) at which this clock reads `ns`, for sleeping until a
    /// device deadline (saturating: a deadline past the end of time stays there). Nothing sleeps
    /// on a paused VM's clock: the paused vCPU waits for the API instead.
    public func hostMonotonicNs(at ns: UInt64) -> UInt64 {
        let (t, overflow) = origin.load(ordering: .relaxed).addingReportingOverflow(ns)
        return overflow ? .max : t
    }

    public var isFrozen: Bool { frozen.load(ordering: .acquiring) != 0 }

    /// Stops the clock at its current reading (the VM is being paused).
    public func freeze() {
        guard !isFrozen else { return }
        frozen.store(nowNs &+ 1, ordering: .releasing)
    }

    /// Lets the clock run on from where it stopped.
    public func thaw() {
        let f = frozen.load(ordering: .acquiring)
        guard f != 0 else { return }
        origin.store(VirtualClock.hostMonotonicNs() &- (f &- 1), ordering: .relaxed)
        frozen.store(0, ordering: .releasing)
    }

    /// Sets the reading (a restored VM continues from its snapshot's time). Before the VM runs.
    public func reset(to ns: UInt64) {
        origin.store(VirtualClock.hostMonotonicNs() &- ns, ordering: .relaxed)
        if isFrozen { frozen.store(ns &+ 1, ordering: .releasing) }
    }

    @inline(__always)
    public static func hostMonotonicNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(truncatingIfNeeded: ts.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: ts.tv_nsec)
    }
}

/// A device with timers of its own (PIT, RTC). The backend running the vCPU calls `advance` when
/// the deadline it last returned has passed, and after any port access (a guest write may re-arm a
/// timer). KVM models the PIT in the kernel; the RTC is advanced on both backends.
public protocol TimedDevice: AnyObject {
    /// Advances the device to `now` (VirtualClock ns), raising interrupts that fell due.
    /// Returns the next time it needs to be advanced, or nil if no timer is armed.
    func advance(to now: UInt64) -> UInt64?
}
