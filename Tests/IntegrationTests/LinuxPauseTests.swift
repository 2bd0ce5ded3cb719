import APIServer
import Foundation
import JSONCoding
import XCTest

/// Linux on the interpreter with --api-sock (and the seccomp filters of an API run): the guest's
/// own clock does not see a pause, a snapshot of the idle guest is sparse, and SendCtrlAltDel
/// reboots it.
final class LinuxPauseTests: XCTestCase {
    func cli(_ binary: String, _ args: [String]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    func fixture(_ name: String) throws -> String {
        let p = LinuxBootTests.repoRoot.appendingPathComponent("fixtures/\(name)").path
        guard FileManager.default.fileExists(atPath: p) else { throw XCTSkip("fixtures/\(name) missing: run scripts/fetch-guest") }
        return p
    }

    func testGuestUptimeDoesNotCountAPause() throws {
        guard let binary = ProcessInfo.processInfo.environment["SWHV_RELEASE_BINARY"],
              FileManager.default.isExecutableFile(atPath: binary) else {
            throw XCTSkip("boot tests need a release build: run scripts/test (debug builds are 10-50x slower)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-lxpause-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sock = dir.appendingPathComponent("api.sock").path
        let s = try LinuxBootTests.Session(binary: binary, arguments: [
            "boot", "--quiet", "--accel", "interp", "--kernel", try fixture("vmlinuz-cloud"),
            "--initrd", try fixture("initramfs.cpio.gz"), "--api-sock", sock])
        XCTAssertTrue(s.waitFor("SWHV-USERSPACE-UP", timeout: 600), "no userspace marker; tail: \(s.text.suffix(500))")

        /// The guest's uptime in seconds, read with a marker so each answer is told apart.
        var reads = 0
        func uptime() -> Double? {
            reads += 1
            let tag = "UPT\(reads)"
            func value() -> Double? {
                // The shell echoes the command line too; only the answer parses as a number.
                s.text.components(separatedBy: "\(tag)=").dropFirst()
                    .compactMap { Double($0.split(separator: "=").first ?? "") }.first
            }
            for _ in 0..<12 {
                s.send("echo \(tag)=$(cut -d' ' -f1 /proc/uptime)=\n")
                let deadline = Date().addingTimeInterval(10)   // typed before the shell was ready: type again
                while Date() < deadline {
                    if let v = value() { return v }
                    usleep(50_000)
                }
            }
            return nil
        }
        guard let before = uptime() else { return XCTFail("no uptime; tail: \(s.text.suffix(500))") }
        let hostBefore = Date()
        XCTAssertEqual(try cli(binary, ["pause", "--api-sock", sock]), 0)
        usleep(3_000_000)
        XCTAssertEqual(try cli(binary, ["snapshot", "--api-sock", sock, dir.appendingPathComponent("snap").path]), 0)
        XCTAssertEqual(try cli(binary, ["resume", "--api-sock", sock]), 0)
        guard let after = uptime() else { return XCTFail("no uptime after resume; tail: \(s.text.suffix(500))") }
        let host = Date().timeIntervalSince(hostBefore)
        // Host time between the readings includes the 3 s pause; the guest's must not.
        XCTAssertLessThan(after - before, host - 2.5, "guest uptime advanced \(after - before) s over \(host) s with a 3 s pause")

        var st = stat()
        XCTAssertEqual(stat(dir.appendingPathComponent("snap/memory").path, &st), 0)
        XCTAssertEqual(UInt64(st.st_size), 4096 + (512 << 20))
        XCTAssertLessThan(Int(st.st_blocks) * 512, 256 << 20, "an idle guest's zero pages are not written")

        // Ctrl+Alt+Del on the keyboard: Linux restarts, and with reboot=k swhv ends with status 0.
        let cad = try APIClient.request(socket: sock, method: "PUT", path: "/actions",
                                        body: .object(JSONObject([("action_type", "SendCtrlAltDel")])))
        XCTAssertEqual(cad.status, 204)
        XCTAssertEqual(s.waitForExit(timeout: 120), 0)
        XCTAssertTrue(s.text.contains("reboot: Restarting system"), "tail: \(s.text.suffix(300))")
        XCTAssertFalse(FileManager.default.fileExists(atPath: sock), "the socket file is removed on exit")
    }
}
