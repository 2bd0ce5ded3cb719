import XCTest
import VMMemory
@testable import Devices

/// Hostile descriptor tables and rings. Every case must end with the device in a sane state:
/// no crash, no access outside guest RAM, and either a request status or DEVICE_NEEDS_RESET.
final class VirtQueueHostileTests: XCTestCase {
    typealias H = VirtioPciHarness

    func makeHarness(sectors: Int = 16) throws -> (H, VirtioTempDisk) {
        let disk = VirtioTempDisk(sectors: sectors)
        let h = try H(device: try VirtioBlock(path: disk.path))
        XCTAssertTrue(h.setUp())
        h.interrupts.clear()
        return (h, disk)
    }

    /// Publishes `head`, kicks, and checks the device went to NEEDS_RESET with a config interrupt
    /// (vector 0 → data 0x40), consumed nothing and left the file alone.
    func assertDeviceError(_ h: H, _ disk: VirtioTempDisk, head: UInt16 = 0,
                           matching expected: (VirtQueueError) -> Bool,
                           file: StaticString = #filePath, line: UInt = #line) {
        let before = disk.contents
        h.ring.publish(head)
        h.kick()
        XCTAssertEqual(h.status & VirtioStatus.needsReset.rawValue, VirtioStatus.needsReset.rawValue,
                       "device must ask for a reset", file: file, line: line)
        XCTAssertTrue(h.interrupts.msis.contains(VirtioRecordedMSI(address: H.msiAddress, data: 0x40)),
                      "config-change interrupt", file: file, line: line)
        XCTAssertEqual(h.ring.usedIdx, 0, "nothing completed", file: file, line: line)
        XCTAssertEqual(disk.contents, before, file: file, line: line)
        if let e = h.transport.lastError {
            XCTAssertTrue(expected(e), "unexpected error \(e)", file: file, line: line)
        } else {
            XCTFail("no error recorded", file: file, line: line)
        }
        // Further kicks are ignored until reset; a full reset brings the device back.
        h.kick()
        XCTAssertEqual(h.ring.usedIdx, 0, file: file, line: line)
        XCTAssertTrue(h.setUp(), file: file, line: line)
        XCTAssertEqual(h.status, 15, file: file, line: line)
        let r = h.blockRequest(type: VirtioBlock.requestIn, sector: 2, inLength: 512)
        XCTAssertEqual(r.status, VirtioBlock.statusOK, "device works after reset", file: file, line: line)
        XCTAssertEqual(r.data, virtioSectorPattern(2), file: file, line: line)
        // Fresh rings for whatever the test does next.
        XCTAssertTrue(h.setUp(), file: file, line: line)
        h.interrupts.clear()
    }

    func testBufferOutsideGuestMemory() throws {
        let (h, disk) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: h.memory.size - 256, length: 512, flags: 3, next: 2)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        assertDeviceError(h, disk) { if case .descriptorOutsideMemory = $0 { return true }; return false }
    }

    func testFourGiBLengthAndWrappingAddress() throws {
        let (h, disk) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.dataAddr, length: 0xFFFF_FFFF, flags: 3, next: 2)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        assertDeviceError(h, disk) { $0 == .descriptorOutsideMemory(address: H.dataAddr, length: 0xFFFF_FFFF) }

        // address + length wraps past 2^64.
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: UInt64.max - 15, length: 512, flags: 3, next: 2)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        assertDeviceError(h, disk) { if case .descriptorOutsideMemory = $0 { return true }; return false }
    }

    func testDescriptorLoopIsCaughtByTheWalkBudget() throws {
        let (h, disk) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.headerAddr, length: 16, flags: 1, next: 0)   // back to 0
        assertDeviceError(h, disk) { if case .chainTooLong = $0 { return true }; return false }
        // A descriptor pointing at itself.
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 0)
        assertDeviceError(h, disk) { if case .chainTooLong = $0 { return true }; return false }
    }

    func testNextIndexAndHeadBeyondTheTable() throws {
        let (h, disk) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 999)
        assertDeviceError(h, disk) { $0 == .descriptorIndexOutOfRange(index: 999, tableSize: 256) }
        assertDeviceError(h, disk, head: 0xFFFF) { $0 == .descriptorIndexOutOfRange(index: 0xFFFF, tableSize: 256) }
    }

    func testReadableAfterWritable() throws {
        let (h, disk) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.statusAddr, length: 1, flags: 2 | 1, next: 1)
        h.ring.setDescriptor(1, address: H.headerAddr, length: 16, flags: 0)
        assertDeviceError(h, disk) { $0 == .readableAfterWritable }
    }

    func testWritableBufferOverlappingTheRings() throws {
        let (h, disk) = try makeHarness()
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        // A read whose data would land on the used ring (and corrupt the used index).
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.usedAddr, length: 512, flags: 3, next: 2)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        assertDeviceError(h, disk) { $0 == .writableOverlapsRing(address: H.usedAddr, length: 512) }
        // ... or on the descriptor table itself.
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.descAddr + 0x100, length: 512, flags: 3, next: 2)
        h.ring.setDescriptor(2, address: H.statusAddr, length: 1, flags: 2)
        assertDeviceError(h, disk) { if case .writableOverlapsRing = $0 { return true }; return false }
        // A device-readable buffer over the rings is harmless (the device only reads it): the
        // request fails as a block request instead (bad header), without a device error.
        h.ring.setDescriptor(0, address: H.availAddr, length: 16, flags: 1, next: 1)
        h.ring.setDescriptor(1, address: H.statusAddr, length: 1, flags: 2)
        let r = h.submit(head: 0)
        XCTAssertNotEqual(r.status, VirtioBlock.statusOK)
        XCTAssertEqual(h.status, 15)
    }

    func testIndirectTablesWithBadLengths() throws {
        let (h, disk) = try makeHarness()
        let table: UInt64 = 0x30000
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1, table: table)
        h.ring.setDescriptor(1, address: H.statusAddr, length: 1, flags: 2, table: table)
        for bad: UInt32 in [0, 17, 40, 16 * 257, 0xFFFF_FFF0] {
            h.ring.setDescriptor(0, address: table, length: bad, flags: 4)
            assertDeviceError(h, disk) {
                $0 == .badIndirectTableLength(bad) || $0 == .descriptorOutsideMemory(address: table, length: bad)
            }
        }
        // A table that runs off the end of RAM.
        h.ring.setDescriptor(0, address: h.memory.size - 16, length: 32, flags: 4)
        assertDeviceError(h, disk) { if case .descriptorOutsideMemory = $0 { return true }; return false }
    }

    func testNestedIndirectAndIndirectWithNext() throws {
        let (h, disk) = try makeHarness()
        let table: UInt64 = 0x30000
        h.ring.setDescriptor(0, address: table + 0x100, length: 32, flags: 4, table: table)
        h.ring.setDescriptor(0, address: table, length: 16, flags: 4)
        assertDeviceError(h, disk) { $0 == .nestedIndirect }
        h.ring.setDescriptor(0, address: table, length: 16, flags: 4 | 1, next: 1)
        assertDeviceError(h, disk) { $0 == .indirectWithNext }
    }

    func testIndirectTableLoop() throws {
        let (h, disk) = try makeHarness()
        let table: UInt64 = 0x30000
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1, table: table)
        h.ring.setDescriptor(1, address: H.headerAddr, length: 16, flags: 1, next: 0, table: table)
        h.ring.setDescriptor(0, address: table, length: 32, flags: 4)
        assertDeviceError(h, disk) { $0 == .chainTooLong(limit: 2) }
    }

    func testIndirectWithoutNegotiationIsRefused() throws {
        let disk = VirtioTempDisk(sectors: 16)
        let h = try H(device: try VirtioBlock(path: disk.path))
        XCTAssertTrue(h.setUp(acceptFeatures: ~VirtioFeature.indirectDescriptors))
        h.interrupts.clear()
        let table: UInt64 = 0x30000
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.setDescriptor(0, address: H.headerAddr, length: 16, flags: 1, next: 1, table: table)
        h.ring.setDescriptor(1, address: H.statusAddr, length: 1, flags: 2, table: table)
        h.ring.setDescriptor(0, address: table, length: 32, flags: 4)
        h.ring.publish(0)
        h.kick()
        XCTAssertEqual(h.transport.lastError, .indirectNotNegotiated)
        XCTAssertNotEqual(h.status & VirtioStatus.needsReset.rawValue, 0)
    }

    func testAvailIndexJumpingBy65535() throws {
        let (h, disk) = try makeHarness()
        let before = disk.contents
        // One legitimate request first.
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 1, inLength: 512).status,
                       VirtioBlock.statusOK)
        h.interrupts.clear()
        h.ring.setAvailIndex(h.ring.availIdx &+ 65535)
        h.kick()
        XCTAssertEqual(h.transport.lastError,
                       .availIndexJump(availIndex: 1 &+ 65535, nextAvail: 1, size: 256))
        XCTAssertNotEqual(h.status & VirtioStatus.needsReset.rawValue, 0)
        XCTAssertEqual(h.ring.usedIdx, 1, "no phantom completions")
        XCTAssertEqual(h.interrupts.msis.last, VirtioRecordedMSI(address: H.msiAddress, data: 0x40))
        XCTAssertEqual(disk.contents, before)
        // Back in business after a reset.
        XCTAssertTrue(h.setUp())
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 4, inLength: 512).data,
                       virtioSectorPattern(4))
    }

    func testRingsOutsideMemoryOrMisalignedAreRefusedAtEnable() throws {
        let disk = VirtioTempDisk(sectors: 16)
        let h = try H(device: try VirtioBlock(path: disk.path))
        h.probe()
        let c = VirtioPciCommonConfig.self
        for (desc, expectBroken) in [(h.memory.size - 0x800, true), (UInt64(0x10008), true), (UInt64(0x10000), false)] {
            h.setCommon(c.deviceStatus, size: 1, 0)
            h.setCommon(c.deviceStatus, size: 1, 3)
            h.setCommon(c.driverFeatureSelect, size: 4, 1)
            h.setCommon(c.driverFeature, size: 4, 1)   // VERSION_1
            h.setCommon(c.deviceStatus, size: 1, 11)
            h.setCommon(c.queueSelect, size: 2, 0)
            h.setCommon(c.queueDesc, size: 8, desc)
            h.setCommon(c.queueDriver, size: 8, 0x11000)
            h.setCommon(c.queueDevice, size: 8, 0x12000)
            h.setCommon(c.queueEnable, size: 2, 1)
            XCTAssertEqual(h.common(c.queueEnable, size: 2), expectBroken ? 0 : 1, "desc 0x\(String(desc, radix: 16))")
            XCTAssertEqual(h.status & VirtioStatus.needsReset.rawValue != 0, expectBroken)
        }
        // Queue sizes must be powers of two no larger than the maximum.
        for bad: UInt16 in [0, 3, 512] {
            h.setCommon(c.deviceStatus, size: 1, 0)
            h.setCommon(c.queueSelect, size: 2, 0)
            h.setCommon(c.queueSize, size: 2, UInt64(bad))
            h.setCommon(c.queueDesc, size: 8, 0x10000)
            h.setCommon(c.queueDriver, size: 8, 0x11000)
            h.setCommon(c.queueDevice, size: 8, 0x12000)
            h.setCommon(c.queueEnable, size: 2, 1)
            XCTAssertEqual(h.common(c.queueEnable, size: 2), 0, "size \(bad)")
        }
    }
}

/// The queue on its own: notification suppression and avail_event bookkeeping.
final class VirtQueueNotificationTests: XCTestCase {
    func makeQueue(eventIndex: Bool) throws -> (VirtQueue, VirtioDriverRing) {
        let mem = try GuestMemory(size: 1 << 20)
        let q = VirtQueue(memory: mem, maxSize: 16)
        q.descriptorTable = 0x1000; q.availRing = 0x2000; q.usedRing = 0x3000
        q.eventIndexEnabled = eventIndex
        try q.enable()
        let ring = VirtioDriverRing(memory: mem, size: 16, desc: 0x1000, avail: 0x2000, used: 0x3000)
        for i in 0..<16 { ring.setDescriptor(UInt16(i), address: 0x8000, length: 4, flags: 2) }
        return (q, ring)
    }

    func complete(_ q: VirtQueue) throws {
        let c = try XCTUnwrap(try q.popAvailable())
        try q.addUsed(headIndex: c.headIndex, length: 0)
    }

    func testNoInterruptFlagSuppressesWithoutEventIndex() throws {
        let (q, ring) = try makeQueue(eventIndex: false)
        ring.publish(3)
        try complete(q)
        XCTAssertTrue(try q.needsNotification())
        ring.setAvailFlags(1)
        ring.publish(4)
        try complete(q)
        XCTAssertFalse(try q.needsNotification())
        XCTAssertEqual(ring.usedElement(1).id, 4)
    }

    func testUsedEventDecidesWithEventIndex() throws {
        let (q, ring) = try makeQueue(eventIndex: true)
        // The driver wants an interrupt once used index passes 2 (used_event = 2).
        ring.setUsedEvent(2)
        ring.publish(0); try complete(q)
        XCTAssertTrue(try q.needsNotification(), "first decision always notifies")
        ring.publish(1); try complete(q)
        XCTAssertFalse(try q.needsNotification(), "used idx 2 has not passed used_event 2")
        ring.publish(2); try complete(q)
        XCTAssertTrue(try q.needsNotification(), "used idx 3 passed used_event 2")
        ring.publish(3); try complete(q)
        XCTAssertFalse(try q.needsNotification())
    }

    func testEnableNotificationPublishesAvailEventAndSeesLateBuffers() throws {
        let (q, ring) = try makeQueue(eventIndex: true)
        ring.publish(0); ring.publish(1)
        try complete(q); try complete(q)
        XCTAssertNil(try q.popAvailable())
        XCTAssertFalse(try q.enableNotification())
        XCTAssertEqual(ring.availEvent, 2, "driver is asked to kick when it adds entry 2")
        ring.publish(5)
        XCTAssertTrue(try q.enableNotification(), "a buffer that raced the re-enable is not lost")
    }

    func testChainAccessorsSplitReadableAndWritableStreams() {
        let chain = DescriptorChain(headIndex: 0, descriptors: [
            Descriptor(address: 0x100, length: 10, isWriteOnly: false),
            Descriptor(address: 0x200, length: 6, isWriteOnly: false),
            Descriptor(address: 0x300, length: 4, isWriteOnly: true),
        ])
        XCTAssertEqual(chain.readableLength, 16)
        XCTAssertEqual(chain.writableLength, 4)
        let s = chain.segments(writable: false, offset: 8, length: 4)!
        XCTAssertEqual(s.map { $0.address }, [0x108, 0x200])
        XCTAssertEqual(s.map { $0.length }, [2, 2])
        XCTAssertNil(chain.segments(writable: true, offset: 2, length: 3))
        XCTAssertNil(chain.segments(writable: false, offset: UInt64.max, length: 2))
    }

    func testBrokenQueueStaysQuietUntilReset() throws {
        let (q, ring) = try makeQueue(eventIndex: false)
        ring.setAvailIndex(100)
        XCTAssertThrowsError(try q.popAvailable())
        XCTAssertTrue(q.isBroken)
        XCTAssertNil(try q.popAvailable())
        q.reset()
        XCTAssertFalse(q.isBroken)
        XCTAssertFalse(q.isReady)
    }
}
