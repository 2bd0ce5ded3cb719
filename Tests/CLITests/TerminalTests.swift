import Foundation
import SwhvTestSupport
import XCTest

/// The console as a person uses it: swhv on a real pseudo-terminal, keys typed into it, the screen
/// read back, the terminal's settings compared field by field before and after. The Linux tests
/// boot the Debian cloud kernel with README's first command (on this host's interpreter).
final class TerminalTests: XCTestCase {
    /// README's first command, run in the repository as README shows it.
    static let readmeArguments = ["boot", "--kernel", "fixtures/vmlinuz-cloud", "--initrd", "fixtures/initramfs.cpio.gz"]
    /// Boot watchdog: a cloud-kernel boot takes tens of seconds on the interpreter.
    static let bootTimeout = 600.0

    func bootLinux(_ extra: [String] = []) throws -> TerminalSession {
        _ = try Repository.fixture("vmlinuz-cloud")
        _ = try Repository.fixture("initramfs.cpio.gz")
        let s = try TerminalSession(binary: try Repository.releaseBinary(), arguments: Self.readmeArguments + extra)
        addTeardownBlock { if s.process.isRunning { kill(s.process.processIdentifier, SIGKILL) } }
        return s
    }

    /// The terminal before swhv starts: a shell's cooked terminal with echo, or the comparison
    /// afterwards would prove nothing.
    func cookedAttributes(_ s: TerminalSession, file: StaticString = #filePath, line: UInt = #line) -> TerminalAttributes {
        let a = s.terminal.attributes
        XCTAssertTrue(a.isCookedWithEcho, "the test terminal should start cooked: \(a)", file: file, line: line)
        return a
    }

    func assertRestored(_ s: TerminalSession, to before: TerminalAttributes, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(s.terminal.attributes.differences(from: before), [], "terminal settings after swhv", file: file, line: line)
    }

    /// Waits for the guest's shell and checks the terminal is raw meanwhile.
    func waitForShell(_ s: TerminalSession, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(s.waitFor("SWHV-USERSPACE-UP", timeout: Self.bootTimeout), "no userspace; \(s.tail)", file: file, line: line)
        XCTAssertTrue(s.terminal.attributes.isRaw, "swhv should hold the terminal raw while the guest runs", file: file, line: line)
        XCTAssertTrue(s.waitFor("/ # ", timeout: 120), "no shell prompt; \(s.tail)", file: file, line: line)
    }

    // MARK: README command 1

    /// The prompt appears; `echo $((6*7))` typed at the keyboard answers 42; Ctrl-A Ctrl-A gives the
    /// guest exactly one 0x01; Ctrl-A x ends swhv with status 0 and the terminal as it was.
    func testReadmeCommandBootsToAShellAndCtrlAXLeavesTheTerminalAsItWas() throws {
        let s = try bootLinux()
        let before = cookedAttributes(s)
        waitForShell(s)
        s.type("echo $((6*7))\r")                           // Enter on a terminal sends CR
        XCTAssertTrue(s.waitFor("\n42\n", timeout: 120), "the shell did not answer 42; \(s.tail)")

        // The guest reads one line and prints its bytes in hex: Ctrl-A Ctrl-A must arrive as one 0x01.
        s.type("read -r l; printf '%s' \"$l\" | od -An -tx1 | tr -d ' '; echo end-$((1+2))\r")
        usleep(500_000)
        s.type([0x01, 0x01, UInt8(ascii: "z"), 0x0D])
        XCTAssertTrue(s.waitFor("end-3", timeout: 120), "no answer to read; \(s.tail)")
        XCTAssertTrue(s.lines.contains("\n017a\n"), "the guest should read 01 7a (one Ctrl-A, then z); \(s.tail)")

        s.type([0x01, UInt8(ascii: "x")])
        XCTAssertEqual(s.waitForExit(timeout: 60), .exited(0), s.tail)
        assertRestored(s, to: before)
        XCTAssertEqual(s.count("swhv: guest stopped"), 1, "the stop line once; \(s.tail)")
    }

    /// A line typed while the kernel is still booting runs once the shell is up: not lost (the
    /// 8250 driver's FIFO reset used to flush it) and not run twice.
    func testALineTypedDuringBootIsRunOnceThenRebootExitsZero() throws {
        let s = try bootLinux()
        let before = cookedAttributes(s)
        XCTAssertTrue(s.waitFor("Linux version", timeout: Self.bootTimeout), "no kernel output; \(s.tail)")
        s.type("echo typed-early-$((20+1))\r")
        waitForShell(s)
        s.type("echo after-$((1+1))\r")
        XCTAssertTrue(s.waitFor("after-2\n", timeout: 120), s.tail)
        XCTAssertEqual(s.count("\ntyped-early-21\n"), 1, "the early line should run exactly once; \(s.tail)")

        s.type("reboot -f\r")
        XCTAssertEqual(s.waitForExit(timeout: 120), .exited(0), "the guest rebooted; \(s.tail)")
        assertRestored(s, to: before)
    }

    /// `poweroff -f`: swhv ends with status 0 and restores the terminal.
    func testPoweroffExitsZeroAndRestoresTheTerminal() throws {
        let s = try bootLinux()
        let before = cookedAttributes(s)
        waitForShell(s)
        s.type("poweroff -f\r")
        XCTAssertEqual(s.waitForExit(timeout: 120), .exited(0), "the guest powered off; \(s.tail)")
        assertRestored(s, to: before)
    }

    // MARK: Signals

    /// SIGTERM, SIGHUP and SIGINT (from `kill`: in the raw terminal Ctrl-C is the guest's) while the
    /// guest runs: swhv stops the guest, restores the terminal, says so once, and dies of the signal.
    func testStopSignalsRestoreTheTerminalAndEndSwhvByTheSignal() throws {
        for (sig, name) in [(SIGTERM, "SIGTERM"), (SIGHUP, "SIGHUP"), (SIGINT, "SIGINT")] {
            let s = try bootLinux()
            let before = cookedAttributes(s)
            XCTAssertTrue(s.waitFor("Linux version", timeout: Self.bootTimeout), "\(name): no kernel output; \(s.tail)")
            XCTAssertTrue(s.terminal.attributes.isRaw, "\(name): raw while the guest runs")
            kill(s.process.processIdentifier, sig)
            XCTAssertEqual(s.waitForExit(timeout: 60), .killed(by: sig), "\(name); \(s.tail)")
            assertRestored(s, to: before)
            XCTAssertEqual(s.count("swhv: stopped by \(name)"), 1, "\(name): said once; \(s.tail)")
            XCTAssertEqual(s.count("Linux version"), 1, "\(name): nothing printed twice; \(s.tail)")
        }
    }

    /// Ctrl-C typed on the raw terminal is a byte for the guest, not a signal for swhv.
    func testCtrlCGoesToTheGuest() throws {
        let s = try bootLinux()
        waitForShell(s)
        s.type("sleep 100\r")
        usleep(1_000_000)
        s.type([0x03])
        s.type("echo alive-$((3+4))\r")
        XCTAssertTrue(s.waitFor("alive-7", timeout: 120), "the guest's shell got Ctrl-C and carried on; \(s.tail)")
        XCTAssertTrue(s.process.isRunning, "swhv itself must not stop on Ctrl-C")
        s.type([0x01, UInt8(ascii: "x")])
        XCTAssertEqual(s.waitForExit(timeout: 60), .exited(0))
    }

    // MARK: A fatal guest error while raw

    /// A triple fault under `boot` while the terminal is raw: exit status 1, one error line, the
    /// terminal restored, the guest's output once.
    func testTripleFaultExitsOneAndRestoresTheTerminal() throws {
        let dir = try Repository.scratchDirectory("swhv-tty")
        defer { try? FileManager.default.removeItem(at: dir) }
        let kernel = dir.appendingPathComponent("triple.elf")
        try Data(TinyKernel.elf(TinyKernel.print("going down\r\n") + TinyKernel.tripleFault)).write(to: kernel)
        let s = try TerminalSession(binary: try Repository.swhvBinary(),
                                    arguments: ["boot", "--accel", "interp", "--kernel", kernel.path])
        let before = cookedAttributes(s)
        XCTAssertEqual(s.waitForExit(timeout: 120), .exited(1), s.tail)
        assertRestored(s, to: before)
        XCTAssertEqual(s.count("swhv: error: guest triple-faulted (shutdown)"), 1, s.tail)
        XCTAssertEqual(s.count("going down"), 1, s.tail)
    }
}
