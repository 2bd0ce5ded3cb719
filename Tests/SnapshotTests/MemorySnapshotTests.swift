import Foundation
import JSONCoding
@testable import Snapshot
import VMMemory
import XCTest

final class MemorySnapshotTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "swhv-snap-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    /// 16 MiB with data in a few places: the first page, one page in the middle of a chunk, two
    /// neighbouring pages, and the very last page.
    func guestRAM() throws -> GuestMemory {
        let m = try GuestMemory(size: 16 << 20)
        try m.write(bytes: Array("boot sector".utf8), at: 0)
        try m.write(bytes: [UInt8](repeating: 0xAB, count: 4096), at: 3 << 20)
        try m.write(bytes: (0..<8192).map { UInt8(truncatingIfNeeded: $0) }, at: (5 << 20) + 4096)
        try m.write(bytes: [0xFF], at: (16 << 20) - 1)
        return m
    }

    func writeSnapshot(_ m: GuestMemory, residency: PageResidency? = PageResidency()) throws -> (String, MemorySection) {
        let path = dir + "/memory"
        let file = try PendingFile(path: path)
        let section = try GuestMemorySnapshot.write(m, to: file, snapshotID: Array(repeating: 7, count: 16), residency: residency)
        try file.commit()
        return (path, section)
    }

    func testZeroPagesAreHolesAndTheFileMapsBackExactly() throws {
        let m = try guestRAM()
        let (path, section) = try writeSnapshot(m)
        XCTAssertEqual(section.dataBytes, 4 * 4096 + 4096, "five pages hold data")
        XCTAssertEqual(section.chunks.filter { $0 != 0 }.count, 4, "chunks 0, 1, 2 and 7 hold data")
        var st = stat()
        XCTAssertEqual(stat(path, &st), 0)
        XCTAssertEqual(UInt64(st.st_size), 4096 + (16 << 20))
        XCTAssertLessThan(Int(st.st_blocks) * 512, 1 << 20, "zero pages are holes, not written zeroes")
        XCTAssertEqual(st.st_mode & 0o777, 0o600)

        let fd = try GuestMemorySnapshot.open(path: path, section: section, verifyContents: true)
        defer { close(fd) }
        let restored = try GuestMemory(size: 16 << 20)
        try restored.mapPrivately(fileDescriptor: fd, offset: GuestMemorySnapshot.headerBytes)
        for r in 0..<(16 << 20) / 4096 {
            let a = try m.readBytes(at: UInt64(r * 4096), count: 4096), b = try restored.readBytes(at: UInt64(r * 4096), count: 4096)
            if a != b { return XCTFail("page \(r) differs after restore") }
        }
        // The guest writes its private copy; the snapshot stays as it was.
        try restored.write(bytes: [1, 2, 3], at: 3 << 20)
        XCTAssertNoThrow(try GuestMemorySnapshot.check(fd: fd, path: path, section: section, verifyContents: true))
    }

    func testResidencyOnlySkipsWork() throws {
        let m = try guestRAM()
        let withMap = try writeSnapshot(m).1
        let withoutMap = try writeSnapshot(m, residency: nil).1
        XCTAssertEqual(withMap.chunks, withoutMap.chunks)
        XCTAssertEqual(withMap.dataBytes, withoutMap.dataBytes)
    }

    func modify(_ path: String, at offset: off_t, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, offset) }
        close(fd)
    }

    func refusal(_ path: String, _ section: MemorySection, verify: Bool = true) -> String {
        do { close(try GuestMemorySnapshot.open(path: path, section: section, verifyContents: verify)); return "accepted" } catch {
            return error.description
        }
    }

    func testDamagedOrForeignMemoryFilesAreRefused() throws {
        let m = try guestRAM()
        let (path, section) = try writeSnapshot(m)
        let pristine = try Data(contentsOf: URL(fileURLWithPath: path))

        modify(path, at: 4096 + (3 << 20) + 100, [0xAC])
        XCTAssertTrue(refusal(path, section).contains("checksum mismatch in chunk 1"), refusal(path, section))
        XCTAssertEqual(refusal(path, section, verify: false), "accepted", "without verification only the header is checked")
        try pristine.write(to: URL(fileURLWithPath: path))

        modify(path, at: 4096 + (9 << 20), [1])     // data where the snapshot had zeroes
        XCTAssertTrue(refusal(path, section).contains("should be zero"), refusal(path, section))
        try pristine.write(to: URL(fileURLWithPath: path))

        XCTAssertEqual(truncate(path, off_t(4096 + (8 << 20))), 0)
        XCTAssertTrue(refusal(path, section).contains("truncated"), refusal(path, section))
        try pristine.write(to: URL(fileURLWithPath: path))

        var other = section
        other.snapshotID = String(repeating: "ab", count: 16)
        XCTAssertTrue(refusal(path, other).contains("belongs to another snapshot"), refusal(path, other))
        other = section
        other.bytes = 32 << 20
        XCTAssertTrue(refusal(path, other).contains("holds 16777216 bytes"), refusal(path, other))
        other = section
        other.version = 9
        XCTAssertTrue(refusal(path, other).contains("version 9"), refusal(path, other))
        other = section
        other.chunkBytes = 1 << 40
        XCTAssertTrue(refusal(path, other).contains("chunk table"), refusal(path, other))

        modify(path, at: 0, Array("NOTSWHV!".utf8))
        XCTAssertTrue(refusal(path, section).contains("not a swhv snapshot memory file"), refusal(path, section))
        modify(path, at: 0, Array("SWHVMEM\0".utf8))
        modify(path, at: 16, [0xFF])
        XCTAssertTrue(refusal(path, section).contains("header checksum"), refusal(path, section))
        XCTAssertTrue(refusal(dir + "/none", section).contains("No such file"))
    }
}

final class SnapshotFilesTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "swhv-snap-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func contents(disks: [DiskIdentity] = []) -> SnapshotContents {
        SnapshotContents(machine: MachineSection(memoryBytes: 16 << 20, backend: "interpreter", irqchip: true,
                                                 clockNs: 123_456_789, createdUnixNs: 1),
                         disks: disks, extraSections: [SnapshotSection(tag: "cpu", payload: Array("{}".utf8))])
    }

    func testWriteThenReadBack() throws {
        let m = try GuestMemory(size: 16 << 20)
        try m.write(bytes: [1, 2, 3], at: 0x1000)
        let disk = dir + "/disk.img"
        FileManager.default.createFile(atPath: disk, contents: Data(repeating: 9, count: 1 << 20))
        let identity = try DiskIdentity.current(path: disk, readOnly: false, serial: "s1")
        let summary = try SnapshotWriter.write(statePath: dir + "/state", memoryPath: dir + "/memory",
                                               contents: contents(disks: [identity]), memory: m, residency: PageResidency())
        XCTAssertEqual(summary.memoryBytes, 16 << 20)
        XCTAssertEqual(summary.memoryDataBytes, 4096)
        let loaded = try LoadedSnapshot.read(statePath: dir + "/state")
        XCTAssertEqual(loaded.machine.clockNs, 123_456_789)
        XCTAssertEqual(loaded.disks, [identity])
        XCTAssertEqual(loaded.container.payload("cpu"), Array("{}".utf8))
        XCTAssertNoThrow(try loaded.checkDisks())
        XCTAssertThrowsError(try loaded.checkMemory(limit: 8 << 20, layout: nil)) { e in
            XCTAssertEqual("\(e)", "snapshot needs 16 MiB of guest RAM, more than --memory allows (8 MiB)")
        }
        XCTAssertNoThrow(try loaded.checkMemory(limit: 16 << 20, layout: GuestMemory.regionLayout(size: 16 << 20)))
        XCTAssertThrowsError(try loaded.checkMemory(limit: nil, layout: GuestMemory.regionLayout(size: 32 << 20)))
        // Nothing is left behind but the two files.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["disk.img", "memory", "state"])
    }

    func testAFailedSnapshotLeavesExistingFilesUntouched() throws {
        let m = try GuestMemory(size: 16 << 20)
        FileManager.default.createFile(atPath: dir + "/state", contents: Data("old state".utf8))
        FileManager.default.createFile(atPath: dir + "/memory", contents: Data("old memory".utf8))
        // The disk vanished: capturing its identity fails before anything is written.
        XCTAssertThrowsError(try DiskIdentity.current(path: dir + "/gone.img", readOnly: false, serial: "")) { e in
            XCTAssertEqual("\(e)", "snapshot disk '\(dir!)/gone.img' is missing")
        }
        // The state file cannot be created (its directory is missing) after memory was written.
        XCTAssertThrowsError(try SnapshotWriter.write(statePath: dir + "/nodir/state", memoryPath: dir + "/memory",
                                                      contents: contents(), memory: m, residency: nil))
        XCTAssertEqual(try String(contentsOfFile: dir + "/memory", encoding: .utf8), "old memory")
        XCTAssertEqual(try String(contentsOfFile: dir + "/state", encoding: .utf8), "old state")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir).sorted(), ["memory", "state"],
                       "no temporary files are left")
        XCTAssertThrowsError(try SnapshotWriter.write(statePath: dir + "/x", memoryPath: dir + "/x", contents: contents(),
                                                      memory: m, residency: nil))
    }

    func testSectionsAreCheckedAfterTheContainer() throws {
        func write(_ sections: [SnapshotSection]) throws -> String {
            let path = dir + "/state-\(UUID().uuidString.prefix(6))"
            FileManager.default.createFile(atPath: path, contents: Data(SnapshotContainer(sections: sections).serialized()))
            return path
        }
        func failure(_ sections: [SnapshotSection]) throws -> String {
            do { _ = try LoadedSnapshot.read(statePath: try write(sections)); return "accepted" } catch { return "\(error)" }
        }
        let machine = try SnapshotWriter.section("machine", contents().machine)
        let memory = try SnapshotWriter.section("memory", MemorySection(bytes: 16 << 20, snapshotID: "00", chunkBytes: 2 << 20,
                                                                        regions: [], chunks: [], dataBytes: 0))
        let disks = try SnapshotWriter.section("disks", [DiskIdentity]())
        XCTAssertEqual(try failure([machine, memory]), "snapshot has no 'disks' section")
        XCTAssertEqual(try failure([SnapshotSection(tag: "machine", payload: Array("{".utf8)), memory, disks]).prefix(27),
                       "snapshot section 'machine':")
        var newer = contents().machine
        newer.version = 2
        XCTAssertTrue(try failure([try SnapshotWriter.section("machine", newer), memory, disks]).contains("version 2"))
        var big = contents().machine
        big.vcpuCount = 4
        XCTAssertTrue(try failure([try SnapshotWriter.section("machine", big), memory, disks]).contains("4 vCPUs"))
        XCTAssertEqual(try failure([machine, memory, disks]), "accepted")
    }
}

final class DiskIdentityTests: XCTestCase {
    func testChangedDisksAreRefused() throws {
        let path = NSTemporaryDirectory() + "swhv-disk-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: path, contents: Data(repeating: 0, count: 1 << 20))
        defer { unlink(path) }
        let id = try DiskIdentity.current(path: path, readOnly: false, serial: "")
        XCTAssertNoThrow(try id.checkUnchanged())
        func problem() -> String {
            do { try id.checkUnchanged(); return "unchanged" } catch { return "\(error)" }
        }
        // Written past the first 64 KiB: only the modification time tells.
        let fd = open(path, O_WRONLY)
        _ = [UInt8](repeating: 1, count: 1).withUnsafeBytes { pwrite(fd, $0.baseAddress, 1, 512 << 10) }
        close(fd)
        var times = [timespec(tv_sec: 1_000_000, tv_nsec: 0), timespec(tv_sec: 1_000_000, tv_nsec: 0)]
        utimensat(AT_FDCWD, path, &times, 0)
        XCTAssertTrue(problem().contains("modification time"), problem())
        // The same bytes and time in another file (a copy in place of the original) is another file.
        let original = try Data(contentsOf: URL(fileURLWithPath: path))
        FileManager.default.createFile(atPath: path + ".copy", contents: original)
        utimensat(AT_FDCWD, path + ".copy", &times, 0)
        XCTAssertEqual(rename(path + ".copy", path), 0)
        XCTAssertTrue(problem().contains("another file"), problem())
        XCTAssertEqual(truncate(path, 2 << 20), 0)
        XCTAssertTrue(problem().contains("changed size"), problem())
        unlink(path)
        XCTAssertEqual(problem(), "snapshot disk '\(path)' is missing")
    }
}
