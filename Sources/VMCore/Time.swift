#if canImport(Glibc)
import Glibc
#endif

/// A monotonic VM clock in nanoseconds since the VM was created. TSC, PIT, APIC timer and RTC all
/// derive from this one clock so the guest sees consistent time.
public final class VirtualClock: Sendable {
    private let start: UInt64
    /// A clock that does not run (reads `start` forever): deterministic runs for differential tests.
    private let frozen: Bool
    public init() { start = VirtualClock.hostMonotonicNs(); frozen = false }
    /// A clock that reads `ns` now: a restored VM continues from the time its devices were saved at.
    public init(resumingAt ns: UInt64) { start = VirtualClock.hostMonotonicNs() &- ns; frozen = false }
    /// A clock stopped at `ns` (tests that compare two runs need time not to move).
    public init(frozenAt ns: UInt64) { start = ns; frozen = true }

    /// Nanoseconds since the clock was created.
    @inline(__always)
    public var nowNs: UInt64 { frozen ? start : VirtualClock.hostMonotonicNs() &- start }

    /// The host's CLOCK_MONOTONIC time (ns) at which this clock reads `ns`, for sleeping until a
    /// device deadline (saturating: a deadline past the end of time stays there).
    public func hostMonotonicNs(at ns: UInt64) -> UInt64 {
        let (t, overflow) = start.addingReportingOverflow(ns)
        return overflow ? .max : t
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
