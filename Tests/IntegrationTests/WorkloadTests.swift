import Foundation
import SwhvTestSupport
import XCTest

/// Boots each kernel of docs/compatibility.md on the interpreter with the workload initramfs
/// (scripts/compare-qemu) and checks each workload's console output against what the same guest
/// printed under QEMU TCG (Tests/Workloads/expected/*.txt, recorded with
/// `scripts/compare-qemu --qemu-only --record`; the output does not depend on the kernel).
final class WorkloadTests: XCTestCase {
    static let workloadsDir = Repository.root.appendingPathComponent("Tests/Workloads")

    func testCloudKernelWorkloadsMatchQEMU() throws {
        try Self.runWorkloads(kernel: try Repository.fixture("vmlinuz-cloud"), initramfs: try Repository.fixture("initramfs.cpio.gz"))
    }

    /// The same workloads on two vCPUs: the guest's threads (threads.c) and processes run on both at once,
    /// and every output must still be QEMU's.
    func testCloudKernelWorkloadsMatchQEMUWithTwoCPUs() throws {
        try Self.runWorkloads(kernel: try Repository.fixture("vmlinuz-cloud"), initramfs: try Repository.fixture("initramfs.cpio.gz"),
                              cpus: 2)
    }

    /// Debian's generic kernel (linux-image-amd64, virtio as modules), with its own modules.
    func testGenericKernelWorkloadsMatchQEMU() throws {
        try Self.runWorkloads(kernel: try Repository.fixture("vmlinuz-generic"),
                         initramfs: try Repository.fixture("initramfs-generic.cpio.gz"))
    }

    /// Debian's PREEMPT_RT kernel (linux-image-rt-amd64).
    func testRTKernelWorkloadsMatchQEMU() throws {
        try Self.runWorkloads(kernel: try Repository.fixture("vmlinuz-rt"), initramfs: try Repository.fixture("initramfs-rt.cpio.gz"))
    }

    /// The small self-built kernel (scripts/build-small-kernel), as a bzImage.
    func testSmallKernelWorkloadsMatchQEMU() throws {
        try Self.runWorkloads(kernel: try Repository.fixture("bzImage-small"), initramfs: try Repository.fixture("initramfs.cpio.gz"))
    }

    /// Checks of the CPU model that QEMU's default CPU fails and a modern CPU passes; the expected
    /// output is QEMU's with `-cpu max`. segments.c: after ARCH_SET_GS and a null selector load into
    /// GS, the kernel's idea of the GS base (ARCH_GET_GS) and the CPU's (seen through a fault) agree
    /// across forced context switches. That holds only with FSGSBASE (or a CPU that keeps the base);
    /// without it 60/200 rounds disagreed here (74/200 under QEMU's qemu64).
    func testCPUModelWorkloads() throws {
        try Self.runWorkloads(kernel: try Repository.fixture("vmlinuz-cloud"), initramfs: try Repository.fixture("initramfs.cpio.gz"),
                         directory: Self.workloadsDir.appendingPathComponent("cpu-model"))
    }

    /// Boots `kernel` with the workload archive appended to `initramfs` and compares each workload's
    /// output with QEMU's.
    static func runWorkloads(kernel: String, initramfs: String, directory: URL = WorkloadTests.workloadsDir,
                             accel: String = "interp", cpus: Int = 1, file: StaticString = #filePath,
                             line: UInt = #line) throws {
        let expectedDir = directory.appendingPathComponent("expected")
        let expectedFiles = try FileManager.default.contentsOfDirectory(atPath: expectedDir.path)
            .filter { $0.hasSuffix(".txt") }.sorted()
        XCTAssertFalse(expectedFiles.isEmpty, "no expected outputs in Tests/Workloads/expected")
        let (sections, _) = try Self.bootWorkloads(kernel: kernel, initramfs: initramfs, directory: directory,
                                                   arguments: ["--accel", accel, "--cpus", "\(cpus)"], file: file, line: line)
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

    /// Boots `kernel` with the workloads of `directory` appended to `initramfs` (swhv.cmd=workload),
    /// with extra swhv `arguments` and `environment`; returns each workload's output lines (the last
    /// one `rc=N`), and swhv's stderr.
    static func bootWorkloads(kernel: String, initramfs: String, directory: URL, arguments: [String],
                              environment: [String: String] = [:], file: StaticString = #filePath,
                              line: UInt = #line) throws -> (sections: [String: [String]], stderr: String) {
        let binary = try Repository.releaseBinary()
        _ = try Repository.fixture("busybox")
        for (tool, package) in [("gcc", "gcc"), ("cpio", "cpio"), ("python3", "python3")] {
            _ = try Repository.tool(tool, package: package)
        }

        let build = try Subprocess.run(Repository.path("scripts/compare-qemu"),
                                       ["--build-only", "--kernel", kernel, "--initrd", initramfs, "--workload-dir", directory.path],
                                       timeout: 900)
        let initrd = build.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard build.status == 0, FileManager.default.fileExists(atPath: initrd) else {
            throw TestSetupError("scripts/compare-qemu --build-only failed (status \(build.status)): \(build.stdout)\(build.stderr)")
        }

        // A session left running is killed when it is released (ConsoleSession.deinit).
        let s = try ConsoleSession(binary: binary, arguments: [
            "boot", "--quiet"] + arguments + ["--kernel", kernel, "--initrd", initrd, "--memory", "512M",
            "--no-default-cmdline", "--cmdline", "console=ttyS0 reboot=k panic=-1 swhv.cmd=workload"],
            environment: environment)
        XCTAssertTrue(s.waitFor("SWHV-WORKLOAD-END", timeout: 1200), "workloads did not finish; \(s.tail)", file: file, line: line)
        XCTAssertEqual(s.waitForExit(timeout: 120), 0, "the workload guest powers off", file: file, line: line)

        // Sections between "SWHV-W-BEGIN name" and "SWHV-W-END name rc=N"; the console adds \r.
        var sections: [String: [String]] = [:]
        var current: String?
        var body: [String] = []
        // (In Swift "\r\n" is one Character, so normalise before splitting on "\n".)
        let console = s.text
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
        return (sections, s.stderr)
    }
}
