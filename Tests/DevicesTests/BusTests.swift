import XCTest
@testable import Devices

final class BusTests: XCTestCase {

    private func overlapError(_ body: () throws -> Void) -> BusError? {
        do { try body(); return nil } catch let e as BusError { return e } catch { return nil }
    }

    func testAccessesReachTheDeviceWithRangeRelativeOffsets() throws {
        let bus = Bus(name: "pio")
        let dev = RecordingBusDevice(readValue: 0xAB)
        try bus.register(dev, name: "dev", base: 0x3F8, length: 8)
        XCTAssertEqual(bus.read(0x3F8, size: 1), 0xAB)
        bus.write(0x3FF, size: 1, value: 0x42)
        XCTAssertEqual(bus.read(0x3FA, size: 2), 0xAB)
        XCTAssertEqual(dev.accesses, [
            .init(offset: 0, size: 1, value: nil),
            .init(offset: 7, size: 1, value: 0x42),
            .init(offset: 2, size: 2, value: nil),
        ])
        XCTAssertEqual(bus.unhandledReads, 0)
        XCTAssertEqual(bus.unhandledWrites, 0)
    }

    func testRangeEndsAreExact() throws {
        let bus = Bus(name: "pio")
        let dev = RecordingBusDevice(readValue: 0x11)
        try bus.register(dev, name: "dev", base: 0x100, length: 0x10)
        XCTAssertNil(bus.find(0xFF))
        XCTAssertEqual(bus.find(0x100)?.name, "dev")
        XCTAssertEqual(bus.find(0x10F)?.name, "dev")
        XCTAssertNil(bus.find(0x110))
        XCTAssertEqual(bus.read(0x110, size: 1), 0xFF, "one past the end is unclaimed")
        XCTAssertEqual(bus.unhandledReads, 1)
    }

    func testIdenticalRangeIsRefused() throws {
        let bus = Bus(name: "pio")
        try bus.register(RecordingBusDevice(), name: "first", base: 0x60, length: 1)
        let err = overlapError { try bus.register(RecordingBusDevice(), name: "second", base: 0x60, length: 1) }
        XCTAssertEqual(err, .overlap(name: "second", base: 0x60, length: 1, existing: "first"))
        XCTAssertEqual(bus.entries.map(\.name), ["first"])
    }

    func testPartialOverlapsAreRefused() throws {
        let bus = Bus(name: "mmio")
        let first = RecordingBusDevice(readValue: 1)
        try bus.register(first, name: "first", base: 0x1000, length: 0x100)
        let cases: [(UInt64, UInt64, String)] = [
            (0x0F80, 0x100, "overlapping the start"),
            (0x10FF, 0x10, "overlapping the last byte"),
            (0x1010, 0x10, "inside"),
            (0x0F00, 0x1000, "containing"),
            (0x0FFF, 2, "straddling the start by one byte"),
        ]
        for (base, length, what) in cases {
            XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "x", base: base, length: length), what) {
                XCTAssertEqual($0 as? BusError, .overlap(name: "x", base: base, length: length, existing: "first"), what)
            }
        }
        XCTAssertEqual(bus.entries.count, 1, "refused registrations leave the bus unchanged")
        XCTAssertEqual(bus.read(0x1080, size: 4), 1, "the original device still answers")
    }

    func testAdjacentRangesAreAllowed() throws {
        let bus = Bus(name: "pio")
        let mid = RecordingBusDevice(readValue: 2)
        let below = RecordingBusDevice(readValue: 1)
        let above = RecordingBusDevice(readValue: 3)
        try bus.register(mid, name: "mid", base: 0x20, length: 0x10)
        try bus.register(below, name: "below", base: 0x10, length: 0x10)
        try bus.register(above, name: "above", base: 0x30, length: 0x10)
        XCTAssertEqual(bus.read(0x1F, size: 1), 1)
        XCTAssertEqual(bus.read(0x20, size: 1), 2)
        XCTAssertEqual(bus.read(0x2F, size: 1), 2)
        XCTAssertEqual(bus.read(0x30, size: 1), 3)
        XCTAssertEqual(bus.entries.map(\.name), ["below", "mid", "above"], "kept sorted by base")
    }

    func testEmptyRangeIsRefused() {
        let bus = Bus(name: "pio")
        XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "empty", base: 0x80, length: 0)) {
            XCTAssertEqual($0 as? BusError, .emptyRange(name: "empty"))
        }
        XCTAssertTrue(bus.entries.isEmpty)
    }

    func testRangesWrappingPastTheTopOfTheAddressSpaceAreRefused() throws {
        let bus = Bus(name: "mmio")
        XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "wrap", base: .max, length: 2))
        XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "wrap2", base: .max - 0xF, length: 0x20))
        XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "huge", base: 2, length: .max))
        XCTAssertTrue(bus.entries.isEmpty)
        XCTAssertEqual(bus.read(0, size: 1), 0xFF, "a wrapped range did not claim low addresses")

        // Ranges ending exactly at the top are fine.
        let top = RecordingBusDevice(readValue: 7)
        try bus.register(top, name: "top", base: .max - 0xF, length: 0x10)
        XCTAssertEqual(bus.read(.max, size: 1), 7)
        XCTAssertEqual(top.accesses.last?.offset, 0xF)
        XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "last", base: .max, length: 1),
                             "overlaps the top range")
        XCTAssertThrowsError(try bus.register(RecordingBusDevice(), name: "below", base: .max - 0x1F, length: 0x11),
                             "reaches into the top range from below")
        XCTAssertEqual(bus.entries.map(\.name), ["top"])
    }

    func testUnclaimedReadsAreAllOnesForEverySize() {
        let bus = Bus(name: "pio")
        XCTAssertEqual(bus.read(0x1234, size: 1), 0xFF)
        XCTAssertEqual(bus.read(0x1234, size: 2), 0xFFFF)
        XCTAssertEqual(bus.read(0x1234, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(bus.read(0x1234, size: 8), UInt64.max)
        XCTAssertEqual(bus.unhandledReads, 4)
        XCTAssertEqual(bus.unhandledWrites, 0)
    }

    func testUnclaimedWritesAreDroppedAndCounted() throws {
        let bus = Bus(name: "pio")
        let dev = RecordingBusDevice()
        try bus.register(dev, name: "dev", base: 0x3F8, length: 8)
        var seen: [(UInt64, Int, Bool)] = []
        bus.onUnhandled = { seen.append(($0, $1, $2)) }
        bus.write(0x3F7, size: 1, value: 1)
        bus.write(0x400, size: 2, value: 2)
        _ = bus.read(0x2F8, size: 4)
        XCTAssertTrue(dev.accesses.isEmpty, "neighbours of a device are not the device")
        XCTAssertEqual(bus.unhandledWrites, 2)
        XCTAssertEqual(bus.unhandledReads, 1)
        XCTAssertEqual(seen.map(\.0), [0x3F7, 0x400, 0x2F8])
        XCTAssertEqual(seen.map(\.1), [1, 2, 4])
        XCTAssertEqual(seen.map(\.2), [true, true, false])
    }

    func testLookupAmongManyRangesRegisteredOutOfOrder() throws {
        let bus = Bus(name: "mmio")
        let bases: [UInt64] = [0x9000, 0x1000, 0x5000, 0x3000, 0x7000, 0xB000, 0x2000]
        for b in bases {
            try bus.register(RecordingBusDevice(readValue: b), name: "d\(b)", base: b, length: 0x800)
        }
        for b in bases {
            XCTAssertEqual(bus.read(b, size: 4), b)
            XCTAssertEqual(bus.read(b + 0x7FF, size: 4), b)
            XCTAssertEqual(bus.read(b + 0x800, size: 4), 0xFFFF_FFFF, "gap after 0x\(String(b, radix: 16))")
        }
        XCTAssertEqual(bus.entries.map(\.base), bases.sorted())
    }
}
