import XCTest
import CPUBackend
import VMMemory
@testable import Devices

final class VirtioBlockTests: XCTestCase {
    typealias H = VirtioPciHarness

    func makeHarness(sectors: Int = 64, readOnly: Bool = false, serial: String = "")
        throws -> (H, VirtioTempDisk, VirtioBlock) {
        let disk = VirtioTempDisk(sectors: sectors)
        let blk = try VirtioBlock(path: disk.path, readOnly: readOnly, serial: serial)
        let h = try H(device: blk)
        XCTAssertTrue(h.setUp())
        return (h, disk, blk)
    }

    func testReadReturnsFileSectorsAndInterruptsThroughQueueVector() throws {
        let (h, _, _) = try makeHarness()
        let r = h.blockRequest(type: VirtioBlock.requestIn, sector: 3, inLength: 1024)
        XCTAssertEqual(r.status, VirtioBlock.statusOK)
        XCTAssertEqual(r.data, virtioSectorPattern(3, count: 2))
        XCTAssertEqual(r.usedLength, 1025, "data plus the status byte")
        XCTAssertEqual(h.interrupts.msis, [VirtioRecordedMSI(address: H.msiAddress, data: 0x41)])
    }

    func testWriteLandsInHostFileAndReadsBack() throws {
        let (h, disk, _) = try makeHarness()
        let payload = (0..<1536).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        let w = h.blockRequest(type: VirtioBlock.requestOut, sector: 10, data: payload)
        XCTAssertEqual(w.status, VirtioBlock.statusOK)
        XCTAssertEqual(w.usedLength, 1)
        let file = disk.contents
        XCTAssertEqual(Array(file[(10 * 512)..<(13 * 512)]), payload)
        XCTAssertEqual(Array(file[(9 * 512)..<(10 * 512)]), virtioSectorPattern(9), "neighbours untouched")
        XCTAssertEqual(Array(file[(13 * 512)..<(14 * 512)]), virtioSectorPattern(13))
        let f = h.blockRequest(type: VirtioBlock.requestFlush, sector: 0)
        XCTAssertEqual(f.status, VirtioBlock.statusOK)
        let r = h.blockRequest(type: VirtioBlock.requestIn, sector: 10, inLength: 1536)
        XCTAssertEqual(r.data, payload)
    }

    func testLastSectorIsReachableAndOneBeyondIsIOError() throws {
        let (h, _, _) = try makeHarness(sectors: 64)
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 0, size: 8), 64, "capacity in sectors")
        let last = h.blockRequest(type: VirtioBlock.requestIn, sector: 63, inLength: 512)
        XCTAssertEqual(last.status, VirtioBlock.statusOK)
        XCTAssertEqual(last.data, virtioSectorPattern(63))
        let past = h.blockRequest(type: VirtioBlock.requestIn, sector: 63, inLength: 1024)
        XCTAssertEqual(past.status, VirtioBlock.statusIOError)
        XCTAssertEqual(past.data, [UInt8](repeating: 0xCC, count: 1024), "nothing copied on error")
        let wrap = h.blockRequest(type: VirtioBlock.requestOut, sector: UInt64.max, data: [UInt8](repeating: 1, count: 512))
        XCTAssertEqual(wrap.status, VirtioBlock.statusIOError)
        let odd = h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 100)
        XCTAssertEqual(odd.status, VirtioBlock.statusIOError, "data must be whole sectors")
    }

    func testGetIDReturnsSerialPaddedAndTruncated() throws {
        let (h, _, blk) = try makeHarness(serial: "swhv-disk-0")
        let r = h.blockRequest(type: VirtioBlock.requestGetID, sector: 0, inLength: 20)
        XCTAssertEqual(r.status, VirtioBlock.statusOK)
        XCTAssertEqual(r.data, Array("swhv-disk-0".utf8) + [UInt8](repeating: 0, count: 9))
        XCTAssertEqual(r.usedLength, 21)
        blk.serial = "0123456789abcdefghijKLMN"
        let t = h.blockRequest(type: VirtioBlock.requestGetID, sector: 0, inLength: 20)
        XCTAssertEqual(t.data, Array("0123456789abcdefghij".utf8))
    }

    /// Every byte the device stores in guest RAM is reported to the DMA observer (the interpreter
    /// drops decoded code there): the status byte, the serial and the used ring, not only read data.
    /// Found by attack-virtio: a status byte written over code the guest had run was not seen.
    func testEveryDeviceWriteIsReportedAsDMA() throws {
        let (h, _, _) = try makeHarness(serial: "swhv-disk-0")
        final class Recorder: @unchecked Sendable { var ranges: [(UInt64, UInt64)] = [] }
        let rec = Recorder()
        h.memory.dmaWriteObserver = { a, l in rec.ranges.append((a, l)) }
        defer { h.memory.dmaWriteObserver = nil }
        func covered(_ address: UInt64, _ length: UInt64) -> Bool {
            rec.ranges.contains { $0.0 <= address && address + length <= $0.0 + $0.1 }
        }
        _ = h.blockRequest(type: VirtioBlock.requestFlush, sector: 0)
        XCTAssertTrue(covered(H.statusAddr, 1), "status byte")
        XCTAssertTrue(covered(H.usedAddr + 2, 2), "used index")
        XCTAssertTrue(covered(H.usedAddr + 4, 4) && covered(H.usedAddr + 8, 4), "used element")
        rec.ranges = []
        _ = h.blockRequest(type: VirtioBlock.requestGetID, sector: 0, inLength: 20)
        XCTAssertTrue(covered(H.dataAddr, 20), "serial")
    }

    func testUnknownRequestTypeIsUnsupported() throws {
        let (h, _, _) = try makeHarness()
        let r = h.blockRequest(type: 0x77, sector: 0)
        XCTAssertEqual(r.status, VirtioBlock.statusUnsupported)
    }

    func testReadOnlyDiskRejectsWritesAndFileIsBitIdentical() throws {
        let (h, disk, blk) = try makeHarness(readOnly: true)
        let before = disk.contents
        h.setCommon(VirtioPciCommonConfig.deviceFeatureSelect, size: 4, 0)
        XCTAssertNotEqual(h.common(VirtioPciCommonConfig.deviceFeature, size: 4) & (1 << 5), 0, "VIRTIO_BLK_F_RO")
        let w = h.blockRequest(type: VirtioBlock.requestOut, sector: 0, data: [UInt8](repeating: 0xAB, count: 4096))
        XCTAssertEqual(w.status, VirtioBlock.statusIOError)
        XCTAssertEqual(disk.contents, before)
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestFlush, sector: 0).status, VirtioBlock.statusOK)
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 1, inLength: 512).data,
                       virtioSectorPattern(1))
        XCTAssertTrue(blk.isReadOnly)
    }

    func testSecondWritableOpenIsRefusedWithClearMessage() throws {
        let disk = VirtioTempDisk(sectors: 8)
        var first: VirtioBlock? = try VirtioBlock(path: disk.path)
        XCTAssertThrowsError(try VirtioBlock(path: disk.path)) { e in
            XCTAssertEqual(e as? BlockError, .inUse(path: disk.path))
            XCTAssertEqual("\(e)", "disk \(disk.path) is in use by another process")
        }
        XCTAssertThrowsError(try VirtioBlock(path: disk.path, readOnly: true), "readers wait for the writer too")
        XCTAssertNotNil(first)
        first = nil
        XCTAssertNoThrow(try VirtioBlock(path: disk.path), "the lock goes with the device")
    }

    func testTwoReadOnlyOpenersShareButBlockAWriter() throws {
        let disk = VirtioTempDisk(sectors: 8)
        let a = try VirtioBlock(path: disk.path, readOnly: true)
        let b = try VirtioBlock(path: disk.path, readOnly: true)
        XCTAssertThrowsError(try VirtioBlock(path: disk.path)) { XCTAssertEqual($0 as? BlockError, .inUse(path: disk.path)) }
        _ = (a, b)
    }

    func testImageSizeNotSectorMultipleIsRefused() {
        let disk = VirtioTempDisk(bytes: [UInt8](repeating: 0, count: 1000))
        XCTAssertThrowsError(try VirtioBlock(path: disk.path)) { e in
            XCTAssertEqual(e as? BlockError, .sizeNotSectorMultiple(path: disk.path, size: 1000))
            XCTAssertTrue("\(e)".contains("not a multiple of 512"))
        }
        XCTAssertThrowsError(try VirtioBlock(path: "/nonexistent/disk.img")) { e in
            XCTAssertTrue("\(e)".contains("No such file"), "\(e)")
        }
        XCTAssertThrowsError(try VirtioBlock(path: "/tmp")) { e in
            XCTAssertNotNil(e as? BlockError)
        }
    }

    // MARK: Malformed requests end in a status, never a crash

    func testHeaderInWritableBufferIsIOError() throws {
        let (h, _, _) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1 | 2, next: 1)
        h.ring.setDescriptor(1, address: H.statusAddr, length: 1, flags: 2)
        let r = h.submit(head: 0)
        XCTAssertEqual(r.status, VirtioBlock.statusIOError)
    }

    func testReadIntoDeviceReadableBufferIsIOErrorAndMemoryUntouched() throws {
        let (h, _, _) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        try h.memory.fill(0xCC, at: H.dataAddr, length: 512)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.dataAddr, length: 512, flags: 1, next: 2)   // should be writable
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        let r = h.submit(head: 0, inLength: 512)
        XCTAssertEqual(r.status, VirtioBlock.statusIOError)
        XCTAssertEqual(r.data, [UInt8](repeating: 0xCC, count: 512))
    }

    func testWriteFromDeviceWritableBufferIsIOErrorAndFileUntouched() throws {
        let (h, disk, _) = try makeHarness()
        let before = disk.contents
        h.writeHeader(type: VirtioBlock.requestOut, sector: 0)
        try h.memory.fill(0xAB, at: H.dataAddr, length: 512)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.dataAddr, length: 512, flags: 1 | 2, next: 2)   // should be readable
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        XCTAssertEqual(h.submit(head: 0).status, VirtioBlock.statusIOError)
        XCTAssertEqual(disk.contents, before)
    }

    func testShortHeaderAndZeroLengthBuffersAreHandled() throws {
        let (h, _, _) = try makeHarness()
        // An 8-byte header: too short.
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 8, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.statusAddr, length: 1, flags: 2)
        XCTAssertEqual(h.submit(head: 0).status, VirtioBlock.statusIOError)
        // A zero-length header descriptor followed by a real one still forms one 16-byte header.
        h.ring.setDescriptor(0, address: H.headerAddr, length: 0, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.headerAddr, length: 16, flags: 1, next: 2)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        XCTAssertEqual(h.submit(head: 0).status, VirtioBlock.statusOK)
        // No writable byte at all: nowhere to put a status, the chain comes back with length 0.
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.statusAddr, length: 0, flags: 2)
        try h.memory.write(UInt8(0xEE), at: H.statusAddr)
        let before = h.ring.usedIdx
        h.ring.publish(0)
        h.kick()
        XCTAssertEqual(h.ring.usedIdx, before &+ 1)
        XCTAssertEqual(h.ring.usedElement(before).length, 0)
        XCTAssertEqual(try h.memory.read(UInt8.self, at: H.statusAddr), 0xEE)
        XCTAssertEqual(h.transport.status.rawValue, 15, "a bad request is not a device error")
    }

    func testHeaderSplitAcrossDescriptorsAndStatusSharingDataBuffer() throws {
        let (h, _, _) = try makeHarness()
        // Header in two 8-byte pieces; data and status in one 513-byte writable buffer.
        h.writeHeader(type: VirtioBlock.requestIn, sector: 5)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 8, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.headerAddr + 8, length: 8, flags: 1, next: 2)
        h.ring.setDescriptor(2, address: H.dataAddr, length: 513, flags: 2)
        let before = h.ring.usedIdx
        h.ring.publish(0)
        h.kick()
        XCTAssertEqual(h.ring.usedElement(before).length, 513)
        XCTAssertEqual(try h.memory.readBytes(at: H.dataAddr, count: 512), virtioSectorPattern(5))
        XCTAssertEqual(try h.memory.read(UInt8.self, at: H.dataAddr + 512), VirtioBlock.statusOK)
    }

    func testIndirectDescriptorRequest() throws {
        let (h, _, _) = try makeHarness()
        let table: UInt64 = 0x30000
        h.writeHeader(type: VirtioBlock.requestIn, sector: 7)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1, table: table)
        h.ring.setDescriptor(1, address: H.dataAddr, length: 512, flags: 3, next: 2, table: table)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2, table: table)
        h.ring.setDescriptor(0, address: table, length: 48, flags: 4)
        let r = h.submit(head: 0, inLength: 512)
        XCTAssertEqual(r.status, VirtioBlock.statusOK)
        XCTAssertEqual(r.data, virtioSectorPattern(7))
    }

    func testManyRequestsWrapTheRing() throws {
        // Queue size 4: 10 requests wrap the ring indices twice.
        let disk = VirtioTempDisk(sectors: 16)
        let h2 = try H(device: try VirtioBlock(path: disk.path))
        XCTAssertTrue(h2.setUp(queueSize: 4))
        for i in 0..<10 {
            let r = h2.blockRequest(type: VirtioBlock.requestIn, sector: UInt64(i), inLength: 512)
            XCTAssertEqual(r.status, VirtioBlock.statusOK)
            XCTAssertEqual(r.data, virtioSectorPattern(i))
        }
        XCTAssertEqual(h2.ring.usedIdx, 10)
    }
}

extension VirtioBlockTests {
    /// Data split over many uneven descriptors (as an indirect table): one vectored transfer must
    /// put each piece at the right place in the file and in guest memory.
    func testReadAndWriteOverManyUnevenDescriptors() throws {
        let (h, disk, _) = try makeHarness(sectors: 64)
        let table: UInt64 = 0x30000
        let pieces = [100, 412, 1000, 24, 1, 511, 3000, 48, 1024, 408] + [Int](repeating: 16, count: 40)
        let total = pieces.reduce(0, +)
        XCTAssertEqual(total, 14 * 512)
        let payload = (0..<total).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 5) }
        // Scatter the pieces with gaps so adjacent pieces are not adjacent in guest memory.
        func setUpChain(type: UInt32, writable: Bool) {
            h.writeHeader(type: type, sector: 4)
            h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1, table: table)
            var addr = H.dataAddr, i: UInt16 = 1
            for (k, len) in pieces.enumerated() {
                if !writable { try! h.memory.write(bytes: payload[pieces[..<k].reduce(0, +)...].prefix(len), at: addr) }
                h.ring.setDescriptor(i, address: addr, length: UInt32(len), flags: writable ? 3 : 1, next: i + 1, table: table)
                addr += UInt64(len) + 64
                i += 1
            }
            h.ring.setDescriptor(i, address: H.statusAddr, length: 1, flags: 2, table: table)
            h.ring.setDescriptor(0, address: table, length: UInt32(i + 1) * 16, flags: 4)
        }
        setUpChain(type: VirtioBlock.requestOut, writable: false)
        XCTAssertEqual(h.submit(head: 0).status, VirtioBlock.statusOK)
        let file = disk.contents
        XCTAssertTrue(Array(file[(4 * 512)..<(4 * 512 + total)]) == payload, "the file holds the pieces in order")
        XCTAssertEqual(Array(file[(3 * 512)..<(4 * 512)]), virtioSectorPattern(3))
        XCTAssertEqual(Array(file[(4 * 512 + total)..<(4 * 512 + total + 512)]), virtioSectorPattern(4 + total / 512))

        try h.memory.fill(0xCC, at: H.dataAddr, length: 0x8000)
        setUpChain(type: VirtioBlock.requestIn, writable: true)
        let r = h.submit(head: 0)
        XCTAssertEqual(r.status, VirtioBlock.statusOK)
        XCTAssertEqual(r.usedLength, UInt32(total + 1))
        var addr = H.dataAddr, got: [UInt8] = []
        for len in pieces {
            got += try h.memory.readBytes(at: addr, count: len)
            XCTAssertEqual(try h.memory.read(UInt8.self, at: addr + UInt64(len)), 0xCC, "the gap stays untouched")
            addr += UInt64(len) + 64
        }
        XCTAssertTrue(got == payload, "the guest buffers hold what the file holds")
    }
}
