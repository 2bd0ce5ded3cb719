import Foundation
import XCTest

/// Boots real Linux kernels with the release `swhv` binary, types a shell command on the console and
/// checks its output, then reboots the guest. Needs the fixtures (scripts/fetch-guest,
/// scripts/build-small-kernel) and a release build (scripts/test sets SWHV_RELEASE_BINARY).
final class LinuxBootTests: XCTestCase {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    func fixture(_ name: String, hint: String) throws -> String {
        let p = Self.repoRoot.appendingPathComponent("fixtures/\(name)").path
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("fixtures/\(name) missing: run \(hint)") }
        return p
    }

    func releaseBinary() throws -> String {
        guard let p = ProcessInfo.processInfo.environment["SWHV_RELEASE_BINARY"],
              FileManager.default.isExecutableFile(atPath: p) else {
            throw XCTSkip("boot tests need a release build: run scripts/test (debug builds are 10-50x slower)")
        }
        return p
    }

    /// A console session: the guest's output accumulates; `send` types into its serial port.
    final class Session: @unchecked Sendable {
        let process = Process()
        let input = Pipe()
        private let output = Pipe()
        private let lock = NSLock()
        private var buffer = Data()

        init(binary: String, arguments: [String]) throws {
            process.executableURL = URL(fileURLWithPath: binary)
            process.arguments = arguments
            process.standardInput = input
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            output.fileHandleForReading.readabilityHandler = { [weak self] h in
                let d = h.availableData
                guard let self, !d.isEmpty else { return }
                self.lock.lock(); self.buffer.append(d); self.lock.unlock()
            }
            try process.run()
        }

        var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: buffer, as: UTF8.self) }

        func waitFor(_ needle: String, timeout: TimeInterval) -> Bool {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if text.contains(needle) { return true }
                if !process.isRunning { return text.contains(needle) }
                usleep(50_000)
            }
            return false
        }

        func send(_ s: String) { input.fileHandleForWriting.write(Data(s.utf8)) }

        func waitForExit(timeout: TimeInterval) -> Int32? {
            let deadline = Date().addingTimeInterval(timeout)
            while process.isRunning && Date() < deadline { usleep(50_000) }
            if process.isRunning { process.terminate(); return nil }
            return process.terminationStatus
        }

        deinit { if process.isRunning { process.terminate() } }
    }

    func bootAndRunShellCommand(kernel: String, accel: String, timeout: TimeInterval = 600,
                                extraCmdline: String = "") throws {
        let s = try Session(binary: try releaseBinary(), arguments: [
            "boot", "--quiet", "--accel", accel, "--kernel", kernel,
            "--initrd", try fixture("initramfs.cpio.gz", hint: "scripts/fetch-guest"), "--cmdline", extraCmdline])
        XCTAssertTrue(s.waitFor("SWHV-USERSPACE-UP", timeout: timeout),
                      "no userspace marker; console tail: \(s.text.suffix(800))")
        // The shell starts right after the marker; input typed before it opens the console can be
        // discarded, so type again until it answers (a loaded machine makes that window long).
        var answered = false
        for _ in 0..<12 where !answered {
            usleep(500_000)
            s.send("echo swhv-$((6 * 7))-ok\n")
            answered = s.waitFor("swhv-42-ok", timeout: 10)
        }
        XCTAssertTrue(answered, "shell did not answer; tail: \(s.text.suffix(800))")
        s.send("reboot -f\n")
        XCTAssertEqual(s.waitForExit(timeout: 60), 0, "swhv should exit 0 when the guest reboots")
    }

    func testDebianCloudKernelBootsOnTheInterpreterToAShell() throws {
        try bootAndRunShellCommand(kernel: try fixture("vmlinuz-cloud", hint: "scripts/fetch-guest"), accel: "interp")
    }

    func testSmallKernelBootsOnTheInterpreterToAShell() throws {
        try bootAndRunShellCommand(kernel: try fixture("vmlinux-small", hint: "scripts/build-small-kernel"),
                                   accel: "interp")
    }

    /// Opt-in (SWHV_LONG_TESTS=1): under kvm-pvm guest kernel code is emulated at ~3 M instr/s.
    func testSmallKernelBootsUnderKVMToAShell() throws {
        guard ProcessInfo.processInfo.environment["SWHV_LONG_TESTS"] == "1" else {
            throw XCTSkip("Linux under KVM is an opt-in long test here (SWHV_LONG_TESTS=1)")
        }
        try GuestHarness.requireKVM()
        try bootAndRunShellCommand(kernel: try fixture("vmlinux-small", hint: "scripts/build-small-kernel"),
                                   accel: "kvm", timeout: 1200)
    }
}
