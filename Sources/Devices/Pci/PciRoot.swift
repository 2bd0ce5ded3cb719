import VMCore

/// PCI bus 0 behind a host bridge, reached through configuration mechanism #1: the guest writes
/// CONFIG_ADDRESS (port 0xCF8, dword) and then accesses CONFIG_DATA (ports 0xCFC-0xCFF).
///
/// The root also plays firmware: `add` gives each device a slot and assigns its memory BARs naturally
/// aligned addresses inside one MMIO window, and enables memory decoding. Linux keeps such
/// firmware-assigned BARs when they are valid, so the guest normally never moves them.
///
/// The platform registers the root itself on the port bus at `PCLayout.Port.pciConfig` and
/// `root.mmioWindow` on the MMIO bus at `root.window`.
///
/// Port 0xCF9 sits inside that range: on PC chipsets it is the byte-wide Reset Control Register
/// (Linux's `reboot=pci`). Byte writes there setting bit 2 call `onResetRequest`.
/// MMIO accesses inside the window are routed by the BAR addresses currently programmed in each
/// device's config space and honour the command register's memory-enable bit, so a guest that
/// re-programs a BAR (within the window) keeps working without re-registering anything.
public final class PciRoot: BusDevice {
    public let mmioBase: UInt64
    public let mmioSize: UInt64
    /// Slot number → device; slot 0 is the host bridge.
    private var slots = [PciDevice?](repeating: nil, count: 32)
    private var nextMmio: UInt64
    /// CONFIG_ADDRESS as last written.
    public private(set) var configAddress: UInt32 = 0
    /// The Reset Control Register at 0xCF9 (byte access only).
    public private(set) var resetControl: UInt8 = 0
    /// Called when the guest resets the machine through 0xCF9 (the machine requests `.reset`).
    public var onResetRequest: (() -> Void)?

    /// `mmioBase` and `mmioSize` are rounded to 4 KiB; a window wrapping past 2^64 is shrunk.
    public init(mmioBase: UInt64 = PCLayout.MMIO.pciWindow.base, mmioSize: UInt64 = PCLayout.MMIO.pciWindow.length) {
        let base = mmioBase & ~0xFFF
        var size = mmioSize & ~0xFFF
        if base.addingReportingOverflow(size).overflow { size = (UInt64.max - base + 1) & ~0xFFF }
        self.mmioBase = base
        self.mmioSize = size
        self.nextMmio = base
        slots[0] = PciHostBridge()
    }

    /// Places `device` in the next free slot, assigns its BARs inside the MMIO window and turns on
    /// memory decoding (as firmware would).
    @discardableResult
    public func add(_ device: PciDevice) throws(PciError) -> PciPlacement {
        guard let slot = slots.firstIndex(where: { $0 == nil }) else { throw PciError.noFreeSlot }
        var cursor = nextMmio
        var assigned: [Int: UInt64] = [:]
        // Largest BARs first keeps natural alignment from wasting space.
        for bar in device.config.bars.compactMap({ $0 }).sorted(by: { $0.size > $1.size }) {
            let aligned = (cursor &+ bar.size &- 1) & ~(bar.size &- 1)
            let windowEnd = mmioBase &+ mmioSize
            guard aligned >= cursor, aligned <= windowEnd, bar.size <= windowEnd - aligned else {
                throw PciError.mmioWindowFull(device: device.pciName, needed: bar.size)
            }
            assigned[bar.index] = aligned
            cursor = aligned + bar.size
        }
        for (index, address) in assigned { device.config.setBarAddress(index, address) }
        if !assigned.isEmpty {
            let cmd = device.config.get16(PciConfigRegister.command) | PciCommand.memorySpace.rawValue
            device.config.set16(PciConfigRegister.command, cmd)
        }
        nextMmio = cursor
        slots[slot] = device
        return PciPlacement(address: PciAddress(device: UInt8(slot)), barAddresses: assigned)
    }

    /// The MMIO window BARs are assigned in: where `mmioWindow` belongs on the MMIO bus.
    public var window: BusRange { BusRange(base: mmioBase, length: mmioSize) }

    /// The device at `address`, if any (function 0 of bus 0 only).
    public func device(at address: PciAddress) -> PciDevice? {
        guard address.bus == 0, address.function == 0, address.device < 32 else { return nil }
        return slots[Int(address.device)]
    }

    // MARK: Configuration access

    /// A configuration read as the guest would see it; absent functions read all-ones.
    public func configRead(_ address: PciAddress, offset: Int, size: Int) -> UInt32 {
        guard let dev = device(at: address), offset >= 0, (offset & 3) + size <= 4,
              size == 1 || size == 2 || size == 4, offset + size <= PciConfigSpace.size else {
            return UInt32(truncatingIfNeeded: allOnes(size: size))
        }
        return dev.configRead(offset: offset, size: size)
    }

    public func configWrite(_ address: PciAddress, offset: Int, size: Int, value: UInt32) {
        guard let dev = device(at: address), offset >= 0, (offset & 3) + size <= 4,
              size == 1 || size == 2 || size == 4, offset + size <= PciConfigSpace.size else { return }
        dev.configWrite(offset: offset, size: size, value: value)
    }

    /// Decodes CONFIG_ADDRESS: enable bit 31, bus 23:16, device 15:11, function 10:8, register 7:2.
    private func decodedAddress() -> (PciAddress, Int)? {
        guard configAddress & 0x8000_0000 != 0 else { return nil }
        let a = PciAddress(bus: UInt8(truncatingIfNeeded: configAddress >> 16),
                           device: UInt8(truncatingIfNeeded: (configAddress >> 11) & 0x1F),
                           function: UInt8(truncatingIfNeeded: (configAddress >> 8) & 0x7))
        return (a, Int(configAddress & 0xFC))
    }

    // MARK: BusDevice (ports 0xCF8-0xCFF)

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 1 where size == 1:
            return UInt64(resetControl)
        case 0..<4:
            // Word reads of CONFIG_ADDRESS see the matching bytes; Linux only uses dwords.
            guard Int(offset) + size <= 4 else { return allOnes(size: size) }
            return UInt64(configAddress >> (8 * UInt32(offset))) & allOnes(size: size)
        case 4..<8:
            let lane = Int(offset - 4)
            guard lane + size <= 4, let (addr, reg) = decodedAddress() else { return allOnes(size: size) }
            return UInt64(configRead(addr, offset: reg + lane, size: size))
        default:
            return allOnes(size: size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case 0:
            // Only dword writes latch CONFIG_ADDRESS: Linux's probe pokes a byte at 0xCFB first
            // (a mechanism #2 chipset register) and expects it to be ignored here.
            if size == 4 { configAddress = UInt32(truncatingIfNeeded: value) }
        case 1 where size == 1:
            let v = UInt8(truncatingIfNeeded: value)
            // Bit 2 (reset CPU) going 0 -> 1 starts the reset; bit 1 picks hard/soft, same for us.
            let start = v & 0x04 != 0 && resetControl & 0x04 == 0
            resetControl = v & 0x0E
            if start { resetControl &= ~0x04; onResetRequest?() }
        case 4..<8:
            let lane = Int(offset - 4)
            guard lane + size <= 4, let (addr, reg) = decodedAddress() else { return }
            configWrite(addr, offset: reg + lane, size: size, value: UInt32(truncatingIfNeeded: value))
        default:
            break
        }
    }

    // MARK: MMIO routing

    /// The bus device to register on the MMIO bus at `mmioBase`, length `mmioSize`.
    public var mmioWindow: BusDevice { PciMmioWindow(root: self) }

    /// The device and BAR decoding guest-physical `address`, honouring memory-enable.
    @inline(__always)
    private func route(_ address: UInt64) -> (PciDevice, Int, UInt64)? {
        for case let dev? in slots {
            let cfg = dev.config
            guard cfg.command.contains(.memorySpace) else { continue }
            for case let bar? in cfg.bars {
                guard let base = cfg.barAddress(bar.index) else { continue }
                if address >= base && address - base < bar.size { return (dev, bar.index, address - base) }
            }
        }
        return nil
    }

    /// An MMIO read at guest-physical `address`; nothing there reads all-ones.
    public func mmioRead(_ address: UInt64, size: Int) -> UInt64 {
        guard let (dev, bar, off) = route(address) else { return allOnes(size: size) }
        return dev.barRead(bar, offset: off, size: size)
    }

    public func mmioWrite(_ address: UInt64, size: Int, value: UInt64) {
        guard let (dev, bar, off) = route(address) else { return }
        dev.barWrite(bar, offset: off, size: size, value: value)
    }
}

/// The PCI MMIO window as one bus device. Holds the root strongly; the root does not hold it.
final class PciMmioWindow: BusDevice {
    let root: PciRoot
    init(root: PciRoot) { self.root = root }
    func read(offset: UInt64, size: Int) -> UInt64 { root.mmioRead(root.mmioBase &+ offset, size: size) }
    func write(offset: UInt64, size: Int, value: UInt64) {
        root.mmioWrite(root.mmioBase &+ offset, size: size, value: value)
    }
}

// MARK: State

extension PciRoot {
    /// CONFIG_ADDRESS, the reset control register and the host bridge's configuration space. The
    /// functions in the other slots save their own state.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var configAddress: UInt32
        public var resetControl: UInt8
        public var hostBridge: PciConfigSpace.State
    }

    public func captureState() -> State {
        State(configAddress: configAddress, resetControl: resetControl,
              hostBridge: slots[0]?.config.captureState() ?? PciConfigSpace.State(bytes: []))
    }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "PCI root")
        guard s.resetControl & ~0x0E == 0 else { throw .invalid(device: "PCI root", reason: "reset control register") }
        try slots[0]?.config.restoreState(s.hostBridge)
        (configAddress, resetControl) = (s.configAddress, s.resetControl)
    }
}
