import VMCore

/// A port range that accepts writes and reads a constant: for ports the guest pokes without needing
/// an answer, such as the POST code port 0x80 (Linux's `outb_p` delay writes there).
/// Claiming them keeps them out of the bus's unhandled-access log.
public final class PortSink: BusDevice {
    public enum ReadValue: Sendable { case zero, allOnes }

    private let readValue: ReadValue
    /// Writes seen, and the last value written (for POST codes).
    public private(set) var writes = 0
    public private(set) var lastWrite: UInt64?

    /// `reads`: what reads return. All-ones (the default) is what an absent ISA device reads as.
    public init(reads: ReadValue = .allOnes) { readValue = reads }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch readValue {
        case .zero: return 0
        case .allOnes: return VMCore.allOnes(size: size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        writes += 1
        lastWrite = value
    }
}

/// What a guest reports through the boot timer port.
public enum BootMilestone: Equatable, Sendable, CustomStringConvertible {
    /// The guest's init started: the kernel has booted (value 0x01).
    case userspaceUp
    /// Any other value, kept for the guest's own use.
    case other(UInt8)

    public init(value: UInt8) { self = value == 0x01 ? .userspaceUp : .other(value) }

    public var value: UInt8 {
        switch self {
        case .userspaceUp: return 0x01
        case .other(let v): return v
        }
    }

    public var description: String {
        switch self {
        case .userspaceUp: return "userspace up"
        case .other(let v): return "boot marker \(hex(v))"
        }
    }
}

/// One write to the boot timer port.
public struct BootTimerEvent: Equatable, Sendable {
    public let milestone: BootMilestone
    /// The machine's clock when the write arrived (`now` of `BootTimerPort`), in nanoseconds.
    public let timestampNs: UInt64
    public init(milestone: BootMilestone, timestampNs: UInt64) {
        self.milestone = milestone
        self.timestampNs = timestampNs
    }
}

/// A one-byte register (port 0x440, also MMIO) the guest writes to mark boot progress, so the host can measure boot time
/// without parsing the console: a test initrd writes 0x01 as soon as its init runs.
public final class BootTimerPort: BusDevice {
    /// Events kept in `events`; later ones are only counted and passed to `onSignal`, so a guest
    /// writing in a loop cannot grow host memory.
    public static let maxRecordedEvents = 64

    private let now: () -> UInt64
    private let onSignal: ((BootTimerEvent) -> Void)?

    /// The first `maxRecordedEvents` writes, in order.
    public private(set) var events: [BootTimerEvent] = []
    /// All writes, recorded or not.
    public private(set) var signalCount = 0

    /// - Parameters:
    ///   - now: the clock to stamp events with (e.g. `{ clock.nowNs }` of the machine's `VirtualClock`).
    ///   - onSignal: called on the vCPU thread for every write, e.g. to print the boot time.
    public init(now: @escaping () -> UInt64, onSignal: ((BootTimerEvent) -> Void)? = nil) {
        self.now = now
        self.onSignal = onSignal
    }

    /// When the guest first reported `userspaceUp`.
    public var userspaceUpNs: UInt64? {
        events.first { $0.milestone == .userspaceUp }?.timestampNs
    }

    public func read(offset: UInt64, size: Int) -> UInt64 { 0 }

    /// The low byte of any write at offset 0 is the milestone.
    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset == 0 else { return }
        let event = BootTimerEvent(milestone: BootMilestone(value: UInt8(truncatingIfNeeded: value)),
                                   timestampNs: now())
        signalCount += 1
        if events.count < Self.maxRecordedEvents { events.append(event) }
        onSignal?(event)
    }
}
