import Foundation
import SwhvTestSupport
import XCTest

/// `--cpus` and `--no-acpi` on the command line: out-of-range counts and a multiprocessor machine
/// without the tables that describe it fail at once with one line; --help documents both.
final class CPUsOptionTests: XCTestCase {
    func kernel() throws -> String {
        // Any file: the vCPU count is checked before the kernel is read.
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-cpus-\(UUID().uuidString)")
        try Data([0x7F, 0x45, 0x4C, 0x46]).write(to: u)
        addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u.path
    }

    func assertRefused(_ extra: [String], mentions: String, accel: String = "interp", file: StaticString = #filePath,
                       line: UInt = #line) throws {
        for sub in [["boot", "--kernel", try kernel()], ["run-image", "--image", try kernel()]] {
            if sub[0] == "run-image" && extra.contains("--no-acpi") { continue }   // run-image has no --no-acpi
            let r = try BadInvocationTests.swhv(sub + extra + ["--accel", accel])
            XCTAssertEqual(r.status, 1, "\(sub[0]) \(extra): exit status; stderr=\(r.stderr)", file: file, line: line)
            let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
            XCTAssertEqual(lines.count, 1, "\(sub[0]) \(extra): one line, got \(r.stderr)", file: file, line: line)
            XCTAssertTrue(r.stderr.hasPrefix("\rswhv: error: ") || r.stderr.hasPrefix("swhv: error: "), r.stderr,
                          file: file, line: line)
            XCTAssertTrue(r.stderr.contains(mentions), "\(sub[0]) \(extra) should mention '\(mentions)': \(r.stderr)",
                          file: file, line: line)
        }
    }

    func testZeroCPUsIsRefused() throws { try assertRefused(["--cpus", "0"], mentions: "--cpus 0 is out of range") }

    func testAThousandCPUsIsRefused() throws {
        try assertRefused(["--cpus", "1000"], mentions: "--cpus 1000 is out of range: a VM has 1 to 32 vCPUs")
    }

    func testSeveralCPUsWithoutACPIIsRefused() throws {
        try assertRefused(["--cpus", "2", "--no-acpi"], mentions: "--cpus 2 needs ACPI")
    }

    /// The hybrid backend runs one vCPU: more is refused (on any host, before /dev/kvm is looked at).
    func testSeveralCPUsOnTheHybridBackendAreRefused() throws {
        try assertRefused(["--cpus", "2"], mentions: "--accel hybrid runs one vCPU: --cpus 2 needs --accel interp or kvm",
                          accel: "hybrid")
    }

    func testANegativeOrNonNumericCountIsAUsageError() throws {
        for bad in ["two", "-3", "1.5"] {
            let r = try BadInvocationTests.swhv(["boot", "--kernel", try kernel(), "--cpus", bad])
            XCTAssertEqual(r.status, 64, "--cpus \(bad): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains("--cpus") || r.stderr.contains(bad), r.stderr)
        }
    }

    func testHelpDocumentsCPUsAndNoACPI() throws {
        let r = try BadInvocationTests.swhv(["boot", "--help"])
        XCTAssertEqual(r.status, 0)
        XCTAssertTrue(r.stdout.contains("--cpus"), r.stdout)
        XCTAssertTrue(r.stdout.contains("--no-acpi"), r.stdout)
    }
}
