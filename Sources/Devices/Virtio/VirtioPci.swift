import VMMemory
import VMCore

/// Structure types of the virtio vendor capabilities (virtio 1.2, 4.1.4).
public enum VirtioPciCapType {
    public static let commonConfig: UInt8 = 1
    public static let notifyConfig: UInt8 = 2
    public static let isrConfig: UInt8 = 3
    public static let deviceConfig: UInt8 = 4
    public static let pciConfig: UInt8 = 5
}

/// Offsets of the fields of struct virtio_pci_common_cfg (virtio 1.2, 4.1.4.3).
public enum VirtioPciCommonConfig {
    public static let deviceFeatureSelect: UInt64 = 0x00
    public static let deviceFeature: UInt64 = 0x04
    public static let driverFeatureSelect: UInt64 = 0x08
    public static let driverFeature: UInt64 = 0x0C
    public static let configMsixVector: UInt64 = 0x10
    public static let numQueues: UInt64 = 0x12
    public static let deviceStatus: UInt64 = 0x14
    public static let configGeneration: UInt64 = 0x15
    public static let queueSelect: UInt64 = 0x16
    public static let queueSize: UInt64 = 0x18
    public static let queueMsixVector: UInt64 = 0x1A
    public static let queueEnable: UInt64 = 0x1C
    public static let queueNotifyOff: UInt64 = 0x1E
    public static let queueDesc: UInt64 = 0x20
    public static let queueDriver: UInt64 = 0x28
    public static let queueDevice: UInt64 = 0x30
    /// sizeof(struct virtio_pci_common_cfg).
    public static let length: UInt64 = 0x38
}

/// The modern (virtio 1.0+) PCI transport: PCI function 1AF4:(1040 + device type), one 32-bit memory
/// BAR (BAR 0) holding the common configuration, ISR, device configuration, notification area and
/// the MSI-X table and PBA, each described by a vendor capability the driver finds from the
/// capability pointer.
///
/// Interrupts: MSI-X when the driver enables it (one vector per queue plus one for configuration
/// changes, sent through `InterruptController.signalMSI`); otherwise INTx through the optional
/// `IRQLine`, level-triggered and lowered when the driver reads the ISR.
public final class VirtioPciDevice: PciDevice {
    public static let vendorID: UInt16 = 0x1AF4
    public static let deviceIDBase: UInt16 = 0x1040
    public static let subsystemID: UInt16 = 0x1100
    /// VIRTIO_MSI_NO_VECTOR.
    public static let noVector: UInt16 = 0xFFFF

    // BAR 0 layout: one page per structure so a driver can map each separately.
    public static let bar = 0
    public static let barSize: UInt64 = 0x8000
    public static let commonOffset: UInt64 = 0x0000
    public static let isrOffset: UInt64 = 0x1000
    public static let deviceConfigOffset: UInt64 = 0x2000
    public static let notifyOffset: UInt64 = 0x3000
    public static let msixTableOffset: UInt64 = 0x4000
    public static let msixPbaOffset: UInt64 = 0x5000
    public static let regionSize: UInt64 = 0x1000
    /// Queue i is notified by a write at notifyOffset + i * notifyMultiplier.
    public static let notifyMultiplier: UInt32 = 4

    public let device: any VirtioDevice
    public let config: PciConfigSpace
    public let queues: [VirtQueue]
    public let msix: PciMsix
    private let intx: IRQLine?
    public let offeredFeatures: UInt64

    public private(set) var status: VirtioStatus = []
    public private(set) var driverFeatures: UInt64 = 0
    private var deviceFeatureSelect: UInt32 = 0
    private var driverFeatureSelect: UInt32 = 0
    private var configVector = VirtioPciDevice.noVector
    private var queueVectors: [UInt16]
    private var queueSelect: UInt16 = 0
    private var isr: UInt8 = 0
    private var intxAsserted = false
    private let pciCfgCapOffset: Int
    /// The error that put the device in DEVICE_NEEDS_RESET, for the machine's log.
    public private(set) var lastError: VirtQueueError?

    public var pciName: String {
        switch device.deviceType {
        case VirtioDeviceType.network: return "virtio-net"
        case VirtioDeviceType.block: return "virtio-blk"
        case VirtioDeviceType.console: return "virtio-console"
        case VirtioDeviceType.entropy: return "virtio-rng"
        default: return "virtio-\(device.deviceType)"
        }
    }

    public init(device: any VirtioDevice, memory: GuestMemory, interrupts: any InterruptController,
                intx: IRQLine? = nil) throws(PciError) {
        self.device = device
        self.intx = intx
        let (classCode, subclass): (UInt8, UInt8) = switch device.deviceType {
        case VirtioDeviceType.block: (0x01, 0x00)
        case VirtioDeviceType.network: (0x02, 0x00)
        case VirtioDeviceType.console: (0x07, 0x80)
        default: (0xFF, 0x00)
        }
        let config = PciConfigSpace(vendorID: VirtioPciDevice.vendorID,
                                    deviceID: VirtioPciDevice.deviceIDBase &+ device.deviceType,
                                    revisionID: 1, classCode: classCode, subclass: subclass,
                                    subsystemVendorID: VirtioPciDevice.vendorID,
                                    subsystemID: VirtioPciDevice.subsystemID)
        self.config = config
        try config.addBar(index: VirtioPciDevice.bar, size: VirtioPciDevice.barSize, kind: .memory32)
        if let intx {
            config.interruptPin = 1
            config.interruptLine = intx.gsi < 0xFF ? UInt8(intx.gsi) : 0xFF
        }
        queues = device.queueMaxSizes.map { VirtQueue(memory: memory, maxSize: $0) }
        queueVectors = [UInt16](repeating: VirtioPciDevice.noVector, count: queues.count)
        offeredFeatures = device.deviceFeatures | VirtioFeature.version1 | VirtioFeature.indirectDescriptors
            | VirtioFeature.eventIndex

        msix = try PciMsix(config: config, vectorCount: queues.count + 1, tableBar: VirtioPciDevice.bar,
                           tableOffset: UInt32(VirtioPciDevice.msixTableOffset), pbaBar: VirtioPciDevice.bar,
                           pbaOffset: UInt32(VirtioPciDevice.msixPbaOffset), controller: interrupts)

        func cap(_ type: UInt8, offset: UInt64, length: UInt64, extra: [UInt8] = []) -> [UInt8] {
            var b: [UInt8] = [UInt8(16 + extra.count), type, UInt8(VirtioPciDevice.bar), 0, 0, 0]
            for v in [UInt32(offset), UInt32(length)] {
                for i in 0..<4 { b.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) }
            }
            return b + extra
        }
        let r = VirtioPciDevice.regionSize
        let m = VirtioPciDevice.notifyMultiplier
        let vndr = PciCapabilityID.vendorSpecific
        try config.addCapability(id: vndr, body: cap(VirtioPciCapType.commonConfig,
                                                     offset: VirtioPciDevice.commonOffset, length: r))
        try config.addCapability(id: vndr, body: cap(VirtioPciCapType.notifyConfig,
                                                     offset: VirtioPciDevice.notifyOffset, length: r,
                                                     extra: [UInt8(m), 0, 0, 0]))
        try config.addCapability(id: vndr, body: cap(VirtioPciCapType.isrConfig,
                                                     offset: VirtioPciDevice.isrOffset, length: r))
        try config.addCapability(id: vndr, body: cap(VirtioPciCapType.deviceConfig,
                                                     offset: VirtioPciDevice.deviceConfigOffset, length: r))
        // VIRTIO_PCI_CAP_PCI_CFG: a window into the BAR through config space; bar, offset and
        // length are driver-writable, the data dword is handled in configRead/configWrite.
        pciCfgCapOffset = try config.addCapability(
            id: vndr, body: cap(VirtioPciCapType.pciConfig, offset: 0, length: 0, extra: [0, 0, 0, 0]),
            bodyWriteMask: [0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        device.attach(to: self)
    }

    // MARK: Configuration space

    private var pciCfgDataOffset: Int { pciCfgCapOffset + 16 }

    public func configRead(offset: Int, size: Int) -> UInt32 {
        if offset == pciCfgDataOffset, let (off, len) = pciCfgWindow(), size <= len {
            return UInt32(truncatingIfNeeded: barRead(VirtioPciDevice.bar, offset: off, size: len))
                & UInt32(truncatingIfNeeded: allOnes(size: size))
        }
        return config.read(offset: offset, size: size)
    }

    public func configWrite(offset: Int, size: Int, value: UInt32) {
        if offset >= pciCfgDataOffset && offset < pciCfgDataOffset + 4 {
            if offset == pciCfgDataOffset, let (off, len) = pciCfgWindow(), size == len {
                barWrite(VirtioPciDevice.bar, offset: off, size: len, value: UInt64(value))
            }
            return
        }
        config.write(offset: offset, size: size, value: value)
        func touches(_ start: Int, _ length: Int) -> Bool { offset < start + length && start < offset + size }
        if touches(msix.capabilityOffset + 2, 2) { msix.controlChanged(config) }
        if touches(PciConfigRegister.command, 2) || touches(msix.capabilityOffset + 2, 2) { updateIntx() }
    }

    /// The BAR range selected through VIRTIO_PCI_CAP_PCI_CFG, if it is a valid access.
    private func pciCfgWindow() -> (UInt64, Int)? {
        let bar = config.get8(pciCfgCapOffset + 4)
        let off = UInt64(config.get32(pciCfgCapOffset + 8))
        let len = Int(config.get32(pciCfgCapOffset + 12))
        guard bar == UInt8(VirtioPciDevice.bar), len == 1 || len == 2 || len == 4,
              off % UInt64(len) == 0, off + UInt64(len) <= VirtioPciDevice.barSize else { return nil }
        return (off, len)
    }

    // MARK: BAR 0

    public func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 {
        guard bar == VirtioPciDevice.bar, size >= 1, size <= 8 else { return allOnes(size: size) }
        let r = VirtioPciDevice.regionSize
        switch offset {
        case VirtioPciDevice.commonOffset..<VirtioPciDevice.commonOffset + r:
            return commonRead(offset - VirtioPciDevice.commonOffset, size: size)
        case VirtioPciDevice.isrOffset..<VirtioPciDevice.isrOffset + r:
            guard offset == VirtioPciDevice.isrOffset else { return 0 }
            // Reading the ISR acknowledges it and de-asserts INTx.
            let v = isr
            isr = 0
            updateIntx()
            return UInt64(v)
        case VirtioPciDevice.deviceConfigOffset..<VirtioPciDevice.deviceConfigOffset + r:
            return device.readConfig(offset: Int(offset - VirtioPciDevice.deviceConfigOffset), size: size)
        case VirtioPciDevice.msixTableOffset..<VirtioPciDevice.msixTableOffset + r:
            return msix.readTable(offset: offset - VirtioPciDevice.msixTableOffset, size: size)
        case VirtioPciDevice.msixPbaOffset..<VirtioPciDevice.msixPbaOffset + r:
            return msix.readPba(offset: offset - VirtioPciDevice.msixPbaOffset, size: size)
        default:
            return 0
        }
    }

    public func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {
        guard bar == VirtioPciDevice.bar, size >= 1, size <= 8 else { return }
        let r = VirtioPciDevice.regionSize
        switch offset {
        case VirtioPciDevice.commonOffset..<VirtioPciDevice.commonOffset + r:
            commonWrite(offset - VirtioPciDevice.commonOffset, size: size, value: value)
        case VirtioPciDevice.deviceConfigOffset..<VirtioPciDevice.deviceConfigOffset + r:
            device.writeConfig(offset: Int(offset - VirtioPciDevice.deviceConfigOffset), size: size, value: value)
        case VirtioPciDevice.notifyOffset..<VirtioPciDevice.notifyOffset + r:
            let rel = offset - VirtioPciDevice.notifyOffset
            let m = UInt64(VirtioPciDevice.notifyMultiplier)
            if rel % m == 0 { queueNotify(Int(rel / m)) }
        case VirtioPciDevice.msixTableOffset..<VirtioPciDevice.msixTableOffset + r:
            msix.writeTable(offset: offset - VirtioPciDevice.msixTableOffset, size: size, value: value)
        default:
            break
        }
    }

    // MARK: Common configuration

    private var selectedQueue: VirtQueue? {
        Int(queueSelect) < queues.count ? queues[Int(queueSelect)] : nil
    }

    private func commonRead(_ offset: UInt64, size: Int) -> UInt64 {
        let c = VirtioPciCommonConfig.self
        var bytes = [UInt8](repeating: 0, count: Int(c.length))
        func put(_ off: UInt64, _ value: UInt64, _ width: Int) {
            for i in 0..<width { bytes[Int(off) + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        let features = deviceFeatureSelect < 2 ? offeredFeatures >> (32 * UInt64(deviceFeatureSelect)) : 0
        let driver = driverFeatureSelect < 2 ? driverFeatures >> (32 * UInt64(driverFeatureSelect)) : 0
        put(c.deviceFeatureSelect, UInt64(deviceFeatureSelect), 4)
        put(c.deviceFeature, features & 0xFFFF_FFFF, 4)
        put(c.driverFeatureSelect, UInt64(driverFeatureSelect), 4)
        put(c.driverFeature, driver & 0xFFFF_FFFF, 4)
        put(c.configMsixVector, UInt64(configVector), 2)
        put(c.numQueues, UInt64(queues.count), 2)
        put(c.deviceStatus, UInt64(status.rawValue), 1)
        put(c.configGeneration, 0, 1)
        put(c.queueSelect, UInt64(queueSelect), 2)
        if let q = selectedQueue {
            // A queue that does not exist reads size 0, which tells the driver so.
            put(c.queueSize, UInt64(q.size), 2)
            put(c.queueMsixVector, UInt64(queueVectors[Int(queueSelect)]), 2)
            put(c.queueEnable, q.isReady ? 1 : 0, 2)
            put(c.queueNotifyOff, UInt64(queueSelect), 2)
            put(c.queueDesc, q.descriptorTable, 8)
            put(c.queueDriver, q.availRing, 8)
            put(c.queueDevice, q.usedRing, 8)
        }
        guard offset < c.length else { return 0 }
        var v: UInt64 = 0
        for i in 0..<size where Int(offset) + i < bytes.count {
            v |= UInt64(bytes[Int(offset) + i]) << (8 * UInt64(i))
        }
        return v
    }

    private func commonWrite(_ offset: UInt64, size: Int, value: UInt64) {
        let c = VirtioPciCommonConfig.self
        let v32 = UInt32(truncatingIfNeeded: value)
        let v16 = UInt16(truncatingIfNeeded: value)
        switch (offset, size) {
        case (c.deviceFeatureSelect, 4): deviceFeatureSelect = v32
        case (c.driverFeatureSelect, 4): driverFeatureSelect = v32
        case (c.driverFeature, 4):
            // Features are frozen once FEATURES_OK is set.
            guard !status.contains(.featuresOK), driverFeatureSelect < 2 else { return }
            let shift = 32 * UInt64(driverFeatureSelect)
            driverFeatures = (driverFeatures & ~(0xFFFF_FFFF << shift)) | (UInt64(v32) << shift)
        case (c.configMsixVector, 2): configVector = validVector(v16)
        case (c.deviceStatus, 1): writeStatus(UInt8(truncatingIfNeeded: value))
        case (c.queueSelect, 2): queueSelect = v16
        case (c.queueSize, 2):
            if let q = selectedQueue, !q.isReady { q.size = v16 }
        case (c.queueMsixVector, 2):
            if Int(queueSelect) < queues.count { queueVectors[Int(queueSelect)] = validVector(v16) }
        case (c.queueEnable, 2):
            if v16 == 1, let q = selectedQueue, !q.isReady { enableQueue(q) }
        case (c.queueDesc, _), (c.queueDesc + 4, 4), (c.queueDriver, _), (c.queueDriver + 4, 4),
             (c.queueDevice, _), (c.queueDevice + 4, 4):
            guard let q = selectedQueue, !q.isReady else { return }
            setQueueAddress(q, offset: offset, size: size, value: value)
        default:
            break
        }
    }

    /// 64-bit queue addresses arrive as one qword or two dwords (Linux writes lo then hi).
    private func setQueueAddress(_ q: VirtQueue, offset: UInt64, size: Int, value: UInt64) {
        let c = VirtioPciCommonConfig.self
        let field = offset & ~7
        let high = offset & 4 != 0
        func merge(_ old: UInt64) -> UInt64 {
            switch (size, high) {
            case (8, false): return value
            case (4, false): return (old & 0xFFFF_FFFF_0000_0000) | (value & 0xFFFF_FFFF)
            case (4, true): return (old & 0xFFFF_FFFF) | (value << 32)
            default: return old
            }
        }
        switch field {
        case c.queueDesc: q.descriptorTable = merge(q.descriptorTable)
        case c.queueDriver: q.availRing = merge(q.availRing)
        case c.queueDevice: q.usedRing = merge(q.usedRing)
        default: break
        }
    }

    /// MSI-X vectors beyond the table cannot be mapped: the register then reads NO_VECTOR.
    private func validVector(_ v: UInt16) -> UInt16 {
        Int(v) < msix.vectorCount ? v : VirtioPciDevice.noVector
    }

    private func enableQueue(_ q: VirtQueue) {
        q.eventIndexEnabled = driverFeatures & VirtioFeature.eventIndex != 0
        q.indirectEnabled = driverFeatures & VirtioFeature.indirectDescriptors != 0
        do { try q.enable() } catch { deviceError(error) }
    }

    private func writeStatus(_ value: UInt8) {
        if value == 0 { reset(); return }
        // Status bits only accumulate until reset; NEEDS_RESET belongs to the device.
        var new = status.union(VirtioStatus(rawValue: value))
        if !status.contains(.needsReset) { new.remove(.needsReset) }
        if new.contains(.featuresOK) && !status.contains(.featuresOK) {
            // Refuse features we did not offer, and legacy (pre-1.0) drivers: FEATURES_OK stays clear.
            let acceptable = driverFeatures & ~offeredFeatures == 0 && driverFeatures & VirtioFeature.version1 != 0
            if !acceptable { new.remove(.featuresOK) }
        }
        let activating = new.contains(.driverOK) && !status.contains(.driverOK)
        status = new
        if activating {
            if status.contains(.featuresOK) {
                device.activate(features: driverFeatures)
            } else {
                status.insert(.needsReset)
            }
        }
    }

    /// Device reset (status written 0): queues, features, vectors and the ISR back to defaults.
    public func reset() {
        status = []
        driverFeatures = 0
        deviceFeatureSelect = 0
        driverFeatureSelect = 0
        configVector = VirtioPciDevice.noVector
        for i in queueVectors.indices { queueVectors[i] = VirtioPciDevice.noVector }
        queueSelect = 0
        for q in queues { q.reset() }
        isr = 0
        lastError = nil
        updateIntx()
        device.reset()
    }

    // MARK: Queues and interrupts

    /// A driver notification for queue `index` (a write to its notify address).
    public func queueNotify(_ index: Int) {
        guard status.contains(.driverOK), !status.contains(.needsReset),
              index >= 0, index < queues.count, queues[index].isReady else { return }
        do {
            if try device.processQueue(index, queue: queues[index]) { signalQueue(index) }
        } catch {
            // Completions before the error may be waiting too.
            signalQueue(index)
            deviceError(error)
        }
    }

    /// Enters DEVICE_NEEDS_RESET and tells the driver through a configuration-change interrupt.
    private func deviceError(_ error: VirtQueueError) {
        for q in queues { q.markBroken() }
        enterNeedsReset(error)
    }

    func enterNeedsReset(_ error: VirtQueueError) {
        lastError = error
        status.insert(.needsReset)
        if status.contains(.driverOK) { signalConfigChange() }
    }

    /// Interrupts the driver for used buffers on queue `index` (public for devices that complete
    /// requests later, e.g. from posted I/O work).
    public func signalQueue(_ index: Int) {
        guard index >= 0, index < queues.count else { return }
        signal(vector: queueVectors[index], isrBit: 1)
    }

    public func signalConfigChange() {
        signal(vector: configVector, isrBit: 2)
    }

    private func signal(vector: UInt16, isrBit: UInt8) {
        if msix.enabled {
            if vector != VirtioPciDevice.noVector { msix.signal(Int(vector)) }
            return
        }
        isr |= isrBit
        updateIntx()
    }

    /// INTx is asserted while the ISR is non-zero, unless MSI-X is on or the command register
    /// disables INTx.
    private func updateIntx() {
        guard let intx else { return }
        let level = isr != 0 && !msix.enabled && !config.command.contains(.interruptDisable)
        if level != intxAsserted {
            intxAsserted = level
            if level { intx.raise() } else { intx.lower() }
        }
    }
}

// MARK: State

extension VirtioPciDevice: StatefulDevice {
    /// The transport: configuration space, MSI-X, feature negotiation, status, vectors, ISR and
    /// each queue's position, plus the device's own part.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var config: PciConfigSpace.State
        public var msix: PciMsix.State
        public var status: UInt8
        public var driverFeatures: UInt64
        public var deviceFeatureSelect: UInt32, driverFeatureSelect: UInt32
        public var configVector: UInt16
        public var queueVectors: [UInt16]
        public var queueSelect: UInt16
        public var isr: UInt8
        public var intxAsserted: Bool
        public var queues: [VirtQueue.State]
        public var device: VirtioDeviceState
    }

    public func captureState() -> State {
        State(config: config.captureState(), msix: msix.captureState(), status: status.rawValue,
              driverFeatures: driverFeatures, deviceFeatureSelect: deviceFeatureSelect,
              driverFeatureSelect: driverFeatureSelect, configVector: configVector, queueVectors: queueVectors,
              queueSelect: queueSelect, isr: isr, intxAsserted: intxAsserted,
              queues: queues.map { $0.captureState() }, device: device.captureDeviceState())
    }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: pciName)
        guard s.queues.count == queues.count, s.queueVectors.count == queues.count else {
            throw .mismatch(device: pciName, reason: "\(s.queues.count) queues saved, this device has \(queues.count)")
        }
        guard s.driverFeatures & ~offeredFeatures == 0 else {
            throw .mismatch(device: pciName, reason: "driver features \(hex(s.driverFeatures)) were not offered")
        }
        let vectors = [s.configVector] + s.queueVectors
        guard vectors.allSatisfy({ $0 == VirtioPciDevice.noVector || Int($0) < msix.vectorCount }), s.isr & ~3 == 0 else {
            throw .invalid(device: pciName, reason: "MSI-X vector or ISR out of range")
        }
        try config.restoreState(s.config)
        try msix.restoreState(s.msix, config: config)
        for (q, saved) in zip(queues, s.queues) { try q.restoreState(saved) }
        try device.restoreDeviceState(s.device)
        status = VirtioStatus(rawValue: s.status)
        driverFeatures = s.driverFeatures
        (deviceFeatureSelect, driverFeatureSelect) = (s.deviceFeatureSelect, s.driverFeatureSelect)
        (configVector, queueVectors, queueSelect) = (s.configVector, s.queueVectors, s.queueSelect)
        (isr, intxAsserted) = (s.isr, s.intxAsserted)
        lastError = nil
    }
}
