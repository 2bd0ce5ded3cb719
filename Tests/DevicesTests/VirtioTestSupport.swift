import XCTest
import Synchronization
import SwhvTestSupport
import CPUBackend
import VMMemory
@testable import Devices
#if canImport(Glibc)
import Glibc
#endif

/// One message-signalled interrupt as the fake controller saw it.
struct VirtioRecordedMSI: Equatable, Sendable {
    let address: UInt64
    let data: UInt32
}

/// An interrupt controller that records what devices sent it.
final class VirtioFakeInterrupts: InterruptController {
    private let state = Mutex<(msis: [VirtioRecordedMSI], levels: [UInt32: Bool], edges: Int)>(([], [:], 0))

    func setIRQ(_ gsi: UInt32, level: Bool) {
        state.withLock {
            if level && $0.levels[gsi] != true { $0.edges += 1 }
            $0.levels[gsi] = level
        }
    }
    func signalMSI(address: UInt64, data: UInt32) {
        state.withLock { $0.msis.append(VirtioRecordedMSI(address: address, data: data)) }
    }
    var msis: [VirtioRecordedMSI] { state.withLock { $0.msis } }
    func level(_ gsi: UInt32) -> Bool { state.withLock { $0.levels[gsi] ?? false } }
    /// Rising edges seen on any line.
    var risingEdges: Int { state.withLock { $0.edges } }
    func clear() { state.withLock { $0.msis = [] } }
}

/// A temporary disk image, removed at deinit.
final class VirtioTempDisk {
    let path: String
    /// `directory` picks the file system (/tmp: the host's; /dev/shm: tmpfs, which has no
    /// FALLOC_FL_ZERO_RANGE). The data is fsynced, so its blocks are allocated.
    init(bytes: [UInt8], directory: String = "/tmp") {
        var template = Array("\(directory)/swhv-virtio-XXXXXX.img".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemps($0.baseAddress!, 4) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        bytes.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
        fsync(fd)
        close(fd)
    }
    /// `sectors` sectors where every byte of sector n is UInt8(n & 0xFF) ^ 0x5A.
    convenience init(sectors: Int, directory: String = "/tmp") {
        self.init(bytes: virtioSectorPattern(0, count: sectors), directory: directory)
    }
    /// A sparse disk of `sparseBytes` (no data blocks).
    convenience init(sparseBytes: Int64) {
        self.init(bytes: [])
        _ = truncate(path, off_t(sparseBytes))
    }
    /// 512-byte blocks the file occupies on the host (st_blocks).
    var allocatedSectors: Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_blocks) : -1
    }
    var contents: [UInt8] {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out += buf[0..<n]
        }
        return out
    }
    deinit { unlink(path) }
}

/// The driver side of a split virtqueue in guest memory, written the way Linux's virtio_ring does.
final class VirtioDriverRing {
    let memory: GuestMemory
    let size: UInt16
    let desc: UInt64, avail: UInt64, used: UInt64
    private(set) var availIdx: UInt16 = 0

    init(memory: GuestMemory, size: UInt16, desc: UInt64, avail: UInt64, used: UInt64) {
        self.memory = memory; self.size = size; self.desc = desc; self.avail = avail; self.used = used
    }

    func setDescriptor(_ i: UInt16, address: UInt64, length: UInt32, flags: UInt16, next: UInt16 = 0,
                       table: UInt64? = nil) {
        let base = (table ?? desc) + 16 * UInt64(i)
        try! memory.write(address, at: base)
        try! memory.write(length, at: base + 8)
        try! memory.write(flags, at: base + 12)
        try! memory.write(next, at: base + 14)
    }

    /// Puts `head` in the available ring and publishes it.
    func publish(_ head: UInt16) {
        try! memory.write(head, at: avail + 4 + 2 * UInt64(availIdx % size))
        availIdx &+= 1
        try! memory.write(availIdx, at: avail + 2)
    }

    /// Writes an arbitrary available index (for hostile tests).
    func setAvailIndex(_ v: UInt16) {
        availIdx = v
        try! memory.write(v, at: avail + 2)
    }
    func setAvailFlags(_ v: UInt16) { try! memory.write(v, at: avail) }
    func setUsedEvent(_ v: UInt16) { try! memory.write(v, at: avail + 4 + 2 * UInt64(size)) }
    var availEvent: UInt16 { try! memory.read(at: used + 4 + 8 * UInt64(size)) }

    var usedIdx: UInt16 { try! memory.read(at: used + 2) }
    func usedElement(_ n: UInt16) -> (id: UInt32, length: UInt32) {
        let e = used + 4 + 8 * UInt64(n % size)
        return (try! memory.read(at: e), try! memory.read(at: e + 4))
    }
}

/// A PCI bus with one virtio device, driven like Linux: config space through ports 0xCF8/0xCFC,
/// everything else through BAR 0 on the MMIO bus.
final class VirtioPciHarness {
    static let descAddr: UInt64 = 0x10000
    static let availAddr: UInt64 = 0x11000
    static let usedAddr: UInt64 = 0x12000
    /// Request headers, data and status bytes go here.
    static let bufferAddr: UInt64 = 0x40000
    static let msiAddress: UInt64 = 0xFEE0_0000

    let memory: GuestMemory
    let interrupts = VirtioFakeInterrupts()
    let root = PciRoot()
    let ports = Bus(name: "pio")
    let mmio = Bus(name: "mmio")
    let transport: VirtioPciDevice
    let slot: UInt8
    var bar0: UInt64 = 0
    /// cfg_type → (offset in BAR, length); notify multiplier.
    var caps: [UInt8: (offset: UInt64, length: UInt64)] = [:]
    var notifyMultiplier: UInt32 = 0
    var msixCap = 0
    var ring: VirtioDriverRing!

    init(device: any VirtioDevice, intxGSI: UInt32? = nil, memorySize: UInt64 = 4 << 20) throws {
        memory = try GuestMemory(size: memorySize)
        let irqs = interrupts
        let intx = intxGSI.map { IRQLine(controller: irqs, gsi: $0) }
        transport = try VirtioPciDevice(device: device, memory: memory, interrupts: interrupts, intx: intx)
        let placement = try root.add(transport)
        slot = placement.address.device
        try ports.register(root, name: "pci-config", at: PCLayout.Port.pciConfig)
        try mmio.register(root.mmioWindow, name: "pci-mmio", at: root.window)
    }

    // MARK: Config space via ports

    func cfgAddress(_ slot: UInt8, _ reg: Int) {
        ports.write(0xCF8, size: 4, value: UInt64(0x8000_0000 | UInt32(slot) << 11 | UInt32(reg & 0xFC)))
    }
    func cfgRead(_ reg: Int, size: Int = 4, slot: UInt8? = nil) -> UInt32 {
        cfgAddress(slot ?? self.slot, reg)
        return UInt32(truncatingIfNeeded: ports.read(0xCFC + UInt64(reg & 3), size: size))
    }
    func cfgWrite(_ reg: Int, size: Int = 4, _ value: UInt32, slot: UInt8? = nil) {
        cfgAddress(slot ?? self.slot, reg)
        ports.write(0xCFC + UInt64(reg & 3), size: size, value: UInt64(value))
    }

    // MARK: BAR access

    func read(_ cap: UInt8, _ off: UInt64, size: Int) -> UInt64 {
        mmio.read(bar0 + caps[cap]!.offset + off, size: size)
    }
    func write(_ cap: UInt8, _ off: UInt64, size: Int, _ value: UInt64) {
        mmio.write(bar0 + caps[cap]!.offset + off, size: size, value: value)
    }
    func common(_ off: UInt64, size: Int) -> UInt64 { read(VirtioPciCapType.commonConfig, off, size: size) }
    func setCommon(_ off: UInt64, size: Int, _ v: UInt64) { write(VirtioPciCapType.commonConfig, off, size: size, v) }
    var status: UInt8 { UInt8(common(VirtioPciCommonConfig.deviceStatus, size: 1)) }

    /// Probe as Linux does: size BAR 0, enable decoding, walk the capability list.
    func probe() {
        XCTAssertEqual(cfgRead(0, size: 2), 0x1AF4)
        // BAR sizing with decoding off, then restore.
        let cmd = cfgRead(PciConfigRegister.command, size: 2)
        cfgWrite(PciConfigRegister.command, size: 2, cmd & ~2)
        let orig = cfgRead(PciConfigRegister.bar0)
        cfgWrite(PciConfigRegister.bar0, 0xFFFF_FFFF)
        let mask = cfgRead(PciConfigRegister.bar0)
        cfgWrite(PciConfigRegister.bar0, orig)
        XCTAssertEqual(UInt64(~(mask & ~0xF)) + 1, VirtioPciDevice.barSize)
        bar0 = UInt64(orig & ~0xF)
        cfgWrite(PciConfigRegister.command, size: 2, cmd | 0x6)   // memory + bus master

        var p = Int(cfgRead(PciConfigRegister.capabilitiesPointer, size: 1))
        var ttl = 48
        while p != 0 && ttl > 0 {
            ttl -= 1
            let id = UInt8(cfgRead(p, size: 1))
            if id == PciCapabilityID.msix { msixCap = p }
            if id == PciCapabilityID.vendorSpecific {
                let type = UInt8(cfgRead(p + 3, size: 1))
                XCTAssertEqual(cfgRead(p + 4, size: 1), 0, "all structures are in BAR 0")
                if caps[type] == nil {
                    caps[type] = (UInt64(cfgRead(p + 8)), UInt64(cfgRead(p + 12)))
                }
                if type == VirtioPciCapType.notifyConfig { notifyMultiplier = cfgRead(p + 16) }
            }
            p = Int(cfgRead(p + 1, size: 1))
        }
    }

    /// Programs MSI-X vector `n` to send `data` to the local APIC and unmasks it.
    func programVector(_ n: Int, data: UInt32) {
        let table = UInt64(cfgRead(msixCap + 4) & ~7)
        let e = bar0 + table + UInt64(16 * n)
        mmio.write(e, size: 4, value: VirtioPciHarness.msiAddress)
        mmio.write(e + 4, size: 4, value: 0)
        mmio.write(e + 8, size: 4, value: UInt64(data))
        mmio.write(e + 12, size: 4, value: 0)
    }

    /// The whole Linux bring-up (`VirtioDriver`): reset, ACK, DRIVER, features, FEATURES_OK, MSI-X,
    /// queue 0, DRIVER_OK. `acceptFeatures` filters what the driver accepts from what the device offers.
    @discardableResult
    func setUp(acceptFeatures: UInt64 = ~0, useMSIX: Bool = true, queueSize: UInt16? = nil) -> Bool {
        if bar0 == 0 { probe() }
        let driver = VirtioDriver(read: { self.common($0, size: $1) }, write: { self.setCommon($0, size: $1, $2) })
        let ring = VirtioPciHarness.descAddr, avail = VirtioPciHarness.availAddr, used = VirtioPciHarness.usedAddr
        let result = driver.bringUp(
            accept: { $0 & acceptFeatures },
            queue: .init(desc: ring, avail: avail, used: used, size: queueSize, msixVector: useMSIX ? 1 : nil),
            configVector: useMSIX ? 0 : nil,
            beforeQueue: {
                try! memory.fill(0, at: ring, length: 0x3000)
                guard useMSIX else { return }
                // Enable with the function masked, program the table, then unmask (pci_msix_enable order).
                let ctrl = cfgRead(msixCap + 2, size: 2)
                cfgWrite(msixCap + 2, size: 2, ctrl | 0xC000)
                programVector(0, data: 0x40)
                programVector(1, data: 0x41)
                cfgWrite(msixCap + 2, size: 2, (ctrl | 0x8000) & ~0x4000)
            })
        guard result.featuresAccepted else { return false }
        if useMSIX {
            XCTAssertEqual(common(VirtioPciCommonConfig.configMsixVector, size: 2), 0)
            XCTAssertEqual(common(VirtioPciCommonConfig.queueMsixVector, size: 2), 1)
        }
        self.ring = VirtioDriverRing(memory: memory, size: result.queueSize, desc: ring, avail: avail, used: used)
        return result.running
    }

    /// Notifies queue 0 through its notify address.
    func kick(_ queue: UInt16 = 0) {
        let off = common(VirtioPciCommonConfig.queueNotifyOff, size: 2)
        write(VirtioPciCapType.notifyConfig, off * UInt64(notifyMultiplier), size: 2, UInt64(queue))
    }
}

/// virtio-blk requests built in guest memory.
extension VirtioPciHarness {
    static let headerAddr = bufferAddr
    static let dataAddr = bufferAddr + 0x1000
    static let statusAddr = bufferAddr + 0x800

    struct BlockResult {
        let status: UInt8
        let usedLength: UInt32
        let data: [UInt8]
    }

    func writeHeader(type: UInt32, sector: UInt64, at addr: UInt64 = headerAddr) {
        try! memory.write(type, at: addr)
        try! memory.write(UInt32(0), at: addr + 4)
        try! memory.write(sector, at: addr + 8)
    }

    /// Submits header / data / status as three descriptors (Linux's layout), kicks, and collects
    /// the result. `dataWritable` is the direction of the data buffer.
    func blockRequest(type: UInt32, sector: UInt64, data: [UInt8] = [], inLength: Int = 0,
                      head: UInt16 = 0) -> BlockResult {
        writeHeader(type: type, sector: sector)
        try! memory.write(UInt8(0xEE), at: VirtioPciHarness.statusAddr)
        let n0 = head, n1 = head + 1, n2 = head + 2
        let hasData = !data.isEmpty || inLength > 0
        ring.setDescriptor(n0, address: VirtioPciHarness.headerAddr, length: 16, flags: 1, next: hasData ? n1 : n2)
        if !data.isEmpty {
            try! memory.write(bytes: data, at: VirtioPciHarness.dataAddr)
            ring.setDescriptor(n1, address: VirtioPciHarness.dataAddr, length: UInt32(data.count), flags: 1, next: n2)
        } else if inLength > 0 {
            try! memory.fill(0xCC, at: VirtioPciHarness.dataAddr, length: UInt64(inLength))
            ring.setDescriptor(n1, address: VirtioPciHarness.dataAddr, length: UInt32(inLength), flags: 3, next: n2)
        }
        ring.setDescriptor(n2, address: VirtioPciHarness.statusAddr, length: 1, flags: 2)
        return submit(head: n0, inLength: inLength)
    }

    /// Publishes `head`, kicks and reads back status, used length and `inLength` data bytes.
    func submit(head: UInt16, inLength: Int = 0) -> BlockResult {
        let before = ring.usedIdx
        // Like Linux's virtqueue_enable_cb: interrupt me for the next completion (EVENT_IDX).
        ring.setUsedEvent(before)
        ring.publish(head)
        kick()
        XCTAssertEqual(ring.usedIdx, before &+ 1, "one used element per request")
        let e = ring.usedElement(before)
        XCTAssertEqual(e.id, UInt32(head))
        let st: UInt8 = try! memory.read(at: VirtioPciHarness.statusAddr)
        let data = inLength > 0 ? try! memory.readBytes(at: VirtioPciHarness.dataAddr, count: inLength) : []
        return BlockResult(status: st, usedLength: e.length, data: data)
    }
}

/// The bytes a `VirtioTempDisk(sectors:)` holds in sector `s`.
func virtioSectorPattern(_ s: Int, count: Int = 1) -> [UInt8] {
    var b: [UInt8] = []
    for k in s..<(s + count) { b += [UInt8](repeating: UInt8(k & 0xFF) ^ 0x5A, count: 512) }
    return b
}

/// A virtio device with no backing store: one queue whose chains complete with length 0.
/// Lets transport and PCI tests run without files.
final class VirtioNullDevice: VirtioDevice {
    var deviceType: UInt16 { VirtioDeviceType.entropy }
    var deviceFeatures: UInt64 { 0 }
    var queueMaxSizes: [UInt16] { [16] }
    private(set) var activatedFeatures: UInt64?
    private(set) var processed = 0
    func readConfig(offset: Int, size: Int) -> UInt64 { 0 }
    func writeConfig(offset: Int, size: Int, value: UInt64) {}
    func activate(features: UInt64) { activatedFeatures = features }
    func reset() { activatedFeatures = nil }
    func processQueue(_ index: Int, queue: VirtQueue) throws(VirtQueueError) -> Bool {
        while let c = try queue.popAvailable() {
            try queue.addUsed(headIndex: c.headIndex, length: 0)
            processed += 1
        }
        return try queue.needsNotification()
    }
}
