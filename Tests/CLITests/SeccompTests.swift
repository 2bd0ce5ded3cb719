import Foundation
import XCTest

/// The seccomp filter `swhv boot` installs before the guest runs, exercised through the hidden
/// `swhv seccomp-check CALL`, which installs the same filter and then makes one system call.
final class SeccompTests: XCTestCase {
    func run(_ args: [String]) throws -> BadInvocationTests.Outcome { try BadInvocationTests.swhv(args) }

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
        let r = try run(["boot", "--help"])
        XCTAssertTrue(r.stdout.contains("--no-seccomp"), r.stdout)
    }
}
