import XCTest
import CPUBackend
import VMMemory
@testable import Devices

/// VIRTIO_BLK_T_DISCARD and VIRTIO_BLK_T_WRITE_ZEROES as the driver sees them, and what the host
/// file holds afterwards (zeroes, holes, or untouched after a refused request).
final class VirtioBlockDiscardTests: XCTestCase {
    typealias H = VirtioPciHarness
    static let both = VirtioBlock.featureDiscard | VirtioBlock.featureWriteZeroes

    func makeHarness(_ disk: VirtioTempDisk, readOnly: Bool = false, acceptFeatures: UInt64 = ~0)
        throws -> (H, VirtioBlock) {
        let blk = try VirtioBlock(path: disk.path, readOnly: readOnly)
        let h = try H(device: blk)
        XCTAssertTrue(h.setUp(acceptFeatures: acceptFeatures))
        return (h, blk)
    }

    /// One struct virtio_blk_discard_write_zeroes.
    struct DiscardRange {
        var sector: UInt64
        var count: UInt32
        var flags: UInt32 = 0
        var bytes: [UInt8] {
            withUnsafeBytes(of: sector.littleEndian, Array.init) + withUnsafeBytes(of: count.littleEndian, Array.init)
                + withUnsafeBytes(of: flags.littleEndian, Array.init)
        }
    }

    /// Header, the ranges as one device-readable buffer (or `payload` as given), status.
    func request(_ h: H, type: UInt32, _ ranges: [DiscardRange], payload: [UInt8]? = nil,
                 payloadWritable: Bool = false) -> H.BlockResult {
        let bytes = payload ?? ranges.flatMap(\.bytes)
        h.writeHeader(type: type, sector: 0)
        try! h.memory.write(UInt8(0xEE), at: H.statusAddr)
        try! h.memory.write(bytes: bytes, at: H.dataAddr)
        if bytes.isEmpty {
            h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 2)
        } else {
            h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
            h.ring.setDescriptor(1, address: H.dataAddr, length: UInt32(bytes.count),
                                 flags: payloadWritable ? 3 : 1, next: 2)
        }
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        return h.submit(head: 0)
    }

    func discard(_ h: H, _ ranges: [DiscardRange]) -> UInt8 { request(h, type: VirtioBlock.requestDiscard, ranges).status }
    func writeZeroes(_ h: H, _ ranges: [DiscardRange]) -> UInt8 {
        request(h, type: VirtioBlock.requestWriteZeroes, ranges).status
    }

    func sectors(_ disk: VirtioTempDisk, _ range: Swift.Range<Int>) -> [UInt8] {
        Array(disk.contents[(range.lowerBound * 512)..<(range.upperBound * 512)])
    }
    func zeroes(_ n: Int) -> [UInt8] { [UInt8](repeating: 0, count: n * 512) }

    // MARK: What is offered

    func testWritableDiskOffersDiscardAndWriteZeroesWithLimitsInConfigSpace() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let (h, blk) = try makeHarness(disk)
        h.setCommon(VirtioPciCommonConfig.deviceFeatureSelect, size: 4, 0)
        let f = h.common(VirtioPciCommonConfig.deviceFeature, size: 4)
        XCTAssertEqual(f & Self.both, Self.both, "VIRTIO_BLK_F_DISCARD and VIRTIO_BLK_F_WRITE_ZEROES")
        XCTAssertEqual(blk.negotiatedFeatures & Self.both, Self.both)
        let cfg = VirtioPciCapType.deviceConfig
        XCTAssertEqual(h.read(cfg, 0x24, size: 4), 1 << 17, "max_discard_sectors: 64 MiB")
        XCTAssertEqual(h.read(cfg, 0x28, size: 4), 16, "max_discard_seg")
        XCTAssertEqual(h.read(cfg, 0x2C, size: 4), 8, "discard_sector_alignment")
        XCTAssertEqual(h.read(cfg, 0x30, size: 4), 1 << 16, "max_write_zeroes_sectors")
        XCTAssertEqual(h.read(cfg, 0x34, size: 4), 1, "max_write_zeroes_seg")
        XCTAssertEqual(h.read(cfg, 0x38, size: 1), 1, "write_zeroes_may_unmap")
        XCTAssertEqual(h.read(cfg, 0x00, size: 8), 64, "capacity still in place")
    }

    func testReadOnlyDiskOffersNeitherAndRefusesBothWithIOErrorFileUnchanged() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let before = disk.contents
        let (h, _) = try makeHarness(disk, readOnly: true)
        h.setCommon(VirtioPciCommonConfig.deviceFeatureSelect, size: 4, 0)
        XCTAssertEqual(h.common(VirtioPciCommonConfig.deviceFeature, size: 4) & Self.both, 0)
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 0x24, size: 4), 0, "no discard limits")
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 0x30, size: 4), 0, "no write-zeroes limits")
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: 8)]), VirtioBlock.statusIOError)
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 0, count: 8)]), VirtioBlock.statusIOError)
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 0, count: 8, flags: 1)]), VirtioBlock.statusIOError)
        XCTAssertEqual(disk.contents, before)
    }

    func testRequestsForFeaturesTheDriverDidNotAcceptAreUnsupported() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let before = disk.contents
        let (h, _) = try makeHarness(disk, acceptFeatures: ~Self.both)
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: 8)]), VirtioBlock.statusUnsupported)
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 0, count: 8)]), VirtioBlock.statusUnsupported)
        XCTAssertEqual(disk.contents, before)
    }

    // MARK: Effects on the host file

    func testDiscardPunchesAHoleThatReadsZeroesAndLeavesNeighbours() throws {
        let disk = VirtioTempDisk(sectors: 256)
        let (h, _) = try makeHarness(disk)
        let allocated = disk.allocatedSectors
        let r = request(h, type: VirtioBlock.requestDiscard, [DiscardRange(sector: 64, count: 64)])
        XCTAssertEqual(r.status, VirtioBlock.statusOK)
        XCTAssertEqual(r.usedLength, 1, "only the status byte is written")
        XCTAssertEqual(sectors(disk, 64..<128), zeroes(64))
        XCTAssertEqual(sectors(disk, 63..<64), virtioSectorPattern(63))
        XCTAssertEqual(sectors(disk, 128..<129), virtioSectorPattern(128))
        XCTAssertEqual(disk.contents.count, 256 * 512, "the file keeps its size")
        XCTAssertEqual(disk.allocatedSectors, allocated - 64, "the host frees the discarded 32 KiB")
        // The guest reads zeroes back through the device too.
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 64, inLength: 1024).data, zeroes(2))
    }

    func testDiscardOfSeveralRangesAppliesEach() throws {
        let disk = VirtioTempDisk(sectors: 256)
        let (h, _) = try makeHarness(disk)
        let ranges = [DiscardRange(sector: 8, count: 8), DiscardRange(sector: 200, count: 16), DiscardRange(sector: 248, count: 8)]
        XCTAssertEqual(discard(h, ranges), VirtioBlock.statusOK)
        for r in ranges {
            XCTAssertEqual(sectors(disk, Int(r.sector)..<Int(r.sector) + Int(r.count)), zeroes(Int(r.count)))
        }
        XCTAssertEqual(sectors(disk, 16..<17), virtioSectorPattern(16))
        XCTAssertEqual(sectors(disk, 199..<200), virtioSectorPattern(199))
    }

    func testWriteZeroesWithUnmapFreesBlocksAndWithoutKeepsThem() throws {
        let disk = VirtioTempDisk(sectors: 256)
        let (h, _) = try makeHarness(disk)
        let allocated = disk.allocatedSectors
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 0, count: 32)]), VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 0..<32), zeroes(32))
        XCTAssertEqual(disk.allocatedSectors, allocated, "without UNMAP the blocks stay allocated")
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 128, count: 64, flags: VirtioBlock.rangeFlagUnmap)]),
                       VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 128..<192), zeroes(64))
        XCTAssertEqual(disk.allocatedSectors, allocated - 64, "UNMAP punches a hole")
        XCTAssertEqual(sectors(disk, 32..<33), virtioSectorPattern(32))
        XCTAssertEqual(sectors(disk, 192..<193), virtioSectorPattern(192))
    }

    /// tmpfs cannot FALLOC_FL_ZERO_RANGE: write-zeroes without UNMAP still leaves zeroes there (and
    /// allocated blocks); with UNMAP it punches a hole, which tmpfs can.
    func testWriteZeroesFallsBackWhereTheFileSystemCannotZeroARange() throws {
        XCTAssertEqual(access("/dev/shm", W_OK), 0, "a Linux host has a writable /dev/shm (tmpfs)")
        let disk = VirtioTempDisk(sectors: 256, directory: "/dev/shm")
        let (h, _) = try makeHarness(disk)
        let allocated = disk.allocatedSectors
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 3, count: 61)]), VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 3..<64), zeroes(61))
        XCTAssertEqual(sectors(disk, 2..<3), virtioSectorPattern(2))
        XCTAssertEqual(sectors(disk, 64..<65), virtioSectorPattern(64))
        XCTAssertEqual(disk.allocatedSectors, allocated)
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 128, count: 128, flags: 1)]), VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 128..<256), zeroes(128))
        XCTAssertLessThan(disk.allocatedSectors, allocated)
        XCTAssertEqual(discard(h, [DiscardRange(sector: 64, count: 64)]), VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 64..<128), zeroes(64))
    }

    func testRangeOfZeroSectorsAndTheLastSectorAreFine() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let (h, _) = try makeHarness(disk)
        XCTAssertEqual(discard(h, [DiscardRange(sector: 10, count: 0)]), VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 10..<11), virtioSectorPattern(10))
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 63, count: 1)]), VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 63..<64), zeroes(1))
        XCTAssertEqual(discard(h, [DiscardRange(sector: 64, count: 0)]), VirtioBlock.statusOK, "empty range at the end")
    }

    // MARK: Hostile requests change nothing

    func testUnmapOnDiscardAndReservedFlagsAreUnsupportedAndChangeNothing() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let (h, _) = try makeHarness(disk)
        let before = disk.contents
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: 8, flags: VirtioBlock.rangeFlagUnmap)]),
                       VirtioBlock.statusUnsupported, "UNMAP is only for write-zeroes")
        for flags: UInt32 in [2, 1 << 31, 0xFFFF_FFFF] {
            XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: 8, flags: flags)]), VirtioBlock.statusUnsupported)
            XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 0, count: 8, flags: flags)]), VirtioBlock.statusUnsupported)
        }
        // A good range first does not get applied when a later one is refused.
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: 8), DiscardRange(sector: 16, count: 8, flags: 4)]),
                       VirtioBlock.statusUnsupported)
        XCTAssertEqual(disk.contents, before)
    }

    func testRangesPastTheEndOrWrappingAreIOErrorsAndChangeNothing() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let (h, _) = try makeHarness(disk)
        let before = disk.contents
        let bad = [DiscardRange(sector: 63, count: 2), DiscardRange(sector: 64, count: 1), DiscardRange(sector: UInt64.max, count: 1),
                   DiscardRange(sector: UInt64.max - 3, count: 8), DiscardRange(sector: 1 << 55, count: 8),
                   DiscardRange(sector: 65, count: 0)]
        for r in bad {
            XCTAssertEqual(discard(h, [r]), VirtioBlock.statusIOError, "discard \(r)")
            XCTAssertEqual(writeZeroes(h, [r]), VirtioBlock.statusIOError, "write-zeroes \(r)")
            XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: r.sector, count: r.count, flags: 1)]),
                           VirtioBlock.statusIOError)
        }
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: 8), DiscardRange(sector: 60, count: 8)]),
                       VirtioBlock.statusIOError, "one bad range fails the request before anything is done")
        XCTAssertEqual(disk.contents, before)
    }

    func testTooManySegmentsAndTooManySectorsAreIOErrors() throws {
        let disk = VirtioTempDisk(sparseBytes: 4 << 30)   // room for ranges longer than the limits
        let (h, _) = try makeHarness(disk)
        let many = (0..<17).map { DiscardRange(sector: UInt64($0) * 8, count: 8) }
        XCTAssertEqual(discard(h, many), VirtioBlock.statusIOError, "17 ranges, max_discard_seg is 16")
        XCTAssertEqual(discard(h, Array(many.prefix(16))), VirtioBlock.statusOK)
        XCTAssertEqual(writeZeroes(h, Array(many.prefix(2))), VirtioBlock.statusIOError, "max_write_zeroes_seg is 1")
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: VirtioBlock.maxDiscardSectors + 1)]), VirtioBlock.statusIOError)
        XCTAssertEqual(discard(h, [DiscardRange(sector: 0, count: VirtioBlock.maxDiscardSectors)]), VirtioBlock.statusOK)
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 0, count: VirtioBlock.maxWriteZeroesSectors + 1)]),
                       VirtioBlock.statusIOError)
        XCTAssertEqual(writeZeroes(h, [DiscardRange(sector: 8, count: VirtioBlock.maxWriteZeroesSectors)]),
                       VirtioBlock.statusOK)
        var st = stat()
        XCTAssertEqual(stat(disk.path, &st), 0)
        XCTAssertEqual(st.st_size, 4 << 30, "size unchanged")
    }

    func testMalformedPayloadsAreIOErrors() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let (h, _) = try makeHarness(disk)
        let before = disk.contents
        let good = DiscardRange(sector: 0, count: 8).bytes
        for type in [VirtioBlock.requestDiscard, VirtioBlock.requestWriteZeroes] {
            XCTAssertEqual(request(h, type: type, [], payload: []).status, VirtioBlock.statusIOError, "no range")
            XCTAssertEqual(request(h, type: type, [], payload: Array(good.prefix(8))).status,
                           VirtioBlock.statusIOError, "half a range")
            XCTAssertEqual(request(h, type: type, [], payload: good + [0, 0, 0, 0]).status,
                           VirtioBlock.statusIOError, "not a multiple of 16 bytes")
            XCTAssertEqual(request(h, type: type, [], payload: good, payloadWritable: true).status,
                           VirtioBlock.statusIOError, "ranges in a device-writable buffer")
            // A writable data buffer besides the status byte.
            h.writeHeader(type: type, sector: 0)
            try h.memory.write(bytes: good, at: H.dataAddr)
            h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
            h.ring.setDescriptor(1, address: H.dataAddr, length: 16, flags: 1, next: 2)
            h.ring.setDescriptor(2, address: H.dataAddr + 0x100, length: 512, flags: 3, next: 3)
            h.ring.setDescriptor(3, address: H.statusAddr, length: 1, flags: 2)
            let r = h.submit(head: 0)
            XCTAssertEqual(r.status, VirtioBlock.statusIOError)
        }
        XCTAssertEqual(disk.contents, before)
        XCTAssertEqual(h.transport.status.rawValue, 15, "bad requests are not device errors")
    }

    /// The range array split across descriptors at odd places is the same request.
    func testRangesSplitAcrossDescriptors() throws {
        let disk = VirtioTempDisk(sectors: 64)
        let (h, _) = try makeHarness(disk)
        let bytes = DiscardRange(sector: 8, count: 8).bytes + DiscardRange(sector: 32, count: 16).bytes
        h.writeHeader(type: VirtioBlock.requestDiscard, sector: 0)
        try h.memory.write(bytes: bytes, at: H.dataAddr)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.dataAddr, length: 5, flags: 1, next: 2)
        h.ring.setDescriptor(2, address: H.dataAddr + 5, length: 20, flags: 1, next: 3)
        h.ring.setDescriptor(3, address: H.dataAddr + 25, length: 7, flags: 1, next: 4)
        h.ring.setDescriptor(4, address: H.statusAddr, length: 1, flags: 2)
        XCTAssertEqual(h.submit(head: 0).status, VirtioBlock.statusOK)
        XCTAssertEqual(sectors(disk, 8..<16), zeroes(8))
        XCTAssertEqual(sectors(disk, 32..<48), zeroes(16))
        XCTAssertEqual(sectors(disk, 16..<32), virtioSectorPattern(16, count: 16))
    }
}
