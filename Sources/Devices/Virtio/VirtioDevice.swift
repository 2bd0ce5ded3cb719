import VMCore

/// Device status bits (virtio 1.2, 2.1).
public struct VirtioStatus: OptionSet, Sendable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let acknowledge = VirtioStatus(rawValue: 1)
    public static let driver = VirtioStatus(rawValue: 2)
    public static let driverOK = VirtioStatus(rawValue: 4)
    public static let featuresOK = VirtioStatus(rawValue: 8)
    public static let needsReset = VirtioStatus(rawValue: 64)
    public static let failed = VirtioStatus(rawValue: 128)
}

/// Transport-independent feature bits (virtio 1.2, 6).
public enum VirtioFeature {
    public static let indirectDescriptors: UInt64 = 1 << 28   // VIRTIO_F_INDIRECT_DESC
    public static let eventIndex: UInt64 = 1 << 29            // VIRTIO_F_EVENT_IDX
    public static let version1: UInt64 = 1 << 32              // VIRTIO_F_VERSION_1
}

/// Virtio device types (virtio 1.2, 5).
public enum VirtioDeviceType {
    public static let network: UInt16 = 1
    public static let block: UInt16 = 2
    public static let console: UInt16 = 3
    public static let entropy: UInt16 = 4
}

/// The device half of a virtio device: feature bits, configuration space and request processing.
/// A transport (`VirtioPciDevice`) owns the queues, status and interrupts and calls these on the
/// vCPU thread.
public protocol VirtioDevice: AnyObject {
    var deviceType: UInt16 { get }
    /// Device-specific feature bits. The transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX.
    var deviceFeatures: UInt64 { get }
    /// Maximum size of each virtqueue; the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// Device configuration space reads/writes (little-endian; outside the space reads 0).
    func readConfig(offset: Int, size: Int) -> UInt64
    func writeConfig(offset: Int, size: Int, value: UInt64)
    /// The driver set DRIVER_OK after accepting `features`.
    func activate(features: UInt64)
    /// The driver notified queue `index`: process what is available. Returns true if the driver
    /// must be interrupted (used buffers were added and the driver did not suppress it).
    func processQueue(_ index: Int, queue: VirtQueue) throws(VirtQueueError) -> Bool
    /// The driver reset the device.
    func reset()
    /// The device's own guest-visible state beyond the transport's (queues, features, status and
    /// interrupts are the transport's): `VirtioDeviceState` has a case per device type. The
    /// defaults are for devices with nothing more to save.
    func captureDeviceState() -> VirtioDeviceState
    func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError)
    /// The transport the device was placed behind, for devices that act without a notification
    /// (network receive, link changes). Called once, when the transport is built.
    func attach(to transport: any VirtioTransport)
}

extension VirtioDevice {
    public func attach(to transport: any VirtioTransport) {}
    public func captureDeviceState() -> VirtioDeviceState { .none }
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard state == .none else { throw .mismatch(device: "virtio device \(deviceType)", reason: "saved from another device type") }
    }
}
