import VMCore
import XCTest
@testable import Devices

final class DebugPortsTests: XCTestCase {

    func testPortSinkSwallowsWritesAndReadsItsConstant() throws {
        let bus = Bus(name: "pio")
        let post = PortSink()
        let zero = PortSink(reads: .zero)
        try bus.register(post, name: "post", at: PCLayout.Port.postCode)
        try bus.register(zero, name: "zero", base: 0xED, length: 1)
        bus.write(0x80, size: 1, value: 0x34)
        bus.write(0x80, size: 1, value: 0x35)
        XCTAssertEqual(post.writes, 2)
        XCTAssertEqual(post.lastWrite, 0x35, "the last POST code")
        XCTAssertEqual(bus.read(0x80, size: 1), 0xFF)
        XCTAssertEqual(bus.read(0x80, size: 2), 0xFFFF)
        XCTAssertEqual(bus.read(0x80, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(bus.read(0x80, size: 8), .max)
        XCTAssertEqual(bus.read(0xED, size: 4), 0)
        XCTAssertEqual(bus.unhandledWrites, 0, "claimed ports are not unhandled")
        XCTAssertEqual(bus.unhandledReads, 0)
    }

    func testBootTimerRecordsMilestonesWithTheMachineClock() throws {
        var clock: UInt64 = 1_000
        var signalled: [BootTimerEvent] = []
        let timer = BootTimerPort(now: { clock }, onSignal: { signalled.append($0) })
        let bus = Bus(name: "pio")
        try bus.register(timer, name: "boot-timer", at: PCLayout.Port.bootTimer)
        XCTAssertNil(timer.userspaceUpNs)

        clock = 5_000
        bus.write(0x440, size: 1, value: 0x07)
        clock = 9_000
        bus.write(0x440, size: 1, value: 0x01)
        clock = 12_000
        bus.write(0x440, size: 4, value: 0xAB01)   // wide write: the low byte counts

        XCTAssertEqual(timer.events, [
            BootTimerEvent(milestone: .other(7), timestampNs: 5_000),
            BootTimerEvent(milestone: .userspaceUp, timestampNs: 9_000),
            BootTimerEvent(milestone: .userspaceUp, timestampNs: 12_000),
        ])
        XCTAssertEqual(signalled, timer.events)
        XCTAssertEqual(timer.userspaceUpNs, 9_000, "the first report wins")
        XCTAssertEqual(bus.read(0x440, size: 1), 0)
    }

    func testBootTimerMemoryIsBoundedAgainstAChattyGuest() {
        var calls = 0
        let timer = BootTimerPort(now: { 0 }, onSignal: { _ in calls += 1 })
        for i in 0..<10_000 { timer.write(offset: 0, size: 1, value: UInt64(i & 0xFF)) }
        XCTAssertEqual(timer.events.count, BootTimerPort.maxRecordedEvents)
        XCTAssertEqual(timer.signalCount, 10_000)
        XCTAssertEqual(calls, 10_000)
    }

    func testBootMilestoneValues() {
        XCTAssertEqual(BootMilestone(value: 1), .userspaceUp)
        XCTAssertEqual(BootMilestone(value: 2), .other(2))
        XCTAssertEqual(BootMilestone.userspaceUp.value, 1)
        XCTAssertEqual(BootMilestone.other(0x7B).value, 0x7B)
    }
}
