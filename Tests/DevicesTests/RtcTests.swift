import XCTest
import CPUBackend
@testable import Devices

final class PlatformRtcRig {
    /// 2024-02-29T23:59:58Z, a Thursday, two seconds before a leap-day rollover.
    static let start: Int64 = 1_709_251_198 * 1_000_000_000

    let clock = PlatformFakeClock()
    let irqs = PlatformRecordingController()
    let rtc: CmosRtc
    let bus = Bus(name: "pio")

    init(start: Int64 = PlatformRtcRig.start) throws {
        let clock = self.clock
        rtc = CmosRtc(startTimeNs: start, irq: IRQLine(controller: irqs, gsi: 8), now: { clock.ns })
        try bus.register(rtc, name: "cmos-rtc", at: PCLayout.Port.rtc)
    }

    func read(_ reg: UInt8) -> UInt8 {
        bus.write(0x70, size: 1, value: UInt64(reg))
        return UInt8(truncatingIfNeeded: bus.read(0x71, size: 1))
    }

    func write(_ reg: UInt8, _ value: UInt8) {
        bus.write(0x70, size: 1, value: UInt64(reg))
        bus.write(0x71, size: 1, value: UInt64(value))
    }

    /// (sec, min, hour, weekday, day, month, year, century) as raw register bytes.
    func timeRegisters() -> [UInt8] { [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(read) }
}

final class RtcTests: XCTestCase {
    func testBCDTimeAndDateFromWallClock() throws {
        let rig = try PlatformRtcRig()
        XCTAssertEqual(rig.timeRegisters(), [0x58, 0x59, 0x23, 0x05, 0x29, 0x02, 0x24, 0x20])
        rig.clock.ns = 2_000_000_000
        XCTAssertEqual(rig.timeRegisters(), [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20],
                       "rolls over from the leap day to Friday 1 March")
    }

    func testBinaryAnd12HourFormats() throws {
        let rig = try PlatformRtcRig()
        rig.write(0x0B, 0x06)                  // binary, 24 h
        XCTAssertEqual(rig.timeRegisters(), [58, 59, 23, 5, 29, 2, 24, 20])
        rig.write(0x0B, 0x00)                  // BCD, 12 h
        XCTAssertEqual(rig.read(0x04), 0x80 | 0x11, "11 PM")
        rig.clock.ns = 2_000_000_000
        XCTAssertEqual(rig.read(0x04), 0x12, "midnight is 12 AM")
    }

    func testUpdateInProgressOnlyJustBeforeEachSecond() throws {
        // Start 0.5 s into a second.
        let rig = try PlatformRtcRig(start: PlatformRtcRig.start + 500_000_000)
        XCTAssertEqual(rig.read(0x0A), 0x26, "UIP clear mid-second, default divider and rate")
        rig.clock.ns = 499_900_000             // 100 µs before the update
        XCTAssertEqual(rig.read(0x0A) & 0x80, 0x80)
        // Linux polls until UIP clears; with time moving it must clear within the window.
        var polls = 0
        while rig.read(0x0A) & 0x80 != 0 && polls < 1000 {
            rig.clock.ns += 10_000
            polls += 1
        }
        XCTAssertLessThanOrEqual(polls, 11)
        XCTAssertEqual(rig.read(0x00), 0x59, "the update happened as UIP fell")
        // SET holds the clock and UIP with it.
        rig.clock.ns = 1_499_950_000
        rig.write(0x0B, 0x82)
        XCTAssertEqual(rig.read(0x0A) & 0x80, 0)
    }

    func testRegisterDReportsValidTimeAndIgnoresWrites() throws {
        let rig = try PlatformRtcRig()
        XCTAssertEqual(rig.read(0x0D), 0x80)
        rig.write(0x0D, 0x00)
        XCTAssertEqual(rig.read(0x0D), 0x80)
        // The NMI-mask bit of the index port does not change the register selected.
        rig.bus.write(0x70, size: 1, value: 0x8D)
        XCTAssertEqual(rig.bus.read(0x71, size: 1), 0x80)
    }

    func testCMOSBytesReadBackAndMemorySize() throws {
        let rig = try PlatformRtcRig()
        for r in UInt8(0x40)...0x7F { rig.write(r, r ^ 0xA5) }
        rig.write(0x0E, 0x11)
        for r in UInt8(0x40)...0x7F { XCTAssertEqual(rig.read(r), r ^ 0xA5, "byte \(r)") }
        XCTAssertEqual(rig.read(0x0E), 0x11)

        rig.rtc.setMemorySize(belowFourGiB: 3 << 30, aboveFourGiB: 21 << 30)
        // (3 GiB - 16 MiB) / 64 KiB = 0xBF00; 21 GiB / 64 KiB = 0x54000.
        XCTAssertEqual([rig.read(0x34), rig.read(0x35)], [0x00, 0xBF])
        XCTAssertEqual([rig.read(0x5B), rig.read(0x5C), rig.read(0x5D)], [0x00, 0x40, 0x05])
        XCTAssertEqual([rig.read(0x15), rig.read(0x16)], [0x80, 0x02], "640 KiB base memory")
        XCTAssertEqual([rig.read(0x30), rig.read(0x31)], [0xFF, 0xFF], "extended memory saturates")
    }

    /// Linux's mc146818_set_time: SET, divider reset, write registers, release both.
    func testGuestSetsTheClock() throws {
        let rig = try PlatformRtcRig()
        rig.write(0x0B, 0x82)
        rig.write(0x0A, 0x76)
        rig.write(0x00, 0x07); rig.write(0x02, 0x14); rig.write(0x04, 0x03)
        rig.write(0x07, 0x19); rig.write(0x08, 0x01); rig.write(0x09, 0x38)
        rig.clock.ns = 3_000_000_000           // held while SET
        XCTAssertEqual(rig.read(0x00), 0x07)
        rig.write(0x0B, 0x02)
        rig.write(0x0A, 0x26)
        XCTAssertEqual(rig.timeRegisters(), [0x07, 0x14, 0x03, 0x03, 0x19, 0x01, 0x38, 0x20],
                       "Tuesday 2038-01-19 03:14:07")
        rig.clock.ns += 600_000_000            // first update half a second after divider release
        XCTAssertEqual(rig.read(0x00), 0x08)
        rig.clock.ns += 60_000_000_000
        XCTAssertEqual(rig.read(0x02), 0x15)
    }

    func testGarbageTimeWritesAreClamped() throws {
        let rig = try PlatformRtcRig()
        rig.write(0x0B, 0x86)                  // SET, binary
        rig.write(0x08, 0xFF); rig.write(0x07, 0x00); rig.write(0x04, 0xEE)
        rig.write(0x0B, 0x06)
        let regs = rig.timeRegisters()
        XCTAssertEqual(regs[5], 12)
        XCTAssertEqual(regs[4], 1)
        XCTAssertEqual(regs[2], 23)
        // A century of 99 would overflow nanosecond arithmetic; the clock saturates in the 2200s.
        rig.write(0x32, 0xFF)
        XCTAssertEqual(rig.read(0x32), 22)
    }

    func testUpdateInterruptRaisesIRQ8UntilRegisterCRead() throws {
        let rig = try PlatformRtcRig()
        XCTAssertNil(rig.rtc.advance(to: 0), "no interrupt enabled, no timer")
        rig.write(0x0B, 0x12)                  // UIE
        let deadline = rig.rtc.advance(to: 0)
        XCTAssertEqual(deadline, 1_000_000_000)
        rig.clock.ns = 1_000_000_000
        _ = rig.rtc.advance(to: rig.clock.ns)
        XCTAssertEqual(rig.irqs.levels[8], true)
        // PF is set too (the default 1024 Hz rate runs without PIE) but does not cause IRQF.
        XCTAssertEqual(rig.read(0x0C) & 0xB0, 0x90, "IRQF and UF")
        XCTAssertEqual(rig.irqs.levels[8], false)
        XCTAssertEqual(rig.read(0x0C), 0x00, "reading C clears it")
    }

    func testPeriodicInterruptAtProgrammedRate() throws {
        let rig = try PlatformRtcRig()
        rig.write(0x0A, 0x2F)                  // 2 Hz
        rig.write(0x0B, 0x42)                  // PIE
        var t: UInt64 = 0
        var deadline = rig.rtc.advance(to: 0)
        XCTAssertEqual(deadline, 500_000_000)
        while let d = deadline, d <= 10_000_000_000 {
            t = d
            rig.clock.ns = t
            deadline = rig.rtc.advance(to: t)
            XCTAssertEqual(rig.read(0x0C) & 0xC0, 0xC0)
        }
        XCTAssertEqual(rig.irqs.risingEdges[8], 20)
    }

    func testAlarmFlag() throws {
        let rig = try PlatformRtcRig()
        rig.write(0x01, 0x00); rig.write(0x03, 0x00); rig.write(0x05, 0xFF)   // hh:00:00, any hour
        rig.clock.ns = 1_000_000_000
        XCTAssertEqual(rig.read(0x0C) & 0x20, 0, "23:59:59 does not match")
        rig.clock.ns = 2_000_000_000
        XCTAssertEqual(rig.read(0x0C) & 0x30, 0x30, "00:00:00 matches; IRQF stays clear without AIE")
    }

    func testDateConversionRoundTrips() {
        for s: Int64 in [0, 951_782_400, 1_709_251_198, 2_147_483_647, 4_107_542_400, 7_258_118_400] {
            XCTAssertEqual(RtcDateTime(unixSeconds: s).unixSeconds, s)
        }
        XCTAssertEqual(RtcDateTime(unixSeconds: 951_782_400),
                       RtcDateTime(year: 2000, month: 2, day: 29, hour: 0, minute: 0, second: 0))
        XCTAssertEqual(RtcDateTime(unixSeconds: 0).weekday, 5, "1970-01-01 was a Thursday")
    }
}
