import APIServer
import Foundation
import JSONCoding
import SwhvTestSupport
import XCTest

/// Linux on the interpreter with --api-sock (and the seccomp filters of an API run): the guest's
/// own clock does not see a pause, a snapshot of the idle guest is sparse, SendCtrlAltDel reboots
/// it, and a snapshot restores to a working shell with its disk.
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

    /// Issue 14 with Linux on the software path: a guest at its shell writes to its disk and syncs,
    /// is snapshotted and killed; `swhv restore` puts it back on a terminal, where a typed command
    /// answers from the guest's RAM as it was, the disk reads back what was synced before the
    /// snapshot, and a write after the restore reaches the disk file.
    func testLinuxSnapshotRestoresToAWorkingShellAndItsDisk() throws {
        let binary = try Repository.releaseBinary()
        let dir = try Repository.scratchDirectory("swhv-lxsnap")
        defer { try? FileManager.default.removeItem(at: dir) }
        let disk = dir.appendingPathComponent("disk.img")
        try Data(repeating: 0, count: 8 << 20).write(to: disk)
        let sock = dir.appendingPathComponent("api.sock").path
        let snap = dir.appendingPathComponent("snap").path
        let s = try ConsoleSession(binary: binary, arguments: [
            "boot", "--quiet", "--accel", "interp", "--kernel", try Repository.fixture("vmlinuz-cloud"),
            "--initrd", try Repository.fixture("initramfs.cpio.gz"), "--disk", disk.path, "--api-sock", sock])
        XCTAssertTrue(s.waitForShell(), "no shell; \(s.tail)")
        XCTAssertEqual(s.runWithStatus("echo synced-before | dd of=/dev/vda bs=512 seek=8 conv=notrunc 2>/dev/null && sync")?.status, 0,
                       s.tail)
        XCTAssertEqual(s.run("echo in-ram > /tmp/note; cat /tmp/note"), "in-ram")
        XCTAssertEqual(try cli(binary, ["pause", "--api-sock", sock]), 0)
        XCTAssertEqual(try cli(binary, ["snapshot", "--api-sock", sock, snap]), 0)
        kill(s.process.processIdentifier, SIGKILL)
        _ = s.waitForExit(timeout: 30)

        let r = try TerminalSession(binary: binary, arguments: ["restore", snap, "--accel", "interp", "--quiet"])
        // The shell was waiting for a line when paused: the answers are computed, so the terminal's
        // echo of the typed line cannot match them.
        r.type("echo $((6*7))-$(cat /tmp/note); dd if=/dev/vda bs=512 skip=8 count=1 iflag=direct 2>/dev/null | tr a-z A-Z\n")
        XCTAssertTrue(r.waitFor("42-in-ram", timeout: 120), "no answer after restore; \(r.tail)")
        XCTAssertTrue(r.waitFor("SYNCED-BEFORE", timeout: 60), "the disk lost what was synced; \(r.tail)")
        r.type("echo after-restore | dd of=/dev/vda bs=512 seek=16 conv=notrunc,fsync 2>/dev/null; echo written-$((1+1))\n")
        XCTAssertTrue(r.waitFor("written-2", timeout: 60), r.tail)
        r.type([0x01, 0x78])   // Ctrl-A x
        XCTAssertEqual(r.waitForExit(timeout: 60), .exited(0), r.tail)
        let bytes = try Data(contentsOf: disk)
        XCTAssertEqual(String(decoding: bytes[4096..<4096 + 14], as: UTF8.self), "synced-before\n")
        XCTAssertEqual(String(decoding: bytes[8192..<8192 + 14], as: UTF8.self), "after-restore\n")
    }
}
