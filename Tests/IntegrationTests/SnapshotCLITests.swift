import Foundation
import Snapshot
import SwhvTestSupport
import XCTest

/// The user's path through the real binary: a VM with a disk and `--api-sock`, the CLI's pause /
/// info / snapshot / resume, and `swhv restore` on every kind of bad snapshot. Each failure is one
/// line and exit status 1; the snapshot files and the disk are left as they were.
final class SnapshotCLITests: XCTestCase {
    var dir: URL!
    var vm: Process?

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-snapcli-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let vm, vm.isRunning { vm.terminate(); vm.waitUntilExit() }
        try? FileManager.default.removeItem(at: dir)
    }

    struct Outcome { let status: Int32; let stdout: String; let stderr: String }

    func swhv(_ args: [String], timeout: Double = 60) throws -> Outcome {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try Repository.swhvBinary())
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)   // hang watchdog
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { p.terminate(); XCTFail("swhv \(args) hung") }
        p.waitUntilExit()
        return Outcome(status: p.terminationStatus,
                       stdout: String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self),
                       stderr: String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    /// One line, "swhv: error: ...", containing `text`, and status 1.
    func assertFails(_ args: [String], _ text: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try swhv(args)
        XCTAssertEqual(r.status, 1, "swhv \(args.joined(separator: " ")): \(r.stderr)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 1, "expected one line, got: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains("swhv: error: ") && r.stderr.contains(text), "\(r.stderr) lacks '\(text)'", file: file, line: line)
    }

    func digest(_ url: URL) throws -> Data { try Data(contentsOf: url) }

    /// On KVM, under the seccomp filters of an API run: pause (clock ioctls on the vCPU thread),
    /// info, snapshot (files written by the API thread) and resume.
    func testPauseSnapshotResumeOnKVM() throws {
        try GuestHarness.requireKVM()
        let bin = try Repository.swhvBinary()
        let image = dir.appendingPathComponent("clock.bin")
        try Data(try GuestHarness.assemble("clock")).write(to: image)
        let sock = dir.appendingPathComponent("api.sock").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["run-image", "--accel", "kvm", "--image", image.path, "--api-sock", sock]
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        vm = p
        let deadline = Date().addingTimeInterval(30)
        while try swhv(["info", "--api-sock", sock]).status != 0 && Date() < deadline { usleep(50_000) }
        XCTAssertEqual(try swhv(["pause", "--api-sock", sock]).status, 0)
        let info = try swhv(["info", "--api-sock", sock])
        XCTAssertTrue(info.stdout.contains("\"backend\": \"kvm\"") && info.stdout.contains("Paused"), info.stdout)
        let snap = dir.appendingPathComponent("snap")
        XCTAssertEqual(try swhv(["snapshot", "--api-sock", sock, snap.path]).status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: snap.appendingPathComponent("memory").path))
        XCTAssertEqual(try swhv(["resume", "--api-sock", sock]).status, 0)
        XCTAssertEqual(try swhv(["info", "--api-sock", sock]).status, 0)
        XCTAssertTrue(p.isRunning, "swhv ended: \(String(decoding: err.fileHandleForReading.availableData, as: UTF8.self))")
        p.terminate()
        p.waitUntilExit()
    }

    func testPauseSnapshotResumeAndBadRestores() throws {
        let bin = try Repository.swhvBinary()
        let image = dir.appendingPathComponent("clock.bin")
        try Data(try GuestHarness.assemble("clock")).write(to: image)
        let disk = dir.appendingPathComponent("disk.img")
        try Data(repeating: 0x5A, count: 1 << 20).write(to: disk)
        let sock = dir.appendingPathComponent("api.sock").path

        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = ["run-image", "--accel", "interp", "--image", image.path, "--disk", disk.path, "--api-sock", sock]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        vm = p
        let deadline = Date().addingTimeInterval(30)
        while try swhv(["info", "--api-sock", sock]).status != 0 && Date() < deadline { usleep(50_000) }

        let snap = dir.appendingPathComponent("snap")
        try assertFails(["snapshot", "--api-sock", sock, snap.path], "pause it first")
        XCTAssertFalse(FileManager.default.fileExists(atPath: snap.appendingPathComponent("state").path))
        try assertFails(["resume", "--api-sock", sock], "not paused")
        XCTAssertEqual(try swhv(["pause", "--api-sock", sock]).status, 0)
        let info = try swhv(["info", "--api-sock", sock])
        XCTAssertTrue(info.stdout.contains("\"state\": \"Paused\""), info.stdout)
        try assertFails(["pause", "--api-sock", sock], "already paused")
        XCTAssertEqual(try swhv(["snapshot", "--api-sock", sock, snap.path]).status, 0)
        // A second snapshot of the same moment, for a memory file that belongs to another snapshot.
        let other = dir.appendingPathComponent("other")
        XCTAssertEqual(try swhv(["snapshot", "--api-sock", sock, other.path]).status, 0)

        // A second client is turned away while the first holds the socket.
        let holder = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { b in for (i, c) in sock.utf8.enumerated() { b[i] = c } }
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(holder, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(connected, 0)
        usleep(200_000)
        try assertFails(["info", "--api-sock", sock], "another API client")
        close(holder)
        usleep(200_000)
        XCTAssertEqual(try swhv(["resume", "--api-sock", sock]).status, 0)
        p.terminate()
        p.waitUntilExit()
        try assertFails(["pause", "--api-sock", sock], "cannot connect")

        let state = snap.appendingPathComponent("state"), memory = snap.appendingPathComponent("memory")
        let files = [state, memory, disk]
        let before = try files.map(digest)
        defer { XCTAssertEqual(try? files.map(digest), before, "a refused restore changed a file") }

        // The interpreter's vCPU state does not go into KVM yet: one line, before the guest runs.
        if FileManager.default.fileExists(atPath: "/dev/kvm") {
            try assertFails(["restore", snap.path, "--accel", "kvm"], "restore it with --accel interp")
        }
        try assertFails(["restore", snap.path, "--memory", "8M"], "needs 16 MiB of guest RAM, more than --memory allows (8 MiB)")
        try assertFails(["restore", snap.path, "--accel", "bogus"], "--accel 'bogus'")
        try assertFails(["restore", dir.appendingPathComponent("none").path], "No such file")

        func withDamaged(_ url: URL, _ damage: (inout Data) -> Void, _ text: String, extra: [String] = []) throws {
            let good = try Data(contentsOf: url)
            var bad = good
            damage(&bad)
            try bad.write(to: url)
            defer { try? good.write(to: url) }
            try assertFails(["restore", snap.path] + extra, text)
        }
        try withDamaged(state, { $0[$0.count - 3] ^= 1 }, "is corrupted")
        try withDamaged(state, { $0 = $0.prefix($0.count / 2) }, "is truncated")
        try withDamaged(state, { $0[8] = 2 }, "has format version 2; this swhv reads version 1")
        try withDamaged(state, { $0 = Data("garbage".utf8) }, "is not a swhv snapshot state file")
        // A vCPU state the software CPU could never be in (CPL 7), with every checksum right.
        try withDamaged(state, { $0 = Data(Self.rewritingSection(SectionTag.cpu, of: [UInt8]($0)) {
            $0.replacingOccurrences(of: "\"cpl\":0", with: "\"cpl\":7") }) }, "CPL 7 is not 0-3")
        try withDamaged(memory, { $0[4096 + 0x1000 + 5] ^= 0xFF }, "guest RAM checksum mismatch")
        try withDamaged(memory, { $0 = $0.prefix(8192) }, "is truncated")
        try withDamaged(memory, { $0 = (try? Data(contentsOf: other.appendingPathComponent("memory"))) ?? $0 },
                        "belongs to another snapshot")
        let goodDisk = try Data(contentsOf: disk)
        try FileManager.default.moveItem(at: disk, to: dir.appendingPathComponent("moved.img"))
        try assertFails(["restore", snap.path], "disk.img' is missing")
        try FileManager.default.moveItem(at: dir.appendingPathComponent("moved.img"), to: disk)
        let h = try FileHandle(forWritingTo: disk)
        try h.seekToEnd()
        try h.write(contentsOf: Data(repeating: 0, count: 512))
        try h.close()
        try assertFails(["restore", snap.path], "changed size since the snapshot")
        let fd = open(disk.path, O_WRONLY)
        XCTAssertEqual(ftruncate(fd, off_t(goodDisk.count)), 0)
        close(fd)
        try assertFails(["restore", snap.path], "was modified since the snapshot")
    }

    /// A state file with one section's JSON text rewritten and every checksum recomputed: what a
    /// forged or buggy snapshot looks like to the reader.
    static func rewritingSection(_ tag: String, of bytes: [UInt8], _ edit: (String) -> String) -> [UInt8] {
        guard let container = try? SnapshotContainer.parse(bytes, path: "state"),
              let payload = container.payload(tag) else { return bytes }
        let edited = Array(edit(String(decoding: payload, as: UTF8.self)).utf8)
        return SnapshotContainer(sections: container.sections.map {
            $0.tag == tag ? SnapshotSection(tag: tag, payload: edited) : $0
        }).serialized()
    }

    /// Issue 14's mid-computation check: the checksum loop guest (Tests/Guests/cpuloop.asm) is
    /// paused part-way, snapshotted and killed; `swhv restore` finishes it with the checksum of an
    /// uninterrupted run, on the terminal's stdout, and leaves the snapshot files as they were.
    func testChecksumLoopResumesFromASnapshotToTheSameResult() throws {
        let bin = try Repository.swhvBinary()
        let image = dir.appendingPathComponent("cpuloop.bin")
        try Data(try GuestHarness.assemble("cpuloop")).write(to: image)
        let args = ["run-image", "--accel", "interp", "--image", image.path, "--write32", "0x500=10000"]
        let whole = try swhv(args, timeout: 300)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let expected = whole.stdout
        XCTAssertTrue(expected.hasPrefix("cpuloop "), expected)

        let sock = dir.appendingPathComponent("api.sock").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: bin)
        p.arguments = args + ["--api-sock", sock]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        vm = p
        let deadline = Date().addingTimeInterval(30)
        while try swhv(["info", "--api-sock", sock]).status != 0 && Date() < deadline { usleep(20_000) }
        XCTAssertEqual(try swhv(["pause", "--api-sock", sock]).status, 0)
        let snap = dir.appendingPathComponent("snap")
        XCTAssertEqual(try swhv(["snapshot", "--api-sock", sock, snap.path]).status, 0)
        p.terminate()
        p.waitUntilExit()
        XCTAssertEqual(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self), "",
                       "the loop had finished before the snapshot: nothing was resumed mid-computation")

        let files = [snap.appendingPathComponent("state"), snap.appendingPathComponent("memory")]
        let before = try files.map(digest)
        let restored = try swhv(["restore", snap.path, "--accel", "interp"], timeout: 300)
        XCTAssertEqual(restored.status, 0, restored.stderr)
        XCTAssertEqual(restored.stdout, expected)
        XCTAssertTrue(restored.stderr.contains("guest requested reset"), restored.stderr)
        // The memory file serves any number of restores: the guest's writes stayed private.
        XCTAssertEqual(try files.map(digest), before)
        let again = try swhv(["restore", snap.path, "--accel", "interp", "--translate", "off"], timeout: 300)
        XCTAssertEqual(again.stdout, expected, again.stderr)
    }
}
