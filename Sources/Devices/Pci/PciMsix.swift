import VMCore

/// An MSI-X capability with its vector table and pending-bit array (PCI Local Bus 3.0, 6.8.2).
///
/// The table and PBA live in a memory BAR of the owning device, which forwards accesses here.
/// MSI-X needs only a local APIC: a vector's message (address, data) goes straight to
/// `InterruptController.signalMSI`. A masked vector latches its pending bit and fires on unmask.
public final class PciMsix {
    /// Message control bits.
    static let controlEnable: UInt16 = 1 << 15
    static let controlFunctionMask: UInt16 = 1 << 14
    /// Bytes per table entry: address low, address high, data, vector control.
    public static let entrySize = 16

    public let vectorCount: Int
    /// Offset of the capability in config space.
    public let capabilityOffset: Int
    private let controller: any InterruptController
    private var table: [UInt32]
    private var pending: [Bool]
    public private(set) var enabled = false
    public private(set) var functionMasked = false

    /// Adds the MSI-X capability to `config`. `tableBar`/`tableOffset` and `pbaBar`/`pbaOffset` say where
    /// the device maps the table and PBA (offsets 8-byte aligned). `vectorCount` is clamped to 1...2048.
    public init(config: PciConfigSpace, vectorCount: Int, tableBar: Int, tableOffset: UInt32,
                pbaBar: Int, pbaOffset: UInt32, controller: any InterruptController) throws(PciError) {
        let n = min(max(vectorCount, 1), 2048)
        self.vectorCount = n
        self.controller = controller
        table = [UInt32](repeating: 0, count: 4 * n)
        // Every vector starts masked (vector control bit 0 resets to 1).
        for i in 0..<n { table[4 * i + 3] = 1 }
        pending = [Bool](repeating: false, count: n)
        let control = UInt16(n - 1)
        let tableReg = (tableOffset & ~7) | UInt32(tableBar & 7)
        let pbaReg = (pbaOffset & ~7) | UInt32(pbaBar & 7)
        var body: [UInt8] = [UInt8(truncatingIfNeeded: control), UInt8(truncatingIfNeeded: control >> 8)]
        for v in [tableReg, pbaReg] { for i in 0..<4 { body.append(UInt8(truncatingIfNeeded: v >> (8 * UInt32(i)))) } }
        // Only the enable and function-mask bits are guest-writable.
        let mask: [UInt8] = [0x00, 0xC0, 0, 0, 0, 0, 0, 0, 0, 0]
        capabilityOffset = try config.addCapability(id: PciCapabilityID.msix, body: body, bodyWriteMask: mask)
    }

    /// Size in bytes of the vector table and of the PBA.
    public var tableSize: UInt64 { UInt64(vectorCount * PciMsix.entrySize) }
    public var pbaSize: UInt64 { UInt64((vectorCount + 63) / 64 * 8) }

    /// Re-reads enable/function-mask after a config write and fires vectors that became deliverable.
    public func controlChanged(_ config: PciConfigSpace) {
        let control = config.get16(capabilityOffset + 2)
        enabled = control & PciMsix.controlEnable != 0
        functionMasked = control & PciMsix.controlFunctionMask != 0
        deliverPending()
    }

    // MARK: Table and PBA access (offsets relative to their start)

    public func readTable(offset: UInt64, size: Int) -> UInt64 {
        guard offset < tableSize, let (index, lane) = PciMsix.dwordLane(offset, size),
              index + (size == 8 ? 1 : 0) < table.count else { return allOnes(size: size) }
        if size == 8 { return UInt64(table[index]) | UInt64(table[index + 1]) << 32 }
        return UInt64(table[index] >> (8 * UInt32(lane))) & allOnes(size: size)
    }

    public func writeTable(offset: UInt64, size: Int, value: UInt64) {
        guard offset < tableSize, let (index, lane) = PciMsix.dwordLane(offset, size),
              index + (size == 8 ? 1 : 0) < table.count else { return }
        if size == 8 {
            storeDword(index, UInt32(truncatingIfNeeded: value))
            storeDword(index + 1, UInt32(truncatingIfNeeded: value >> 32))
        } else {
            let shift = 8 * UInt32(lane)
            let m = UInt32(truncatingIfNeeded: allOnes(size: size)) << shift
            storeDword(index, (table[index] & ~m) | ((UInt32(truncatingIfNeeded: value) << shift) & m))
        }
        deliverPending()
    }

    private func storeDword(_ index: Int, _ v: UInt32) {
        switch index & 3 {
        case 0: table[index] = v & ~3           // message address is dword aligned
        case 3: table[index] = v & 1            // only the mask bit is defined
        default: table[index] = v
        }
    }

    public func readPba(offset: UInt64, size: Int) -> UInt64 {
        guard offset < pbaSize, let (index, lane) = PciMsix.dwordLane(offset, size) else { return allOnes(size: size) }
        func dword(_ i: Int) -> UInt32 {
            var v: UInt32 = 0
            for bit in 0..<32 where i * 32 + bit < vectorCount && pending[i * 32 + bit] { v |= 1 << UInt32(bit) }
            return v
        }
        if size == 8 { return UInt64(dword(index)) | UInt64(dword(index + 1)) << 32 }
        return UInt64(dword(index) >> (8 * UInt32(lane))) & allOnes(size: size)
    }

    /// Splits an access into (dword index, byte lane). Accesses must be naturally aligned.
    private static func dwordLane(_ offset: UInt64, _ size: Int) -> (Int, Int)? {
        guard size == 1 || size == 2 || size == 4 || size == 8, offset % UInt64(size) == 0 else { return nil }
        return (Int(offset / 4), Int(offset % 4))
    }

    // MARK: Signalling

    public func isMasked(_ vector: Int) -> Bool {
        guard vector >= 0, vector < vectorCount else { return true }
        return functionMasked || table[4 * vector + 3] & 1 != 0
    }

    public func isPending(_ vector: Int) -> Bool {
        vector >= 0 && vector < vectorCount && pending[vector]
    }

    /// Sends `vector`'s message, or latches it pending while masked. Does nothing for an
    /// out-of-range vector or while MSI-X is disabled (the device then uses INTx).
    public func signal(_ vector: Int) {
        guard enabled, vector >= 0, vector < vectorCount else { return }
        if isMasked(vector) { pending[vector] = true; return }
        send(vector)
    }

    private func send(_ vector: Int) {
        let address = UInt64(table[4 * vector]) | UInt64(table[4 * vector + 1]) << 32
        controller.signalMSI(address: address, data: table[4 * vector + 2])
    }

    private func deliverPending() {
        guard enabled, !functionMasked else { return }
        for v in 0..<vectorCount where pending[v] && !isMasked(v) {
            pending[v] = false
            send(v)
        }
    }
}

// MARK: State

extension PciMsix {
    /// The vector table (4 dwords per vector) and the pending bits. Enable and function mask live in
    /// the configuration space.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var table: [UInt32]
        public var pending: [Bool]
    }

    public func captureState() -> State { State(table: table, pending: pending) }

    /// Restores the table and pending bits and re-reads enable/mask from `config` (restored first),
    /// without sending anything: pending vectors wait for the guest to unmask them, as they did.
    public func restoreState(_ s: State, config: PciConfigSpace) throws(DeviceStateError) {
        try s.checkVersion(device: "MSI-X")
        guard s.table.count == 4 * vectorCount, s.pending.count == vectorCount else {
            throw .mismatch(device: "MSI-X", reason: "\(s.pending.count) vectors saved, this function has \(vectorCount)")
        }
        // What storeDword lets the guest write: dword-aligned addresses, only the mask bit of control.
        for v in 0..<vectorCount where s.table[4 * v] & 3 != 0 || s.table[4 * v + 3] & ~1 != 0 {
            throw .invalid(device: "MSI-X", reason: "vector \(v) has reserved bits set")
        }
        table = s.table
        pending = s.pending
        let control = config.get16(capabilityOffset + 2)
        enabled = control & PciMsix.controlEnable != 0
        functionMasked = control & PciMsix.controlFunctionMask != 0
    }
}
