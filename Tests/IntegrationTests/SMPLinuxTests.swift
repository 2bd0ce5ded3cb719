import Foundation
import SwhvTestSupport
import XCTest

/// The Debian cloud kernel on a multiprocessor, ACPI-described machine (the software CPU, release
/// build, translator on): Linux finds every CPU and the I/O APIC through the MADT, takes a CPU
/// offline and back through sysfs, and powers the machine off through the FADT's PM1a control
/// register (swhv exits 0); with `reboot=a` it resets through the FADT's reset register.
final class SMPLinuxTests: XCTestCase {
    func boot(cpus: Int, cmdline: String = "") throws -> ConsoleSession {
        let s = try ConsoleSession(binary: try Repository.releaseBinary(), arguments: [
            "boot", "--quiet", "--accel", "interp", "--cpus", "\(cpus)", "--kernel", try Repository.fixture("vmlinuz-cloud"),
            "--initrd", try Repository.fixture("initramfs.cpio.gz"), "--cmdline", cmdline])
        addTeardownBlock { if s.process.isRunning { kill(s.process.processIdentifier, SIGKILL) } }
        XCTAssertTrue(s.waitForShell(timeout: 900), "no shell; \(s.tail)")
        return s
    }

    func testTwoCPUsTheIOAPICCPUHotplugAndPowerOff() throws {
        let s = try boot(cpus: 2)
        XCTAssertEqual(s.run("nproc"), "2", s.tail)
        XCTAssertEqual(s.run("grep -c ^processor /proc/cpuinfo"), "2", s.tail)
        // Interrupts arrive through the I/O APIC (the timer on pin 2, as the MADT's override says).
        let interrupts = s.run("cat /proc/interrupts") ?? ""
        XCTAssertNotNil(interrupts.range(of: #"IO-APIC\s+2-edge\s+timer"#, options: .regularExpression), interrupts)
        XCTAssertNotNil(interrupts.range(of: #"IO-APIC\s+4-edge\s+ttyS0"#, options: .regularExpression), interrupts)
        // CPU 1 offline and back (INIT/SIPI again), and it runs work afterwards.
        XCTAssertEqual(s.runWithStatus("echo 0 > /sys/devices/system/cpu/cpu1/online")?.status, 0, s.tail)
        XCTAssertEqual(s.run("nproc"), "1", s.tail)
        XCTAssertEqual(s.run("cat /sys/devices/system/cpu/online"), "0", s.tail)
        XCTAssertEqual(s.runWithStatus("echo 1 > /sys/devices/system/cpu/cpu1/online", timeout: 300)?.status, 0, s.tail)
        XCTAssertEqual(s.run("nproc"), "2", s.tail)
        XCTAssertEqual(s.run("cat /sys/devices/system/cpu/online"), "0-1", s.tail)
        XCTAssertEqual(s.run("taskset -c 1 sh -c 'echo $((6 * 7))'"), "42", "a task pinned to the returned CPU; \(s.tail)")
        s.send("poweroff -f\n")
        XCTAssertEqual(s.waitForExit(timeout: 120), 0, "ACPI S5 ends swhv with status 0; \(s.tail)")
        XCTAssertTrue(s.text.contains("reboot: Power down"), s.tail)
    }

    func testOneCPUPowersOffThroughACPIAndResetsThroughTheResetRegister() throws {
        let off = try boot(cpus: 1)
        XCTAssertEqual(off.run("nproc"), "1", off.tail)
        off.send("poweroff -f\n")
        XCTAssertEqual(off.waitForExit(timeout: 120), 0, off.tail)
        XCTAssertTrue(off.text.contains("reboot: Power down"), off.tail)

        // reboot=a: Linux writes the FADT's RESET_VALUE to RESET_REG (port 0xCF9).
        let reset = try boot(cpus: 1, cmdline: "reboot=a")
        XCTAssertEqual(reset.run("echo up-$((2 + 3))"), "up-5", reset.tail)
        XCTAssertEqual(reset.reboot(), 0, reset.tail)
    }
}
