import Foundation
import XCTest

/// The guest console must never wedge the vCPU: a pipe nobody reads, or a reader that went away,
/// costs console bytes, not the guest.
final class ConsoleOutputTests: XCTestCase {
    /// A real-mode guest that prints 2 MiB of 'A' on COM1, then resets through the i8042.
    static let chatterbox: [UInt8] = [
        0xBA, 0xF8, 0x03,                         // mov dx, 0x3F8
        0x66, 0xB9, 0x00, 0x00, 0x20, 0x00,       // mov ecx, 0x200000
        0xB0, 0x41,                               // loop: mov al, 'A'
        0xEE,                                     // out dx, al
        0x66, 0x49,                               // dec ecx
        0x75, 0xF9,                               // jnz loop
        0xB0, 0xFE, 0xE6, 0x64,                   // i8042: pulse reset
        0xF4,                                     // hlt
    ]

    func runChatterbox(stdout: Pipe, closeReader: Bool) throws -> (status: Int32, seconds: Double, stderr: String) {
        guard let bin = BadInvocationTests.binary else { throw XCTSkip("swhv binary not built (run scripts/test)") }
        let image = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-chatter-\(UUID().uuidString).bin")
        try Data(Self.chatterbox).write(to: image)
        defer { try? FileManager.default.removeItem(at: image) }
        let p = Process()
        p.executableURL = bin
        p.arguments = ["run-image", "--image", image.path, "--accel", "interp"]
        let err = Pipe()
        p.standardOutput = stdout
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        if closeReader { try stdout.fileHandleForReading.close() }
        let start = Date()
        try p.run()
        let deadline = Date().addingTimeInterval(60)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning {
            p.terminate()
            p.waitUntilExit()
            XCTFail("swhv wedged writing to a stdout nobody reads")
        }
        p.waitUntilExit()
        return (p.terminationStatus, Date().timeIntervalSince(start),
                String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
    }

    func testPipeNobodyReadsDoesNotWedgeTheGuest() throws {
        let out = Pipe()   // never read: fills after 64 KiB
        let r = try runChatterbox(stdout: out, closeReader: false)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("reset"), "the guest ran to its reset: \(r.stderr)")
    }

    func testClosedStdoutDoesNotKillSwhv() throws {
        let out = Pipe()
        let r = try runChatterbox(stdout: out, closeReader: true)
        XCTAssertEqual(r.status, 0, "no SIGPIPE death: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("reset"), r.stderr)
    }

    /// A reader that is merely slow gets everything: the buffer absorbs what it cannot take yet.
    func testSlowReaderGetsAllBytes() throws {
        let out = Pipe()
        let collected = ByteCounter()
        let reader = Thread {
            while true {
                usleep(2_000)
                let d = out.fileHandleForReading.availableData
                if d.isEmpty { break }
                collected.add(d.filter { $0 == 0x41 }.count)
            }
        }
        reader.start()
        let r = try runChatterbox(stdout: out, closeReader: false)
        XCTAssertEqual(r.status, 0, r.stderr)
        try out.fileHandleForWriting.close()
        while !reader.isFinished { usleep(10_000) }
        // 1 MiB of buffer plus the pipe's own: a reader this slow may still lose some of 2 MiB,
        // but never wedge the guest; most bytes arrive.
        XCTAssertGreaterThan(collected.value, 1 << 20)
    }
}

final class ByteCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ k: Int) { lock.lock(); n += k; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
