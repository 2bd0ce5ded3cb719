import VMCore

/// Where the UART's transmitted bytes go. The machine forwards them to the terminal; tests collect them.
/// `write` is called on the vCPU thread for every byte and must never block indefinitely: an
/// implementation that talks to a slow consumer buffers (and drops when its buffer is full).
public protocol SerialOutput: AnyObject {
    func write(_ byte: UInt8)
}

/// A `SerialOutput` that keeps every byte in memory. For tests and short-lived tools only: it grows
/// without bound.
public final class SerialOutputCollector: SerialOutput {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public func write(_ byte: UInt8) { bytes.append(byte) }
    /// The collected bytes decoded as UTF-8 (invalid sequences replaced).
    public var text: String { String(decoding: bytes, as: UTF8.self) }
    public func removeAll() { bytes.removeAll() }
}

/// A 16550A UART as Linux's 8250 driver sees it: eight byte-wide registers, FIFOs, loopback,
/// modem status, and an interrupt output gated by MCR.OUT2 the way PC boards wire it.
///
/// Deliberate simplifications, none visible to the 8250 driver:
/// - Transmission is instantaneous: THR/TSR are always empty again by the time the guest looks, so
///   LSR.THRE and LSR.TEMT read 1 and a THRE interrupt becomes pending after every THR write.
/// - Baud rate, word length, parity and break are stored but have no effect.
/// - The receive FIFO holds `receiveCapacity` (64) bytes in FIFO and non-FIFO mode alike, and the
///   "data available" interrupt fires as soon as one byte is queued (as if the trigger level or
///   character timeout were always reached).
/// - Host input never overruns: `enqueue` accepts what fits and the caller retries with the rest.
///   Only loopback transmissions can overrun (LSR.OE).
/// - The host end honours hardware flow control: it sends only while the guest asserts RTS
///   (MCR bit 1). Linux raises RTS when the port is opened, after its startup has cleared the
///   FIFOs, so a line typed while the kernel boots waits on the host instead of being flushed.
public final class Uart16550: BusDevice {
    /// Number of consecutive I/O ports the UART decodes.
    public static let portCount: UInt64 = 8
    /// Receive FIFO size in bytes.
    public static let receiveCapacity = 64

    // Register offsets (DLAB selects the divisor latch at 0 and 1).
    private static let rbrThr: UInt64 = 0, ier: UInt64 = 1, iirFcr: UInt64 = 2, lcr: UInt64 = 3
    private static let mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7

    // IER bits.
    private static let ierRDI: UInt8 = 0x01, ierTHRI: UInt8 = 0x02, ierRLSI: UInt8 = 0x04
    private static let ierMSI: UInt8 = 0x08
    // IIR interrupt identifications, highest priority first.
    private static let iirLineStatus: UInt8 = 0x06, iirReceivedData: UInt8 = 0x04
    private static let iirTHREmpty: UInt8 = 0x02, iirModemStatus: UInt8 = 0x00, iirNone: UInt8 = 0x01
    private static let iirFIFOsEnabled: UInt8 = 0xC0
    // FCR bits.
    private static let fcrEnable: UInt8 = 0x01, fcrClearRx: UInt8 = 0x02
    // FCR bits that stick: enable, DMA mode, receiver trigger. Bit 5 (64-byte FIFO) does not exist
    // on a 16550A and must not read back, or Linux takes us for a 16750.
    private static let fcrSticky: UInt8 = 0xC9
    // LCR / MCR / LSR / MSR bits.
    private static let lcrDLAB: UInt8 = 0x80
    private static let mcrDTR: UInt8 = 0x01, mcrRTS: UInt8 = 0x02, mcrOUT1: UInt8 = 0x04
    private static let mcrOUT2: UInt8 = 0x08, mcrLoop: UInt8 = 0x10
    private static let lsrDR: UInt8 = 0x01, lsrOE: UInt8 = 0x02, lsrTHRE: UInt8 = 0x20
    private static let lsrTEMT: UInt8 = 0x40
    private static let msrCTS: UInt8 = 0x10, msrDSR: UInt8 = 0x20, msrRI: UInt8 = 0x40
    private static let msrDCD: UInt8 = 0x80
    /// Modem inputs outside loopback: a null-modem cable to a host that is always ready.
    private static let hostModemLines: UInt8 = msrDCD | msrDSR | msrCTS

    private let irq: IRQLine
    private let output: any SerialOutput

    private var ierValue: UInt8 = 0
    private var lcrValue: UInt8 = 0x03          // 8N1, what firmware leaves behind
    private var mcrValue: UInt8 = 0
    private var fcrValue: UInt8 = 0
    private var scrValue: UInt8 = 0
    private var divisorLow: UInt8 = 0x0C        // 9600 baud
    private var divisorHigh: UInt8 = 0
    /// Error bits of LSR (OE, PE, FE, BI); cleared by reading LSR.
    private var lineErrors: UInt8 = 0
    /// Delta bits of MSR (DCTS, DDSR, TERI, DDCD); cleared by reading MSR.
    private var modemDeltas: UInt8 = 0
    /// The THRE interrupt condition. Cleared by reading IIR while it is the reported source or by
    /// writing THR; set again when the (instantaneous) transmission finishes or IER.THRI goes 0 -> 1.
    private var thrEmptyPending = false
    private var rx = ByteRing(capacity: Uart16550.receiveCapacity)
    private var lineLevel = false

    /// Called when the receive FIFO drains (the guest read its last byte, or it was flushed) and when
    /// the host may send again (RTS raised, loopback ended): the moment to `enqueue` input the host
    /// is still holding.
    public var onReceiveReady: (() -> Void)?

    // Counters, for tests and statistics.
    /// Bytes sent to the output sink.
    public private(set) var transmittedBytes = 0
    /// Bytes that entered the receive FIFO (host input and loopback).
    public private(set) var receivedBytes = 0
    /// Bytes lost because the receive FIFO was full (loopback only).
    public private(set) var overruns = 0
    /// Low-to-high transitions of the interrupt line.
    public private(set) var interruptsRaised = 0

    public init(irq: IRQLine, output: any SerialOutput) {
        self.irq = irq
        self.output = output
    }

    /// True while the UART drives its interrupt line high.
    public var interruptLineHigh: Bool { lineLevel }
    /// Bytes waiting in the receive FIFO.
    public var receiveCount: Int { rx.count }
    /// Bytes `enqueue` would accept now (0 in loopback mode, whose receiver is cut off from the
    /// line, and while the guest holds RTS low).
    public var receiveSpace: Int { acceptsInput ? rx.capacity - rx.count : 0 }

    /// Queues host input for the guest. Returns how many leading bytes were accepted; the caller keeps
    /// the rest and offers them again later (see `onReceiveReady`).
    @discardableResult
    public func enqueue<C: Collection>(_ bytes: C) -> Int where C.Element == UInt8 {
        guard acceptsInput else { return 0 }
        var accepted = 0
        for b in bytes {
            guard rx.push(b) else { break }
            accepted += 1
        }
        receivedBytes += accepted
        if accepted > 0 { updateInterrupt() }
        return accepted
    }

    // MARK: BusDevice

    /// Accesses wider than a byte are split into byte accesses at consecutive ports, as the ISA bus
    /// does; bytes past the UART's eight ports read as all-ones.
    public func read(offset: UInt64, size: Int) -> UInt64 {
        ByteWidePorts.read(offset: offset, size: size, length: Self.portCount) { readRegister($0) }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        ByteWidePorts.write(offset: offset, size: size, value: value, length: Self.portCount) {
            writeRegister($0, $1)
        }
    }

    // MARK: Registers

    private var isDLAB: Bool { lcrValue & Self.lcrDLAB != 0 }
    private var isLoopback: Bool { mcrValue & Self.mcrLoop != 0 }
    /// Whether the host may send: the guest asserts RTS and the receiver listens to the line.
    private var acceptsInput: Bool { mcrValue & Self.mcrRTS != 0 && !isLoopback }
    private var fifosEnabled: Bool { fcrValue & Self.fcrEnable != 0 }

    private func readRegister(_ reg: UInt64) -> UInt8 {
        switch reg {
        case Self.rbrThr:
            if isDLAB { return divisorLow }
            guard let byte = rx.pop() else { return 0 }
            updateInterrupt()
            if rx.isEmpty { onReceiveReady?() }
            return byte
        case Self.ier:
            return isDLAB ? divisorHigh : ierValue
        case Self.iirFcr:
            let id = pendingInterrupt
            if id == Self.iirTHREmpty {
                // Reading IIR acknowledges a THRE interrupt (and only that one).
                thrEmptyPending = false
                updateInterrupt()
            }
            return id | (fifosEnabled ? Self.iirFIFOsEnabled : 0)
        case Self.lcr:
            return lcrValue
        case Self.mcr:
            return mcrValue
        case Self.lsr:
            let value = (rx.isEmpty ? 0 : Self.lsrDR) | lineErrors | Self.lsrTHRE | Self.lsrTEMT
            if lineErrors != 0 {
                lineErrors = 0
                updateInterrupt()
            }
            return value
        case Self.msr:
            let value = modemLines | modemDeltas
            if modemDeltas != 0 {
                modemDeltas = 0
                updateInterrupt()
            }
            return value
        default:
            return scrValue
        }
    }

    private func writeRegister(_ reg: UInt64, _ value: UInt8) {
        switch reg {
        case Self.rbrThr:
            if isDLAB { divisorLow = value; return }
            transmit(value)
        case Self.ier:
            if isDLAB { divisorHigh = value; return }
            let newIER = value & 0x0F   // bits 4-7 are reserved on a 16550A and read back as 0
            let changed = ierValue ^ newIER
            ierValue = newIER
            if changed & Self.ierTHRI != 0 {
                // Enabling THRI while THR is empty raises THRE at once; the 8250 driver's start_tx
                // relies on this edge, and its startup test checks it happens again after IER 0 -> THRI.
                thrEmptyPending = newIER & Self.ierTHRI != 0
            }
            updateInterrupt()
        case Self.iirFcr:
            writeFCR(value)
        case Self.lcr:
            lcrValue = value
        case Self.mcr:
            let oldLines = modemLines
            let wasAccepting = acceptsInput
            mcrValue = value & 0x1F
            modemDeltas |= Self.deltas(from: oldLines, to: modemLines)
            updateInterrupt()
            if !wasAccepting && acceptsInput { onReceiveReady?() }
        case Self.lsr, Self.msr:
            break   // read-only (factory test writes on real parts)
        default:
            scrValue = value
        }
    }

    private func transmit(_ byte: UInt8) {
        if isLoopback {
            // The transmitter is wired to the receiver; nothing reaches the line.
            if rx.push(byte) { receivedBytes += 1 } else { lineErrors |= Self.lsrOE; overruns += 1 }
        } else {
            output.write(byte)
            transmittedBytes += 1
        }
        // The byte left THR and the shift register at once: THR is empty again. No low glitch on the
        // line in between, which would only cost the guest a spurious interrupt per byte.
        thrEmptyPending = true
        updateInterrupt()
    }

    private func writeFCR(_ value: UInt8) {
        // Bits 1-7 only take effect together with bit 0 (datasheet); toggling bit 0 resets both FIFOs.
        var clearRx = (value ^ fcrValue) & Self.fcrEnable != 0
        if value & Self.fcrEnable != 0 {
            if value & Self.fcrClearRx != 0 { clearRx = true }
            fcrValue = value & Self.fcrSticky
        } else {
            fcrValue = 0
        }
        // Clearing the transmit FIFO (bit 2) changes nothing: it is always empty.
        if clearRx {
            let hadData = !rx.isEmpty
            rx.removeAll()
            updateInterrupt()
            if hadData { onReceiveReady?() }
        }
    }

    /// The modem input lines as MSR bits 4-7. In loopback they are the modem outputs:
    /// RTS -> CTS, DTR -> DSR, OUT1 -> RI, OUT2 -> DCD.
    private var modemLines: UInt8 {
        guard isLoopback else { return Self.hostModemLines }
        var lines: UInt8 = 0
        if mcrValue & Self.mcrRTS != 0 { lines |= Self.msrCTS }
        if mcrValue & Self.mcrDTR != 0 { lines |= Self.msrDSR }
        if mcrValue & Self.mcrOUT1 != 0 { lines |= Self.msrRI }
        if mcrValue & Self.mcrOUT2 != 0 { lines |= Self.msrDCD }
        return lines
    }

    /// MSR delta bits for a change of the modem inputs: DCTS, DDSR and DDCD on any change,
    /// TERI only when RI goes from on to off.
    private static func deltas(from old: UInt8, to new: UInt8) -> UInt8 {
        let changed = old ^ new
        var d: UInt8 = 0
        if changed & msrCTS != 0 { d |= 0x01 }
        if changed & msrDSR != 0 { d |= 0x02 }
        if old & msrRI != 0 && new & msrRI == 0 { d |= 0x04 }
        if changed & msrDCD != 0 { d |= 0x08 }
        return d
    }

    /// The IIR identification of the highest-priority enabled interrupt condition.
    private var pendingInterrupt: UInt8 {
        if ierValue & Self.ierRLSI != 0 && lineErrors != 0 { return Self.iirLineStatus }
        if ierValue & Self.ierRDI != 0 && !rx.isEmpty { return Self.iirReceivedData }
        if ierValue & Self.ierTHRI != 0 && thrEmptyPending { return Self.iirTHREmpty }
        if ierValue & Self.ierMSI != 0 && modemDeltas != 0 { return Self.iirModemStatus }
        return Self.iirNone
    }

    /// Drives the interrupt line. PC boards pass the UART's INTR pin through a buffer enabled by the
    /// OUT2 pin, which loopback mode forces inactive; the controller only sees level changes.
    private func updateInterrupt() {
        let level = pendingInterrupt != Self.iirNone && mcrValue & Self.mcrOUT2 != 0 && !isLoopback
        guard level != lineLevel else { return }
        lineLevel = level
        if level {
            interruptsRaised += 1
            irq.raise()
        } else {
            irq.lower()
        }
    }
}

/// A fixed-capacity byte FIFO.
private struct ByteRing {
    private var storage: [UInt8]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) { storage = [UInt8](repeating: 0, count: max(1, capacity)) }

    var capacity: Int { storage.count }
    var isEmpty: Bool { count == 0 }

    /// Appends `byte`; false (and nothing stored) when full.
    mutating func push(_ byte: UInt8) -> Bool {
        guard count < storage.count else { return false }
        var tail = head + count
        if tail >= storage.count { tail -= storage.count }
        storage[tail] = byte
        count += 1
        return true
    }

    mutating func pop() -> UInt8? {
        guard count > 0 else { return nil }
        let byte = storage[head]
        head += 1
        if head == storage.count { head = 0 }
        count -= 1
        return byte
    }

    mutating func removeAll() { head = 0; count = 0 }
}

// MARK: State

extension Uart16550: StatefulDevice {
    /// The registers, the receive FIFO's bytes (oldest first) and the interrupt line level.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var ier: UInt8, lcr: UInt8, mcr: UInt8, fcr: UInt8, scr: UInt8
        public var divisorLow: UInt8, divisorHigh: UInt8
        public var lineErrors: UInt8, modemDeltas: UInt8
        public var thrEmptyPending: Bool
        public var receiveFIFO: [UInt8]
        public var interruptLine: Bool
    }

    public func captureState() -> State {
        State(ier: ierValue, lcr: lcrValue, mcr: mcrValue, fcr: fcrValue, scr: scrValue,
              divisorLow: divisorLow, divisorHigh: divisorHigh, lineErrors: lineErrors, modemDeltas: modemDeltas,
              thrEmptyPending: thrEmptyPending, receiveFIFO: rx.contents, interruptLine: lineLevel)
    }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "16550 UART")
        guard s.receiveFIFO.count <= Self.receiveCapacity, s.ier & 0xF0 == 0, s.mcr & 0xE0 == 0,
              s.fcr & ~Self.fcrSticky == 0, s.lineErrors & ~0x1E == 0, s.modemDeltas & 0xF0 == 0 else {
            throw .invalid(device: "16550 UART", reason: "register values or FIFO length out of range")
        }
        (ierValue, lcrValue, mcrValue, fcrValue, scrValue) = (s.ier, s.lcr, s.mcr, s.fcr, s.scr)
        (divisorLow, divisorHigh, lineErrors, modemDeltas) = (s.divisorLow, s.divisorHigh, s.lineErrors, s.modemDeltas)
        thrEmptyPending = s.thrEmptyPending
        rx.removeAll()
        for b in s.receiveFIFO { _ = rx.push(b) }
        lineLevel = s.interruptLine
    }
}

extension ByteRing {
    /// The queued bytes, oldest first.
    fileprivate var contents: [UInt8] {
        (0..<count).map { storage[(head + $0) % storage.count] }
    }
}
