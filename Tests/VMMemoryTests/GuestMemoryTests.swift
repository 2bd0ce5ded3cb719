import VMMemory
import XCTest

/// GuestMemory's bounds checks are the first line of defence: every guest-physical access of the
/// devices and both backends passes through them, with addresses and lengths the guest chose.
final class GuestMemoryTests: XCTestCase {
    static let mib: UInt64 = 1 << 20

    func testAccessesAtTheEdgesOfRAM() throws {
        let m = try GuestMemory(size: 2 * Self.mib)
        let end = m.size
        XCTAssertTrue(m.contains(0, length: end), "all of RAM")
        XCTAssertTrue(m.contains(end - 1, length: 1), "the last byte")
        XCTAssertFalse(m.contains(end, length: 1), "the first byte past RAM")
        XCTAssertFalse(m.contains(end - 4, length: 8), "a quadword straddling the end")
        XCTAssertFalse(m.contains(0, length: end + 1), "one byte more than RAM")
        XCTAssertNil(m.hostPointer(end - 4, length: 8))
        XCTAssertNotNil(m.hostPointer(end - 8, length: 8))

        try m.write(UInt64(0x1122_3344_5566_7788), at: end - 8)
        XCTAssertEqual(try m.read(UInt64.self, at: end - 8), 0x1122_3344_5566_7788)
        XCTAssertEqual(try m.read(UInt8.self, at: end - 8), 0x88, "little-endian")
        XCTAssertThrowsError(try m.read(UInt32.self, at: end - 2)) { e in
            XCTAssertEqual(e as? MemoryError, .outOfBounds(address: end - 2, length: 4))
        }
    }

    /// Ranges whose naive end (address + length) wraps around 2^64 and lands inside RAM.
    func testRangesThatWrapAround2To64AreRefused() throws {
        let m = try GuestMemory(size: 2 * Self.mib)
        let cases: [(UInt64, UInt64)] = [
            (.max, 1), (.max, 2), (.max - 3, 8), (.max - 0xFFF, 0x2000), (0x1000, .max), (1, .max), (.max, .max),
            (0x8000_0000_0000_0000, 0x8000_0000_0000_0001),
        ]
        for (address, length) in cases {
            XCTAssertFalse(m.contains(address, length: length), "[\(address), +\(length))")
            XCTAssertNil(m.hostPointer(address, length: length), "[\(address), +\(length))")
            XCTAssertThrowsError(try m.fill(0xAA, at: address, length: length))
        }
        XCTAssertThrowsError(try m.read(UInt64.self, at: .max - 3))
        XCTAssertThrowsError(try m.write(UInt16(1), at: .max))
        XCTAssertThrowsError(try m.readBytes(at: 0, count: -1), "a negative count")
    }

    /// Above 3 GiB, RAM continues at 4 GiB and the 32-bit PCI hole in between is not RAM; no access
    /// may span the hole, even though both of its ends are RAM.
    func testThePCIHoleIsNotRAM() throws {
        let size = GuestMemory.mmioHoleStart + 8192
        let m = try GuestMemory(size: size)
        let hole = (start: GuestMemory.mmioHoleStart, end: GuestMemory.mmioHoleEnd)
        XCTAssertEqual(m.regions.map(\.guestBase), [0, hole.end])
        XCTAssertEqual(m.regions.map(\.size), [hole.start, 8192])
        XCTAssertEqual(m.highestAddress, hole.end + 8192)
        XCTAssertTrue(m.contains(hole.start - 8, length: 8))
        XCTAssertFalse(m.contains(hole.start - 4, length: 8), "straddles into the hole")
        XCTAssertFalse(m.contains(hole.start, length: 1), "in the hole")
        XCTAssertFalse(m.contains(0xFEE0_0000, length: 4), "the local APIC page is not RAM")
        XCTAssertFalse(m.contains(hole.end - 4, length: 8), "straddles out of the hole")
        XCTAssertFalse(m.contains(hole.start - 8, length: hole.end - hole.start + 16), "spans the hole from RAM to RAM")
        try m.write(UInt32(0xCAFE_F00D), at: hole.end + 8188)
        XCTAssertEqual(try m.read(UInt32.self, at: hole.end + 8188), 0xCAFE_F00D)
        XCTAssertThrowsError(try m.write(UInt64(1), at: hole.end + 8188), "past the top")
    }

    /// A write that does not fit changes nothing: no partial write up to the edge.
    func testAFailedWriteWritesNothing() throws {
        let m = try GuestMemory(size: 2 * Self.mib)
        let end = m.size
        try m.fill(0x11, at: end - 16, length: 16)
        XCTAssertThrowsError(try m.write(bytes: [UInt8](repeating: 0xEE, count: 32), at: end - 16))
        XCTAssertThrowsError(try m.fill(0xEE, at: end - 8, length: 9))
        XCTAssertThrowsError(try m.write(UInt64.max, at: end - 4))
        try [UInt8](repeating: 0xEE, count: 32).withUnsafeBytes { b in
            XCTAssertThrowsError(try m.write(buffer: b, at: end - 16))
        }
        XCTAssertEqual(try m.readBytes(at: end - 16, count: 16), [UInt8](repeating: 0x11, count: 16))
    }

    func testUnusableSizesAreRefusedWithAReason() {
        let cases: [(UInt64, String)] = [(4096, "too small"), (GuestMemory.maximumSize + 4096, "too large"),
                                         (2 * Self.mib + 1, "4 KiB")]
        for (size, words) in cases {
            XCTAssertThrowsError(try GuestMemory(size: size)) { e in
                guard case .invalidSize(let s) = e as? MemoryError else { return XCTFail("\(size): \(e)") }
                XCTAssertTrue(s.contains(words), "\(size): \(s)")
            }
        }
    }

    /// Devices report DMA writes so the interpreter can drop code it decoded from those bytes.
    func testDMAWritesReachTheObserver() throws {
        let m = try GuestMemory(size: 2 * Self.mib)
        nonisolated(unsafe) var seen: [UInt64] = []
        m.dmaWriteObserver = { a, l in seen += [a, l] }
        m.noteDMAWrite(0x1000, length: 512)
        XCTAssertEqual(seen, [0x1000, 512])
    }
}
