import XCTest
import CPUBackend
@testable import Devices

private let stOBF: UInt8 = 0x01, stIBF: UInt8 = 0x02, stAuxData: UInt8 = 0x20

/// An i8042 on a port bus, the way the machine wires it, with the calls Linux's i8042 driver makes.
private final class Harness {
    let irqc = RecordingInterruptController()
    let bus = Bus(name: "pio")
    var resets = 0
    /// `waitRead` calls that gave up: each costs a booting kernel half a second.
    var timeouts = 0
    var i8042: I8042!

    init(wireIRQ: Bool = true) throws {
        i8042 = I8042(onReset: { [unowned self] in self.resets += 1 },
                      keyboardIRQ: wireIRQ ? IRQLine(controller: irqc, gsi: 1) : nil)
        try bus.register(i8042.dataPortDevice, name: "i8042-data", at: PCLayout.Port.i8042Data)
        try bus.register(i8042.commandPortDevice, name: "i8042-command", at: PCLayout.Port.i8042Command)
    }

    func status() -> UInt8 { UInt8(truncatingIfNeeded: bus.read(0x64, size: 1)) }
    func data() -> UInt8 { UInt8(truncatingIfNeeded: bus.read(0x60, size: 1)) }
    func command(_ c: UInt8) { bus.write(0x64, size: 1, value: UInt64(c)) }
    func send(_ d: UInt8) { bus.write(0x60, size: 1, value: UInt64(d)) }
    var line: Bool { irqc.level(1) }

    /// i8042_wait_read: polls status for OBF at most `limit` times (the kernel's I8042_CTL_TIMEOUT
    /// is 10000 polls 50 µs apart). Returns false on timeout.
    func waitRead(limit: Int = 10_000) -> Bool {
        for _ in 0..<limit where status() & stOBF != 0 { return true }
        timeouts += 1
        return false
    }

    /// __i8042_command: command, parameters, then results. nil means the kernel saw an error
    /// (timeout, or an AUX loopback answer without the AUX flag).
    func linuxCommand(_ cmd: UInt16, params: [UInt8] = []) -> [UInt8]? {
        let nParams = Int((cmd >> 12) & 0xF), nResults = Int((cmd >> 8) & 0xF)
        precondition(nParams == params.count)
        guard status() & stIBF == 0 else { return nil }
        command(UInt8(cmd & 0xFF))
        for p in params {
            guard status() & stIBF == 0 else { return nil }
            send(p)
        }
        var results: [UInt8] = []
        for _ in 0..<nResults {
            guard waitRead() else { return nil }
            if cmd == 0x11D3 && status() & stAuxData == 0 { return nil }
            results.append(data())
        }
        return results
    }

    /// i8042_flush: reads while OBF is set, at most 16 bytes. Returns false if data never stops.
    func flush() -> Bool {
        for _ in 0...16 where status() & stOBF != 0 { _ = data() }
        return status() & stOBF == 0
    }
}

final class I8042Tests: XCTestCase {

    func testStatusAtRestIsSaneAndEmpty() throws {
        let h = try Harness()
        let st = h.status()
        XCTAssertNotEqual(st, 0xFF, "an all-ones status is what an absent controller reads as")
        XCTAssertEqual(st & stOBF, 0, "no data")
        XCTAssertEqual(st & stIBF, 0, "input buffer empty: the kernel may write")
        XCTAssertEqual(h.data(), 0, "reading with nothing pending yields 0")
        XCTAssertTrue(h.flush())
        XCTAssertFalse(h.line)
    }

    func testOnlyPorts60And64AreClaimed() throws {
        let h = try Harness()
        XCTAssertEqual(h.bus.entries.map(\.base), [0x60, 0x64])
        XCTAssertEqual(h.bus.entries.map(\.length), [1, 1])
        // Port 0x61 (speaker / NMI status) stays free for the PIT.
        XCTAssertNoThrow(try h.bus.register(PortSink(), name: "port61", base: 0x61, length: 1))
    }

    func testResetCommandRequestsReset() throws {
        let h = try Harness()
        h.command(0xFE)
        XCTAssertEqual(h.resets, 1)
        XCTAssertEqual(h.i8042.resetRequests, 1)
    }

    func testOnlyPulsesOfTheResetLineReset() throws {
        let h = try Harness()
        h.command(0xFF)         // pulse nothing
        h.command(0xFD)         // pulse bit 1 (A20) only
        XCTAssertEqual(h.resets, 0)
        h.command(0xF0)         // pulse all four bits, reset included
        XCTAssertEqual(h.resets, 1)
        h.command(0xD1)         // write output port with the reset line (bit 0, active low) held low
        h.send(0x02)
        XCTAssertEqual(h.resets, 2)
        h.command(0xD1)
        h.send(0x03)
        XCTAssertEqual(h.resets, 2, "bit 0 high: no reset")
        h.command(0xD0)
        XCTAssertEqual(h.data(), 0x03, "output port reads back")
    }

    func testConfigurationByteReadAndWrite() throws {
        let h = try Harness()
        h.command(0x20)
        XCTAssertEqual(h.status() & stOBF, stOBF)
        XCTAssertFalse(h.line, "keyboard interrupt enabled, yet a controller answer does not raise it")
        XCTAssertEqual(h.data(), 0x25)
        XCTAssertEqual(h.linuxCommand(0x0120), [0x25])
        XCTAssertEqual(h.linuxCommand(0x1060, params: [0x47]), [])
        XCTAssertEqual(h.linuxCommand(0x0120), [0x47])
        XCTAssertEqual(h.i8042.configuration, 0x47)
        XCTAssertEqual(h.linuxCommand(0x1060, params: [0x20]), [])
        XCTAssertEqual(h.status() & 0x04, 0, "status system flag follows the configuration byte")
        XCTAssertEqual(h.irqc.risingEdges(1), 0, "controller answers are polled for, they do not interrupt")
    }

    func testTheCommandParameterDoesNotGoToTheKeyboard() throws {
        let h = try Harness()
        h.command(0x60)
        h.send(0xF4)            // looks like "keyboard enable", but it is the new configuration byte
        XCTAssertEqual(h.status() & stOBF, 0, "no keyboard ACK")
        XCTAssertEqual(h.i8042.configuration, 0xF4)
    }

    /// The sequence Linux's i8042_controller_check / selftest / init / check_mux / check_aux run
    /// (without i8042.noaux/nomux). Every step must finish without hitting a timeout.
    func testLinuxProbeCompletesWithoutTimeoutsAndFindsNoMouse() throws {
        let h = try Harness()
        XCTAssertTrue(h.flush(), "i8042_controller_check")
        XCTAssertEqual(h.linuxCommand(0x01AA), [0x55], "controller self-test passes")
        // i8042_controller_init: two matching CTR reads, then keyboard disabled, interrupts off.
        let c1 = try XCTUnwrap(h.linuxCommand(0x0120)).first
        let c2 = try XCTUnwrap(h.linuxCommand(0x0120)).first
        XCTAssertEqual(c1, c2)
        var ctr = try XCTUnwrap(c1)
        ctr |= 0x10
        ctr &= ~0x03
        XCTAssertNotNil(h.linuxCommand(0x1060, params: [ctr]))
        XCTAssertTrue(h.flush())
        // check_mux: AUX loopback of 0xF0 must fail (it would time out on a controller ignoring it).
        XCTAssertTrue(h.flush())
        XCTAssertNil(h.linuxCommand(0x11D3, params: [0xF0]), "no multiplexer")
        // check_aux: loopback fails, then the AUX interface test reports a dead port.
        XCTAssertTrue(h.flush())
        let loop = h.linuxCommand(0x11D3, params: [0x5A])
        XCTAssertTrue(loop == nil || loop != [0x5A])
        let auxTest = try XCTUnwrap(h.linuxCommand(0x01A9), "AUX test answered, not timed out")
        let result = try XCTUnwrap(auxTest.first)
        XCTAssertTrue(result != 0 && result != 0xFA && result != 0xFF, "Linux concludes: no AUX port")
        XCTAssertEqual(h.linuxCommand(0x01AB), [0x00], "keyboard port test passes")
        // Enable the keyboard port and its interrupt.
        ctr &= ~0x10
        ctr |= 0x01
        XCTAssertNotNil(h.linuxCommand(0x1060, params: [ctr]))
        XCTAssertTrue(h.flush())
        XCTAssertEqual(h.resets, 0)
        XCTAssertEqual(h.timeouts, 0, "no step waited out the kernel's timeout")
    }

    func testKeyboardAnswersThroughIRQ1() throws {
        let h = try Harness()
        h.send(0xF2)                            // identify
        XCTAssertTrue(h.line)
        XCTAssertEqual(h.status() & stOBF, stOBF)
        XCTAssertEqual(h.data(), 0xFA)
        XCTAssertTrue(h.line)
        XCTAssertEqual(h.data(), 0xAB)
        XCTAssertEqual(h.data(), 0x83, "an MF2 keyboard, untranslated")
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.irqc.risingEdges(1), 3, "one edge per byte: ISA IRQ 1 is edge-triggered")

        h.send(0xFF)                            // reset
        XCTAssertEqual([h.data(), h.data()], [0xFA, 0xAA])
        h.send(0xED)                            // set LEDs, parameter follows
        XCTAssertEqual(h.data(), 0xFA)
        h.send(0x00)
        XCTAssertEqual(h.data(), 0xFA)
        h.send(0xF4)                            // enable scanning
        XCTAssertEqual(h.data(), 0xFA)
        h.send(0xEE)
        XCTAssertEqual(h.data(), 0xEE, "echo")
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.status() & stOBF, 0)
    }

    func testKeyboardInterruptCanBeDisabled() throws {
        let h = try Harness()
        XCTAssertNotNil(h.linuxCommand(0x1060, params: [0x24]))
        h.send(0xF4)
        XCTAssertFalse(h.line)
        XCTAssertEqual(h.status() & stOBF, stOBF, "the answer is still there to poll")
        XCTAssertEqual(h.data(), 0xFA)
    }

    func testCtrlAltDelInjection() throws {
        let h = try Harness()
        XCTAssertTrue(h.i8042.injectCtrlAltDel())
        XCTAssertTrue(h.line)
        var got: [UInt8] = []
        while h.status() & stOBF != 0 && got.count < 32 { got.append(h.data()) }
        XCTAssertEqual(got, [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14],
                       "set 2: Ctrl, Alt, Del pressed then released")
        XCTAssertFalse(h.line)

        XCTAssertTrue(h.i8042.injectCtrlAltDel())
        XCTAssertFalse(h.i8042.injectCtrlAltDel(), "no room until the guest reads the first one")

        let t = try Harness()
        XCTAssertNotNil(t.linuxCommand(0x1060, params: [0x65]))   // translation on
        XCTAssertTrue(t.i8042.injectCtrlAltDel())
        var got1: [UInt8] = []
        while t.status() & stOBF != 0 && got1.count < 32 { got1.append(t.data()) }
        XCTAssertEqual(got1, [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D], "set 1 when translating")

        XCTAssertNotNil(t.linuxCommand(0x1060, params: [0x35]))   // keyboard disabled
        XCTAssertFalse(t.i8042.injectCtrlAltDel())
    }

    func testWorksWithoutAKeyboardIRQ() throws {
        let h = try Harness(wireIRQ: false)
        h.send(0xF2)
        XCTAssertEqual(h.data(), 0xFA)
        h.command(0xFE)
        XCTAssertEqual(h.resets, 1)
        XCTAssertTrue(h.irqc.events.isEmpty)
    }

    func testWideAccessesAreIgnored() throws {
        let h = try Harness()
        h.bus.write(0x64, size: 2, value: 0xFE)
        XCTAssertEqual(h.resets, 0, "a 16-bit write is not the reset command")
        h.command(0x20)
        XCTAssertEqual(h.bus.read(0x60, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(h.status() & stOBF, stOBF, "the wide read consumed nothing")
        XCTAssertEqual(h.i8042.wideAccesses, 2)
    }

    func testNewCommandDiscardsAnUncollectedAnswer() throws {
        let h = try Harness()
        h.command(0x20)
        h.command(0xAA)
        XCTAssertEqual(h.data(), 0x55)
        XCTAssertEqual(h.status() & stOBF, 0)
    }

    func testUnknownCommandsAreCountedAndHarmless() throws {
        let h = try Harness()
        h.command(0x12)
        XCTAssertEqual(h.i8042.unhandledCommands, 1)
        XCTAssertEqual(h.status() & stOBF, 0)
        XCTAssertEqual(h.resets, 0)
    }
}
