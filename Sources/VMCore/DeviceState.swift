/// A device whose guest-visible state is a value: captured while the vCPU is stopped, and restored
/// into a fresh device built the same way (same configuration, same guest memory contents, a VM
/// clock that continues from the capture: `VirtualClock(resumingAt:)`), which then continues exactly
/// as the original would have. Snapshots save these values.
///
/// Restoring never drives interrupt lines: the interrupt controller's own state (the PIC's, or the
/// hypervisor's irqchip) already holds the levels the device had.
public protocol StatefulDevice: AnyObject {
    associatedtype State: DeviceState
    func captureState() -> State
    /// Replaces the device's state with `state`, which may come from a file: every value is checked
    /// first, and a state this device could not have been in is refused with nothing changed.
    func restoreState(_ state: State) throws(DeviceStateError)
}

/// A versioned, `Codable` device state. `version` is written with the value and checked on restore;
/// a format change bumps `currentVersion`.
public protocol DeviceState: Codable, Equatable, Sendable {
    static var currentVersion: UInt32 { get }
    var version: UInt32 { get }
}

extension DeviceState {
    /// Throws unless this value has the format this build reads.
    public func checkVersion(device: String) throws(DeviceStateError) {
        guard version == Self.currentVersion else {
            throw .unsupportedVersion(device: device, found: version, supported: Self.currentVersion)
        }
    }
}

/// Why a saved state cannot be restored.
public enum DeviceStateError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Saved by a build with another state format.
    case unsupportedVersion(device: String, found: UInt32, supported: UInt32)
    /// A value the device can never hold (a corrupt or forged state).
    case invalid(device: String, reason: String)
    /// Saved from a device built differently (another disk size, queue count, interrupt chip).
    case mismatch(device: String, reason: String)

    public var description: String {
        switch self {
        case .unsupportedVersion(let d, let f, let s):
            return "\(d) state has format version \(f); this swhv reads version \(s)"
        case .invalid(let d, let r): return "\(d) state is invalid: \(r)"
        case .mismatch(let d, let r): return "\(d) state does not fit this device: \(r)"
        }
    }
}
