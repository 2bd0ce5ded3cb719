import Foundation
import XCTest
@testable import VMMemory

/// How guest RAM sits in the host's address space.
final class GuestMemoryLayoutTests: XCTestCase {
    /// The /proc/self/maps line covering `address`: (start, end, permissions).
    func mapping(containing address: UInt) throws -> (start: UInt, end: UInt, perms: String)? {
        for line in try String(contentsOfFile: "/proc/self/maps", encoding: .utf8).split(separator: "\n") {
            let fields = line.split(separator: " ")
            let range = fields[0].split(separator: "-").compactMap { UInt($0, radix: 16) }
            if range.count == 2, address >= range[0], address < range[1] {
                return (range[0], range[1], String(fields[1]))
            }
        }
        return nil
    }

    func testEachRegionStartsOnA2MiBBoundaryBetweenGuardPages() throws {
        // 3.5 GiB: two regions, split around the 32-bit hole (reserved, never touched).
        let memory = try GuestMemory(size: 3584 << 20)
        XCTAssertEqual(memory.regions.count, 2)
        for r in memory.regions {
            let host = UInt(bitPattern: r.host)
            XCTAssertEqual(host % UInt(GuestMemory.hostAlignment), 0, "region at guest \(r.guestBase)")
            let ram = try XCTUnwrap(try mapping(containing: host))
            XCTAssertEqual(ram.start, host, "RAM is a mapping of its own")
            XCTAssertEqual(ram.end, host + UInt(r.size))
            XCTAssertEqual(ram.perms, "rw-p")
            XCTAssertEqual(try mapping(containing: host - 1)?.perms, "---p", "guard page below")
            XCTAssertEqual(try mapping(containing: host + UInt(r.size))?.perms, "---p", "guard page above")
        }
        try memory.write(UInt64(0x1122_3344_5566_7788), at: memory.highestAddress - 8)
        XCTAssertEqual(try memory.read(UInt64.self, at: memory.highestAddress - 8), 0x1122_3344_5566_7788)
        XCTAssertEqual(try memory.read(UInt64.self, at: 0), 0, "zeroed")
    }

    func testUnmappingReturnsEverything() throws {
        var host: UInt = 0
        do {
            let memory = try GuestMemory(size: 64 << 20)
            host = UInt(bitPattern: memory.regions[0].host)
        }
        XCTAssertNil(try mapping(containing: host), "RAM unmapped at deinit")
        XCTAssertNil(try mapping(containing: host - 1), "guard page unmapped")
    }
}
