import XCTest
import VMMemory
@testable import Devices

final class VirtioPciTests: XCTestCase {
    typealias H = VirtioPciHarness
    let c = VirtioPciCommonConfig.self

    func blockHarness(intxGSI: UInt32? = nil) throws -> (H, VirtioTempDisk) {
        let disk = VirtioTempDisk(sectors: 16)
        return (try H(device: try VirtioBlock(path: disk.path), intxGSI: intxGSI), disk)
    }

    func testOfferedFeaturesAndDeviceConfig() throws {
        let (h, _) = try blockHarness()
        h.probe()
        h.setCommon(c.deviceFeatureSelect, size: 4, 0)
        let lo = h.common(c.deviceFeature, size: 4)
        h.setCommon(c.deviceFeatureSelect, size: 4, 1)
        let hi = h.common(c.deviceFeature, size: 4)
        h.setCommon(c.deviceFeatureSelect, size: 4, 2)
        XCTAssertEqual(h.common(c.deviceFeature, size: 4), 0, "no features beyond bit 63")
        let f = lo | hi << 32
        XCTAssertEqual(f, VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors
                       | 1 << 2 | 1 << 6 | 1 << 9 | 1 << 13 | 1 << 14,
                       "VERSION_1, EVENT_IDX, INDIRECT, SEG_MAX, BLK_SIZE, FLUSH, DISCARD, WRITE_ZEROES")
        XCTAssertEqual(h.common(c.numQueues, size: 2), 1)
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 0x0C, size: 4), 254, "seg_max")
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 0x14, size: 4), 512, "blk_size")
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 0, size: 4), 16, "capacity low dword")
        XCTAssertEqual(h.read(VirtioPciCapType.deviceConfig, 4, size: 4), 0, "capacity high dword")
        XCTAssertEqual(h.notifyMultiplier, 4)
        XCTAssertEqual(Set(h.caps.keys), [1, 2, 3, 4, 5])
        XCTAssertGreaterThanOrEqual(h.caps[1]!.length, VirtioPciCommonConfig.length)
    }

    func testFeaturesOKRefusedForUnofferedFeatureOrMissingVersion1() throws {
        let (h, _) = try blockHarness()
        h.probe()
        // Without VERSION_1 (a legacy driver) the device refuses FEATURES_OK.
        XCTAssertFalse(h.setUp(acceptFeatures: ~VirtioFeature.version1))
        XCTAssertEqual(h.status & 8, 0)
        // A feature the device never offered (bit 40).
        h.setCommon(c.deviceStatus, size: 1, 0)
        h.setCommon(c.deviceStatus, size: 1, 3)
        h.setCommon(c.driverFeatureSelect, size: 4, 1)
        h.setCommon(c.driverFeature, size: 4, 1 | 1 << 8)
        h.setCommon(c.deviceStatus, size: 1, 11)
        XCTAssertEqual(h.status, 3)
        // Fixing the features and retrying is allowed; then features freeze.
        h.setCommon(c.driverFeature, size: 4, 1)
        h.setCommon(c.deviceStatus, size: 1, 11)
        XCTAssertEqual(h.status, 11)
        h.setCommon(c.driverFeatureSelect, size: 4, 0)
        h.setCommon(c.driverFeature, size: 4, 1 << 9)
        XCTAssertEqual(h.common(c.driverFeature, size: 4), 0, "features cannot change after FEATURES_OK")
        XCTAssertEqual(h.transport.driverFeatures, VirtioFeature.version1)
    }

    func testDriverOKWithoutFeaturesOKNeedsReset() throws {
        let (h, _) = try blockHarness()
        h.probe()
        h.setCommon(c.deviceStatus, size: 1, 0)
        h.setCommon(c.deviceStatus, size: 1, 1 | 2 | 4)
        XCTAssertNotEqual(h.status & VirtioStatus.needsReset.rawValue, 0)
        h.setCommon(c.deviceStatus, size: 1, 0)
        XCTAssertEqual(h.status, 0)
    }

    func testResetClearsQueueStateAndVectors() throws {
        let (h, _) = try blockHarness()
        XCTAssertTrue(h.setUp())
        XCTAssertEqual(h.common(c.queueEnable, size: 2), 1)
        XCTAssertEqual(h.common(c.queueDesc, size: 8), H.descAddr)
        XCTAssertEqual(h.common(c.queueDriver, size: 4), H.availAddr)
        h.setCommon(c.deviceStatus, size: 1, 0)
        XCTAssertEqual(h.status, 0)
        XCTAssertEqual(h.common(c.queueEnable, size: 2), 0)
        XCTAssertEqual(h.common(c.queueDesc, size: 8), 0)
        XCTAssertEqual(h.common(c.queueSize, size: 2), 256)
        XCTAssertEqual(h.common(c.queueMsixVector, size: 2), 0xFFFF)
        XCTAssertEqual(h.common(c.configMsixVector, size: 2), 0xFFFF)
        // A queue that does not exist reads size 0.
        h.setCommon(c.queueSelect, size: 2, 1)
        XCTAssertEqual(h.common(c.queueSize, size: 2), 0)
    }

    func testQueueFieldsAreFrozenOnceEnabled() throws {
        let (h, _) = try blockHarness()
        XCTAssertTrue(h.setUp())
        h.setCommon(c.queueSize, size: 2, 8)
        h.setCommon(c.queueDesc, size: 4, 0x20000)
        XCTAssertEqual(h.common(c.queueSize, size: 2), 256)
        XCTAssertEqual(h.common(c.queueDesc, size: 8), H.descAddr)
    }

    func testVectorBeyondTableReadsNoVector() throws {
        let (h, _) = try blockHarness()
        h.probe()
        XCTAssertEqual(h.cfgRead(h.msixCap + 2, size: 2) & 0x7FF, 1, "two vectors: config + queue 0")
        h.setCommon(c.configMsixVector, size: 2, 2)
        XCTAssertEqual(h.common(c.configMsixVector, size: 2), 0xFFFF)
        h.setCommon(c.queueSelect, size: 2, 0)
        h.setCommon(c.queueMsixVector, size: 2, 0x7FF)
        XCTAssertEqual(h.common(c.queueMsixVector, size: 2), 0xFFFF)
        h.setCommon(c.queueMsixVector, size: 2, 1)
        XCTAssertEqual(h.common(c.queueMsixVector, size: 2), 1)
    }

    func testMaskedVectorLatchesPendingAndFiresOnUnmask() throws {
        let (h, _) = try blockHarness()
        XCTAssertTrue(h.setUp())
        h.interrupts.clear()
        let table = h.bar0 + UInt64(h.cfgRead(h.msixCap + 4) & ~7)
        let pba = h.bar0 + UInt64(h.cfgRead(h.msixCap + 8) & ~7)
        h.mmio.write(table + 16 + 12, size: 4, value: 1)   // mask vector 1
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 512).status, 0)
        XCTAssertEqual(h.interrupts.msis, [], "masked: nothing sent")
        XCTAssertEqual(h.mmio.read(pba, size: 8), 0b10, "vector 1 pending")
        h.mmio.write(table + 16 + 12, size: 4, value: 0)
        XCTAssertEqual(h.interrupts.msis, [VirtioRecordedMSI(address: H.msiAddress, data: 0x41)])
        XCTAssertEqual(h.mmio.read(pba, size: 8), 0)

        // Function mask holds every vector the same way.
        h.interrupts.clear()
        let ctrl = h.cfgRead(h.msixCap + 2, size: 2)
        h.cfgWrite(h.msixCap + 2, size: 2, ctrl | 0x4000)
        _ = h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 512)
        XCTAssertEqual(h.interrupts.msis, [])
        h.cfgWrite(h.msixCap + 2, size: 2, ctrl & ~0x4000)
        XCTAssertEqual(h.interrupts.msis.count, 1)
    }

    func testMsixTableReadBackAndQwordAccess() throws {
        let (h, _) = try blockHarness()
        h.probe()
        let table = h.bar0 + UInt64(h.cfgRead(h.msixCap + 4) & ~7)
        XCTAssertEqual(h.mmio.read(table + 12, size: 4), 1, "vectors start masked")
        h.mmio.write(table, size: 8, value: 0x1_FEE0_1003)
        XCTAssertEqual(h.mmio.read(table, size: 4), 0xFEE0_1000, "address is dword aligned")
        XCTAssertEqual(h.mmio.read(table + 4, size: 4), 1)
        XCTAssertEqual(h.mmio.read(table + 3, size: 2), 0xFFFF, "misaligned access refused")
    }

    func testEventIndexSuppressesInterruptsTheDriverDidNotAskFor() throws {
        let (h, _) = try blockHarness()
        XCTAssertTrue(h.setUp())
        XCTAssertNotEqual(h.transport.driverFeatures & VirtioFeature.eventIndex, 0)
        _ = h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 512)
        XCTAssertEqual(h.interrupts.msis.count, 1)
        // Driver: "interrupt me only when used index passes 10" (NAPI-style batching).
        h.ring.setUsedEvent(10)
        h.writeHeader(type: VirtioBlock.requestIn, sector: 0)
        h.ring.publish(0)
        h.kick()
        XCTAssertEqual(h.ring.usedIdx, 2)
        XCTAssertEqual(h.interrupts.msis.count, 1, "suppressed")
        XCTAssertEqual(h.ring.availEvent, 2, "device asks to be kicked for the next buffer")
    }

    func testNoVectorMeansNoInterrupt() throws {
        let (h, _) = try blockHarness()
        XCTAssertTrue(h.setUp())
        h.setCommon(c.queueSelect, size: 2, 0)
        // Vectors can be re-mapped while running: unmapping the queue silences it.
        h.setCommon(c.queueMsixVector, size: 2, 0xFFFF)
        h.interrupts.clear()
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 512).status, 0)
        XCTAssertEqual(h.interrupts.msis, [])
    }

    func testINTxFallbackRaisesUntilISRIsRead() throws {
        let (h, _) = try blockHarness(intxGSI: 11)
        h.probe()
        XCTAssertEqual(h.cfgRead(PciConfigRegister.interruptPin, size: 1), 1, "INTA#")
        XCTAssertEqual(h.cfgRead(PciConfigRegister.interruptLine, size: 1), 11)
        XCTAssertTrue(h.setUp(useMSIX: false))
        XCTAssertFalse(h.interrupts.level(11))
        XCTAssertEqual(h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 512).status, 0)
        XCTAssertTrue(h.interrupts.level(11))
        XCTAssertEqual(h.interrupts.msis, [])
        XCTAssertEqual(h.read(VirtioPciCapType.isrConfig, 0, size: 1), 1, "queue interrupt")
        XCTAssertFalse(h.interrupts.level(11), "reading the ISR de-asserts")
        XCTAssertEqual(h.read(VirtioPciCapType.isrConfig, 0, size: 1), 0, "and clears it")

        // The command register's INTx disable bit masks the line but keeps the ISR.
        let cmd = h.cfgRead(PciConfigRegister.command, size: 2)
        h.cfgWrite(PciConfigRegister.command, size: 2, cmd | 0x400)
        _ = h.blockRequest(type: VirtioBlock.requestIn, sector: 0, inLength: 512)
        XCTAssertFalse(h.interrupts.level(11))
        h.cfgWrite(PciConfigRegister.command, size: 2, cmd)
        XCTAssertTrue(h.interrupts.level(11))
        XCTAssertEqual(h.read(VirtioPciCapType.isrConfig, 0, size: 1), 1)
    }

    func testConfigChangeOnDeviceErrorUsesISRBit2WithINTx() throws {
        let (h, _) = try blockHarness(intxGSI: 5)
        XCTAssertTrue(h.setUp(useMSIX: false))
        h.ring.setAvailIndex(300)
        h.kick()
        XCTAssertTrue(h.interrupts.level(5))
        XCTAssertEqual(h.read(VirtioPciCapType.isrConfig, 0, size: 1) & 2, 2)
        XCTAssertNotEqual(h.status & VirtioStatus.needsReset.rawValue, 0)
    }

    func testNotifyBeforeDriverOKAndWithDecodingOffIsIgnored() throws {
        let null = VirtioNullDevice()
        let h = try H(device: null)
        h.probe()
        h.setCommon(c.deviceStatus, size: 1, 0)
        h.setCommon(c.deviceStatus, size: 1, 3)
        h.setCommon(c.driverFeatureSelect, size: 4, 1)
        h.setCommon(c.driverFeature, size: 4, 1)
        h.setCommon(c.deviceStatus, size: 1, 11)
        h.setCommon(c.queueSelect, size: 2, 0)
        h.setCommon(c.queueDesc, size: 8, H.descAddr)
        h.setCommon(c.queueDriver, size: 8, H.availAddr)
        h.setCommon(c.queueDevice, size: 8, H.usedAddr)
        h.setCommon(c.queueEnable, size: 2, 1)
        let ring = VirtioDriverRing(memory: h.memory, size: 16, desc: H.descAddr, avail: H.availAddr, used: H.usedAddr)
        ring.setDescriptor(0, address: 0x8000, length: 8, flags: 2)
        ring.publish(0)
        h.kick()
        XCTAssertEqual(null.processed, 0, "not DRIVER_OK yet")
        XCTAssertNil(null.activatedFeatures)
        h.setCommon(c.deviceStatus, size: 1, 15)
        XCTAssertEqual(null.activatedFeatures, VirtioFeature.version1)
        let cmd = h.cfgRead(PciConfigRegister.command, size: 2)
        h.cfgWrite(PciConfigRegister.command, size: 2, cmd & ~2)
        h.kick()
        XCTAssertEqual(null.processed, 0, "memory decoding off")
        h.cfgWrite(PciConfigRegister.command, size: 2, cmd)
        h.kick()
        XCTAssertEqual(null.processed, 1)
        XCTAssertEqual(ring.usedIdx, 1)
    }

    func testPciCfgCapabilityWindowReachesTheBar() throws {
        let (h, _) = try blockHarness()
        h.probe()
        // Find the VIRTIO_PCI_CAP_PCI_CFG capability.
        var p = Int(h.cfgRead(PciConfigRegister.capabilitiesPointer, size: 1))
        var cfgCap = 0
        while p != 0 {
            if h.cfgRead(p, size: 1) == 9 && h.cfgRead(p + 3, size: 1) == 5 { cfgCap = p }
            p = Int(h.cfgRead(p + 1, size: 1))
        }
        XCTAssertNotEqual(cfgCap, 0)
        h.cfgWrite(cfgCap + 4, size: 1, 0)                              // bar
        h.cfgWrite(cfgCap + 8, 0x2000)                                  // device config: capacity
        h.cfgWrite(cfgCap + 12, 4)                                      // length
        XCTAssertEqual(h.cfgRead(cfgCap + 16), 16)
        // Writes go through too: device status via the window.
        h.cfgWrite(cfgCap + 8, UInt32(c.deviceStatus))
        h.cfgWrite(cfgCap + 12, 1)
        h.cfgWrite(cfgCap + 16, size: 1, 1)
        XCTAssertEqual(h.status, 1)
        // An unsupported length makes the window inert: the data field reads as plain storage (0).
        h.cfgWrite(cfgCap + 12, 3)
        XCTAssertEqual(h.cfgRead(cfgCap + 16), 0)
    }
}
