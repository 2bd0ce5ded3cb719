import Foundation
import SwhvTestSupport
import VMM
import XCTest

/// Linux under `--accel hybrid` (guest kernel on the software CPU, guest user code natively on
/// kvm-pvm), with the release binary: the same shell, the same workload output as QEMU, and user
/// code leaving user mode in every way giving what the software CPU alone gives. On hosts where the
/// backend is not offered (no /dev/kvm, or KVM on VMX/SVM) swhv must refuse it with one line.
final class HybridLinuxTests: XCTestCase {
    /// True when the hybrid backend applies here; otherwise checks swhv's refusal and returns false.
    func hybridOffered() throws -> Bool {
        guard let why = Machine.hybridUnavailableReason() else { return true }
        let r = try Subprocess.run(try Repository.releaseBinary(), [
            "boot", "--accel", "hybrid", "--kernel", try Repository.fixture("vmlinuz-cloud")], timeout: 60)
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines), "swhv: error: --accel hybrid: \(why)")
        return false
    }

    func testDebianCloudKernelBootsUnderHybridToAShell() throws {
        guard try hybridOffered() else { return }
        let s = try ConsoleSession(binary: try Repository.releaseBinary(), arguments: [
            "boot", "--quiet", "--accel", "hybrid", "--kernel", try Repository.fixture("vmlinuz-cloud"),
            "--initrd", try Repository.fixture("initramfs.cpio.gz")])
        XCTAssertTrue(s.waitFor("SWHV-USERSPACE-UP", timeout: 900), "no userspace marker; \(s.tail)")
        XCTAssertEqual(s.run("echo swhv-$((6 * 7))-ok", timeout: 300), "swhv-42-ok", "the shell did not answer; \(s.tail)")
        // Long enough user compute that the adaptive policy runs it natively.
        XCTAssertEqual(s.run("i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo $i", timeout: 600), "200000")
        XCTAssertEqual(s.reboot(), 0, "swhv should exit 0 when the guest reboots; \(s.tail)")
    }

    /// Tests/Workloads on the cloud kernel, byte-identical to QEMU's output, under the adaptive policy.
    func testCloudKernelWorkloadsMatchQEMUUnderHybrid() throws {
        guard try hybridOffered() else { return }
        try WorkloadTests.runWorkloads(kernel: try Repository.fixture("vmlinuz-cloud"),
                                       initramfs: try Repository.fixture("initramfs.cpio.gz"), accel: "hybrid")
    }

    /// Tests/HybridWorkloads/userfaults.c (every exception vector user code can raise, SYSCALL and
    /// INT 0x80, port I/O with and without permission, traps, interrupts and signals in long loops)
    /// with all user code native (SWHV_HYBRID_POLICY=native) prints what it prints on the software
    /// CPU alone, and really ran natively.
    func testUserCodeFaultingInEveryWayMatchesTheSoftwareCPU() throws {
        guard try hybridOffered() else { return }
        let kernel = try Repository.fixture("vmlinuz-cloud"), initramfs = try Repository.fixture("initramfs.cpio.gz")
        let dir = Repository.root.appendingPathComponent("Tests/HybridWorkloads")
        let software = try WorkloadTests.bootWorkloads(kernel: kernel, initramfs: initramfs, directory: dir,
                                                       arguments: ["--accel", "interp"])
        let hybrid = try WorkloadTests.bootWorkloads(kernel: kernel, initramfs: initramfs, directory: dir,
                                                     arguments: ["--accel", "hybrid", "--boot-timer"],
                                                     environment: ["SWHV_HYBRID_POLICY": "native"])
        let expected = try XCTUnwrap(software.sections["userfaults"], "no userfaults output on the interpreter")
        XCTAssertGreaterThan(expected.count, 20)
        XCTAssertEqual(expected.last, "rc=0")
        let got = try XCTUnwrap(hybrid.sections["userfaults"], "no userfaults output under hybrid; \(hybrid.stderr)")
        for (i, (e, g)) in zip(expected, got).enumerated() where e != g {
            XCTFail("line \(i + 1): software CPU `\(e)`, hybrid `\(g)`")
        }
        XCTAssertEqual(expected.count, got.count)
        // "hybrid: N native runs ..." from --boot-timer: user code did leave the software CPU.
        let runs = hybrid.stderr.firstMatch(of: /hybrid: (\d+) native runs/).flatMap { Int($0.1) }
        XCTAssertGreaterThan(try XCTUnwrap(runs, "no hybrid summary in: \(hybrid.stderr)"), 100)
    }
}
