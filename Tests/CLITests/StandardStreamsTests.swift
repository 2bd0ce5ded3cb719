import Foundation
import SwhvTestSupport
import XCTest

/// What swhv does with each kind of stdin and stdout (terminals: TerminalTests; a stdout reader
/// that goes away: ConsoleOutputTests). Documented in README ("The console"): a pipe's bytes reach
/// the guest; at EOF (a finished pipe, /dev/null) the guest keeps running without input; a closed
/// stdin, stdout or stderr is replaced by /dev/null before swhv opens anything.
final class StandardStreamsTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws { scratch = try Repository.scratchDirectory("swhv-streams") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: scratch) }

    func kernel(_ name: String, _ code: [UInt8]) throws -> String {
        let u = scratch.appendingPathComponent(name)
        try Data(TinyKernel.elf(code)).write(to: u)
        return u.path
    }

    /// Bytes piped into stdin reach the guest's serial port, in order, each once (Ctrl-A excepted).
    func testPipedInputReachesTheGuest() throws {
        let input = Array("hello from a pipe\n".utf8) + Array(0x20...0x7E).map(UInt8.init) + [0x04]
        let r = try Subprocess.run(try Repository.swhvBinary(),
                                   ["boot", "--quiet", "--accel", "interp", "--kernel", try kernel("echo.elf", TinyKernel.echoUntilEOT)],
                                   input: .bytes(Data(input)), timeout: 300)
        XCTAssertFalse(r.timedOut, "the guest never got the EOT: \(r.stderr)")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(Array(r.stdoutData), input, "the guest echoed exactly what was piped in")
    }

    /// Starts `swhv boot` through /bin/sh with `redirections`, lets the guest run, checks it is
    /// still running and what its descriptors 0-2 are, then stops it with SIGTERM.
    func runStillWaiting(_ kernelPath: String, extra: String = "", redirections: String) throws -> (fds: [String], status: Int32, signalled: Bool) {
        let binary = try Repository.swhvBinary()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        // exec: the shell's PID becomes swhv's.
        p.arguments = ["-c", "exec '\(binary)' boot --quiet --accel interp --kernel '\(kernelPath)' \(extra) \(redirections)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        addTeardownBlock { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        // Long enough for the pump to see EOF and the guest to poll many times.
        var fds: [String] = []
        for _ in 0..<40 where p.isRunning {
            usleep(100_000)
            fds = (0...2).map { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(p.processIdentifier)/fd/\($0)")) ?? "?" }
        }
        XCTAssertTrue(p.isRunning, "the guest should still be waiting for input")
        kill(p.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(60)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        return (fds, p.terminationStatus, p.terminationReason == .uncaughtSignal)
    }

    /// /dev/null as stdin: EOF at once, and the guest runs on without input until stopped.
    func testDevNullStdinLeavesTheGuestRunning() throws {
        let r = try runStillWaiting(try kernel("echo.elf", TinyKernel.echoUntilEOT), redirections: "</dev/null")
        XCTAssertEqual(r.fds[0], "/dev/null")
        XCTAssertTrue(r.signalled && r.status == SIGTERM, "swhv ends by SIGTERM: \(r.status)")
    }

    /// A closed stdin becomes /dev/null: the disk image opened next must not become the keyboard
    /// (the echo guest would echo its bytes, meet the EOT in them and reset).
    func testClosedStdinIsNotReusedForADisk() throws {
        let disk = scratch.appendingPathComponent("disk.img")
        var bytes = [UInt8](repeating: 0x04, count: 4096)
        bytes.replaceSubrange(0..<10, with: Array("DISK-BYTES".utf8))
        try Data(bytes).write(to: disk)
        let r = try runStillWaiting(try kernel("echo.elf", TinyKernel.echoUntilEOT), extra: "--disk '\(disk.path)'",
                                    redirections: "<&-")
        XCTAssertEqual(r.fds[0], "/dev/null", "fd 0 while swhv runs")
        XCTAssertTrue(r.signalled && r.status == SIGTERM, "swhv ends by SIGTERM: \(r.status)")
    }

    /// Closed stdout and stderr become /dev/null: the console and swhv's messages must not land in
    /// the disk image opened after them.
    func testClosedStdoutAndStderrAreNotReusedForADisk() throws {
        let disk = scratch.appendingPathComponent("disk.img")
        try Data(count: 1 << 20).write(to: disk)
        let k = try kernel("hello.elf", TinyKernel.printAndReset("console text that must not reach the disk\n"))
        let r = try Subprocess.shell("exec '\(try Repository.swhvBinary())' boot --accel interp --kernel '\(k)' --disk '\(disk.path)' >&- 2>&-",
                                     timeout: 120)
        XCTAssertEqual(r.status, 0, "the guest reset")
        XCTAssertFalse(r.signalled)
        XCTAssertEqual(try Data(contentsOf: disk), Data(count: 1 << 20), "the disk image is untouched")
    }
}
