import Foundation
import XCTest

/// The Debian cloud kernel on a multiprocessor, ACPI-described machine (the interpreter, release
/// build): Linux finds every CPU and the I/O APIC through the MADT, takes a CPU offline and back
/// through sysfs, and powers the machine off through the FADT's PM1a control register (swhv exits
/// 0); with `reboot=a` it resets through the FADT's reset register.
final class SMPLinuxTests: XCTestCase {
    func fixture(_ name: String) throws -> String {
        let p = LinuxBootTests.repoRoot.appendingPathComponent("fixtures/\(name)").path
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("fixtures/\(name) missing: run scripts/fetch-guest") }
        return p
    }

    func boot(cpus: Int, cmdline: String = "") throws -> LinuxBootTests.Session {
        guard let binary = ProcessInfo.processInfo.environment["SWHV_RELEASE_BINARY"],
              FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("boot tests need a release build: run scripts/test")
        }
        let s = try LinuxBootTests.Session(binary: binary, arguments: [
            "boot", "--quiet", "--accel", "interp", "--cpus", "\(cpus)", "--kernel", try fixture("vmlinuz-cloud"),
            "--initrd", try fixture("initramfs.cpio.gz"), "--cmdline", cmdline])
        XCTAssertTrue(s.waitFor("SWHV-USERSPACE-UP", timeout: 600), "no userspace marker; tail: \(s.text.suffix(800))")
        return s
    }

    /// Types `command` until `answer` appears (the shell may miss input typed before it opens the console).
    func ask(_ s: LinuxBootTests.Session, _ command: String, expect answer: String, file: StaticString = #filePath,
             line: UInt = #line) {
        var answered = false
        for _ in 0..<12 where !answered {
            s.send(command + "\n")
            answered = s.waitFor(answer, timeout: 10)
        }
        XCTAssertTrue(answered, "`\(command)` did not print `\(answer)`; tail: \(s.text.suffix(1200))", file: file, line: line)
    }

    func testTwoCPUsTheIOAPICCPUHotplugAndPowerOff() throws {
        let s = try boot(cpus: 2)
        ask(s, "echo cpus=$(nproc)", expect: "cpus=2")
        // Interrupts arrive through the I/O APIC (the timer on pin 2, as the MADT's override says).
        ask(s, "grep -q 'IO-APIC *2-edge *timer' /proc/interrupts && echo ioapic-timer-yes", expect: "ioapic-timer-yes")
        ask(s, "grep -q 'IO-APIC *4-edge *ttyS0' /proc/interrupts && echo ioapic-serial-yes", expect: "ioapic-serial-yes")
        // CPU 1 offline and back (INIT/SIPI again), and it takes work afterwards.
        ask(s, "echo 0 > /sys/devices/system/cpu/cpu1/online; echo off=$(nproc)", expect: "off=1")
        ask(s, "echo 1 > /sys/devices/system/cpu/cpu1/online; echo on=$(nproc)", expect: "on=2")
        ask(s, "grep -c ^processor /proc/cpuinfo | sed 's/^/procs=/'", expect: "procs=2")
        s.send("poweroff -f\n")
        XCTAssertEqual(s.waitForExit(timeout: 120), 0, "ACPI S5 ends swhv with status 0; tail: \(s.text.suffix(800))")
        XCTAssertTrue(s.text.contains("reboot: Power down"), s.text.suffix(800).description)
    }

    func testOneCPUPowersOffThroughACPIAndResetsThroughTheResetRegister() throws {
        let off = try boot(cpus: 1)
        ask(off, "echo cpus=$(nproc)", expect: "cpus=1")
        off.send("poweroff -f\n")
        XCTAssertEqual(off.waitForExit(timeout: 120), 0, "tail: \(off.text.suffix(800))")
        XCTAssertTrue(off.text.contains("ACPI: PM: Preparing to enter system sleep state S5")
                      || off.text.contains("reboot: Power down"), off.text.suffix(800).description)

        // reboot=a: Linux writes the FADT's RESET_VALUE to RESET_REG (port 0xCF9).
        let reset = try boot(cpus: 1, cmdline: "reboot=a")
        ask(reset, "echo up-$((2 + 3))", expect: "up-5")
        reset.send("reboot -f\n")
        XCTAssertEqual(reset.waitForExit(timeout: 120), 0, "tail: \(reset.text.suffix(800))")
    }
}
