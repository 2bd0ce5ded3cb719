import CPUBackend

/// Boot milestones, as Firecracker's boot-timer device and Cloud Hypervisor's debug port report
/// them: when swhv started, loaded the kernel, entered the guest, saw the first console byte, and
/// when the guest said "userspace is up" (a write of 1 to I/O port 0x440).
public final class BootTimer: @unchecked Sendable {
    public enum Milestone: String, CaseIterable {
        case kernelLoaded = "kernel loaded"
        case firstInstruction = "guest entered"
        case firstConsoleByte = "first console output"
        case userspaceUp = "userspace up"
    }

    /// Monotonic ns when the process started (set by the CLI as early as possible).
    public var processStart: UInt64 = VirtualClock.hostMonotonicNs()
    public private(set) var marks: [Milestone: UInt64] = [:]
    /// Other values written to the boot-timer port, in order.
    public private(set) var guestSignals: [(value: UInt8, ns: UInt64)] = []

    public init() {}

    public func mark(_ m: Milestone) {
        if marks[m] == nil { marks[m] = VirtualClock.hostMonotonicNs() }
    }

    func guestSignal(_ value: UInt8) {
        if value == 1 { mark(.userspaceUp) } else { guestSignals.append((value, VirtualClock.hostMonotonicNs())) }
    }

    /// Milliseconds since process start for a milestone.
    public func milliseconds(_ m: Milestone) -> Double? {
        marks[m].map { Double($0 &- processStart) / 1e6 }
    }

    /// One line: "boot timer: kernel loaded 2.1 ms, guest entered 3.0 ms, ... (since process start)".
    public var report: String {
        let parts = Milestone.allCases.map { m -> String in
            if let ms = milliseconds(m) { return "\(m.rawValue) \(format(ms)) ms" }
            return "\(m.rawValue) -"
        }
        return "boot timer: " + parts.joined(separator: ", ") + " (since process start)"
    }

    private func format(_ v: Double) -> String {
        let scaled = (v * 10).rounded() / 10
        return String(scaled)
    }
}
