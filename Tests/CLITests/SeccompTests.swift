import Foundation
import SwhvTestSupport
import XCTest

/// The seccomp filter `swhv boot` installs before the guest runs, exercised through the hidden
/// `swhv seccomp-check CALL`, which installs the same filter and then makes one system call.
final class SeccompTests: XCTestCase {
    func run(_ args: [String]) throws -> Subprocess.Outcome { try BadInvocationTests.swhv(args) }

    func testCallsTheRunLoopNeedsStillWork() throws {
        let r = try run(["seccomp-check", "allowed"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "allowed calls work\n")
    }

    func testForbiddenCallsEndSwhvWithOneLine() throws {
        let cases = [("socket", "41 (socket)"), ("execve", "59 (execve)"), ("mmap-exec", "PROT_EXEC"),
                     ("ioctl", "ioctl with a request not on the list"), ("kill", "another process")]
        for (call, mention) in cases {
            let r = try run(["seccomp-check", call])
            XCTAssertEqual(r.status, 1, "\(call): \(r.stdout) \(r.stderr)")
            XCTAssertFalse(r.stdout.contains("was not refused"), call)
            let lines = r.stderr.split(separator: "\n").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\r")) }
            XCTAssertEqual(lines.count, 1, "\(call): \(r.stderr)")
            XCTAssertTrue(lines.first?.hasPrefix("swhv: error: seccomp: forbidden system call") ?? false, r.stderr)
            XCTAssertTrue(r.stderr.contains(mention), "\(call) should mention '\(mention)': \(r.stderr)")
        }
    }

    /// Opening files fails quietly (EACCES) instead of killing swhv: libc tries it on error paths.
    func testOpeningFilesIsRefusedWithAnError() throws {
        let r = try run(["seccomp-check", "openat"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stdout, "open refused: Permission denied\n")
    }

    func testHelpDocumentsNoSeccomp() throws {
        for command in ["boot", "run-image"] {
            let r = try run([command, "--help"])
            XCTAssertTrue(r.stdout.contains("--no-seccomp"), r.stdout)
        }
    }

    /// `run-image` runs its guest under the same filter as `boot`: a guest that reaches a code path
    /// making a forbidden call would end swhv; here the filter's presence is shown by the process's
    /// seccomp mode while a guest spins.
    func testRunImageInstallsTheFilter() throws {
        try assertSeccompMode(["run-image", "--accel", "interp", "--image"], flat: true, expected: "2")
        try assertSeccompMode(["run-image", "--accel", "interp", "--no-seccomp", "--image"], flat: true, expected: "0")
    }

    func testBootInstallsTheFilter() throws {
        try assertSeccompMode(["boot", "--quiet", "--accel", "interp", "--kernel"], flat: false, expected: "2")
    }

    /// Runs a guest that spins, reads `Seccomp:` from /proc/PID/status, then stops swhv.
    func assertSeccompMode(_ args: [String], flat: Bool, expected: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try Repository.scratchDirectory("swhv-seccomp")
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = dir.appendingPathComponent("spin.bin")
        try Data(flat ? [0xEB, 0xFE] : TinyKernel.elf(TinyKernel.spin)).write(to: image)   // jmp $
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Repository.swhvBinary())
        p.arguments = args + [image.path]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
        var mode = ""
        for _ in 0..<200 where p.isRunning {
            usleep(50_000)
            let status = (try? String(contentsOfFile: "/proc/\(p.processIdentifier)/status", encoding: .utf8)) ?? ""
            mode = status.split(separator: "\n").first { $0.hasPrefix("Seccomp:") }.map {
                $0.dropFirst("Seccomp:".count).trimmingCharacters(in: .whitespaces) } ?? ""
            if mode == expected { break }
        }
        XCTAssertEqual(mode, expected, "Seccomp: in /proc/PID/status for \(args)", file: file, line: line)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationReason, .uncaughtSignal, "SIGTERM ends the run", file: file, line: line)
        XCTAssertEqual(p.terminationStatus, SIGTERM, file: file, line: line)
    }
}
