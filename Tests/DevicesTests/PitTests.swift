import XCTest
import CPUBackend
@testable import Devices

/// A settable virtual clock for timer tests.
final class PlatformFakeClock {
    var ns: UInt64 = 0
}

/// Records the rising edges each GSI sees.
final class PlatformRecordingController: InterruptController, @unchecked Sendable {
    var levels: [UInt32: Bool] = [:]
    var risingEdges: [UInt32: Int] = [:]

    func setIRQ(_ gsi: UInt32, level: Bool) {
        if level && levels[gsi] != true { risingEdges[gsi, default: 0] += 1 }
        levels[gsi] = level
    }

    func signalMSI(address: UInt64, data: UInt32) {}
}

final class PlatformPitRig {
    let clock = PlatformFakeClock()
    let irqs = PlatformRecordingController()
    let pit: Pit8254
    let bus = Bus(name: "pio")

    init() throws {
        let clock = self.clock
        pit = Pit8254(irq: IRQLine(controller: irqs, gsi: 0), now: { clock.ns })
        try bus.register(pit, name: "pit", at: PCLayout.Port.pit)
        try bus.register(pit.speakerPort, name: "pit-port61", at: PCLayout.Port.systemControlB)
    }

    var irq0Count: Int { irqs.risingEdges[0] ?? 0 }
    func outb(_ port: UInt64, _ value: UInt8) { bus.write(port, size: 1, value: UInt64(value)) }
    func inb(_ port: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: bus.read(port, size: 1)) }

    /// Control word then a 16-bit count, LSB first, as Linux programs channel 0.
    func program(channel: Int, control: UInt8, count: UInt16) {
        outb(0x43, control)
        outb(0x40 + UInt64(channel), UInt8(count & 0xFF))
        outb(0x40 + UInt64(channel), UInt8(count >> 8))
    }

    /// Counter latch command then LSB/MSB reads.
    func latchedCount(channel: Int) -> UInt16 {
        outb(0x43, UInt8(channel) << 6)
        let lo = inb(0x40 + UInt64(channel))
        let hi = inb(0x40 + UInt64(channel))
        return UInt16(hi) << 8 | UInt16(lo)
    }
}

final class PitTests: XCTestCase {
    /// ns at which `ticks` input-clock ticks have elapsed (rounded up).
    func ns(ofTicks ticks: UInt64) -> UInt64 { (ticks * 1_000_000_000 + 1_193_181) / 1_193_182 }

    func testMode2PeriodicIRQCountOverOneSecond() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 1193)        // Linux HZ=1000: LATCH = 1193
        XCTAssertEqual(rig.pit.advance(to: 0), ns(ofTicks: 1193), "first deadline is one period away")
        var t: UInt64 = 0
        while t < 1_000_000_000 {
            t += 100_000
            rig.clock.ns = t
            _ = rig.pit.advance(to: t)
        }
        // 1 s = 1193182 ticks = 1000 full periods of 1193.
        XCTAssertEqual(rig.irq0Count, 1000)
    }

    func testDeadlinesDriveExactlyOneIRQEach() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 11932)       // 100 Hz
        var deadline = rig.pit.advance(to: 0)
        var steps = 0
        while let d = deadline, d <= 1_000_000_000 {
            rig.clock.ns = d
            deadline = rig.pit.advance(to: d)
            steps += 1
            XCTAssertEqual(rig.irq0Count, steps, "each deadline is an edge")
        }
        XCTAssertEqual(steps, 99)        // 1193182 / 11932 = 99.99
    }

    func testLongAbsenceDeliversOneIRQNotABurst() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 1193)
        _ = rig.pit.advance(to: 0)
        let next = rig.pit.advance(to: 10_000_000_000)
        XCTAssertEqual(rig.irq0Count, 1)
        XCTAssertNotNil(next)
        XCTAssertGreaterThan(next ?? 0, 10_000_000_000)
        XCTAssertLessThanOrEqual(next ?? .max, 10_001_000_000)
    }

    func testCounterDecrementsAt1193182Hz() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x30, count: 0xFFFF)      // mode 0
        XCTAssertEqual(rig.latchedCount(channel: 0), 0xFFFF)
        rig.clock.ns = 1_000_000                                    // 1193 ticks in 1 ms
        XCTAssertEqual(rig.latchedCount(channel: 0), 0xFFFF - 1193)
        rig.clock.ns = 50_000_000                                   // 59659 ticks
        XCTAssertEqual(rig.latchedCount(channel: 0), 0xFFFF - 59659)
    }

    func testLatchFreezesValueUntilBothBytesRead() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 50_000)
        rig.clock.ns = 1_000_000
        rig.outb(0x43, 0x00)                                        // latch at 1193 ticks
        rig.clock.ns = 5_000_000
        rig.outb(0x43, 0x00)                                        // ignored: previous latch unread
        let lo = rig.inb(0x40)
        rig.clock.ns = 9_000_000
        let hi = rig.inb(0x40)
        XCTAssertEqual(UInt16(hi) << 8 | UInt16(lo), 50_000 - 1193)
        // Once read, the counter is live again.
        XCTAssertEqual(rig.latchedCount(channel: 0), UInt16(50_000 - 10738))   // 9 ms = 10738 ticks
    }

    func testLowThenHighByteOrderingAndSingleByteAccessModes() throws {
        let rig = try PlatformPitRig()
        // LSB/MSB: nothing happens until the MSB arrives.
        rig.outb(0x43, 0x30)
        rig.outb(0x40, 0x10)
        XCTAssertNil(rig.pit.advance(to: 0), "half a count does not start the counter")
        rig.outb(0x40, 0x27)                                        // 0x2710 = 10000
        XCTAssertEqual(rig.latchedCount(channel: 0), 10_000)
        // Unlatched reads alternate LSB, MSB.
        rig.clock.ns = 1_000_000
        XCTAssertEqual(rig.inb(0x40), UInt8((10_000 - 1193) & 0xFF))
        XCTAssertEqual(rig.inb(0x40), UInt8((10_000 - 1193) >> 8))
        // LSB only.
        rig.outb(0x43, 0x10)
        rig.outb(0x40, 0x80)
        XCTAssertEqual(rig.inb(0x40), 0x80)
        XCTAssertEqual(rig.inb(0x40), 0x80, "no flip-flop in LSB-only mode")
        // MSB only.
        rig.outb(0x43, 0x20)
        rig.outb(0x40, 0x12)
        XCTAssertEqual(rig.inb(0x40), 0x12)
        XCTAssertEqual(rig.pit.count(channel: 0), 0x1200)
    }

    func testMode0FiresOnceAtTerminalCount() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x30, count: 1193)
        let deadline = rig.pit.advance(to: 0)
        XCTAssertEqual(deadline, ns(ofTicks: 1193))
        rig.clock.ns = 999_000
        XCTAssertEqual(rig.pit.advance(to: 999_000), deadline)
        XCTAssertEqual(rig.irq0Count, 0)
        rig.clock.ns = 1_000_000
        XCTAssertNil(rig.pit.advance(to: 1_000_000), "one-shot: nothing more to do")
        XCTAssertEqual(rig.irq0Count, 1)
        XCTAssertNil(rig.pit.advance(to: 100_000_000))
        XCTAssertEqual(rig.irq0Count, 1)
        // OUT is high after terminal count (read-back status bit 7).
        rig.outb(0x43, 0xE2)                                        // read-back status of channel 0
        XCTAssertEqual(rig.inb(0x40) & 0x80, 0x80)
    }

    func testMode4OneShotAsLinuxClockeventUsesIt() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x38, count: 2000)
        rig.clock.ns = 10_000_000
        XCTAssertNil(rig.pit.advance(to: rig.clock.ns))
        XCTAssertEqual(rig.irq0Count, 1)
        // Re-arming with a new count fires again.
        rig.outb(0x40, 0xD0); rig.outb(0x40, 0x07)
        rig.clock.ns = 20_000_000
        _ = rig.pit.advance(to: rig.clock.ns)
        XCTAssertEqual(rig.irq0Count, 2)
    }

    func testControlWordStopsChannel0() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 1193)
        rig.clock.ns = 5_000_000
        _ = rig.pit.advance(to: rig.clock.ns)
        XCTAssertEqual(rig.irq0Count, 1)
        rig.outb(0x43, 0x30)                                        // Linux pit_shutdown in one-shot state
        rig.clock.ns = 50_000_000
        XCTAssertNil(rig.pit.advance(to: rig.clock.ns))
        XCTAssertEqual(rig.irq0Count, 1)
    }

    func testReadBackLatchesStatusThenCount() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 1000)
        rig.program(channel: 2, control: 0xB0, count: 3000)        // gate of channel 2 is low: no counting
        rig.clock.ns = 100_000                                      // 119 ticks
        rig.outb(0x43, 0xC2 | 0x08)                                 // status and count of channels 0 and 2
        XCTAssertEqual(rig.inb(0x40), 0x80 | 0x34, "OUT high, LSB/MSB, mode 2, binary")
        XCTAssertEqual(UInt16(rig.inb(0x40)) | UInt16(rig.inb(0x40)) << 8, 1000 - 119)
        XCTAssertEqual(rig.inb(0x42), 0x30, "OUT low in mode 0 before terminal count")
        XCTAssertEqual(UInt16(rig.inb(0x42)) | UInt16(rig.inb(0x42)) << 8, 3000)
        // Null count right after a control word.
        rig.outb(0x43, 0x74)
        rig.outb(0x43, 0xE4)                                        // status only, channel 1
        XCTAssertEqual(rig.inb(0x41), 0x80 | 0x40 | 0x34, "mode 2: OUT high, null count")
    }

    /// Linux's pit_calibrate_tsc: gate on, speaker off, channel 2 mode 0, wait for OUT2 on port 0x61.
    func testChannel2GateAndOutputThroughPort61() throws {
        let rig = try PlatformPitRig()
        XCTAssertEqual(rig.inb(0x61) & 0x21, 0x00, "gate low, OUT2 low at reset")
        rig.outb(0x61, (rig.inb(0x61) & ~0x02) | 0x01)
        XCTAssertEqual(rig.inb(0x61) & 0x03, 0x01)
        let latch: UInt16 = 11931                                   // 10 ms, PIT_TICK_RATE / 100
        rig.program(channel: 2, control: 0xB0, count: latch)
        var loops = 0
        while rig.inb(0x61) & 0x20 == 0 && loops < 100_000 {
            rig.clock.ns += 1_000
            loops += 1
        }
        XCTAssertTrue(rig.inb(0x61) & 0x20 != 0)
        XCTAssertEqual(Double(rig.clock.ns), 10_000_000, accuracy: 2_000, "OUT2 rose after 10 ms")
        XCTAssertEqual(rig.irq0Count, 0, "channel 2 raises no interrupt")
    }

    func testChannel2LowGatePausesModeZeroCount() throws {
        let rig = try PlatformPitRig()
        rig.outb(0x61, 0x01)
        rig.program(channel: 2, control: 0xB0, count: 0xFFFF)
        rig.clock.ns = 1_000_000
        rig.outb(0x61, 0x00)
        let frozen = rig.latchedCount(channel: 2)
        XCTAssertEqual(frozen, 0xFFFF - 1193)
        rig.clock.ns = 9_000_000
        XCTAssertEqual(rig.latchedCount(channel: 2), frozen)
        rig.outb(0x61, 0x01)
        rig.clock.ns = 10_000_000
        XCTAssertEqual(rig.latchedCount(channel: 2), frozen - 1193)
    }

    /// quick_pit_calibrate reads the MSB of an unlatched channel 2 count and expects it to step down.
    func testQuickCalibrationSeesMSBStepDown() throws {
        let rig = try PlatformPitRig()
        rig.outb(0x61, 0x01)
        rig.program(channel: 2, control: 0xB0, count: 0xFFFF)
        func msb() -> UInt8 { _ = rig.inb(0x42); return rig.inb(0x42) }
        XCTAssertEqual(msb(), 0xFF)
        rig.clock.ns = ns(ofTicks: 256)
        XCTAssertEqual(msb(), 0xFE)
        rig.clock.ns = ns(ofTicks: 256 * 10 + 5)
        XCTAssertEqual(msb(), 0xF5)
    }

    func testReprogrammingChannel0IsReported() throws {
        let rig = try PlatformPitRig()
        var reports = 0
        rig.pit.onReprogram = { reports += 1 }
        rig.program(channel: 0, control: 0x34, count: 1193)
        XCTAssertEqual(reports, 2, "control word and count")
        rig.program(channel: 2, control: 0xB0, count: 1193)
        XCTAssertEqual(reports, 2, "channel 2 does not affect the deadline")
    }

    func testTinyPeriodIsThrottled() throws {
        let rig = try PlatformPitRig()
        rig.program(channel: 0, control: 0x34, count: 2)
        rig.clock.ns = 2_000                                        // 2 ticks: one period
        let next = rig.pit.advance(to: 2_000)
        XCTAssertEqual(rig.irq0Count, 1)
        XCTAssertGreaterThanOrEqual(next ?? 0, 2_000 + Pit8254.minimumIRQIntervalNs)
    }
}
