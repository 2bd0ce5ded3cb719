import VMCore

/// An 82093AA-style I/O APIC (version 0x11, 24 pins): the interrupt router of an SMP PC. Each input
/// pin has a 64-bit redirection entry (vector, delivery mode, destination, polarity, trigger, mask);
/// an asserted pin becomes an interrupt message to the local APICs, sent through `deliver` in MSI form
/// (address 0xFEE0_0000 | destination << 12 | logical << 2, data vector | mode << 8 | level << 15),
/// the same path a device's MSI takes.
///
/// Edge-triggered pins send one message per rising edge. Level-triggered pins send one while
/// asserted and set Remote IRR; the local APIC's EOI of that vector (`endOfInterrupt`, broadcast by
/// the interpreter's local APIC for vectors it accepted as level-triggered) clears it, and a pin
/// still asserted then sends again. Pin levels are logical (asserted or not): the polarity bit is
/// kept for the guest to read back, as QEMU and KVM do.
///
/// Register access is indirect: IOREGSEL (offset 0x00) selects, IOWIN (0x10) reads and writes.
/// Any value the guest writes is accepted (reserved and read-only bits ignored): a guest that
/// reprograms it wildly gets interrupts where it asked for them, or none, and nothing else.
public final class IOAPIC: BusDevice, StatefulDevice {
    public static let pinCount = 24
    static let version: UInt32 = 0x11
    public static let mmioLength: UInt64 = 0x1000

    /// Where interrupt messages go: (MSI address, MSI data).
    public var deliver: (UInt64, UInt32) -> Void
    public private(set) var id: UInt8 = 0
    public private(set) var registerSelect: UInt8 = 0
    /// Redirection table; bit 12 (delivery status) always reads 0 (delivery is immediate), bit 14 is
    /// Remote IRR.
    public private(set) var redirection = [UInt64](repeating: IOAPIC.maskBit, count: IOAPIC.pinCount)
    /// Current level of each input pin (bit n: pin n asserted).
    public private(set) var pinLevels: UInt32 = 0
    /// Messages sent, for diagnostics and tests.
    public private(set) var messagesSent: UInt64 = 0

    static let maskBit: UInt64 = 1 << 16
    static let levelBit: UInt64 = 1 << 15
    static let remoteIRRBit: UInt64 = 1 << 14
    /// Bits the guest may write: vector, delivery mode, destination mode, polarity, trigger, mask,
    /// destination.
    static let writable: UInt64 = 0xFF00_0000_0001_AFFF

    public init(deliver: @escaping (UInt64, UInt32) -> Void = { _, _ in }) {
        self.deliver = deliver
    }

    // MARK: Pins

    /// Sets the level of input `pin` (pins past 23 do not exist and are ignored).
    public func setPin(_ pin: Int, level: Bool) {
        guard pin >= 0 && pin < IOAPIC.pinCount else { return }
        let bit = UInt32(1) << UInt32(truncatingIfNeeded: pin)
        let was = pinLevels & bit != 0
        if level { pinLevels |= bit } else { pinLevels &= ~bit }
        guard level else { return }
        let entry = redirection[pin]
        if entry & IOAPIC.levelBit != 0 {
            service(pin)
        } else if !was {
            send(pin)   // rising edge
        }
    }

    /// The local APIC retired `vector`, which it had accepted as level-triggered: level pins with
    /// that vector drop Remote IRR and, still asserted, send again.
    public func endOfInterrupt(vector: UInt8) {
        for pin in 0..<IOAPIC.pinCount {
            let e = redirection[pin]
            guard e & IOAPIC.levelBit != 0, e & IOAPIC.remoteIRRBit != 0, UInt8(truncatingIfNeeded: e) == vector else {
                continue
            }
            redirection[pin] &= ~IOAPIC.remoteIRRBit
            service(pin)
        }
    }

    /// A level pin that is asserted, unmasked and not awaiting EOI sends its message.
    private func service(_ pin: Int) {
        let e = redirection[pin]
        guard e & IOAPIC.levelBit != 0, pinLevels & (1 << UInt32(truncatingIfNeeded: pin)) != 0, e & IOAPIC.remoteIRRBit == 0,
              e & IOAPIC.maskBit == 0 else { return }
        redirection[pin] |= IOAPIC.remoteIRRBit
        send(pin)
    }

    private func send(_ pin: Int) {
        let e = redirection[pin]
        guard e & IOAPIC.maskBit == 0 else { return }
        let (address, data) = IOAPIC.message(for: e)
        messagesSent &+= 1
        deliver(address, data)
    }

    /// The MSI-format message of a redirection entry.
    static func message(for e: UInt64) -> (UInt64, UInt32) {
        let destination = (e >> 56) & 0xFF
        let logical = (e >> 11) & 1
        let address = 0xFEE0_0000 | destination << 12 | logical << 2
        let level = UInt32(truncatingIfNeeded: (e >> 15) & 1)
        // Data: vector, delivery mode (bits 8-10), assert (14), trigger mode (15).
        let data = UInt32(truncatingIfNeeded: e & 0x7FF) | 1 << 14 | level << 15
        return (address, data)
    }

    // MARK: Registers

    public func read(offset: UInt64, size: Int) -> UInt64 {
        let v: UInt32
        switch offset {
        case 0x00: v = UInt32(registerSelect)
        case 0x10: v = readRegister(registerSelect)
        default: v = 0
        }
        return UInt64(v) & allOnes(size: size)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let v = UInt32(truncatingIfNeeded: value)
        switch offset {
        case 0x00: registerSelect = UInt8(truncatingIfNeeded: v)
        case 0x10: writeRegister(registerSelect, v)
        default: break
        }
    }

    func readRegister(_ index: UInt8) -> UInt32 {
        switch index {
        case 0x00: return UInt32(id & 0xF) << 24
        case 0x01: return UInt32(truncatingIfNeeded: IOAPIC.pinCount - 1) << 16 | IOAPIC.version
        case 0x02: return UInt32(id & 0xF) << 24   // arbitration id
        case 0x10..<(0x10 + 2 * UInt8(truncatingIfNeeded: IOAPIC.pinCount)):
            let pin = Int(index - 0x10) >> 1
            let e = redirection[pin]
            return index & 1 == 0 ? UInt32(truncatingIfNeeded: e) : UInt32(truncatingIfNeeded: e >> 32)
        default: return 0
        }
    }

    func writeRegister(_ index: UInt8, _ v: UInt32) {
        switch index {
        case 0x00: id = UInt8(truncatingIfNeeded: v >> 24) & 0xF
        case 0x10..<(0x10 + 2 * UInt8(truncatingIfNeeded: IOAPIC.pinCount)):
            let pin = Int(index - 0x10) >> 1
            let old = redirection[pin]
            var e: UInt64 = index & 1 == 0
                ? (old & 0xFFFF_FFFF_0000_0000) | UInt64(v)
                : (old & 0xFFFF_FFFF) | UInt64(v) << 32
            e = (e & IOAPIC.writable) | (old & IOAPIC.remoteIRRBit)
            // An edge-triggered entry has no Remote IRR (a guest switching a pin to edge drops it).
            if e & IOAPIC.levelBit == 0 { e &= ~IOAPIC.remoteIRRBit }
            redirection[pin] = e
            // Unmasking (or switching to level) an asserted level pin sends it, as hardware does.
            service(pin)
        default: break   // ID is the only other writable register; version and arbitration are read-only
        }
    }

    // MARK: State

    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var id: UInt8
        public var registerSelect: UInt8
        public var redirection: [UInt64]
        public var pinLevels: UInt32
    }

    public func captureState() -> State {
        State(id: id, registerSelect: registerSelect, redirection: redirection, pinLevels: pinLevels)
    }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "ioapic")
        guard s.id <= 0xF else { throw .invalid(device: "ioapic", reason: "id \(s.id) is wider than 4 bits") }
        guard s.redirection.count == IOAPIC.pinCount else {
            throw .invalid(device: "ioapic", reason: "\(s.redirection.count) redirection entries, expected \(IOAPIC.pinCount)")
        }
        guard s.pinLevels >> UInt32(truncatingIfNeeded: IOAPIC.pinCount) == 0 else {
            throw .invalid(device: "ioapic", reason: "levels set on pins that do not exist")
        }
        for e in s.redirection where e & ~(IOAPIC.writable | IOAPIC.remoteIRRBit) != 0 {
            throw .invalid(device: "ioapic", reason: "redirection entry \(hex(e)) has reserved bits set")
        }
        id = s.id
        registerSelect = s.registerSelect
        redirection = s.redirection
        pinLevels = s.pinLevels
    }
}
