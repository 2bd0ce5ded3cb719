import VMCore

/// One 8259A: the register state of a single chip. The pair wires two of them in the PC cascade.
/// As a value it is also the chip's saved state (`Pic8259Pair.State`).
public struct Pic8259Chip: Codable, Equatable, Sendable {
    /// Interrupt request register: latched requests waiting for INTA.
    var irr: UInt8 = 0
    /// Interrupt mask register (OCW1).
    var imr: UInt8 = 0
    /// In-service register: acknowledged, not yet EOI'd.
    var isr: UInt8 = 0
    /// Input line levels as last set.
    var lineLevel: UInt8 = 0
    /// Lines whose current high level has already produced an edge request. ICW1 clears it (the
    /// datasheet's "edge sense circuit is reset"), so a device re-asserting a held line is heard again.
    var edgeSeen: UInt8 = 0
    /// Edge/level control register (ports 0x4D0/0x4D1); 1 = level triggered.
    var elcr: UInt8 = 0
    /// ELCR bits that exist: IRQ 0, 1, 2, 8 and 13 are always edge triggered on a PC.
    let elcrMask: UInt8
    let isMaster: Bool

    /// Rotation: the IR level with the highest priority is `priorityAdd` (0 after init).
    var priorityAdd: UInt8 = 0
    /// ICW2: vector of IR0 (low 3 bits are ignored).
    var vectorBase: UInt8 = 0
    /// 0 = operational; 1/2/3 = waiting for ICW2/ICW3/ICW4.
    var initState = 0
    var needICW4 = false
    var singleMode = false
    /// ICW1 LTIM: every input level triggered regardless of ELCR.
    var levelTriggeredAll = false
    var autoEOI = false
    var rotateOnAutoEOI = false
    var specialFullyNested = false
    var specialMask = false
    /// OCW3 RR/RIS: reads of the command port return ISR (true) or IRR (false).
    var readISR = false
    /// OCW3 P: the next read is a poll (acknowledge) cycle.
    var poll = false

    init(isMaster: Bool) {
        self.isMaster = isMaster
        elcrMask = isMaster ? 0xF8 : 0xDE
    }

    var levelMask: UInt8 { levelTriggeredAll ? 0xFF : elcr }

    /// Priority rank (0 = highest) of the highest-priority bit in `mask`, or 8 if none.
    func priority(of mask: UInt8) -> Int {
        if mask == 0 { return 8 }
        var p = 0
        while mask & (1 << ((UInt8(p) &+ priorityAdd) & 7)) == 0 { p += 1 }
        return p
    }

    /// The IR level this chip would present on INT, or nil: the highest unmasked request that outranks
    /// everything in service.
    func pendingIRQ() -> Int? {
        let request = priority(of: irr & ~imr)
        if request == 8 { return nil }
        var inService = isr
        // Special mask mode: masked in-service levels no longer block lower priorities.
        if specialMask { inService &= ~imr }
        // Special fully nested mode: the cascade input may interrupt itself (another slave request).
        if specialFullyNested && isMaster { inService &= ~(1 << 2) }
        guard request < priority(of: inService) else { return nil }
        return Int((UInt8(request) &+ priorityAdd) & 7)
    }

    mutating func setInput(_ irq: Int, level: Bool) {
        let bit = UInt8(1) << UInt8(irq & 7)
        if levelMask & bit != 0 {
            if level { irr |= bit } else { irr &= ~bit }
        } else if level && edgeSeen & bit == 0 {
            irr |= bit
        }
        if level {
            lineLevel |= bit; edgeSeen |= bit
        } else {
            lineLevel &= ~bit; edgeSeen &= ~bit
        }
    }

    /// The INTA cycle for `irq` on this chip.
    mutating func acknowledge(_ irq: Int) {
        let bit = UInt8(1) << UInt8(irq & 7)
        if autoEOI {
            if rotateOnAutoEOI { priorityAdd = UInt8((irq + 1) & 7) }
        } else {
            isr |= bit
        }
        // A level-triggered request stays in IRR while its line is high.
        if levelMask & bit == 0 { irr &= ~bit }
    }

    mutating func writeCommand(_ value: UInt8) {
        if value & 0x10 != 0 {
            // ICW1 resets the chip and starts the init sequence.
            // ELCR and the input lines are outside the chip's init logic; pending edges are forgotten,
            // requests on level-triggered lines that are still high survive.
            let (keepELCR, keepLines) = (elcr, lineLevel)
            self = Pic8259Chip(isMaster: isMaster)
            elcr = keepELCR
            lineLevel = keepLines
            initState = 1
            needICW4 = value & 0x01 != 0
            singleMode = value & 0x02 != 0
            levelTriggeredAll = value & 0x08 != 0
            irr = lineLevel & levelMask
            return
        }
        if value & 0x08 != 0 {
            // OCW3
            if value & 0x04 != 0 { poll = true }
            if value & 0x02 != 0 { readISR = value & 0x01 != 0 }
            if value & 0x40 != 0 { specialMask = value & 0x20 != 0 }
            return
        }
        // OCW2: R SL EOI in bits 7-5, level in bits 2-0.
        let level = Int(value & 7)
        switch value >> 5 {
        case 0: rotateOnAutoEOI = false        // clear rotate in automatic EOI mode
        case 4: rotateOnAutoEOI = true         // set rotate in automatic EOI mode
        case 1, 5:                             // non-specific EOI (5: and rotate)
            let p = priority(of: isr)
            if p != 8 {
                let irq = (p + Int(priorityAdd)) & 7
                isr &= ~(1 << UInt8(irq))
                if value >> 5 == 5 { priorityAdd = UInt8((irq + 1) & 7) }
            }
        case 3:                                // specific EOI
            isr &= ~(1 << UInt8(level))
        case 6:                                // set priority: `level` becomes the lowest
            priorityAdd = UInt8((level + 1) & 7)
        case 7:                                // specific EOI and rotate
            isr &= ~(1 << UInt8(level))
            priorityAdd = UInt8((level + 1) & 7)
        default:                               // 2: no operation
            break
        }
    }

    mutating func writeData(_ value: UInt8) {
        switch initState {
        case 1:
            vectorBase = value & 0xF8
            initState = singleMode ? (needICW4 ? 3 : 0) : 2
        case 2:
            // ICW3: the PC wiring is fixed (slave on master IR2), so its contents do not matter.
            initState = needICW4 ? 3 : 0
        case 3:
            // ICW4: bit 4 SFNM, bit 1 AEOI. Bit 0 (8086 mode) is assumed; buffered mode is irrelevant.
            specialFullyNested = value & 0x10 != 0
            autoEOI = value & 0x02 != 0
            initState = 0
        default:
            imr = value                        // OCW1
        }
    }
}

/// The PC's cascaded pair of 8259A interrupt controllers (master at 0x20, slave at 0xA0 on master IR2)
/// with the ELCR edge/level registers at 0x4D0/0x4D1. It drives INTR of the interpreter's local APIC
/// (LINT0 in ExtINT mode). Called only on the vCPU thread.
public final class Pic8259Pair: ExternalInterrupts {
    /// The master's IR input the slave's INT output is wired to.
    public static let cascadeIRQ = 2

    var master = Pic8259Chip(isMaster: true)
    var slave = Pic8259Chip(isMaster: false)
    private var pendingCache = false

    public init() {}

    /// True when INTR is asserted. A cached flag, recomputed on every state change, so polling it per
    /// instruction block costs one load.
    public var interruptPending: Bool { pendingCache }

    /// Sets the level of ISA IRQ line `irq` (0-15). Edge-triggered inputs latch a request on a
    /// low-to-high transition; level-triggered ones (ELCR) request while high. IRQ 2 is the cascade and
    /// cannot be driven from outside; out-of-range numbers are ignored.
    public func setIRQ(_ irq: Int, level: Bool) {
        guard irq >= 0 && irq < 16 && irq != Pic8259Pair.cascadeIRQ else { return }
        if irq < 8 { master.setInput(irq, level: level) } else { slave.setInput(irq - 8, level: level) }
        update()
    }

    /// The INTA cycle: returns the vector of the highest-priority request and moves it to in-service.
    /// If the request went away before INTA (line lowered, masked), returns the spurious IR7 vector of
    /// the chip involved without setting any in-service bit, like the real part.
    public func acknowledge() -> UInt8 {
        let vector: UInt8
        if let irq = master.pendingIRQ() {
            if irq == Pic8259Pair.cascadeIRQ {
                if let sirq = slave.pendingIRQ() {
                    slave.acknowledge(sirq)
                    vector = slave.vectorBase | UInt8(sirq)
                } else {
                    vector = slave.vectorBase | 7      // spurious IRQ 15
                }
            } else {
                vector = master.vectorBase | UInt8(irq)
            }
            master.acknowledge(irq)
        } else {
            vector = master.vectorBase | 7             // spurious IRQ 7
        }
        update()
        return vector
    }

    /// Propagates the slave's INT to master IR2, then recomputes INTR.
    private func update() {
        master.setInput(Pic8259Pair.cascadeIRQ, level: slave.pendingIRQ() != nil)
        pendingCache = master.pendingIRQ() != nil
    }

    // MARK: Port access

    /// Which register window of the pair a `Pic8259Port` serves.
    public enum Window: Sendable {
        case master, slave, elcr
    }

    /// Reads one byte of a window: `index` is 0 or 1.
    public func readByte(_ window: Window, index: Int) -> UInt8 {
        switch window {
        case .elcr:
            return index == 0 ? master.elcr : slave.elcr
        case .master, .slave:
            let isMaster = window == .master
            let chip = isMaster ? master : slave
            if chip.poll {
                return pollRead(master: isMaster)
            }
            if index == 0 { return chip.readISR ? chip.isr : chip.irr }
            return chip.imr
        }
    }

    /// Writes one byte of a window: `index` is 0 or 1.
    public func writeByte(_ window: Window, index: Int, value: UInt8) {
        switch window {
        case .elcr:
            if index == 0 { setELCR(&master, value) } else { setELCR(&slave, value) }
        case .master:
            if index == 0 { master.writeCommand(value) } else { master.writeData(value) }
        case .slave:
            if index == 0 { slave.writeCommand(value) } else { slave.writeData(value) }
        }
        update()
    }

    private func setELCR(_ chip: inout Pic8259Chip, _ value: UInt8) {
        chip.elcr = value & chip.elcrMask
        // A line switched to level mode requests now if it is already high.
        chip.irr = (chip.irr & ~chip.levelMask) | (chip.lineLevel & chip.levelMask)
    }

    /// OCW3 poll: the read is an acknowledge cycle on that chip alone, returning 0x80 | level, or 0.
    private func pollRead(master isMaster: Bool) -> UInt8 {
        var result: UInt8 = 0
        if isMaster {
            master.poll = false
            if let irq = master.pendingIRQ() { master.acknowledge(irq); result = 0x80 | UInt8(irq) }
        } else {
            slave.poll = false
            if let irq = slave.pendingIRQ() { slave.acknowledge(irq); result = 0x80 | UInt8(irq) }
        }
        update()
        return result
    }

    /// A `BusDevice` for one window: register `ports(.master)` at 0x20, `ports(.slave)` at 0xA0 and
    /// `ports(.elcr)` at 0x4D0, each 2 ports long.
    public func ports(_ window: Window) -> Pic8259Port { Pic8259Port(pair: self, window: window) }

    // MARK: Inspection (debugging, tests)

    /// IRR, ISR and IMR of the master (chip 0) or slave (chip 1).
    public func registers(slave isSlave: Bool) -> (irr: UInt8, isr: UInt8, imr: UInt8) {
        let c = isSlave ? slave : master
        return (c.irr, c.isr, c.imr)
    }
}

/// The port window of a `Pic8259Pair`. Wider accesses are split into byte cycles on consecutive ports
/// (as the ISA bus does); bytes beyond the two-port window read as 0xFF and are dropped on write.
public final class Pic8259Port: BusDevice {
    public let pair: Pic8259Pair
    public let window: Pic8259Pair.Window

    public init(pair: Pic8259Pair, window: Pic8259Pair.Window) {
        self.pair = pair
        self.window = window
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        ByteWidePorts.read(offset: offset, size: size, length: 2) { pair.readByte(window, index: Int($0)) }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        ByteWidePorts.write(offset: offset, size: size, value: value, length: 2) {
            pair.writeByte(window, index: Int($0), value: $1)
        }
    }
}

// MARK: State

extension Pic8259Pair: StatefulDevice {
    /// Both chips' registers, initialization progress and input line levels.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var master: Pic8259Chip
        public var slave: Pic8259Chip
    }

    public func captureState() -> State { State(master: master, slave: slave) }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "8259 PIC")
        for (chip, isMaster) in [(s.master, true), (s.slave, false)] {
            let wired = Pic8259Chip(isMaster: isMaster)
            guard chip.isMaster == isMaster, chip.elcrMask == wired.elcrMask, chip.elcr & ~wired.elcrMask == 0,
                  (0...3).contains(chip.initState), chip.priorityAdd < 8 else {
                throw .invalid(device: "8259 PIC", reason: "\(isMaster ? "master" : "slave") registers out of range")
            }
        }
        (master, slave) = (s.master, s.slave)
        update()
    }
}
