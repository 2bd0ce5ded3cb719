import Foundation
import SwhvTestSupport
import XCTest

/// The attack guests (Tests/Guests/attack-*.asm, docs/security.md "Attack guests"): hostile bare-metal
/// programs run through the real `swhv run-image` on each backend, under the seccomp filter. Each
/// run must end the way `<name>.stop` says (never a signal, never a hang: a watchdog kills it), print
/// what AttackExpectations states case by case (attack-virtio, attack-io: from the virtio spec, PC
/// buses, QEMU) or exactly `<name>.expected` (`<name>.<backend>.expected` where the backends
/// legitimately differ), and
/// leave host files alone: a read-only disk stays bit-identical, a writable one changes only where
/// the guest wrote it legitimately, and a file in the same directory that swhv was not given is
/// untouched.
enum AttackRun {
    static let guestsDir = Repository.guests

    /// A fresh directory for images and the sentinel, removed by the test's teardown.
    static func scratch(_ test: XCTestCase) throws -> URL {
        let dir = try Repository.scratchDirectory("swhv-attack")
        test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// A host file swhv is not given: its bytes and modification time must survive the run.
    struct Sentinel {
        let url: URL
        let bytes: Data
        let modified: Date
        init(in dir: URL) throws {
            url = dir.appendingPathComponent("sentinel.txt")
            bytes = Data("swhv attack sentinel: not given to the guest\n".utf8)
            try bytes.write(to: url)
            let past = Date(timeIntervalSince1970: 1_000_000_000)
            try FileManager.default.setAttributes([.modificationDate: past], ofItemAtPath: url.path)
            modified = past
        }
        func check(file: StaticString = #filePath, line: UInt = #line) throws {
            XCTAssertEqual(try Data(contentsOf: url), bytes, "the sentinel's bytes changed", file: file, line: line)
            let m = try FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date
            XCTAssertEqual(m, modified, "the sentinel was written", file: file, line: line)
        }
    }

    /// Runs attack guest `name` on `accel` (kvm or interp) with `extra` arguments, and checks the stop,
    /// the serial output and the sentinel. Returns the outcome for further checks.
    @discardableResult
    static func check(_ name: String, accel: String, extra: (URL) throws -> [String] = { _ in [] },
                      timeout: Double = 300, test: XCTestCase,
                      file: StaticString = #filePath, line: UInt = #line) throws -> Subprocess.Outcome {
        let exe = try Repository.swhvBinary()
        let dir = try scratch(test)
        let image = try TestGuests.assemble(name, into: dir)
        let sentinel = try Sentinel(in: dir)
        let args = ["run-image", "--image", image.path, "--accel", accel] + (try extra(dir))
        let before = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        let r = try Subprocess.run(exe, args, timeout: timeout)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), before,
                       "files appeared or vanished next to the images", file: file, line: line)
        XCTAssertFalse(r.timedOut, "swhv hung on \(name) (\(accel)): killed after \(timeout) s", file: file, line: line)
        XCTAssertFalse(r.signalled, "swhv died of signal \(r.status) on \(name) (\(accel)): \(r.stderr)",
                       file: file, line: line)
        // `<name>.<accel>.stop` / `.expected` win over `<name>.stop` / `.expected` where backends differ.
        func specific(_ ext: String) -> URL {
            let u = guestsDir.appendingPathComponent("\(name).\(accel).\(ext)")
            return FileManager.default.fileExists(atPath: u.path) ? u : guestsDir.appendingPathComponent("\(name).\(ext)")
        }
        let stop = try String(contentsOf: specific("stop"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let (status, text): (Int32, String) = switch stop {
        case "reset": (0, "guest requested reset")
        case "shutdown": (2, "guest triple-faulted (shutdown)")
        case "haltedForever": (0, "guest halted with interrupts disabled")
        // "error: TEXT": swhv stops with its one-line error (exit status 1) containing TEXT.
        case let s where s.hasPrefix("error:"):
            (1, "swhv: error: " + s.dropFirst("error:".count).trimmingCharacters(in: .whitespaces))
        default: (-1, "unknown stop '\(stop)'")
        }
        XCTAssertEqual(r.status, status, "exit status of \(name) (\(accel)); stderr: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(text), "\(name) (\(accel)) should stop with '\(text)'; stderr: \(r.stderr)",
                      file: file, line: line)
        let specificExpected = guestsDir.appendingPathComponent("\(name).\(accel).expected")
        if let cases = AttackExpectations.expectedOutput(name), !FileManager.default.fileExists(atPath: specificExpected.path) {
            // Case by case against the stated expectations (AttackExpectations), with the reason.
            let got = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            for (i, c) in cases.enumerated() {
                let want = AttackExpectations.render(c)
                let have = i < got.count ? got[i] : "<no line>"
                XCTAssertEqual(have, want, "\(name) (\(accel)) case '\(c.name)': \(c.why)", file: file, line: line)
            }
            XCTAssertEqual(got.count, cases.count + 1, "\(name) (\(accel)): lines beyond the cases: \(got.dropFirst(cases.count))",
                           file: file, line: line)
            try sentinel.check(file: file, line: line)
            return r
        }
        let expected = try String(contentsOf: specific("expected"), encoding: .utf8)
        XCTAssertEqual(r.stdout, expected, "serial output of \(name) (\(accel))", file: file, line: line)
        if r.stdout != expected {
            // The whole difference, line by line, for a readable failure.
            let a = expected.split(separator: "\n", omittingEmptySubsequences: false)
            let b = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            for i in 0..<max(a.count, b.count) where (i < a.count ? a[i] : "<none>") != (i < b.count ? b[i] : "<none>") {
                print("  line \(i + 1): expected '\(i < a.count ? a[i] : "<none>")' got '\(i < b.count ? b[i] : "<none>")'")
            }
        }
        try sentinel.check(file: file, line: line)
        return r
    }
}

/// What each attack guest asserts, shared by the two backends' test classes.
enum AttackChecks {
    static let sectorSize = 512

    /// Disk images for attack-virtio: sector n starts with PREFIX + n in three digits, the rest is
    /// xorshift64 noise; sector 2 of the read-only disk carries code at byte 16 (mov eax, 0x600dc0de; ret).
    static func diskImage(prefix: String, sectors: Int, seed: UInt64, code: Bool) -> Data {
        var x = seed
        var bytes = [UInt8](repeating: 0, count: sectors * sectorSize)
        for i in bytes.indices {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            bytes[i] = UInt8(truncatingIfNeeded: x >> 24)
        }
        for s in 0..<sectors {
            let tag = Array((prefix + String(format: "%03d", s)).utf8)
            bytes.replaceSubrange(s * sectorSize..<(s * sectorSize + tag.count), with: tag)
        }
        if code { bytes.replaceSubrange(2 * sectorSize + 16..<(2 * sectorSize + 22), with: [0xB8, 0xDE, 0xC0, 0x0D, 0x60, 0xC3]) }
        return Data(bytes)
    }

    static func repeated(_ s: String, count: Int) -> [UInt8] {
        Array(String(repeating: s, count: count).utf8)
    }

    /// Hostile virtio-blk chains against a read-only and a writable disk.
    static func virtio(accel: String, test: XCTestCase) throws {
        let ro = diskImage(prefix: "ROSEC", sectors: 128, seed: 0x123_4567, code: true)
        let rw = diskImage(prefix: "RWSEC", sectors: 16, seed: 0x765_4321, code: false)
        var roURL: URL?, rwURL: URL?
        try AttackRun.check("attack-virtio", accel: accel, extra: { dir in
            roURL = dir.appendingPathComponent("ro.img")
            rwURL = dir.appendingPathComponent("rw.img")
            try ro.write(to: roURL!)
            try rw.write(to: rwURL!)
            return ["--disk", roURL!.path + ",readonly", "--disk", rwURL!.path]
        }, test: test)
        guard let roURL, let rwURL else { return }
        XCTAssertEqual(try Data(contentsOf: roURL), ro, "the read-only disk changed")
        // The writable disk: exactly the two good writes (sector 1 whole, sector 3 in two pieces).
        var want = [UInt8](rw)
        want.replaceSubrange(sectorSize..<(2 * sectorSize), with: repeated("ATTACKED", count: 64))
        want.replaceSubrange(3 * sectorSize..<(4 * sectorSize),
                             with: repeated("SPLIT-A.", count: 32) + repeated("SPLIT-B.", count: 32))
        let got = [UInt8](try Data(contentsOf: rwURL))
        XCTAssertEqual(got.count, want.count, "the writable disk changed size")
        let changed = Set(zip(got, want).enumerated().filter { $0.element.0 != $0.element.1 }.map { $0.offset / sectorSize })
        XCTAssertEqual(changed, [], "the writable disk differs from the two good writes in sectors \(changed.sorted())")
    }
}

final class KVMAttackGuestTests: XCTestCase {
    override func setUpWithError() throws { try GuestHarness.requireKVM() }
    func testVirtioAttack() throws { try AttackChecks.virtio(accel: "kvm", test: self) }
    func testPortMMIOAndUARTAttack() throws { try AttackRun.check("attack-io", accel: "kvm", timeout: 120, test: self) }
    func testSelfModifyingCodePagingAndTripleFault() throws { try AttackRun.check("attack-cpu", accel: "kvm", test: self) }
    func testCodeRunningOffTheEndOfRAMStopsWithAMessage() throws {
        try AttackRun.check("attack-exec", accel: "kvm", test: self)
    }
}

final class InterpreterAttackGuestTests: XCTestCase {
    func testVirtioAttack() throws { try AttackChecks.virtio(accel: "interp", test: self) }
    func testPortMMIOAndUARTAttack() throws { try AttackRun.check("attack-io", accel: "interp", timeout: 120, test: self) }
    func testSelfModifyingCodePagingInterruptStormAndTripleFault() throws {
        try AttackRun.check("attack-cpu", accel: "interp", test: self)
    }
    func testStringIOAndCodeAcrossTheEndOfRAMAndIDTPastRAM() throws {
        try AttackRun.check("attack-exec", accel: "interp", test: self)
    }
}
