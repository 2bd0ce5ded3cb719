import XCTest
import CPUBackend
@testable import Devices

/// Register offsets and bits from the 16550 datasheet, spelled out here (not taken from the device)
/// so a wrong constant in the device cannot make its own test pass.
private enum R {
    static let rbr: UInt64 = 0, thr: UInt64 = 0, dll: UInt64 = 0, dlm: UInt64 = 1, ier: UInt64 = 1
    static let iir: UInt64 = 2, fcr: UInt64 = 2, lcr: UInt64 = 3, mcr: UInt64 = 4, lsr: UInt64 = 5
    static let msr: UInt64 = 6, scr: UInt64 = 7
}

private let ierRDI: UInt8 = 0x01, ierTHRI: UInt8 = 0x02, ierRLSI: UInt8 = 0x04, ierMSI: UInt8 = 0x08
private let mcrDTR: UInt8 = 0x01, mcrRTS: UInt8 = 0x02, mcrOUT1: UInt8 = 0x04, mcrOUT2: UInt8 = 0x08
private let mcrLoop: UInt8 = 0x10
private let lsrDR: UInt8 = 0x01, lsrOE: UInt8 = 0x02, lsrTHRE: UInt8 = 0x20, lsrTEMT: UInt8 = 0x40

/// A UART wired to a recording interrupt controller and an output collector, with `inb`/`outb`.
private final class Harness {
    let irqc = RecordingInterruptController()
    let out = SerialOutputCollector()
    let uart: Uart16550
    var receiveReadyCalls = 0

    init() {
        uart = Uart16550(irq: IRQLine(controller: irqc, gsi: 4), output: out)
        uart.onReceiveReady = { [unowned self] in self.receiveReadyCalls += 1 }
    }

    func inb(_ reg: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: uart.read(offset: reg, size: 1)) }
    func outb(_ reg: UInt64, _ value: UInt8) { uart.write(offset: reg, size: 1, value: UInt64(value)) }
    var line: Bool { irqc.level(4) }
    var edges: Int { irqc.risingEdges(4) }
}

final class UartTests: XCTestCase {

    // MARK: Registers

    func testResetValues() {
        let h = Harness()
        XCTAssertEqual(h.inb(R.ier), 0)
        XCTAssertEqual(h.inb(R.iir), 0x01, "no interrupt pending, FIFOs off")
        XCTAssertEqual(h.inb(R.lcr), 0x03)
        XCTAssertEqual(h.inb(R.mcr), 0)
        XCTAssertEqual(h.inb(R.lsr), lsrTHRE | lsrTEMT)
        XCTAssertEqual(h.inb(R.msr), 0xB0, "DCD, DSR and CTS asserted, no deltas")
        XCTAssertFalse(h.line)
        XCTAssertTrue(h.irqc.events.isEmpty, "an idle UART never touches its line")
    }

    func testTransmittedBytesReachTheOutputInOrder() {
        let h = Harness()
        for b in Array("hello\r\n".utf8) { h.outb(R.thr, b) }
        XCTAssertEqual(h.out.text, "hello\r\n")
        XCTAssertEqual(h.uart.transmittedBytes, 7)
        XCTAssertEqual(h.inb(R.lsr) & (lsrTHRE | lsrTEMT), lsrTHRE | lsrTEMT, "transmitter idle again")
    }

    func testScratchRegisterHoldsAnyValue() {
        let h = Harness()
        for v: UInt8 in [0xA5, 0x5A, 0x00, 0xFF] {
            h.outb(R.scr, v)
            XCTAssertEqual(h.inb(R.scr), v)
        }
    }

    func testLCRAndMCRReadBack() {
        let h = Harness()
        h.outb(R.lcr, 0x1B)
        XCTAssertEqual(h.inb(R.lcr), 0x1B)
        h.outb(R.mcr, 0xFF)
        XCTAssertEqual(h.inb(R.mcr), 0x1F, "MCR bits 5-7 do not exist on a 16550A")
    }

    func testIERKeepsOnlyTheFourInterruptEnables() {
        let h = Harness()
        h.outb(R.ier, 0xFF)
        XCTAssertEqual(h.inb(R.ier), 0x0F, "bit 6 must not stick, or Linux detects an XScale UART")
    }

    func testDivisorLatchIsSelectedByDLAB() {
        let h = Harness()
        h.outb(R.lcr, 0x83)                 // DLAB + 8N1
        h.outb(R.dll, 0x01)
        h.outb(R.dlm, 0x02)
        XCTAssertEqual(h.inb(R.dll), 0x01)
        XCTAssertEqual(h.inb(R.dlm), 0x02)
        XCTAssertTrue(h.out.bytes.isEmpty, "a divisor write is not a transmission")
        XCTAssertEqual(h.uart.transmittedBytes, 0)

        h.outb(R.lcr, 0x03)                 // DLAB off: offsets 0 and 1 are THR/RBR and IER again
        XCTAssertEqual(h.inb(R.ier), 0, "IER unaffected by the DLM write")
        h.outb(R.thr, 0x41)
        XCTAssertEqual(h.out.bytes, [0x41])
        h.outb(R.ier, 0x05)

        h.outb(R.lcr, 0x83)
        XCTAssertEqual(h.inb(R.dll), 0x01, "divisor kept across DLAB toggles")
        XCTAssertEqual(h.inb(R.dlm), 0x02, "IER write did not land in DLM")
        h.outb(R.lcr, 0x03)
        XCTAssertEqual(h.inb(R.ier), 0x05)
    }

    func testFIFOEnableShowsInIIRAsC0() {
        let h = Harness()
        h.outb(R.fcr, 0x01)
        XCTAssertEqual(h.inb(R.iir), 0xC1)
        h.outb(R.fcr, 0x21)                 // 64-byte FIFO request: a 16550A ignores it
        XCTAssertEqual(h.inb(R.iir), 0xC1, "IIR bit 5 set would make Linux think this is a 16750")
        h.outb(R.fcr, 0x00)
        XCTAssertEqual(h.inb(R.iir), 0x01)
    }

    func testWideAccessesSplitIntoConsecutiveBytes() {
        let h = Harness()
        h.outb(R.scr, 0x5A)
        XCTAssertEqual(h.uart.read(offset: R.msr, size: 2), 0x5AB0, "MSR then SCR")
        XCTAssertEqual(h.uart.read(offset: R.scr, size: 2), 0xFF5A, "the byte past the UART reads all-ones")
        h.uart.write(offset: R.lcr, size: 2, value: 0x0B_1B)   // LCR = 0x1B, MCR = 0x0B
        XCTAssertEqual(h.inb(R.lcr), 0x1B)
        XCTAssertEqual(h.inb(R.mcr), 0x0B)
        h.uart.write(offset: R.scr, size: 4, value: 0xFFFF_FF77)
        XCTAssertEqual(h.inb(R.scr), 0x77)
        XCTAssertEqual(h.uart.read(offset: 8, size: 1), 0xFF, "offsets past the eight ports")
    }

    // MARK: THRE interrupt

    func testEnablingTHRIRaisesTHREAndReadingIIRClearsIt() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2)
        XCTAssertFalse(h.line)
        h.outb(R.ier, ierTHRI)
        XCTAssertTrue(h.line, "THR is empty, so enabling THRI interrupts at once")
        XCTAssertEqual(h.inb(R.iir), 0x02)
        XCTAssertFalse(h.line, "reading IIR while it reports THRE acknowledges it")
        XCTAssertEqual(h.inb(R.iir), 0x01)

        // The 8250 driver's startup test: IER 0 -> THRI must raise THRE again.
        h.outb(R.ier, 0)
        h.outb(R.ier, ierTHRI)
        XCTAssertTrue(h.line)
        XCTAssertEqual(h.inb(R.iir), 0x02)
        XCTAssertEqual(h.edges, 2)
        XCTAssertEqual(h.uart.interruptsRaised, 2)
    }

    func testRewritingIERWithTHRIStillSetDoesNotRetrigger() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2)
        h.outb(R.ier, ierTHRI)
        _ = h.inb(R.iir)
        h.outb(R.ier, ierTHRI | ierRDI)     // THRI unchanged
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.inb(R.iir), 0x01)
    }

    func testEachTransmissionRaisesTHREAgain() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2)
        h.outb(R.ier, ierTHRI)
        _ = h.inb(R.iir)
        XCTAssertFalse(h.line)
        for (i, b) in Array("abc".utf8).enumerated() {
            h.outb(R.thr, b)
            XCTAssertTrue(h.line, "byte \(i): the transmitter is empty again")
            XCTAssertEqual(h.inb(R.iir), 0x02)
            XCTAssertFalse(h.line)
        }
        XCTAssertEqual(h.edges, 4)
        XCTAssertEqual(h.out.text, "abc")
    }

    func testBurstOfWritesWhileTHREIsPendingKeepsTheLineSteady() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2)
        h.outb(R.fcr, 0x01)
        h.outb(R.ier, ierTHRI)
        XCTAssertEqual(h.edges, 1)
        for i in 0..<16 { h.outb(R.thr, UInt8(0x40 + i)) }   // a driver filling the 16-byte FIFO
        XCTAssertTrue(h.line)
        XCTAssertEqual(h.edges, 1, "no low glitch per byte: each would be one more guest interrupt")
        XCTAssertEqual(h.out.bytes.count, 16)
    }

    func testTHREIsNotReportedWhileTHRIDisabled() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2)
        h.outb(R.thr, 0x31)
        XCTAssertEqual(h.inb(R.iir), 0x01)
        XCTAssertFalse(h.line)
    }

    // MARK: Interrupt line gating

    func testLineFollowsOUT2() {
        let h = Harness()
        h.outb(R.ier, ierTHRI)
        XCTAssertFalse(h.line, "OUT2 clear: the board's IRQ buffer is off")
        h.outb(R.mcr, mcrOUT2)
        XCTAssertTrue(h.line, "the pending THRE shows up as soon as OUT2 is set")
        h.outb(R.mcr, mcrDTR | mcrRTS)
        XCTAssertFalse(h.line)
        h.outb(R.mcr, mcrOUT2 | mcrDTR | mcrRTS)
        XCTAssertTrue(h.line)
        h.outb(R.ier, 0)
        XCTAssertFalse(h.line, "disabling the interrupt drops the line")
        XCTAssertEqual(h.irqc.events, [
            .level(gsi: 4, high: true), .level(gsi: 4, high: false),
            .level(gsi: 4, high: true), .level(gsi: 4, high: false),
        ], "the controller sees only level changes")
    }

    // MARK: Receive

    func testEnqueueRaisesRXInterruptAndReadingDrainsIt() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2 | mcrRTS)
        h.outb(R.ier, ierRDI)
        h.receiveReadyCalls = 0   // raising RTS was the first
        XCTAssertEqual(h.uart.enqueue(Array("hi".utf8)), 2)
        XCTAssertTrue(h.line)
        XCTAssertEqual(h.inb(R.iir), 0x04)
        XCTAssertTrue(h.line, "reading IIR does not acknowledge received data")
        XCTAssertEqual(h.inb(R.lsr) & lsrDR, lsrDR)
        XCTAssertEqual(h.inb(R.rbr), UInt8(ascii: "h"))
        XCTAssertTrue(h.line, "one byte still waiting")
        XCTAssertEqual(h.inb(R.rbr), UInt8(ascii: "i"))
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.inb(R.iir), 0x01)
        XCTAssertEqual(h.inb(R.lsr) & lsrDR, 0)
        XCTAssertEqual(h.inb(R.rbr), 0, "an empty receiver reads 0")
        XCTAssertEqual(h.uart.receivedBytes, 2)
        XCTAssertEqual(h.receiveReadyCalls, 1, "told the host once, when the FIFO drained")
    }

    func testDataWaitingInterruptsWhenRDIIsEnabledLater() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2 | mcrRTS)
        h.uart.enqueue([0x61])
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.inb(R.lsr) & lsrDR, lsrDR)
        h.outb(R.ier, ierRDI)
        XCTAssertTrue(h.line)
    }

    func testReceiveFIFOFillsToItsLimitAndKeepsOrder() {
        let h = Harness()
        h.outb(R.mcr, mcrRTS)
        let input = (0..<100).map { UInt8($0) }
        XCTAssertEqual(h.uart.enqueue(input), 64)
        XCTAssertEqual(h.uart.receiveCount, 64)
        XCTAssertEqual(h.uart.receiveSpace, 0)
        XCTAssertEqual(h.uart.enqueue(input[64...]), 0, "a full FIFO accepts nothing")
        XCTAssertEqual(h.uart.enqueue([UInt8]()), 0)
        XCTAssertEqual(h.inb(R.lsr) & lsrOE, 0, "host input is flow-controlled, never overrun")

        XCTAssertEqual(h.inb(R.rbr), 0)
        XCTAssertEqual(h.uart.enqueue(input[64...]), 1, "one byte of room")
        var got: [UInt8] = []
        while h.inb(R.lsr) & lsrDR != 0 { got.append(h.inb(R.rbr)) }
        XCTAssertEqual(got, Array(1...64).map { UInt8($0) })
        XCTAssertEqual(h.uart.receivedBytes, 65)
    }

    func testFCRClearsTheReceiveFIFO() {
        let h = Harness()
        h.outb(R.mcr, mcrRTS)
        h.receiveReadyCalls = 0
        h.outb(R.fcr, 0x01)
        h.uart.enqueue([1, 2, 3])
        h.outb(R.fcr, 0x03)                 // enable + clear RX
        XCTAssertEqual(h.inb(R.lsr) & lsrDR, 0)
        XCTAssertEqual(h.uart.receiveCount, 0)
        XCTAssertEqual(h.receiveReadyCalls, 1)

        h.uart.enqueue([4])
        h.outb(R.fcr, 0x01)                 // no clear bit, FIFOs stay on: data kept
        XCTAssertEqual(h.uart.receiveCount, 1)
        h.outb(R.fcr, 0x00)                 // turning FIFOs off resets them
        XCTAssertEqual(h.uart.receiveCount, 0)

        h.uart.enqueue([5])
        h.outb(R.fcr, 0x02)                 // clear bit without enable bit: ignored (datasheet)
        XCTAssertEqual(h.uart.receiveCount, 1)
        XCTAssertEqual(h.inb(R.rbr), 5)
    }

    /// Hardware flow control: the host sends only while the guest asserts RTS. Linux's startup
    /// clears the FIFOs and only then raises RTS, so input held until then is not flushed.
    func testHostInputWaitsForRTS() {
        let h = Harness()
        XCTAssertEqual(h.uart.receiveSpace, 0, "RTS low after reset: the host must hold its input")
        XCTAssertEqual(h.uart.enqueue(Array("typed early".utf8)), 0)
        h.outb(R.mcr, mcrDTR | mcrOUT2)
        XCTAssertEqual(h.uart.enqueue([1]), 0, "DTR alone does not let the host send")
        h.outb(R.fcr, 0x07)                 // the 8250 startup: enable and clear both FIFOs
        XCTAssertEqual(h.receiveReadyCalls, 0)
        h.outb(R.mcr, mcrDTR | mcrRTS | mcrOUT2)
        XCTAssertEqual(h.receiveReadyCalls, 1, "raising RTS tells the host it may send")
        XCTAssertEqual(h.uart.receiveSpace, 64)
        XCTAssertEqual(h.uart.enqueue(Array("typed early".utf8)), 11)
        h.outb(R.mcr, mcrDTR | mcrRTS | mcrOUT2)
        XCTAssertEqual(h.receiveReadyCalls, 1, "rewriting MCR with RTS still set is no new edge")
        h.outb(R.mcr, mcrOUT2)
        XCTAssertEqual(h.uart.enqueue([2]), 0, "RTS dropped (the port was closed): the host holds again")
        XCTAssertEqual(h.uart.receiveCount, 11, "what was received stays for the guest")
    }

    func testLSRThroughASequenceOfWritesAndReads() {
        let h = Harness()
        h.outb(R.mcr, mcrRTS)
        XCTAssertEqual(h.inb(R.lsr), 0x60)
        h.uart.enqueue([0x10, 0x20])
        XCTAssertEqual(h.inb(R.lsr), 0x61)
        h.outb(R.thr, 0x30)
        XCTAssertEqual(h.inb(R.lsr), 0x61, "transmitting does not disturb DR")
        XCTAssertEqual(h.inb(R.rbr), 0x10)
        XCTAssertEqual(h.inb(R.lsr), 0x61)
        XCTAssertEqual(h.inb(R.rbr), 0x20)
        XCTAssertEqual(h.inb(R.lsr), 0x60)

        h.outb(R.mcr, mcrLoop)
        for i in 0..<65 { h.outb(R.thr, UInt8(i)) }
        XCTAssertEqual(h.inb(R.lsr), 0x63, "DR and OE after overrunning the FIFO")
        XCTAssertEqual(h.inb(R.lsr), 0x61, "reading LSR clears OE")
        XCTAssertEqual(h.uart.overruns, 1)
    }

    // MARK: Loopback

    func testLoopbackReturnsTransmittedBytesAndCutsOffTheLine() {
        let h = Harness()
        h.outb(R.mcr, mcrLoop)
        h.outb(R.thr, 0x78)
        XCTAssertTrue(h.out.bytes.isEmpty, "nothing reaches the line in loopback")
        XCTAssertEqual(h.inb(R.lsr) & lsrDR, lsrDR)
        XCTAssertEqual(h.inb(R.rbr), 0x78)
        XCTAssertEqual(h.uart.enqueue([1, 2]), 0, "the receiver does not listen to the line either")
        XCTAssertEqual(h.uart.receiveSpace, 0)
        XCTAssertEqual(h.receiveReadyCalls, 1, "drained")
        h.outb(R.mcr, mcrRTS)
        XCTAssertEqual(h.receiveReadyCalls, 2, "host told it may send again")
        XCTAssertEqual(h.uart.enqueue([1, 2]), 2)
        h.outb(R.thr, 0x79)
        XCTAssertEqual(h.out.bytes, [0x79])
    }

    func testLoopbackFillsToTheLimitThenOverruns() {
        let h = Harness()
        h.outb(R.mcr, mcrLoop)
        h.outb(R.ier, ierRLSI | ierRDI)
        for i in 0..<64 { h.outb(R.thr, UInt8(i)) }
        XCTAssertEqual(h.inb(R.lsr), 0x61, "full, not yet overrun")
        XCTAssertEqual(h.inb(R.iir), 0x04)
        h.outb(R.thr, 0xEE)
        XCTAssertEqual(h.inb(R.iir), 0x06, "overrun: line status interrupt")
        XCTAssertEqual(h.inb(R.lsr) & lsrOE, lsrOE)
        XCTAssertEqual(h.inb(R.iir), 0x04, "LSR read cleared the line status interrupt")
        var got: [UInt8] = []
        while h.inb(R.lsr) & lsrDR != 0 { got.append(h.inb(R.rbr)) }
        XCTAssertEqual(got, (0..<64).map { UInt8($0) }, "the overrunning byte is lost, the FIFO intact")
    }

    func testLoopbackMSRMirrorsMCR() {
        let h = Harness()
        h.outb(R.mcr, mcrLoop | 0x0A)       // Linux's probe: RTS + OUT2
        XCTAssertEqual(h.inb(R.msr) & 0xF0, 0x90, "CTS from RTS, DCD from OUT2")
        h.outb(R.mcr, mcrLoop | mcrDTR)
        XCTAssertEqual(h.inb(R.msr) & 0xF0, 0x20, "DSR from DTR")
        h.outb(R.mcr, mcrLoop | mcrOUT1)
        XCTAssertEqual(h.inb(R.msr) & 0xF0, 0x40, "RI from OUT1")
        h.outb(R.mcr, mcrLoop)
        XCTAssertEqual(h.inb(R.msr) & 0xF0, 0x00)
        h.outb(R.mcr, 0)
        XCTAssertEqual(h.inb(R.msr) & 0xF0, 0xB0, "host lines again outside loopback")
    }

    func testModemStatusDeltasAreSetByChangesAndClearedByReading() {
        let h = Harness()
        h.outb(R.mcr, mcrLoop)              // DCD, DSR, CTS all drop
        XCTAssertEqual(h.inb(R.msr), 0x0B, "DDCD | DDSR | DCTS")
        XCTAssertEqual(h.inb(R.msr), 0x00, "deltas clear on read")
        h.outb(R.mcr, mcrLoop | mcrOUT1)    // RI rises: no TERI yet
        XCTAssertEqual(h.inb(R.msr), 0x40)
        h.outb(R.mcr, mcrLoop)              // RI falls: trailing edge
        XCTAssertEqual(h.inb(R.msr), 0x04)
    }

    func testLineStaysLowInLoopbackEvenWithOUT2() {
        let h = Harness()
        h.outb(R.ier, ierRDI)
        h.outb(R.mcr, mcrLoop | mcrOUT2)
        h.outb(R.thr, 0x55)
        XCTAssertEqual(h.inb(R.iir), 0x04, "the interrupt is pending inside the UART")
        XCTAssertFalse(h.line, "but loopback forces the OUT2 pin off")
        h.outb(R.mcr, mcrOUT2)
        XCTAssertTrue(h.line, "data still waiting when loopback ends")
    }

    // MARK: Interrupt priority

    func testIIRReportsTheHighestPriorityAndClearsOnlyWhatItsRuleSays() {
        let h = Harness()
        h.outb(R.mcr, mcrLoop)              // also makes modem-status deltas
        h.outb(R.ier, 0x0F)
        for i in 0..<65 { h.outb(R.thr, UInt8(i)) }   // data, overrun, THRE pending

        XCTAssertEqual(h.inb(R.iir), 0x06, "line status first")
        XCTAssertEqual(h.inb(R.iir), 0x06, "and IIR reads do not clear it")
        _ = h.inb(R.lsr)
        XCTAssertEqual(h.inb(R.iir), 0x04, "then received data")
        XCTAssertEqual(h.inb(R.iir), 0x04, "IIR reads do not clear it, nor the THRE behind it")
        while h.inb(R.lsr) & lsrDR != 0 { _ = h.inb(R.rbr) }
        XCTAssertEqual(h.inb(R.iir), 0x02, "then THRE")
        XCTAssertEqual(h.inb(R.iir), 0x00, "reading IIR cleared THRE; modem status is last")
        XCTAssertEqual(h.inb(R.iir), 0x00)
        _ = h.inb(R.msr)
        XCTAssertEqual(h.inb(R.iir), 0x01, "nothing left")
    }

    func testTHREHiddenBehindReceivedDataIsNotLost() {
        let h = Harness()
        h.outb(R.ier, ierTHRI | ierRDI)
        h.outb(R.mcr, mcrOUT2 | mcrRTS)
        h.uart.enqueue([1])
        XCTAssertEqual(h.inb(R.iir), 0x04)
        _ = h.inb(R.rbr)
        XCTAssertEqual(h.inb(R.iir), 0x02, "THRE was hidden behind received data, not lost")
    }

    // MARK: The Linux 8250 driver

    /// Linux's `autoconfig()` and `autoconfig_16550a()` (8250_port.c, with
    /// CONFIG_SERIAL_8250_16550A_VARIANTS) as the port reads and writes they perform.
    private enum Detected: Equatable { case none, unknown, p8250, p16450, p16550, p16550A, p16650, p16750, ns16550A, xscale }

    private func linuxAutoconfig(_ h: Harness) -> Detected {
        // Existence test through IER.
        let scratch = h.inb(R.ier)
        h.outb(R.ier, 0)
        let scratch2 = h.inb(R.ier) & 0x0F
        h.outb(R.ier, 0x0F)
        let scratch3 = h.inb(R.ier) & 0x0F
        h.outb(R.ier, scratch)
        if scratch2 != 0 || scratch3 != 0x0F { return .none }

        let saveMCR = h.inb(R.mcr), saveLCR = h.inb(R.lcr)
        // Loopback test.
        h.outb(R.mcr, mcrLoop | 0x0A)
        let status1 = h.inb(R.msr) & 0xF0
        h.outb(R.mcr, saveMCR)
        if status1 != 0x90 { return .none }

        h.outb(R.lcr, 0xBF)
        h.outb(R.fcr, 0)                    // EFR on enhanced parts
        h.outb(R.lcr, 0x03)
        h.outb(R.fcr, 0x01)
        let iir = h.inb(R.iir)
        var type: Detected
        switch iir >> 6 {
        case 0:
            h.outb(R.scr, 0xA5)
            let s1 = h.inb(R.scr)
            h.outb(R.scr, 0x5A)
            let s2 = h.inb(R.scr)
            type = s1 == 0xA5 && s2 == 0x5A ? .p16450 : .p8250
        case 1: type = .unknown
        case 2: type = .p16550
        default: type = autoconfig16550A(h)
        }
        h.outb(R.lcr, saveLCR)
        h.outb(R.mcr, saveMCR)
        // serial8250_clear_fifos, then drain RX and clear IER.
        h.outb(R.fcr, 0x01); h.outb(R.fcr, 0x07); h.outb(R.fcr, 0x00)
        _ = h.inb(R.rbr)
        h.outb(R.ier, 0)
        return type
    }

    private func autoconfig16550A(_ h: Harness) -> Detected {
        h.outb(R.lcr, 0x80)
        if h.inb(R.iir) == 0 { return .p16650 }        // EFR visible with DLAB: ST16C650V1
        h.outb(R.lcr, 0xBF)
        if h.inb(R.iir) == 0 { return .p16650 }        // EFR visible with LCR 0xBF
        // National Semiconductor EXCR1 probe.
        h.outb(R.lcr, 0)
        let s1 = h.inb(R.mcr)
        h.outb(R.lcr, 0xE0)
        var s2 = h.inb(2)
        if (s2 ^ s1) & mcrLoop == 0 {
            h.outb(R.lcr, 0)
            h.outb(R.mcr, s1 ^ mcrLoop)
            h.outb(R.lcr, 0xE0)
            s2 = h.inb(2)
            h.outb(R.lcr, 0)
            h.outb(R.mcr, s1)
            if (s2 ^ s1) & mcrLoop != 0 { return .ns16550A }
        }
        // TI16750: IIR bit 5 follows FCR bit 5 with DLAB set.
        h.outb(R.lcr, 0)
        h.outb(R.fcr, 0x21)
        let st1 = h.inb(R.iir) & 0xE0
        h.outb(R.fcr, 0x01)
        h.outb(R.lcr, 0x80)
        h.outb(R.fcr, 0x21)
        let st2 = h.inb(R.iir) & 0xE0
        h.outb(R.fcr, 0x01)
        h.outb(R.lcr, 0)
        if st1 == 0xC0 && st2 == 0xE0 { return .p16750 }
        // XScale: IER bit 6 (UUE) sticks.
        let iersave = h.inb(R.ier)
        h.outb(R.ier, iersave & ~0x40)
        if h.inb(R.ier) & 0x40 == 0 {
            h.outb(R.ier, iersave | 0x40)
            if h.inb(R.ier) & 0x40 != 0 { return .xscale }
        }
        h.outb(R.ier, iersave)
        return .p16550A
    }

    func testLinuxAutoconfigDetectsA16550A() {
        let h = Harness()
        XCTAssertEqual(linuxAutoconfig(h), .p16550A)
        XCTAssertTrue(h.out.bytes.isEmpty, "probing transmits nothing")
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.inb(R.ier), 0)
        XCTAssertEqual(h.inb(R.mcr), 0, "MCR restored")
        XCTAssertEqual(h.inb(R.lcr), 0x03, "LCR restored")
    }

    func testLinuxStartupFindsNoTHREOrTXENBugThenRunsInterruptDriven() {
        let h = Harness()
        XCTAssertEqual(linuxAutoconfig(h), .p16550A)

        // serial8250_do_startup: clear FIFOs, clear interrupt registers, LSR sanity.
        h.outb(R.fcr, 0x01); h.outb(R.fcr, 0x07); h.outb(R.fcr, 0x00)
        _ = h.inb(R.lsr); _ = h.inb(R.rbr); _ = h.inb(R.iir); _ = h.inb(R.msr)
        XCTAssertNotEqual(h.inb(R.lsr), 0xFF)
        // THRE re-assertion test (UART_BUG_THRE).
        XCTAssertNotEqual(h.inb(R.lsr) & lsrTHRE, 0)
        h.outb(R.ier, ierTHRI)
        let iir1 = h.inb(R.iir)
        h.outb(R.ier, 0)
        h.outb(R.ier, ierTHRI)
        let iir2 = h.inb(R.iir)
        h.outb(R.ier, 0)
        XCTAssertEqual(iir1 & 0x01, 0)
        XCTAssertEqual(iir2 & 0x01, 0, "THRE re-asserted: no UART_BUG_THRE timer needed")
        // Word length, OUT2 | RTS | DTR, then the TX-enable test (UART_BUG_TXEN).
        h.outb(R.lcr, 0x03)
        h.outb(R.mcr, mcrOUT2 | mcrRTS | mcrDTR)
        h.outb(R.ier, ierTHRI)
        let lsr = h.inb(R.lsr)
        let iir3 = h.inb(R.iir)
        h.outb(R.ier, 0)
        XCTAssertFalse(lsr & lsrTEMT != 0 && iir3 & 0x01 != 0, "UART_BUG_TXEN would be set")
        _ = h.inb(R.lsr); _ = h.inb(R.rbr); _ = h.inb(R.iir); _ = h.inb(R.msr)
        // set_termios: 115200 8N1, FIFOs with trigger 8; enable RX and line status interrupts.
        h.outb(R.lcr, 0x83); h.outb(R.dll, 0x01); h.outb(R.dlm, 0x00); h.outb(R.lcr, 0x03)
        h.outb(R.fcr, 0x81)
        h.outb(R.ier, ierRDI | ierRLSI)
        XCTAssertFalse(h.line)

        // Transmit through start_tx + the interrupt handler, 16 bytes per THRE (tx_loadsz).
        var pending = Array("Linux version 6.1 booting on swhv\n".utf8)
        var ier = ierRDI | ierRLSI | ierTHRI
        h.outb(R.ier, ier)
        var received: [UInt8] = []
        func interruptHandler() {
            while true {
                let iir = h.inb(R.iir)
                XCTAssertEqual(iir & 0xC0, 0xC0, "FIFOs stay enabled")
                if iir & 0x01 != 0 { return }
                let lsr = h.inb(R.lsr)
                if lsr & lsrDR != 0 {
                    while h.inb(R.lsr) & lsrDR != 0 { received.append(h.inb(R.rbr)) }
                }
                if lsr & lsrTHRE != 0 && ier & ierTHRI != 0 {
                    for _ in 0..<16 where !pending.isEmpty { h.outb(R.thr, pending.removeFirst()) }
                    if pending.isEmpty { ier &= ~ierTHRI; h.outb(R.ier, ier) }
                }
            }
        }
        var guard_ = 0
        while h.line && guard_ < 100 { interruptHandler(); guard_ += 1 }
        XCTAssertEqual(h.out.text, "Linux version 6.1 booting on swhv\n")
        XCTAssertFalse(h.line, "quiet once the transmit queue is empty")

        // Receive: the host types, the driver's handler picks it up.
        XCTAssertEqual(h.uart.enqueue(Array("root\r".utf8)), 5)
        XCTAssertTrue(h.line)
        while h.line && guard_ < 200 { interruptHandler(); guard_ += 1 }
        XCTAssertEqual(received, Array("root\r".utf8))
        XCTAssertLessThan(guard_, 200, "the interrupt line settles")
    }

    func testInterruptCounterMatchesControllerEdges() {
        let h = Harness()
        h.outb(R.mcr, mcrOUT2 | mcrRTS)
        h.outb(R.ier, ierTHRI | ierRDI)
        _ = h.inb(R.iir)
        h.uart.enqueue([1, 2, 3])
        _ = h.inb(R.rbr); _ = h.inb(R.rbr); _ = h.inb(R.rbr)
        h.outb(R.thr, 0x20)
        XCTAssertEqual(h.uart.interruptsRaised, h.edges)
        XCTAssertEqual(h.edges, 3)
    }
}
