import Foundation
import SwhvTestSupport
import XCTest

/// Boots real Linux kernels with the release `swhv` binary, types a shell command on the console and
/// checks its output, then reboots the guest. scripts/test provides the fixtures (scripts/fetch-guest,
/// scripts/build-small-kernel) and the release build (SWHV_RELEASE_BINARY).
final class LinuxBootTests: XCTestCase {
    func bootAndRunShellCommand(kernel: String, accel: String, timeout: TimeInterval = 900,
                                extraCmdline: String = "") throws {
        let s = try ConsoleSession(binary: try Repository.releaseBinary(), arguments: [
            "boot", "--quiet", "--accel", accel, "--kernel", kernel,
            "--initrd", try Repository.fixture("initramfs.cpio.gz"), "--cmdline", extraCmdline])
        addTeardownBlock { if s.process.isRunning { kill(s.process.processIdentifier, SIGKILL) } }
        XCTAssertTrue(s.waitFor("SWHV-USERSPACE-UP", timeout: timeout), "no userspace marker; \(s.tail)")
        // Typed once: swhv holds input until the guest's serial driver is ready for it.
        XCTAssertEqual(s.run("echo swhv-$((6 * 7))-ok", timeout: 300), "swhv-42-ok", "the shell did not answer; \(s.tail)")
        XCTAssertEqual(s.reboot(), 0, "swhv should exit 0 when the guest reboots; \(s.tail)")
    }

    func testDebianCloudKernelBootsOnTheInterpreterToAShell() throws {
        try bootAndRunShellCommand(kernel: try Repository.fixture("vmlinuz-cloud"), accel: "interp")
    }

    func testSmallKernelBootsOnTheInterpreterToAShell() throws {
        try bootAndRunShellCommand(kernel: try Repository.fixture("vmlinux-small"), accel: "interp")
    }

    /// Opt-in (SWHV_LONG_TESTS=1): under kvm-pvm guest kernel code is emulated at ~3 M instr/s.
    func testSmallKernelBootsUnderKVMToAShell() throws {
        guard ProcessInfo.processInfo.environment["SWHV_LONG_TESTS"] == "1" else {
            throw XCTSkip("opt-in: Linux under KVM is a long test on kvm-pvm hosts (SWHV_LONG_TESTS=1 scripts/test)")
        }
        try GuestHarness.requireKVM()
        try bootAndRunShellCommand(kernel: try Repository.fixture("vmlinux-small"), accel: "kvm", timeout: 1800)
    }
}
