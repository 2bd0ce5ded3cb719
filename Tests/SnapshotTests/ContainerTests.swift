import Foundation
import JSONCoding
@testable import Snapshot
import XCTest

final class XXHash64Tests: XCTestCase {
    /// Reference values from the xxhash Python package (the C library).
    func testKnownVectors() {
        XCTAssertEqual(XXHash64.hash([]), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(XXHash64.hash(Array("a".utf8)), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(XXHash64.hash(Array("abc".utf8)), 0x44BC_2CF5_AD77_0999)
        XCTAssertEqual(XXHash64.hash(Array("0123456789abcdef0123456789abcdef".utf8)), 0x642A_9495_8E71_E6C5)
        XCTAssertEqual(XXHash64.hash(Array(repeating: UInt8(ascii: "x"), count: 31)), 0x60DD_0D01_083B_99F0)
        XCTAssertEqual(XXHash64.hash(Array(repeating: UInt8(ascii: "y"), count: 37)), 0x1965_09C2_CA03_F094)
        let ramp = (0..<1280).map { UInt8(truncatingIfNeeded: $0) }
        XCTAssertEqual(XXHash64.hash(ramp), 0xAFC1_84AD_7938_A354)
        XCTAssertEqual(XXHash64.hash(ramp, seed: 0x1234_5678), 0x2946_E2E2_447D_92FE)
        XCTAssertEqual(XXHash64.hash([], seed: 0x1234_5678), 0x30B9_3D61_1716_104A)
    }

    func testStreamingMatchesOneShot() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<50 {
            let bytes = (0..<Int.random(in: 0..<300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var s = XXHash64.Stream(seed: 7)
            var i = 0
            while i < bytes.count {
                let n = min(Int.random(in: 0..<40, using: &rng), bytes.count - i)
                s.update(Array(bytes[i..<i + n]))
                i += n
            }
            XCTAssertEqual(s.finalize(), XXHash64.hash(bytes, seed: 7))
        }
    }
}

final class ContainerTests: XCTestCase {
    let container = SnapshotContainer(sections: [
        SnapshotSection(tag: "machine", payload: Array(#"{"version":1}"#.utf8)),
        SnapshotSection(tag: "empty", payload: []),
        SnapshotSection(tag: "cpu-0", payload: (0..<200).map { UInt8($0) }),
    ])

    func testRoundTrip() throws {
        let bytes = container.serialized()
        let back = try SnapshotContainer.parse(bytes, path: "s")
        XCTAssertEqual(back, container)
        XCTAssertEqual(back.payload("cpu-0")?.count, 200)
        XCTAssertNil(back.payload("devices"))
    }

    /// Every single-byte corruption and every truncation is refused: nothing changed slips through.
    func testAnyCorruptionOrTruncationIsRefused() throws {
        let bytes = container.serialized()
        for i in 0..<bytes.count {
            var bad = bytes
            bad[i] ^= 0x20
            XCTAssertThrowsError(try SnapshotContainer.parse(bad, path: "s"), "flipped byte \(i) accepted")
        }
        for n in 0..<bytes.count {
            XCTAssertThrowsError(try SnapshotContainer.parse(Array(bytes[0..<n]), path: "s"), "truncated to \(n) accepted")
        }
        XCTAssertThrowsError(try SnapshotContainer.parse(bytes + [0], path: "s")) { e in
            XCTAssertTrue("\(e)".contains("after the end"), "\(e)")
        }
    }

    func testErrorsSayWhatIsWrong() {
        var bytes = container.serialized()
        XCTAssertEqual(err(Array("not a snapshot at all".utf8)), .notASnapshot(path: "s", expected: "state file"))
        bytes[8] = 2
        XCTAssertEqual(err(bytes), .unsupportedVersion(path: "s", found: 2, supported: 1))
        let good = container.serialized()
        if case .truncated = err(Array(good.prefix(good.count - 10))) {} else { XCTFail("truncation not named") }
        var flipped = good
        flipped[good.count - 1] ^= 1
        XCTAssertEqual(err(flipped), .corrupted(path: "s", detail: "section 'cpu-0' checksum mismatch"))
        XCTAssertTrue(err(flipped)!.description.contains("snapshot file 's' is corrupted"))
    }

    func err(_ bytes: [UInt8]) -> SnapshotError? {
        do { _ = try SnapshotContainer.parse(bytes, path: "s"); return nil } catch { return error }
    }

    func testOversizedFilesAreNotReadIntoMemory() throws {
        let path = NSTemporaryDirectory() + "swhv-big-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: path, contents: nil)
        defer { unlink(path) }
        XCTAssertEqual(truncate(path, off_t(SnapshotContainer.maxFileSize + 1)), 0)
        XCTAssertThrowsError(try SnapshotContainer.read(path: path)) { e in
            XCTAssertEqual(e as? SnapshotError, .tooLarge(path: path, size: SnapshotContainer.maxFileSize + 1, limit: SnapshotContainer.maxFileSize))
        }
        XCTAssertThrowsError(try SnapshotContainer.read(path: path + "-missing")) { e in
            XCTAssertTrue("\(e)".contains("No such file"), "\(e)")
        }
    }
}
