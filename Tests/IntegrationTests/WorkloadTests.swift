import Foundation
import XCTest

/// Boots the Debian cloud kernel on the interpreter with the workload initramfs (scripts/compare-qemu)
/// and checks each workload's console output against what the same guest printed under QEMU TCG
/// (Tests/Workloads/expected/*.txt, recorded with `scripts/compare-qemu --qemu-only --record`).
final class WorkloadTests: XCTestCase {
    static let repoRoot = LinuxBootTests.repoRoot
    static let workloadsDir = repoRoot.appendingPathComponent("Tests/Workloads")

    func run(_ tool: String, _ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testCloudKernelWorkloadsMatchQEMU() throws { try checkWorkloads(cpus: 1) }

    /// The same workloads on two vCPUs: the guest's threads (threads.c) run on both at once.
    func testCloudKernelWorkloadsMatchQEMUWithTwoCPUs() throws { try checkWorkloads(cpus: 2) }

    func checkWorkloads(cpus: Int) throws {
        guard let binary = ProcessInfo.processInfo.environment["SWHV_RELEASE_BINARY"],
              FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("workload tests need a release build: run scripts/test")
        }
        let kernel = Self.repoRoot.appendingPathComponent("fixtures/vmlinuz-cloud").path
        guard FileManager.default.fileExists(atPath: kernel),
              FileManager.default.fileExists(atPath: Self.repoRoot.appendingPathComponent("fixtures/busybox").path) else {
            throw XCTSkip("fixtures/vmlinuz-cloud or fixtures/busybox missing: run scripts/fetch-guest")
        }
        for tool in ["gcc", "cpio", "python3"] where (try? run("/usr/bin/env", ["which", tool]).status) != 0 {
            throw XCTSkip("\(tool) missing: the workload initramfs is built on the host (apt-get install \(tool))")
        }
        let expectedDir = Self.workloadsDir.appendingPathComponent("expected")
        let expectedFiles = try FileManager.default.contentsOfDirectory(atPath: expectedDir.path)
            .filter { $0.hasSuffix(".txt") }.sorted()
        XCTAssertFalse(expectedFiles.isEmpty, "no expected outputs in Tests/Workloads/expected")

        let build = try run(Self.repoRoot.appendingPathComponent("scripts/compare-qemu").path, ["--build-only"])
        let initrd = build.output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard build.status == 0, FileManager.default.fileExists(atPath: initrd) else {
            return XCTFail("scripts/compare-qemu --build-only failed (status \(build.status)): \(build.output)")
        }

        let s = try LinuxBootTests.Session(binary: binary, arguments: [
            "boot", "--quiet", "--accel", "interp", "--cpus", "\(cpus)", "--kernel", kernel, "--initrd", initrd, "--memory", "512M",
            "--no-default-cmdline", "--cmdline", "console=ttyS0 reboot=k panic=-1 swhv.cmd=workload"])
        XCTAssertTrue(s.waitFor("SWHV-WORKLOAD-END", timeout: 400), "workloads did not finish; tail: \(s.text.suffix(1500))")
        _ = s.waitForExit(timeout: 30)

        // Sections between "SWHV-W-BEGIN name" and "SWHV-W-END name rc=N"; the console adds \r.
        var sections: [String: [String]] = [:]
        var current: String?
        var body: [String] = []
        // (In Swift "\r\n" is one Character, so normalise before splitting on "\n".)
        let console = s.text.replacingOccurrences(of: "\r\n", with: "\n")
        for raw in console.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            if let r = line.range(of: "SWHV-W-BEGIN ") {
                current = String(line[r.upperBound...]); body = []
            } else if let name = current, let r = line.range(of: "SWHV-W-END \(name) ") {
                sections[name] = body + [String(line[r.upperBound...])]
                current = nil
            } else if current != nil {
                body.append(line)
            }
        }
        for file in expectedFiles {
            let name = String(file.dropLast(4))   // fpmath.txt -> fpmath, awk_sh.txt -> awk_sh
            let workload = name.hasSuffix("_sh") ? String(name.dropLast(3)) + ".sh" : name
            let expected = try String(contentsOf: expectedDir.appendingPathComponent(file), encoding: .utf8)
                .split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                .reversed().drop { $0.isEmpty }.reversed()
            guard let got = sections[workload] else {
                XCTFail("\(workload): no output between markers"); continue
            }
            if Array(expected) != got {
                let diff = zip(expected, got).enumerated().first { $0.element.0 != $0.element.1 }
                let where_ = diff.map { "line \($0.offset + 1): expected `\($0.element.0)`, got `\($0.element.1)`" }
                    ?? "expected \(expected.count) lines, got \(got.count)"
                XCTFail("\(workload) differs from QEMU's output: \(where_)")
            }
        }
    }
}
