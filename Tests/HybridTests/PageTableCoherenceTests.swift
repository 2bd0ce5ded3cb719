@testable import Hybrid
import VMMemory
import XCTest

/// Which page-table writes make KVM's shadow tables stale, and which pages get watched.
final class PageTableCoherenceTests: XCTestCase {
    // PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 (VA 0-2 MiB) and PT 0x5000 (2-4 MiB).
    static let pml4: UInt64 = 0x1000, pdpt: UInt64 = 0x2000, pd: UInt64 = 0x3000, pt: UInt64 = 0x4000
    static let pt2: UInt64 = 0x5000, spare: UInt64 = 0x6000
    static let p: UInt64 = 1, rw: UInt64 = 2, us: UInt64 = 4, a: UInt64 = 0x20, d: UInt64 = 0x40, nx: UInt64 = 1 << 63

    var mem: GuestMemory!

    override func setUp() {
        super.setUp()
        mem = try! GuestMemory(size: 16 << 20)
        let t = PageTableCoherenceTests.self
        try! mem.write(t.pdpt | 7, at: t.pml4)
        try! mem.write(t.pd | 7, at: t.pdpt)
        try! mem.write(t.pt | 7, at: t.pd)
        try! mem.write(t.pt2 | 7, at: t.pd + 8)
        for i in 0..<UInt64(512) { try! mem.write((0x100000 + i * 0x1000) | 7 | t.nx, at: t.pt + i * 8) }
        try! mem.write(UInt64(0x200000) | 7, at: t.pt2)   // one executable user page
    }

    func entry(_ table: UInt64, _ i: UInt64) throws -> UInt64 { try mem.read(UInt64.self, at: table + i * 8) }
    func set(_ table: UInt64, _ i: UInt64, _ v: UInt64) throws { try mem.write(v, at: table + i * 8) }
    func page(_ a: UInt64) -> Int32 { Int32(a >> 12) }

    func testFirstEntryWatchesTheWholeUserTree() {
        let c = PageTableCoherence(memory: mem)
        guard case .coherent(let arm) = c.prepare(cr3: 0x1000, written: []) else { return XCTFail() }
        XCTAssertEqual(Set(arm), Set([0x1, 0x2, 0x3, 0x4, 0x5].map { Int32($0) }))
        guard case .coherent(let again) = c.prepare(cr3: 0x1000, written: []) else { return XCTFail() }
        XCTAssertEqual(again, [], "nothing new to watch")
    }

    func testChangingAPresentEntryIsStale() throws {
        let c = PageTableCoherence(memory: mem)
        _ = c.prepare(cr3: 0x1000, written: [])
        try set(Self.pt, 3, (try entry(Self.pt, 3) & ~Self.rw))   // write-protect (fork, COW)
        guard case .zap(let arm) = c.prepare(cr3: 0x1000, written: [page(Self.pt)]) else { return XCTFail() }
        XCTAssertEqual(Set(arm).count, 5, "after a zap the current tree is watched afresh")
        XCTAssertEqual(c.zaps, 1)
        try set(Self.pt, 4, 0)                                    // unmap
        guard case .zap = c.prepare(cr3: 0x1000, written: [page(Self.pt)]) else { return XCTFail() }
        try set(Self.pt, 5, try entry(Self.pt, 5) | Self.d)       // dirty (a CPU wrote the page)
        guard case .coherent = c.prepare(cr3: 0x1000, written: [page(Self.pt)]) else { return XCTFail() }
        try set(Self.pt, 5, try entry(Self.pt, 5) & ~Self.d)      // dirty bit cleared (writeback)
        guard case .zap = c.prepare(cr3: 0x1000, written: [page(Self.pt)]) else { return XCTFail("D 1 -> 0") }
    }

    func testAccessedBitsAndNewEntriesNeedNoZap() throws {
        let c = PageTableCoherence(memory: mem)
        _ = c.prepare(cr3: 0x1000, written: [])
        try set(Self.pt, 6, try entry(Self.pt, 6) | Self.a | Self.d)   // A and D set (by a CPU)
        try set(Self.pt2, 9, 0x300000 | 7 | Self.nx)                  // a new mapping (page fault)
        guard case .coherent(let arm) = c.prepare(cr3: 0x1000, written: [page(Self.pt), page(Self.pt2)]) else { return XCTFail() }
        XCTAssertEqual(Set(arm), Set([page(Self.pt), page(Self.pt2)]), "written pages are armed again")
        try set(Self.pt, 6, try entry(Self.pt, 6) & ~Self.a)          // page aging clears A
        guard case .coherent = c.prepare(cr3: 0x1000, written: [page(Self.pt)]) else { return XCTFail() }
        XCTAssertEqual(c.zaps, 0)
    }

    func testANewLowerTableIsWatchedToo() throws {
        let c = PageTableCoherence(memory: mem)
        _ = c.prepare(cr3: 0x1000, written: [])
        try set(Self.pd, 2, Self.spare | 7)                           // VA 4-6 MiB gets a table
        guard case .coherent(let arm) = c.prepare(cr3: 0x1000, written: [page(Self.pd)]) else { return XCTFail() }
        XCTAssertTrue(arm.contains(page(Self.spare)))
        XCTAssertEqual(c.watchedCount, 6)
    }

    func testTablesBeyondTheLimitAreUnwatchable() {
        let c = PageTableCoherence(memory: mem, maxPages: 3)
        XCTAssertEqual(c.prepare(cr3: 0x1000, written: []), .unwatchable)
        XCTAssertEqual(c.watchedCount, 0)
    }

    func testExecutablePagesAreVerified() throws {
        let c = PageTableCoherence(memory: mem)
        var asked: [Int32] = []
        guard case .coherent = c.prepare(cr3: 0x1000, written: [], verify: { asked.append($0); return true }) else {
            return XCTFail()
        }
        XCTAssertEqual(asked, [0x200], "only the page without NX")
        try set(Self.pt2, 10, 0x301000 | 7)                           // a new executable page
        asked = []
        guard case .unportable = c.prepare(cr3: 0x1000, written: [page(Self.pt2)], verify: { asked.append($0); return false }) else {
            return XCTFail()
        }
        XCTAssertEqual(asked, [0x301])
    }

    func testStaleIgnoresOnlyAccessedAndNewDirty() {
        var old = [UInt64](repeating: 0, count: 512), new = old
        old[0] = 0x5000 | 7
        new[0] = 0x5000 | 7 | Self.a | Self.d
        XCTAssertEqual(PageTableCoherence.compare(old: old, new: new), .same)
        new[0] = 0x6000 | 7
        XCTAssertEqual(PageTableCoherence.compare(old: old, new: new), .stale)
        new[0] = old[0]
        new[1] = 0x7000 | 7
        XCTAssertEqual(PageTableCoherence.compare(old: old, new: new), .grew)
    }
}
