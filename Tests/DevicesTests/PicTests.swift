import XCTest
import CPUBackend
@testable import Devices

/// A port bus with the PIC pair registered, and byte-wide IN/OUT like the guest uses.
final class PlatformPicRig {
    let pic = Pic8259Pair()
    let bus = Bus(name: "pio")

    init() throws {
        try bus.register(pic.ports(.master), name: "pic-master", at: PCLayout.Port.picMaster)
        try bus.register(pic.ports(.slave), name: "pic-slave", at: PCLayout.Port.picSlave)
        try bus.register(pic.ports(.elcr), name: "pic-elcr", at: PCLayout.Port.elcr)
    }

    func outb(_ port: UInt64, _ value: UInt8) { bus.write(port, size: 1, value: UInt64(value)) }
    func inb(_ port: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: bus.read(port, size: 1)) }

    /// Linux's init_8259A with the vector bases the brief uses (0x20 master, 0x28 slave), all unmasked.
    func initLikeLinux(autoEOI: Bool = false) {
        outb(0x21, 0xFF); outb(0xA1, 0xFF)
        outb(0x20, 0x11)                       // ICW1: edge, cascade, ICW4 follows
        outb(0x21, 0x20)                       // ICW2: vector base
        outb(0x21, 0x04)                       // ICW3: slave on IR2
        outb(0x21, autoEOI ? 0x03 : 0x01)      // ICW4: 8086 mode
        outb(0xA0, 0x11)
        outb(0xA1, 0x28)
        outb(0xA1, 0x02)                       // ICW3: slave identity 2
        outb(0xA1, 0x01)
        outb(0x21, 0x00); outb(0xA1, 0x00)
    }

    func pulse(_ irq: Int) { pic.setIRQ(irq, level: true); pic.setIRQ(irq, level: false) }

    func readIRR(slave: Bool = false) -> UInt8 {
        let cmd: UInt64 = slave ? 0xA0 : 0x20
        outb(cmd, 0x0A)
        return inb(cmd)
    }

    func readISR(slave: Bool = false) -> UInt8 {
        let cmd: UInt64 = slave ? 0xA0 : 0x20
        outb(cmd, 0x0B)
        return inb(cmd)
    }

    func eoiMaster() { outb(0x20, 0x20) }
    func eoiSlave() { outb(0xA0, 0x20) }
}

final class PicTests: XCTestCase {
    func testLinuxInitSequenceProgramsVectorsAndMasks() throws {
        let rig = try PlatformPicRig()
        // probe_8259A: a written mask reads back.
        rig.outb(0x21, 0xFF)
        XCTAssertEqual(rig.inb(0x21), 0xFF)
        rig.initLikeLinux()
        XCTAssertEqual(rig.inb(0x21), 0x00)
        XCTAssertEqual(rig.inb(0xA1), 0x00)
        XCTAssertFalse(rig.pic.interruptPending)

        rig.pulse(1)
        XCTAssertTrue(rig.pic.interruptPending)
        XCTAssertEqual(rig.pic.acknowledge(), 0x21)
        XCTAssertFalse(rig.pic.interruptPending)
        XCTAssertEqual(rig.readISR(), 0x02)

        // Re-initialising with other bases changes the vectors (Linux x86-64 really uses 0x30/0x38).
        rig.outb(0x20, 0x11); rig.outb(0x21, 0x30); rig.outb(0x21, 0x04); rig.outb(0x21, 0x01)
        XCTAssertEqual(rig.readISR(), 0x00, "ICW1 clears the in-service register")
        rig.pulse(4)
        XCTAssertEqual(rig.pic.acknowledge(), 0x34)
    }

    func testMaskedRequestWaitsInIRRUntilUnmasked() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.outb(0x21, 0x08)                   // mask IRQ 3
        rig.pulse(3)
        XCTAssertFalse(rig.pic.interruptPending)
        XCTAssertEqual(rig.readIRR(), 0x08)
        rig.outb(0x21, 0x00)
        XCTAssertTrue(rig.pic.interruptPending)
        XCTAssertEqual(rig.pic.acknowledge(), 0x23)
        XCTAssertEqual(rig.readIRR(), 0x00, "acknowledging an edge request clears IRR")
    }

    func testLowerIRQNumberWinsAndInServiceBlocksLowerPriority() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(5); rig.pulse(3); rig.pulse(6)
        XCTAssertEqual(rig.pic.acknowledge(), 0x23)
        // IRQ 3 in service: 5 and 6 must wait for its EOI.
        XCTAssertFalse(rig.pic.interruptPending)
        // A higher-priority request nests.
        rig.pulse(0)
        XCTAssertTrue(rig.pic.interruptPending)
        XCTAssertEqual(rig.pic.acknowledge(), 0x20)
        XCTAssertEqual(rig.readISR(), 0x09)
        rig.eoiMaster()                        // non-specific EOI ends the highest: IRQ 0
        XCTAssertEqual(rig.readISR(), 0x08)
        XCTAssertFalse(rig.pic.interruptPending)
        rig.eoiMaster()
        XCTAssertEqual(rig.pic.acknowledge(), 0x25)
        rig.eoiMaster()
        XCTAssertEqual(rig.pic.acknowledge(), 0x26)
        rig.eoiMaster()
        XCTAssertFalse(rig.pic.interruptPending)
    }

    func testSpecificEOIClearsOnlyThatLevel() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(4)
        XCTAssertEqual(rig.pic.acknowledge(), 0x24)
        rig.pulse(1)
        XCTAssertEqual(rig.pic.acknowledge(), 0x21)
        XCTAssertEqual(rig.readISR(), 0x12)
        rig.outb(0x20, 0x60 | 4)               // specific EOI for IRQ 4, as mask_and_ack_8259A does
        XCTAssertEqual(rig.readISR(), 0x02)
    }

    func testRotateOnEOIMakesServicedLevelLowestPriority() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(1)
        XCTAssertEqual(rig.pic.acknowledge(), 0x21)
        rig.outb(0x20, 0xA0)                   // rotate on non-specific EOI
        rig.pulse(1); rig.pulse(5)
        XCTAssertEqual(rig.pic.acknowledge(), 0x25, "after rotation IRQ 1 has the lowest priority")
        rig.outb(0x20, 0xA0)
        XCTAssertEqual(rig.pic.acknowledge(), 0x21)
    }

    func testSlaveIRQsArriveThroughCascade() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        for n in 8..<16 where n != 10 {
            rig.pulse(n)
            XCTAssertTrue(rig.pic.interruptPending, "IRQ \(n)")
            XCTAssertEqual(rig.pic.acknowledge(), UInt8(0x28 + n - 8), "IRQ \(n)")
            XCTAssertEqual(rig.readISR(slave: true), 1 << UInt8(n - 8))
            XCTAssertEqual(rig.readISR(), 0x04, "master has the cascade in service")
            XCTAssertFalse(rig.pic.interruptPending)
            rig.eoiSlave(); rig.eoiMaster()
            XCTAssertEqual(rig.readISR(slave: true), 0)
            XCTAssertEqual(rig.readISR(), 0)
        }
    }

    func testSecondSlaveRequestWaitsForBothEOIs() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(12); rig.pulse(9)
        XCTAssertEqual(rig.pic.acknowledge(), 0x29)
        XCTAssertFalse(rig.pic.interruptPending)
        rig.eoiSlave()
        XCTAssertFalse(rig.pic.interruptPending, "master still has IR2 in service")
        rig.eoiMaster()
        XCTAssertTrue(rig.pic.interruptPending)
        XCTAssertEqual(rig.pic.acknowledge(), 0x2C)
    }

    func testMasterMaskOnCascadeBlocksSlave() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.outb(0x21, 0x04)
        rig.pulse(14)
        XCTAssertFalse(rig.pic.interruptPending)
        rig.outb(0x21, 0x00)
        XCTAssertEqual(rig.pic.acknowledge(), 0x2E)
    }

    func testLevelTriggeredRequestRepeatsWhileLineHighEdgeDoesNot() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.outb(0x4D1, 0xFF)
        XCTAssertEqual(rig.inb(0x4D1), 0xDE, "IRQ 8 and 13 cannot be level triggered")
        rig.outb(0x4D1, 0x04)                  // IRQ 10 level
        rig.pic.setIRQ(10, level: true)
        XCTAssertEqual(rig.pic.acknowledge(), 0x2A)
        rig.eoiSlave(); rig.eoiMaster()
        XCTAssertTrue(rig.pic.interruptPending, "line still high: the request is still there")
        XCTAssertEqual(rig.pic.acknowledge(), 0x2A)
        rig.pic.setIRQ(10, level: false)
        rig.eoiSlave(); rig.eoiMaster()
        XCTAssertFalse(rig.pic.interruptPending)

        // The same sequence on an edge-triggered line delivers once.
        rig.pic.setIRQ(11, level: true)
        XCTAssertEqual(rig.pic.acknowledge(), 0x2B)
        rig.eoiSlave(); rig.eoiMaster()
        XCTAssertFalse(rig.pic.interruptPending)
        rig.pic.setIRQ(11, level: true)        // no new edge while held high
        XCTAssertFalse(rig.pic.interruptPending)
        rig.pic.setIRQ(11, level: false)
        rig.pic.setIRQ(11, level: true)
        XCTAssertTrue(rig.pic.interruptPending)
    }

    func testRequestGoneBeforeINTAGivesSpuriousIRQ7AndIRQ15() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.outb(0x4D0, 0x08)                  // IRQ 3 level
        rig.pic.setIRQ(3, level: true)
        XCTAssertTrue(rig.pic.interruptPending)
        rig.pic.setIRQ(3, level: false)
        XCTAssertEqual(rig.pic.acknowledge(), 0x27)
        XCTAssertEqual(rig.readISR(), 0x00, "a spurious IRQ 7 sets no in-service bit")

        // On the slave, the master has latched the cascade edge; the slave answers IR7.
        rig.outb(0x4D1, 0x04)
        rig.pic.setIRQ(10, level: true)
        rig.pic.setIRQ(10, level: false)
        XCTAssertEqual(rig.pic.acknowledge(), 0x2F)
        XCTAssertEqual(rig.readISR(slave: true), 0x00)
        XCTAssertEqual(rig.readISR(), 0x04, "the master did service the cascade; Linux EOIs it")
    }

    func testOCW3SelectsIRROrISRAndDataPortReadsIMR() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(6); rig.pulse(2 + 8)         // IRQ 10 on the slave
        XCTAssertEqual(rig.readIRR(), 0x44, "IRQ 6 plus the cascade")
        XCTAssertEqual(rig.readIRR(slave: true), 0x04)
        _ = rig.pic.acknowledge()              // IRQ 2 (cascade) outranks 6: slave IRQ 10
        XCTAssertEqual(rig.readISR(), 0x04)
        XCTAssertEqual(rig.readISR(slave: true), 0x04)
        XCTAssertEqual(rig.inb(0x20), 0x04, "the ISR selection sticks")
        rig.outb(0x21, 0x5A)
        XCTAssertEqual(rig.inb(0x21), 0x5A)
    }

    func testPollCommandAcknowledgesThroughPortRead() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(5)
        rig.outb(0x20, 0x0C)                   // OCW3 poll
        XCTAssertEqual(rig.inb(0x20), 0x85)
        XCTAssertEqual(rig.readISR(), 0x20)
        XCTAssertFalse(rig.pic.interruptPending)
        rig.eoiMaster()
        rig.outb(0x20, 0x0C)
        XCTAssertEqual(rig.inb(0x20), 0x00, "nothing pending")
        rig.outb(0x20, 0x0A)
        XCTAssertEqual(rig.inb(0x20), 0x00, "poll lasts one read")
    }

    func testAutoEOILeavesInServiceEmpty() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux(autoEOI: true)
        rig.pulse(3)
        XCTAssertEqual(rig.pic.acknowledge(), 0x23)
        XCTAssertEqual(rig.readISR(), 0x00)
        rig.pulse(4)
        XCTAssertTrue(rig.pic.interruptPending, "no EOI needed")
    }

    func testSpecialMaskModeLetsLowerPriorityIn() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.pulse(1)
        XCTAssertEqual(rig.pic.acknowledge(), 0x21)
        rig.pulse(4)
        XCTAssertFalse(rig.pic.interruptPending)
        rig.outb(0x21, 0x02)                   // mask the in-service level
        rig.outb(0x20, 0x68)                   // set special mask mode
        XCTAssertTrue(rig.pic.interruptPending)
        XCTAssertEqual(rig.pic.acknowledge(), 0x24)
    }

    func testPlatformInterruptsRoutesGSIsAndMSIs() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        let platform = PlatformInterrupts(pic: rig.pic)
        platform.line(0).pulse()
        XCTAssertEqual(rig.pic.acknowledge(), 0x20)
        rig.eoiMaster()
        platform.line(9).pulse()
        XCTAssertEqual(rig.pic.acknowledge(), 0x29)
        rig.eoiSlave(); rig.eoiMaster()

        platform.line(2).pulse()
        platform.line(16).pulse()
        XCTAssertFalse(rig.pic.interruptPending, "cascade and GSIs >= 16 are not PIC inputs")
        XCTAssertEqual(platform.droppedIRQs, 4)

        var got: [(UInt64, UInt32)] = []
        platform.signalMSI(address: 0xFEE0_0000, data: 0x41)
        XCTAssertEqual(platform.droppedMSIs, 1)
        platform.onMSI = { got.append(($0, $1)) }
        platform.signalMSI(address: 0xFEE0_1000, data: 0x4031)
        XCTAssertEqual(got.count, 1)
        XCTAssertEqual(got.first?.0, 0xFEE0_1000)
        XCTAssertEqual(got.first?.1, 0x4031)
    }

    func testWordAccessSplitsIntoBytePorts() throws {
        let rig = try PlatformPicRig()
        rig.initLikeLinux()
        rig.bus.write(0x4D0, size: 2, value: 0x0C20)   // ELCR master then slave
        XCTAssertEqual(rig.inb(0x4D0), 0x20)
        XCTAssertEqual(rig.inb(0x4D1), 0x0C)
        XCTAssertEqual(rig.bus.read(0x4D0, size: 2), 0x0C20)
    }
}
