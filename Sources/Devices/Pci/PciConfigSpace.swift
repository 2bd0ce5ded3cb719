import VMCore

/// Offsets of the registers in a type 0 PCI configuration header (PCI Local Bus 3.0, section 6.1).
public enum PciConfigRegister {
    public static let vendorID = 0x00
    public static let deviceID = 0x02
    public static let command = 0x04
    public static let status = 0x06
    public static let revisionID = 0x08
    public static let progIF = 0x09
    public static let subclass = 0x0A
    public static let classCode = 0x0B
    public static let cacheLineSize = 0x0C
    public static let latencyTimer = 0x0D
    public static let headerType = 0x0E
    public static let bar0 = 0x10
    public static let subsystemVendorID = 0x2C
    public static let subsystemID = 0x2E
    public static let expansionROM = 0x30
    public static let capabilitiesPointer = 0x34
    public static let interruptLine = 0x3C
    public static let interruptPin = 0x3D
}

/// Bits of the command register.
public struct PciCommand: OptionSet, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let ioSpace = PciCommand(rawValue: 1 << 0)
    public static let memorySpace = PciCommand(rawValue: 1 << 1)
    public static let busMaster = PciCommand(rawValue: 1 << 2)
    public static let parityErrorResponse = PciCommand(rawValue: 1 << 6)
    public static let serrEnable = PciCommand(rawValue: 1 << 8)
    public static let interruptDisable = PciCommand(rawValue: 1 << 10)
}

/// Capability IDs used here.
public enum PciCapabilityID {
    public static let vendorSpecific: UInt8 = 0x09
    public static let msix: UInt8 = 0x11
}

/// The kind of a base address register. Only memory BARs: swhv's devices need no I/O BARs.
public enum PciBarKind: Sendable, Equatable {
    case memory32
    case memory64
}

/// A BAR a device declared: its index (0-5; a 64-bit BAR also uses index+1), size and kind.
public struct PciBar: Sendable, Equatable {
    public let index: Int
    /// A power of two, at least 16 bytes.
    public let size: UInt64
    public let kind: PciBarKind
    public let prefetchable: Bool
}

/// Errors building a PCI function or placing it on the root bus. These are configuration errors of
/// swhv itself (never guest-triggered).
public enum PciError: Error, Equatable, CustomStringConvertible {
    case invalidBar(index: Int, size: UInt64)
    case capabilitySpaceFull(needed: Int)
    case noFreeSlot
    case mmioWindowFull(device: String, needed: UInt64)

    public var description: String {
        switch self {
        case .invalidBar(let i, let s):
            return "PCI BAR \(i) of size \(hex(s)) is invalid (index 0-5, power-of-two size >= 16)"
        case .capabilitySpaceFull(let n):
            return "PCI configuration space has no room for a \(n)-byte capability"
        case .noFreeSlot: return "PCI bus 0 has no free device slot (32 slots)"
        case .mmioWindowFull(let d, let n):
            return "PCI MMIO window has no room for \(d) (needs \(hex(n)) bytes)"
        }
    }
}

/// The 256-byte configuration space of one PCI function with per-byte write masks.
///
/// Guest writes only change the bits the mask allows, which gives BAR sizing for free: after the
/// guest writes all-ones to a BAR, the read-back shows exactly the writable address bits, i.e. the size.
public final class PciConfigSpace {
    public static let size = 256
    /// Where capabilities start: right after the standard header.
    static let firstCapabilityOffset = 0x40

    private var bytes = [UInt8](repeating: 0, count: PciConfigSpace.size)
    private var writeMask = [UInt8](repeating: 0, count: PciConfigSpace.size)
    /// Declared BARs by index (nil = unused; the upper half of a 64-bit BAR is nil too).
    public private(set) var bars = [PciBar?](repeating: nil, count: 6)
    /// BAR registers in use, including the upper halves of 64-bit BARs.
    private var barRegisterUsed = [Bool](repeating: false, count: 6)
    private var lastCapability: Int?
    private var nextCapabilityOffset = PciConfigSpace.firstCapabilityOffset

    public init(vendorID: UInt16, deviceID: UInt16, revisionID: UInt8 = 0,
                classCode: UInt8, subclass: UInt8, progIF: UInt8 = 0,
                subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0, headerType: UInt8 = 0) {
        set16(PciConfigRegister.vendorID, vendorID)
        set16(PciConfigRegister.deviceID, deviceID)
        bytes[PciConfigRegister.revisionID] = revisionID
        bytes[PciConfigRegister.progIF] = progIF
        bytes[PciConfigRegister.subclass] = subclass
        bytes[PciConfigRegister.classCode] = classCode
        bytes[PciConfigRegister.headerType] = headerType
        set16(PciConfigRegister.subsystemVendorID, subsystemVendorID)
        set16(PciConfigRegister.subsystemID, subsystemID)
        let cmd = PciCommand([.ioSpace, .memorySpace, .busMaster, .parityErrorResponse, .serrEnable,
                              .interruptDisable]).rawValue
        setMask(PciConfigRegister.command, width: 2, UInt64(cmd))
        // Cache line size and latency timer are plain storage; Linux writes and reads them back.
        writeMask[PciConfigRegister.cacheLineSize] = 0xFF
        writeMask[PciConfigRegister.latencyTimer] = 0xFF
        writeMask[PciConfigRegister.interruptLine] = 0xFF
    }

    // MARK: Guest access

    /// A guest read of `size` (1, 2 or 4) bytes. Accesses outside the 256 bytes read as all-ones.
    public func read(offset: Int, size: Int) -> UInt32 {
        guard size == 1 || size == 2 || size == 4, offset >= 0, offset <= PciConfigSpace.size - size else {
            return UInt32.max
        }
        var v: UInt32 = 0
        for i in 0..<size { v |= UInt32(bytes[offset + i]) << (8 * UInt32(i)) }
        return v
    }

    /// A guest write: only bits set in the write mask change.
    public func write(offset: Int, size: Int, value: UInt32) {
        guard size == 1 || size == 2 || size == 4, offset >= 0, offset <= PciConfigSpace.size - size else {
            return
        }
        for i in 0..<size {
            let b = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))
            let m = writeMask[offset + i]
            bytes[offset + i] = (bytes[offset + i] & ~m) | (b & m)
        }
    }

    // MARK: Device-side access (bypasses the write masks)

    public func get8(_ offset: Int) -> UInt8 { bytes[offset] }
    public func get16(_ offset: Int) -> UInt16 { UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8 }
    public func get32(_ offset: Int) -> UInt32 { UInt32(get16(offset)) | UInt32(get16(offset + 2)) << 16 }
    public func set8(_ offset: Int, _ v: UInt8) { bytes[offset] = v }
    public func set16(_ offset: Int, _ v: UInt16) {
        bytes[offset] = UInt8(truncatingIfNeeded: v); bytes[offset + 1] = UInt8(truncatingIfNeeded: v >> 8)
    }
    public func set32(_ offset: Int, _ v: UInt32) {
        set16(offset, UInt16(truncatingIfNeeded: v)); set16(offset + 2, UInt16(truncatingIfNeeded: v >> 16))
    }
    /// Makes the bits of `mask` (a `width`-byte little-endian field at `offset`) guest-writable.
    public func setMask(_ offset: Int, width: Int, _ mask: UInt64) {
        for i in 0..<width { writeMask[offset + i] = UInt8(truncatingIfNeeded: mask >> (8 * UInt64(i))) }
    }

    public var command: PciCommand { PciCommand(rawValue: get16(PciConfigRegister.command)) }

    public var interruptLine: UInt8 {
        get { bytes[PciConfigRegister.interruptLine] }
        set { bytes[PciConfigRegister.interruptLine] = newValue }
    }
    /// 0 = no INTx pin, 1-4 = INTA#-INTD#.
    public var interruptPin: UInt8 {
        get { bytes[PciConfigRegister.interruptPin] }
        set { bytes[PciConfigRegister.interruptPin] = newValue }
    }

    // MARK: BARs

    /// Declares BAR `index`. Its address bits become guest-writable; the low bits encode the kind.
    public func addBar(index: Int, size: UInt64, kind: PciBarKind, prefetchable: Bool = false) throws(PciError) {
        let last = kind == .memory64 ? index + 1 : index
        guard index >= 0, last < 6, size >= 16, size & (size - 1) == 0,
              kind == .memory64 || size <= 0x8000_0000,
              !barRegisterUsed[index], !barRegisterUsed[last] else {
            throw PciError.invalidBar(index: index, size: size)
        }
        let off = PciConfigRegister.bar0 + 4 * index
        let flags: UInt32 = (kind == .memory64 ? 0b100 : 0) | (prefetchable ? 0b1000 : 0)
        let addressMask = ~(size - 1)
        set32(off, flags)
        setMask(off, width: 4, addressMask & 0xFFFF_FFF0)
        if kind == .memory64 {
            set32(off + 4, 0)
            setMask(off + 4, width: 4, addressMask >> 32)
        }
        bars[index] = PciBar(index: index, size: size, kind: kind, prefetchable: prefetchable)
        barRegisterUsed[index] = true
        barRegisterUsed[last] = true
    }

    /// The guest-physical address BAR `index` currently decodes (whatever the guest last programmed).
    public func barAddress(_ index: Int) -> UInt64? {
        guard index >= 0, index < 6, let bar = bars[index] else { return nil }
        let off = PciConfigRegister.bar0 + 4 * index
        var a = UInt64(get32(off) & 0xFFFF_FFF0)
        if bar.kind == .memory64 { a |= UInt64(get32(off + 4)) << 32 }
        return a
    }

    /// Firmware's job: programs BAR `index` with `address` (must be aligned to the BAR size).
    public func setBarAddress(_ index: Int, _ address: UInt64) {
        guard index >= 0, index < 6, let bar = bars[index] else { return }
        let off = PciConfigRegister.bar0 + 4 * index
        let aligned = address & ~(bar.size - 1)
        set32(off, (get32(off) & 0xF) | UInt32(truncatingIfNeeded: aligned & 0xFFFF_FFF0))
        if bar.kind == .memory64 { set32(off + 4, UInt32(truncatingIfNeeded: aligned >> 32)) }
    }

    // MARK: Capabilities

    /// Appends a capability (`id`, then `body`, which excludes the ID and next-pointer bytes) to the
    /// capability list and returns its offset. `bodyWriteMask`, if given, marks guest-writable body bits.
    @discardableResult
    public func addCapability(id: UInt8, body: [UInt8], bodyWriteMask: [UInt8]? = nil) throws(PciError) -> Int {
        let length = 2 + body.count
        let offset = nextCapabilityOffset
        guard offset + length <= PciConfigSpace.size else { throw PciError.capabilitySpaceFull(needed: length) }
        bytes[offset] = id
        bytes[offset + 1] = 0
        for (i, b) in body.enumerated() { bytes[offset + 2 + i] = b }
        if let m = bodyWriteMask {
            for (i, b) in m.prefix(body.count).enumerated() { writeMask[offset + 2 + i] = b }
        }
        if let prev = lastCapability {
            bytes[prev + 1] = UInt8(offset)
        } else {
            bytes[PciConfigRegister.capabilitiesPointer] = UInt8(offset)
            // Status bit 4: the capability list is valid.
            set16(PciConfigRegister.status, get16(PciConfigRegister.status) | 0x10)
        }
        lastCapability = offset
        nextCapabilityOffset = (offset + length + 3) & ~3
        return offset
    }
}

// MARK: State

extension PciConfigSpace: StatefulDevice {
    /// The 256 bytes as the guest reads them.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var bytes: [UInt8]
    }

    public func captureState() -> State { State(bytes: bytes) }

    /// Only guest-writable bits can differ between a device and its saved self (everything else was
    /// fixed when the device was built): a state whose read-only bits differ is another device's.
    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "PCI configuration space")
        guard s.bytes.count == PciConfigSpace.size else {
            throw .invalid(device: "PCI configuration space", reason: "\(s.bytes.count) bytes")
        }
        for i in 0..<PciConfigSpace.size where (s.bytes[i] ^ bytes[i]) & ~writeMask[i] != 0 {
            throw .mismatch(device: "PCI configuration space",
                            reason: "read-only byte \(hex(i)) is \(hex(s.bytes[i])), this device has \(hex(bytes[i]))")
        }
        bytes = s.bytes
    }
}
