import VMCore
#if canImport(Glibc)
import Glibc
#endif

/// A calendar time as the MC146818 counts it (UTC, like a PC RTC under Linux).
public struct RtcDateTime: Codable, Equatable, Sendable {
    public var year: Int       // full year, e.g. 2024
    public var month: Int      // 1-12
    public var day: Int        // 1-31
    public var hour: Int       // 0-23
    public var minute: Int
    public var second: Int

    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int) {
        self.year = year; self.month = month; self.day = day
        self.hour = hour; self.minute = minute; self.second = second
    }

    /// Seconds since 1970-01-01T00:00:00Z → calendar time (proleptic Gregorian).
    public init(unixSeconds s: Int64) {
        let days = s >= 0 ? s / 86_400 : (s - 86_399) / 86_400
        let rem = s - days * 86_400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        self.init(year: Int(yoe + era * 400 + (m <= 2 ? 1 : 0)), month: Int(m), day: Int(d),
                  hour: Int(rem / 3600), minute: Int(rem % 3600 / 60), second: Int(rem % 60))
    }

    /// Days since 1970-01-01 (Hinnant's days_from_civil).
    var daysSinceEpoch: Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let m = Int64(month)
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    public var unixSeconds: Int64 {
        daysSinceEpoch * 86_400 + Int64(hour) * 3600 + Int64(minute) * 60 + Int64(second)
    }

    /// 1 = Sunday ... 7 = Saturday, as the RTC's day-of-week register counts.
    public var weekday: Int {
        let d = daysSinceEpoch
        return Int(((d % 7) + 7 + 4) % 7) + 1       // 1970-01-01 was a Thursday
    }
}

/// The MC146818 real-time clock and CMOS RAM at ports 0x70 (index) and 0x71 (data).
///
/// The time registers follow the host wall clock taken once at creation plus the VM's monotonic
/// virtual time (so the guest's RTC and its other clocks never disagree); a guest that sets the
/// clock keeps its own offset. Update-ended, alarm and periodic interrupts raise IRQ 8 when an
/// `IRQLine` is given and `advance(to:)` is called; the status flags in register C work without it.
/// Called only on the vCPU thread.
public final class CmosRtc: BusDevice, TimedDevice {
    // Register indices.
    static let regA = 0x0A, regB = 0x0B, regC = 0x0C, regD = 0x0D
    static let century = 0x32

    // Register B bits.
    static let bSet: UInt8 = 0x80, bPIE: UInt8 = 0x40, bAIE: UInt8 = 0x20, bUIE: UInt8 = 0x10
    static let bBinary: UInt8 = 0x04, b24h: UInt8 = 0x02
    // Register C bits.
    static let cIRQF: UInt8 = 0x80, cPF: UInt8 = 0x40, cAF: UInt8 = 0x20, cUF: UInt8 = 0x10

    /// How long before each update UIP reads as set (datasheet: 244 µs).
    static let uipWindowNs: Int64 = 244_000

    private var cmos = [UInt8](repeating: 0, count: 128)
    private var index = 0
    private let now: () -> UInt64
    private let irq: IRQLine?
    /// Wall-clock ns since the Unix epoch = `wallBaseNs + now()`.
    private var wallBaseNs: Int64
    /// The time registers while register B's SET bit holds the clock.
    private var heldTime: RtcDateTime?
    private var flagsC: UInt8 = 0
    private var lastSecond: Int64
    private var periodicStartNs: UInt64 = 0
    private var periodicIndex: UInt64 = 0
    private var irqRaised = false

    /// Called when a guest write changed which timers are armed, so the caller can re-query
    /// `advance(to:)` for the new deadline.
    public var onReprogram: (() -> Void)?

    /// An RTC reading the host's current UTC time, advancing with `clock`.
    public convenience init(clock: VirtualClock, irq: IRQLine? = nil) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let hostNs = Int64(ts.tv_sec) &* 1_000_000_000 &+ Int64(ts.tv_nsec)
        self.init(startTimeNs: hostNs, irq: irq, now: { clock.nowNs })
    }

    /// An RTC that reads `startTimeNs` (ns since the Unix epoch) when `now()` returns 0.
    public init(startTimeNs: Int64, irq: IRQLine? = nil, now: @escaping () -> UInt64) {
        self.now = now
        self.irq = irq
        let t = now()
        wallBaseNs = startTimeNs &- Int64(truncatingIfNeeded: t)
        lastSecond = 0
        cmos[CmosRtc.regA] = 0x26          // 32.768 kHz time base, 1024 Hz periodic rate
        cmos[CmosRtc.regB] = CmosRtc.b24h  // BCD, 24-hour, no interrupts
        lastSecond = CmosRtc.floorDiv(wallNs(at: t), 1_000_000_000)
        periodicStartNs = t
    }

    /// Fills the CMOS memory-size bytes a PC BIOS leaves for the OS (the layout QEMU uses):
    /// base and extended memory in KiB, memory between 16 MiB and 4 GiB and above 4 GiB in 64 KiB units.
    public func setMemorySize(belowFourGiB low: UInt64, aboveFourGiB high: UInt64) {
        let kib: UInt64 = 1024, mib: UInt64 = 1024 * 1024
        let base = min(low / kib, 640)
        setWord(0x15, base)
        let extended = min(low > mib ? (low - mib) / kib : 0, 0xFFFF)
        setWord(0x17, extended)
        setWord(0x30, extended)
        let above16 = min(low > 16 * mib ? (low - 16 * mib) / (64 * kib) : 0, 0xFFFF)
        setWord(0x34, above16)
        let above4G = min(high / (64 * kib), 0xFF_FFFF)
        cmos[0x5B] = UInt8(truncatingIfNeeded: above4G)
        cmos[0x5C] = UInt8(truncatingIfNeeded: above4G >> 8)
        cmos[0x5D] = UInt8(truncatingIfNeeded: above4G >> 16)
    }

    private func setWord(_ at: Int, _ value: UInt64) {
        cmos[at] = UInt8(truncatingIfNeeded: value)
        cmos[at + 1] = UInt8(truncatingIfNeeded: value >> 8)
    }

    // MARK: Ports

    public func read(offset: UInt64, size: Int) -> UInt64 {
        ByteWidePorts.read(offset: offset, size: size, length: 2) { port in
            // The index register is write-only.
            port == 0 ? 0xFF : readRegister(index)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        ByteWidePorts.write(offset: offset, size: size, value: value, length: 2) { port, byte in
            // Bit 7 of the index port masks NMI on a PC; there are no NMI sources here to mask.
            if port == 0 { index = Int(byte & 0x7F) } else { writeRegister(index, byte) }
        }
    }

    // MARK: Registers

    private var regB: UInt8 { cmos[CmosRtc.regB] }

    private func readRegister(_ r: Int) -> UInt8 {
        let t = now()
        switch r {
        case 0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, CmosRtc.century:
            return encodeTimeRegister(r, heldTime ?? currentTime(at: t))
        case CmosRtc.regA:
            return cmos[r] & 0x7F | (updateInProgress(at: t) ? 0x80 : 0)
        case CmosRtc.regC:
            refreshFlags(at: t)
            let v = flagsC
            flagsC = 0
            if irqRaised {
                irqRaised = false
                irq?.lower()
            }
            return v
        case CmosRtc.regD:
            return 0x80                       // valid RAM and time: the battery is fine
        default:
            return cmos[r & 0x7F]
        }
    }

    private func writeRegister(_ r: Int, _ value: UInt8) {
        let t = now()
        switch r {
        case 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, CmosRtc.century:
            var time = heldTime ?? currentTime(at: t)
            decodeTimeRegister(r, value, into: &time)
            if heldTime != nil {
                heldTime = time
            } else {
                setTime(time, at: t, subsecondNs: CmosRtc.floorMod(wallNs(at: t), 1_000_000_000))
            }
        case 0x06:
            break                             // day of week is derived from the date
        case CmosRtc.regA:
            refreshFlags(at: t)
            let old = cmos[r]
            cmos[r] = value & 0x7F            // UIP is read-only
            if (old & 0x0F) != (value & 0x0F) {
                periodicStartNs = t
                periodicIndex = 0
            }
            // Leaving divider reset starts the first update half a second later (Linux relies on
            // this when it sets the clock).
            if old & 0x60 == 0x60 && value & 0x70 == 0x20 {
                setTime(heldTime ?? currentTime(at: t), at: t, subsecondNs: 500_000_000)
            }
            onReprogram?()
        case CmosRtc.regB:
            refreshFlags(at: t)
            var v = value
            let wasSet = regB & CmosRtc.bSet != 0
            if v & CmosRtc.bSet != 0 {
                if !wasSet { heldTime = currentTime(at: t) }
                v &= ~CmosRtc.bUIE             // SET clears UIE
            } else if wasSet, let held = heldTime {
                heldTime = nil
                setTime(held, at: t, subsecondNs: 0)
            }
            cmos[r] = v
            updateIRQ()
            onReprogram?()
        case CmosRtc.regC, CmosRtc.regD:
            break                             // read-only
        default:
            cmos[r & 0x7F] = value
        }
    }

    // MARK: Time

    private func wallNs(at t: UInt64) -> Int64 { wallBaseNs &+ Int64(truncatingIfNeeded: t) }

    private func currentTime(at t: UInt64) -> RtcDateTime {
        RtcDateTime(unixSeconds: CmosRtc.floorDiv(wallNs(at: t), 1_000_000_000))
    }

    /// Makes the clock read `time` now, `subsecondNs` into the current second.
    private func setTime(_ time: RtcDateTime, at t: UInt64, subsecondNs: Int64) {
        // Keep the result representable in Int64 nanoseconds (1970 to ~2242).
        let seconds = min(max(time.unixSeconds, 0), Int64(1) << 33)
        wallBaseNs = seconds &* 1_000_000_000 &+ subsecondNs &- Int64(truncatingIfNeeded: t)
        lastSecond = seconds
    }

    /// UIP: set during the 244 µs before each once-a-second update, while the clock runs.
    private func updateInProgress(at t: UInt64) -> Bool {
        guard regB & CmosRtc.bSet == 0, cmos[CmosRtc.regA] & 0x70 == 0x20 else { return false }
        return CmosRtc.floorMod(wallNs(at: t), 1_000_000_000) >= 1_000_000_000 - CmosRtc.uipWindowNs
    }

    private var binary: Bool { regB & CmosRtc.bBinary != 0 }

    private func toRegister(_ v: Int) -> UInt8 {
        let v = UInt8(truncatingIfNeeded: max(0, min(v, 99)))
        return binary ? v : (v / 10) << 4 | v % 10
    }

    private func fromRegister(_ v: UInt8) -> Int {
        binary ? Int(v) : Int(v >> 4) * 10 + Int(v & 0x0F)
    }

    private func encodeTimeRegister(_ r: Int, _ time: RtcDateTime) -> UInt8 {
        switch r {
        case 0x00: return toRegister(time.second)
        case 0x02: return toRegister(time.minute)
        case 0x04:
            if regB & CmosRtc.b24h != 0 { return toRegister(time.hour) }
            // 12-hour mode: 12, 1..11 with bit 7 for PM.
            let h12 = time.hour % 12 == 0 ? 12 : time.hour % 12
            return toRegister(h12) | (time.hour >= 12 ? 0x80 : 0)
        case 0x06: return toRegister(time.weekday)
        case 0x07: return toRegister(time.day)
        case 0x08: return toRegister(time.month)
        case 0x09: return toRegister(((time.year % 100) + 100) % 100)
        default: return toRegister(time.year / 100)          // century
        }
    }

    /// Guest-written values are clamped into range: a bad date must not upset the arithmetic.
    private func decodeTimeRegister(_ r: Int, _ value: UInt8, into time: inout RtcDateTime) {
        switch r {
        case 0x00: time.second = min(fromRegister(value), 59)
        case 0x02: time.minute = min(fromRegister(value), 59)
        case 0x04:
            if regB & CmosRtc.b24h != 0 {
                time.hour = min(fromRegister(value), 23)
            } else {
                let h = min(fromRegister(value & 0x7F), 12) % 12
                time.hour = h + (value & 0x80 != 0 ? 12 : 0)
            }
        case 0x07: time.day = max(1, min(fromRegister(value), 31))
        case 0x08: time.month = max(1, min(fromRegister(value), 12))
        case 0x09: time.year = time.year / 100 * 100 + min(fromRegister(value), 99)
        default: time.year = min(fromRegister(value), 99) * 100 + time.year % 100
        }
    }

    // MARK: Interrupt flags

    private func periodNs() -> UInt64? {
        let rate = cmos[CmosRtc.regA] & 0x0F
        guard rate != 0, cmos[CmosRtc.regA] & 0x70 == 0x20 else { return nil }
        // Rates 1 and 2 behave like 8 and 9 with the 32.768 kHz time base.
        let shift = rate < 3 ? rate + 7 : rate
        return (UInt64(1) << UInt64(shift - 1)) * 1_000_000_000 / 32_768
    }

    private func alarmMatches(_ time: RtcDateTime) -> Bool {
        // Alarm bytes with the top two bits set are "don't care".
        func match(_ reg: Int, _ timeReg: Int) -> Bool {
            let a = cmos[reg]
            return a & 0xC0 == 0xC0 || a == encodeTimeRegister(timeReg, time)
        }
        return match(0x01, 0x00) && match(0x03, 0x02) && match(0x05, 0x04)
    }

    /// Brings the register C flags up to time `t`: each update sets UF (and AF on an alarm match),
    /// each periodic tick sets PF. Several missed events collapse into one, as for a guest that
    /// has not read register C.
    private func refreshFlags(at t: UInt64) {
        if regB & CmosRtc.bSet == 0 && cmos[CmosRtc.regA] & 0x70 == 0x20 {
            let second = CmosRtc.floorDiv(wallNs(at: t), 1_000_000_000)
            if second > lastSecond {
                flagsC |= CmosRtc.cUF
                if alarmMatches(RtcDateTime(unixSeconds: second)) { flagsC |= CmosRtc.cAF }
            }
            lastSecond = second
        }
        if let p = periodNs(), t > periodicStartNs {
            let i = (t - periodicStartNs) / p
            if i > periodicIndex {
                periodicIndex = i
                flagsC |= CmosRtc.cPF
            }
        }
        updateIRQ()
    }

    private func updateIRQ() {
        let enabled = regB & (CmosRtc.bPIE | CmosRtc.bAIE | CmosRtc.bUIE)
        guard flagsC & enabled & 0x70 != 0 else { return }
        flagsC |= CmosRtc.cIRQF
        if !irqRaised {
            irqRaised = true
            irq?.raise()
        }
    }

    // MARK: TimedDevice

    public func advance(to t: UInt64) -> UInt64? {
        refreshFlags(at: t)
        var next: UInt64?
        let b = regB
        if b & CmosRtc.bPIE != 0, let p = periodNs() {
            let tick = (periodicIndex + 1).multipliedReportingOverflow(by: p)
            let at = periodicStartNs.addingReportingOverflow(tick.partialValue)
            if !tick.overflow && !at.overflow { next = at.partialValue }
        }
        if b & (CmosRtc.bUIE | CmosRtc.bAIE) != 0 && b & CmosRtc.bSet == 0 && cmos[CmosRtc.regA] & 0x70 == 0x20 {
            let toNext = UInt64(1_000_000_000 - CmosRtc.floorMod(wallNs(at: t), 1_000_000_000))
            let at = t.addingReportingOverflow(toNext)
            if !at.overflow { next = min(next ?? .max, at.partialValue) }
        }
        return next
    }

    // MARK: Helpers

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    static func floorMod(_ a: Int64, _ b: Int64) -> Int64 { a - floorDiv(a, b) * b }
}

// MARK: State

extension CmosRtc: StatefulDevice {
    /// CMOS RAM and registers, the clock (wall time = `wallBaseNs` + VM clock ns), a clock held by
    /// register B's SET bit, register C's flags and the periodic-interrupt phase.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var cmos: [UInt8]
        public var index: UInt8
        public var wallBaseNs: Int64
        public var heldTime: RtcDateTime?
        public var flagsC: UInt8
        public var lastSecond: Int64
        public var periodicStartNs: UInt64
        public var periodicIndex: UInt64
        public var interruptLine: Bool
    }

    public func captureState() -> State {
        State(cmos: cmos, index: UInt8(truncatingIfNeeded: index), wallBaseNs: wallBaseNs, heldTime: heldTime,
              flagsC: flagsC, lastSecond: lastSecond, periodicStartNs: periodicStartNs, periodicIndex: periodicIndex,
              interruptLine: irqRaised)
    }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "CMOS RTC")
        guard s.cmos.count == 128, s.index < 128, s.periodicIndex < .max else {
            throw .invalid(device: "CMOS RTC", reason: "CMOS size, index or periodic phase out of range")
        }
        // Date arithmetic assumes a calendar date (and years that fit it).
        if let t = s.heldTime {
            guard (0...9999).contains(t.year), (1...12).contains(t.month), (1...31).contains(t.day),
                  (0...23).contains(t.hour), (0...59).contains(t.minute), (0...59).contains(t.second) else {
                throw .invalid(device: "CMOS RTC", reason: "held time \(t) is not a date")
            }
        }
        (cmos, index, wallBaseNs, heldTime) = (s.cmos, Int(s.index), s.wallBaseNs, s.heldTime)
        (flagsC, lastSecond, periodicStartNs, periodicIndex) = (s.flagsC, s.lastSecond, s.periodicStartNs, s.periodicIndex)
        irqRaised = s.interruptLine
    }
}
