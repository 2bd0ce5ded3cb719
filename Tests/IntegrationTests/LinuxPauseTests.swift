import APIServer
import Foundation
import JSONCoding
import SwhvTestSupport
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

    func testGuestUptimeDoesNotCountAPause() throws {
        let binary = try Repository.releaseBinary()
        let dir = try Repository.scratchDirectory("swhv-lxpause")
        defer { try? FileManager.default.removeItem(at: dir) }
        let sock = dir.appendingPathComponent("api.sock").path
        let s = try ConsoleSession(binary: binary, arguments: [
            "boot", "--quiet", "--accel", "interp", "--kernel", try Repository.fixture("vmlinuz-cloud"),
            "--initrd", try Repository.fixture("initramfs.cpio.gz"), "--api-sock", sock])
        XCTAssertTrue(s.waitForShell(), "no shell; \(s.tail)")

        func uptime() -> Double? { s.run("cut -d' ' -f1 /proc/uptime").flatMap(Double.init) }
        guard let before = uptime() else { return XCTFail("no uptime; \(s.tail)") }
        let hostBefore = Date()
        XCTAssertEqual(try cli(binary, ["pause", "--api-sock", sock]), 0)
        usleep(3_000_000)
        XCTAssertEqual(try cli(binary, ["snapshot", "--api-sock", sock, dir.appendingPathComponent("snap").path]), 0)
        XCTAssertEqual(try cli(binary, ["resume", "--api-sock", sock]), 0)
        guard let after = uptime() else { return XCTFail("no uptime after resume; \(s.tail)") }
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
        XCTAssertTrue(s.text.contains("reboot: Restarting system"), s.tail)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sock), "the socket file is removed on exit")
    }
}
