import VMCore

/// One counter of the 8254. Time is kept as input-clock ticks elapsed since counting (re)started, so
/// reading a counter or OUT is arithmetic on the clock, never a per-tick simulation. As a value it is
/// also the counter's saved state (`Pit8254.State`; times are VM clock nanoseconds).
public struct PitChannel: Codable, Equatable, Sendable {
    /// Counting mode 0-5 (control-word modes 6 and 7 are aliases of 2 and 3).
    var mode: UInt8 = 0
    /// Read/write access: 1 = LSB only, 2 = MSB only, 3 = LSB then MSB.
    var access: UInt8 = 3
    var bcd = false
    /// The initial count as a number of ticks, 1...0x10000 (a written 0 means 0x10000, or 10000 in BCD).
    var reload: UInt64 = 0x10000
    /// A count has been written since the last control word: the counter is counting.
    var armed = false
    /// The gate input. Channels 0 and 1 are tied high; channel 2's comes from port 0x61 bit 0.
    var gate: Bool
    /// Ticks counted before `runStartNs` (modes 0 and 4 pause while the gate is low).
    var tickBase: UInt64 = 0
    var runStartNs: UInt64 = 0
    var running = false
    /// Value a counter reads as while no count is loaded (it holds what it had).
    var idleCount: UInt16 = 0

    /// Write flip-flop for LSB/MSB access: true when the MSB comes next.
    var writeMSBNext = false
    var pendingLSB: UInt8 = 0
    /// Read flip-flop for unlatched LSB/MSB reads.
    var readMSBNext = false
    var latchedCount: UInt16?
    /// For a latched count in LSB/MSB access: the LSB has been read.
    var latchedLSBRead = false
    var latchedStatus: UInt8?
    /// Set by a control word, cleared when a count is loaded (read-back status bit 6).
    var nullCount = true

    /// IRQ bookkeeping (channel 0): periods already signalled, or whether the one-shot edge fired.
    var edgesDelivered: UInt64 = 0

    init(gate: Bool) { self.gate = gate }

    var isPeriodic: Bool { mode == 2 || mode == 3 }

    func ticks(at now: UInt64, frequency: UInt64) -> UInt64 {
        guard running, now > runStartNs else { return tickBase }
        let (hi, lo) = (now - runStartNs).multipliedFullWidth(by: frequency)
        return tickBase &+ UInt64(1_000_000_000).dividingFullWidth((hi, lo)).quotient
    }

    /// The counting element's value at tick `d`.
    func count(atTick d: UInt64) -> UInt16 {
        let n = reload
        let value: UInt64
        switch mode {
        case 2: value = n - d % n
        // Mode 3 counts down by two each tick through each half period.
        case 3: value = n - (2 &* d) % n
        default:
            // One-shot modes keep counting after terminal count, wrapping through 0.
            let modulus: UInt64 = bcd ? 10_000 : 0x10000
            value = (n % modulus + modulus - d % modulus) % modulus
        }
        return UInt16(truncatingIfNeeded: value)
    }

    /// The OUT pin at tick `d`.
    func out(atTick d: UInt64) -> Bool {
        let n = reload
        switch mode {
        case 0: return armed && d >= n
        case 1: return !armed || d >= n
        case 2: return !armed || !running || d % n != n - 1
        case 3: return !armed || !running || d % n < (n + 1) / 2
        default: return !armed || d != n               // modes 4, 5: one-tick low strobe at terminal count
        }
    }

    /// The tick at which OUT rises for the `k`-th time (k >= 1) after counting started, or nil if
    /// it never will. Channel 0's OUT drives IRQ 0 on that rising edge.
    func risingEdge(_ k: UInt64) -> UInt64? {
        switch mode {
        case 2, 3: return k.multipliedReportingOverflow(by: reload).overflow ? nil : k &* reload
        case 0, 1: return k == 1 ? reload : nil
        default: return k == 1 ? reload + 1 : nil         // end of the mode 4/5 strobe
        }
    }
}

/// The 8254 programmable interval timer at ports 0x40-0x43 (channel 0 drives IRQ 0, channel 2 the
/// speaker and port 0x61 bit 5). Counts at 1.193182 MHz of virtual time. Called only on the vCPU thread.
///
/// The counters are four ports; port 0x61 is a separate device, `speakerPort`. Advance it through
/// `TimedDevice`: call `advance(to:)` when the returned deadline passes and after the guest writes
/// to the PIT (a new count changes the deadline; `onReprogram` reports that too).
public final class Pit8254: BusDevice, TimedDevice {
    /// The input clock: 1.193182 MHz.
    public static let frequency: UInt64 = 1_193_182
    /// IRQ 0 edges are never scheduled closer than this, so a guest programming a tiny period cannot
    /// make the interpreter do nothing but advance the timer (KVM clamps similarly).
    public static let minimumIRQIntervalNs: UInt64 = 50_000

    private var channels = [PitChannel(gate: true), PitChannel(gate: true), PitChannel(gate: false)]
    private let now: () -> UInt64
    private let irq: IRQLine?
    /// Port 0x61 bit 1: speaker data enable (stored, no sound). Bits 2-3: parity/IOCHK disable.
    private var portBLatch: UInt8 = 0
    private var lastIRQNs: UInt64?

    /// Called when a guest write to channel 0 changed its timer, so the caller can re-query
    /// `advance(to:)` for the new deadline.
    public var onReprogram: (() -> Void)?

    /// A PIT on `clock`, raising `irq` (GSI 0) on channel 0's rising OUT edges.
    public convenience init(clock: VirtualClock, irq: IRQLine?) {
        self.init(irq: irq, now: { clock.nowNs })
    }

    /// A PIT on an arbitrary monotonic nanosecond clock (tests inject a fake one).
    public init(irq: IRQLine?, now: @escaping () -> UInt64) {
        self.irq = irq
        self.now = now
    }

    /// The device for port 0x61 (system control port B): bit 0 gate of channel 2, bit 1 speaker enable,
    /// bit 4 refresh toggle, bit 5 OUT of channel 2.
    public var speakerPort: SpeakerPort { SpeakerPort(pit: self) }

    // MARK: Counter ports

    public func read(offset: UInt64, size: Int) -> UInt64 {
        ByteWidePorts.read(offset: offset, size: size, length: 4) { readByte($0) }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        ByteWidePorts.write(offset: offset, size: size, value: value, length: 4) { writeByte($0, $1) }
    }

    private func readByte(_ offset: UInt64) -> UInt8 {
        guard offset < 3 else { return 0xFF }      // the control word register is write-only
        let i = Int(offset)
        if let status = channels[i].latchedStatus {
            channels[i].latchedStatus = nil
            return status
        }
        let access = channels[i].access
        if let latched = channels[i].latchedCount {
            switch access {
            case 1:
                channels[i].latchedCount = nil
                return UInt8(truncatingIfNeeded: latched)
            case 2:
                channels[i].latchedCount = nil
                return UInt8(truncatingIfNeeded: latched >> 8)
            default:
                if !channels[i].latchedLSBRead {
                    channels[i].latchedLSBRead = true
                    return UInt8(truncatingIfNeeded: latched)
                }
                channels[i].latchedCount = nil
                channels[i].latchedLSBRead = false
                return UInt8(truncatingIfNeeded: latched >> 8)
            }
        }
        let value = currentCount(i, at: now())
        switch access {
        case 1: return UInt8(truncatingIfNeeded: value)
        case 2: return UInt8(truncatingIfNeeded: value >> 8)
        default:
            let msb = channels[i].readMSBNext
            channels[i].readMSBNext.toggle()
            return UInt8(truncatingIfNeeded: msb ? value >> 8 : value)
        }
    }

    private func writeByte(_ offset: UInt64, _ value: UInt8) {
        switch offset {
        case 0, 1, 2: writeCounter(Int(offset), value)
        case 3: writeControl(value)
        default: break
        }
    }

    private func writeControl(_ value: UInt8) {
        let t = now()
        let select = Int(value >> 6)
        if select == 3 {
            // Read-back: bits 1-3 select counters; bit 5 clear latches counts, bit 4 clear latches status.
            for i in 0..<3 where value & (2 << UInt8(i)) != 0 {
                if value & 0x20 == 0 { latchCount(i, at: t) }
                if value & 0x10 == 0 && channels[i].latchedStatus == nil {
                    channels[i].latchedStatus = status(i, at: t)
                }
            }
            return
        }
        let access = (value >> 4) & 3
        if access == 0 {
            latchCount(select, at: t)
            return
        }
        // A control word stops the counter until a new count arrives and resets the flip-flops.
        var c = channels[select]
        c.idleCount = currentCount(select, at: t)
        var mode = (value >> 1) & 7
        if mode > 5 { mode -= 4 }
        c.mode = mode
        c.access = access
        c.bcd = value & 1 != 0
        c.armed = false
        c.running = false
        c.tickBase = 0
        c.writeMSBNext = false
        c.readMSBNext = false
        c.latchedCount = nil
        c.latchedLSBRead = false
        c.latchedStatus = nil
        c.nullCount = true
        channels[select] = c
        if select == 0 { onReprogram?() }
    }

    private func writeCounter(_ i: Int, _ value: UInt8) {
        var c = channels[i]
        let raw: UInt16
        switch c.access {
        case 1: raw = UInt16(value)
        case 2: raw = UInt16(value) << 8
        default:
            if !c.writeMSBNext {
                c.pendingLSB = value
                c.writeMSBNext = true
                // In mode 0 the first byte of a new count already stops the counter.
                if c.mode == 0 && c.armed {
                    c.idleCount = currentCount(i, at: now())
                    c.armed = false
                    c.running = false
                }
                channels[i] = c
                return
            }
            c.writeMSBNext = false
            raw = UInt16(c.pendingLSB) | UInt16(value) << 8
        }
        channels[i] = c
        load(i, raw)
    }

    /// Loads a new initial count and starts counting (subject to the gate).
    private func load(_ i: Int, _ raw: UInt16) {
        let t = now()
        var c = channels[i]
        var n = c.bcd ? PitBCD.decode(raw) : UInt64(raw)
        if n == 0 { n = c.bcd ? 10_000 : 0x10000 }
        // Periodic modes with a count of 1 are illegal on the part; keep the arithmetic sane.
        if c.isPeriodic && n < 2 { n = 2 }
        c.reload = n
        c.armed = true
        c.nullCount = false
        c.tickBase = 0
        c.runStartNs = t
        // Modes 1 and 5 are gate-triggered; like QEMU, treat loading the count as the trigger too.
        c.running = c.gate || c.mode == 1 || c.mode == 5
        c.edgesDelivered = 0
        channels[i] = c
        if i == 0 {
            lastIRQNs = nil
            onReprogram?()
        }
    }

    private func latchCount(_ i: Int, at t: UInt64) {
        // A second latch before the first is read is ignored.
        guard channels[i].latchedCount == nil else { return }
        channels[i].latchedCount = currentCount(i, at: t)
        channels[i].latchedLSBRead = false
    }

    private func currentCount(_ i: Int, at t: UInt64) -> UInt16 {
        let c = channels[i]
        guard c.armed else { return c.idleCount }
        let value = c.count(atTick: c.ticks(at: t, frequency: Pit8254.frequency))
        return c.bcd ? PitBCD.encode(value) : value
    }

    private func status(_ i: Int, at t: UInt64) -> UInt8 {
        let c = channels[i]
        var s = (c.access << 4) | (c.mode << 1) | (c.bcd ? 1 : 0)
        if output(i, at: t) { s |= 0x80 }
        if c.nullCount { s |= 0x40 }
        return s
    }

    /// The OUT pin of channel `i` at time `t`.
    func output(_ i: Int, at t: UInt64) -> Bool {
        let c = channels[i]
        if !c.armed {
            return c.mode != 0                  // after a control word OUT is low in mode 0, high otherwise
        }
        return c.out(atTick: c.ticks(at: t, frequency: Pit8254.frequency))
    }

    // MARK: Gate of channel 2 (port 0x61)

    func setGate2(_ level: Bool) {
        var c = channels[2]
        guard c.gate != level else { return }
        let t = now()
        if c.armed {
            switch c.mode {
            case 0, 4:
                // The gate only enables counting: pause and resume.
                if level {
                    c.runStartNs = t
                    c.running = true
                } else {
                    c.tickBase = c.ticks(at: t, frequency: Pit8254.frequency)
                    c.running = false
                }
            case 2, 3:
                // Low gate stops the count (OUT high); the rising edge reloads it.
                c.tickBase = 0
                c.runStartNs = t
                c.running = level
            default:
                // Modes 1 and 5: the rising edge (re)triggers.
                if level {
                    c.tickBase = 0
                    c.runStartNs = t
                    c.running = true
                }
            }
        }
        c.gate = level
        channels[2] = c
    }

    func readPortB() -> UInt8 {
        let t = now()
        var v = portBLatch & 0x0E
        if channels[2].gate { v |= 0x01 }
        // Bit 4 toggles with each DRAM refresh cycle (~15 us); some delay loops watch it.
        if (t / 15_085) & 1 != 0 { v |= 0x10 }
        if output(2, at: t) { v |= 0x20 }
        return v
    }

    func writePortB(_ value: UInt8) {
        portBLatch = value & 0x0E
        setGate2(value & 0x01 != 0)
    }

    // MARK: TimedDevice

    /// Raises IRQ 0 once if channel 0's OUT rose since the last call (however many periods passed:
    /// a guest that was away gets one tick, not a burst) and returns when it rises next.
    public func advance(to now: UInt64) -> UInt64? {
        var c = channels[0]
        guard c.armed, c.running else { return nil }
        let d = c.ticks(at: now, frequency: Pit8254.frequency)
        var fired = false
        if c.isPeriodic {
            let edges = d / c.reload
            if edges > c.edgesDelivered {
                c.edgesDelivered = edges
                fired = true
            }
        } else if c.edgesDelivered == 0, let edge = c.risingEdge(1), d >= edge {
            c.edgesDelivered = 1
            fired = true
        }
        channels[0] = c
        if fired {
            lastIRQNs = now
            irq?.pulse()
        }
        guard let nextTick = c.risingEdge(c.edgesDelivered + 1) else { return nil }
        var deadline = nanoseconds(ofTick: nextTick, channel: c)
        if let last = lastIRQNs {
            let earliest = last.addingReportingOverflow(Pit8254.minimumIRQIntervalNs)
            if !earliest.overflow && deadline < earliest.partialValue { deadline = earliest.partialValue }
        }
        return deadline
    }

    /// The first virtual time at which channel `c` has counted `tick` ticks.
    private func nanoseconds(ofTick tick: UInt64, channel c: PitChannel) -> UInt64 {
        guard tick > c.tickBase else { return c.runStartNs }
        let (hi, lo) = (tick - c.tickBase).multipliedFullWidth(by: 1_000_000_000)
        // Quotient must fit: it does unless the tick is absurdly far away.
        guard hi < Pit8254.frequency else { return UInt64.max }
        let (q, r) = Pit8254.frequency.dividingFullWidth((hi, lo))
        let ns = q &+ (r != 0 ? 1 : 0)
        let (sum, overflow) = c.runStartNs.addingReportingOverflow(ns)
        return overflow ? UInt64.max : sum
    }

    // MARK: Inspection

    /// The current count of channel `i` (0-2) as the guest would read it after a latch command.
    public func count(channel i: Int) -> UInt16? {
        guard i >= 0 && i < 3 else { return nil }
        return currentCount(i, at: now())
    }
}

// MARK: State

extension Pit8254: StatefulDevice {
    /// The three counters, port 0x61's latch and when IRQ 0 last fired (VM clock ns).
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var channels: [PitChannel]
        public var portB: UInt8
        public var lastIRQNs: UInt64?
    }

    public func captureState() -> State { State(channels: channels, portB: portBLatch, lastIRQNs: lastIRQNs) }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "8254 PIT")
        // Channels 0 and 1 have their gates tied high; port 0x61 keeps only bits 1-3 (bit 0 is
        // channel 2's gate, held in the channel).
        guard s.channels.count == 3, s.channels[0].gate, s.channels[1].gate, s.portB & ~0x0E == 0 else {
            throw .invalid(device: "8254 PIT", reason: "channel count, gates or port 0x61 out of range")
        }
        for c in s.channels {
            // The arithmetic divides by the reload value and assumes the modes and access kinds exist.
            guard c.mode <= 5, (1...3).contains(c.access), (1...0x10000).contains(c.reload),
                  !c.isPeriodic || c.reload >= 2 else {
                throw .invalid(device: "8254 PIT", reason: "counter mode \(c.mode), access \(c.access), reload \(c.reload)")
            }
        }
        (channels, portBLatch, lastIRQNs) = (s.channels, s.portB, s.lastIRQNs)
    }
}

/// System control port B (0x61), the part of it the PIT drives.
public final class SpeakerPort: BusDevice {
    public let pit: Pit8254
    public init(pit: Pit8254) { self.pit = pit }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        ByteWidePorts.read(offset: offset, size: size, length: 1) { _ in pit.readPortB() }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        ByteWidePorts.write(offset: offset, size: size, value: value, length: 1) { pit.writePortB($1) }
    }
}

/// Packed BCD for the 8254's four-digit BCD counting mode.
enum PitBCD {
    static func decode(_ v: UInt16) -> UInt64 {
        // Invalid digits (A-F) are taken at face value; the part's behaviour there is undefined.
        UInt64(v >> 12) * 1000 + UInt64((v >> 8) & 0xF) * 100 + UInt64((v >> 4) & 0xF) * 10 + UInt64(v & 0xF)
    }

    static func encode(_ v: UInt16) -> UInt16 {
        let n = v % 10_000
        return (n / 1000) << 12 | ((n / 100) % 10) << 8 | ((n / 10) % 10) << 4 | n % 10
    }
}
