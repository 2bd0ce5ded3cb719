import Devices
import VMCore
import XCTest

/// The I/O APIC as a guest kernel drives it: program a redirection entry through IOREGSEL/IOWIN,
/// assert pins, see messages reach the local APICs, EOI level-triggered ones.
final class IOAPICTests: XCTestCase {
    var sent: [(address: UInt64, data: UInt32)] = []
    var ioapic: IOAPIC!

    override func setUp() {
        sent = []
        ioapic = IOAPIC { [unowned self] a, d in self.sent.append((a, d)) }
    }

    func select(_ reg: UInt8) { ioapic.write(offset: 0, size: 4, value: UInt64(reg)) }
    func readReg(_ reg: UInt8) -> UInt32 { select(reg); return UInt32(ioapic.read(offset: 0x10, size: 4)) }
    func writeReg(_ reg: UInt8, _ v: UInt32) { select(reg); ioapic.write(offset: 0x10, size: 4, value: UInt64(v)) }

    /// Programs pin `pin`: vector, level/edge, destination APIC id (physical, fixed delivery).
    func route(_ pin: UInt8, vector: UInt8, level: Bool, dest: UInt8 = 0, masked: Bool = false) {
        writeReg(0x11 + 2 * pin, UInt32(dest) << 24)
        writeReg(0x10 + 2 * pin, UInt32(vector) | (level ? 1 << 15 : 0) | (masked ? 1 << 16 : 0))
    }

    func testVersionSaysTwentyFourPinsAndEveryPinStartsMasked() {
        XCTAssertEqual(readReg(1), 0x0017_0011)
        for pin in 0..<24 { XCTAssertEqual(readReg(UInt8(0x10 + 2 * pin)) & (1 << 16), 1 << 16, "pin \(pin)") }
        ioapic.setPin(4, level: true)
        XCTAssertTrue(sent.isEmpty, "a masked pin sends nothing")
    }

    func testIDIsFourBitsAndVersionIsReadOnly() {
        writeReg(0, 0xFF00_0000)
        XCTAssertEqual(readReg(0), 0x0F00_0000)
        writeReg(1, 0)
        XCTAssertEqual(readReg(1), 0x0017_0011)
    }

    func testAnEdgePinSendsOncePerRisingEdgeToItsDestination() {
        route(4, vector: 0x24, level: false, dest: 3)
        ioapic.setPin(4, level: true)
        ioapic.setPin(4, level: true)
        XCTAssertEqual(sent.count, 1)
        XCTAssertEqual(sent[0].address, 0xFEE0_3000)
        XCTAssertEqual(sent[0].data & 0xFF, 0x24)
        XCTAssertEqual(sent[0].data & (1 << 15), 0, "edge-triggered message")
        ioapic.setPin(4, level: false)
        ioapic.setPin(4, level: true)
        XCTAssertEqual(sent.count, 2)
    }

    func testALevelPinWaitsForEOIAndResendsWhileStillAsserted() {
        route(11, vector: 0x3B, level: true, dest: 1)
        ioapic.setPin(11, level: true)
        XCTAssertEqual(sent.count, 1)
        XCTAssertEqual(sent[0].data & (1 << 15), 1 << 15, "level-triggered message")
        XCTAssertEqual(readReg(0x10 + 22) & (1 << 14), 1 << 14, "Remote IRR set")
        ioapic.setPin(11, level: true)
        XCTAssertEqual(sent.count, 1, "no new message before EOI")
        ioapic.endOfInterrupt(vector: 0x3C)
        XCTAssertEqual(sent.count, 1, "an EOI of another vector changes nothing")
        ioapic.endOfInterrupt(vector: 0x3B)
        XCTAssertEqual(sent.count, 2, "still asserted: sent again")
        ioapic.setPin(11, level: false)
        ioapic.endOfInterrupt(vector: 0x3B)
        XCTAssertEqual(sent.count, 2)
        XCTAssertEqual(readReg(0x10 + 22) & (1 << 14), 0, "Remote IRR clear after EOI")
    }

    func testUnmaskingAnAssertedLevelPinSendsIt() {
        route(9, vector: 0x29, level: true, masked: true)
        ioapic.setPin(9, level: true)
        XCTAssertTrue(sent.isEmpty)
        route(9, vector: 0x29, level: true, masked: false)
        XCTAssertEqual(sent.count, 1)
    }

    func testLogicalDestinationAndDeliveryModeReachTheMessage() {
        writeReg(0x11 + 2 * 2, 0x0F00_0000)
        writeReg(0x10 + 2 * 2, 0x30 | 1 << 8 | 1 << 11)   // lowest priority, logical
        ioapic.setPin(2, level: true)
        XCTAssertEqual(sent.first?.address, 0xFEE0_F004)
        XCTAssertEqual(sent.first.map { ($0.data >> 8) & 7 }, 1)
    }

    func testWildReprogrammingIsHarmless() {
        // Every register, every value class, including read-only bits and absent pins.
        for reg in 0...255 {
            for v: UInt32 in [0, 0xFFFF_FFFF, 0x0001_0000, 0x5A5A_5A5A] { writeReg(UInt8(reg), v) }
        }
        for pin in -3..<40 { ioapic.setPin(pin, level: true); ioapic.setPin(pin, level: false) }
        for v in 0...255 { ioapic.endOfInterrupt(vector: UInt8(v)) }
        XCTAssertEqual(readReg(1), 0x0017_0011)
        // Reserved and read-only bits never stick.
        for pin in 0..<24 {
            let lo = readReg(UInt8(0x10 + 2 * pin)), hi = readReg(UInt8(0x11 + 2 * pin))
            XCTAssertEqual(lo & ~0x0001_EFFF, 0, "pin \(pin) low \(hex(lo))")
            XCTAssertEqual(hi & 0x00FF_FFFF, 0, "pin \(pin) high \(hex(hi))")
        }
    }

    func testStateRoundTripsAndForgedStatesAreRefused() throws {
        route(11, vector: 0x3B, level: true, dest: 1)
        ioapic.setPin(11, level: true)
        let saved = ioapic.captureState()
        let data = try JSONEncoder().encode(saved)
        let copy = IOAPIC { [unowned self] a, d in self.sent.append((a, d)) }
        try copy.restoreState(try JSONDecoder().decode(IOAPIC.State.self, from: data))
        XCTAssertEqual(copy.captureState(), saved)
        sent = []
        copy.endOfInterrupt(vector: 0x3B)
        XCTAssertEqual(sent.count, 1, "the restored copy resends the still-asserted level pin after EOI")

        var bad = saved
        bad.redirection = Array(bad.redirection.prefix(3))
        XCTAssertThrowsError(try copy.restoreState(bad))
        bad = saved
        bad.redirection[0] |= 1 << 12   // delivery status is never stored
        XCTAssertThrowsError(try copy.restoreState(bad))
        bad = saved
        bad.pinLevels = 1 << 30
        XCTAssertThrowsError(try copy.restoreState(bad))
    }
}

/// The ACPI PM1a registers: status write-1-to-clear, SCI when status and enable meet, and S5 powers off.
final class ACPIPowerManagementTests: XCTestCase {
    func testSlpEnWithTheS5TypePowersOffAndSCIEnReadsSet() {
        let irq = RecordingInterruptController()
        var offs = 0
        let pm = ACPIPowerManagement(sci: irq.line(9), s5SleepType: 5) { offs += 1 }
        XCTAssertEqual(pm.controlBlock.read(offset: 0, size: 2) & 1, 1, "always in ACPI mode")
        pm.controlBlock.write(offset: 0, size: 2, value: 5 << 10)
        XCTAssertEqual(offs, 0, "SLP_TYP alone does nothing")
        pm.controlBlock.write(offset: 0, size: 2, value: 5 << 10 | 1 << 13)
        XCTAssertEqual(offs, 1)
        // Byte writes: the high byte carries SLP_TYP and SLP_EN.
        pm.controlBlock.write(offset: 1, size: 1, value: UInt64((5 << 10 | 1 << 13) >> 8))
        XCTAssertEqual(offs, 2)
    }

    func testAnotherSleepTypeWakesAtOnceAndRaisesTheSCIWhenEnabled() {
        let irq = RecordingInterruptController()
        var offs = 0
        let pm = ACPIPowerManagement(sci: irq.line(9), s5SleepType: 5) { offs += 1 }
        pm.eventBlock.write(offset: 2, size: 2, value: 1 << 8)   // PWRBTN_EN
        pm.controlBlock.write(offset: 0, size: 2, value: 1 << 10 | 1 << 13)   // S1
        XCTAssertEqual(offs, 0)
        XCTAssertEqual(pm.eventBlock.read(offset: 0, size: 2) & 0x8000, 0x8000, "WAK_STS")
        XCTAssertFalse(irq.level(9), "WAK_STS has no enable bit")
        pm.eventBlock.write(offset: 0, size: 2, value: 0x8000)
        XCTAssertEqual(pm.eventBlock.read(offset: 0, size: 2), 0, "write 1 to clear")
        XCTAssertEqual(pm.eventBlock.read(offset: 2, size: 2), 1 << 8)
    }
}
