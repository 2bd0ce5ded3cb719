import Devices

/// The driver side of the virtio-pci common configuration: the bring-up Linux's virtio_pci_modern
/// performs (reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queue 0, DRIVER_OK), over whatever
/// path reaches the registers (the MMIO bus as a guest does, or the BAR directly as the fuzzer
/// does). Shared by the device tests and the virtio fuzz harness.
public struct VirtioDriver {
    public typealias Read = (_ offset: UInt64, _ size: Int) -> UInt64
    public typealias Write = (_ offset: UInt64, _ size: Int, _ value: UInt64) -> Void
    /// Reads and writes of the common configuration structure (offsets in `VirtioPciCommonConfig`).
    public let read: Read
    public let write: Write

    public init(read: @escaping Read, write: @escaping Write) { self.read = read; self.write = write }

    public static let acknowledge: UInt8 = 1, driver: UInt8 = 2, driverOK: UInt8 = 4, featuresOK: UInt8 = 8

    public var status: UInt8 { UInt8(truncatingIfNeeded: read(VirtioPciCommonConfig.deviceStatus, 1)) }
    public func setStatus(_ s: UInt8) { write(VirtioPciCommonConfig.deviceStatus, 1, UInt64(s)) }

    /// The 64-bit feature word the device offers.
    public var deviceFeatures: UInt64 {
        let c = VirtioPciCommonConfig.self
        write(c.deviceFeatureSelect, 4, 0)
        let low = read(c.deviceFeature, 4)
        write(c.deviceFeatureSelect, 4, 1)
        return low | read(c.deviceFeature, 4) << 32
    }

    /// Where queue 0 lives and how it signals.
    public struct Queue {
        public var desc: UInt64, avail: UInt64, used: UInt64
        /// nil: the device's maximum.
        public var size: UInt16?
        public var msixVector: UInt16?
        public init(desc: UInt64, avail: UInt64, used: UInt64, size: UInt16? = nil, msixVector: UInt16? = nil) {
            self.desc = desc; self.avail = avail; self.used = used; self.size = size; self.msixVector = msixVector
        }
    }

    /// What `bringUp` did: the features accepted, the queue size written, and whether the device
    /// took FEATURES_OK and ended in DRIVER_OK.
    public struct Result {
        public let acceptedFeatures: UInt64
        public let queueSize: UInt16
        public let featuresAccepted: Bool
        public let running: Bool
    }

    /// The bring-up. `accept` chooses the driver's features from the device's offer (a hostile
    /// driver may return features never offered); `configVector` goes to config_msix_vector;
    /// `beforeQueue` runs between FEATURES_OK and the queue set-up (MSI-X table programming).
    @discardableResult
    public func bringUp(accept: (UInt64) -> UInt64, queue: Queue, configVector: UInt16? = nil,
                        beforeQueue: () -> Void = {}) -> Result {
        let c = VirtioPciCommonConfig.self
        setStatus(0)
        setStatus(Self.acknowledge)
        setStatus(Self.acknowledge | Self.driver)
        let features = accept(deviceFeatures)
        write(c.driverFeatureSelect, 4, 0)
        write(c.driverFeature, 4, features & 0xFFFF_FFFF)
        write(c.driverFeatureSelect, 4, 1)
        write(c.driverFeature, 4, features >> 32)
        setStatus(Self.acknowledge | Self.driver | Self.featuresOK)
        // A device that refuses the features leaves FEATURES_OK clear: Linux gives up there.
        guard status & Self.featuresOK != 0 else {
            return Result(acceptedFeatures: features, queueSize: 0, featuresAccepted: false, running: false)
        }
        beforeQueue()
        if let configVector { write(c.configMsixVector, 2, UInt64(configVector)) }
        write(c.queueSelect, 2, 0)
        let size = queue.size ?? UInt16(truncatingIfNeeded: read(c.queueSize, 2))
        write(c.queueSize, 2, UInt64(size))
        if let v = queue.msixVector { write(c.queueMsixVector, 2, UInt64(v)) }
        // 64-bit addresses as two dword writes, as vp_iowrite64_twopart does.
        for (off, addr) in [(c.queueDesc, queue.desc), (c.queueDriver, queue.avail), (c.queueDevice, queue.used)] {
            write(off, 4, addr & 0xFFFF_FFFF)
            write(off + 4, 4, addr >> 32)
        }
        write(c.queueEnable, 2, 1)
        setStatus(Self.acknowledge | Self.driver | Self.featuresOK | Self.driverOK)
        let all = Self.acknowledge | Self.driver | Self.featuresOK | Self.driverOK
        return Result(acceptedFeatures: features, queueSize: size, featuresAccepted: true, running: status == all)
    }
}
