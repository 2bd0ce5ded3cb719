import Foundation
import SwhvTestSupport
import XCTest

/// The guest console must never wedge the vCPU: a pipe nobody reads, or a reader that went away,
/// costs console bytes, not the guest — and the bytes lost are counted and reported at exit.
final class ConsoleOutputTests: XCTestCase {
    static let chatterBytes = 0x200000

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

    func runChatterbox(stdout: Pipe, closeReader: Bool) throws -> Subprocess.Outcome {
        let dir = try Repository.scratchDirectory("swhv-chatter")
        defer { try? FileManager.default.removeItem(at: dir) }
        let image = dir.appendingPathComponent("chatter.bin")
        try Data(Self.chatterbox).write(to: image)
        if closeReader { try stdout.fileHandleForReading.close() }
        let r = try Subprocess.run(try Repository.swhvBinary(), ["run-image", "--image", image.path, "--accel", "interp"],
                                   standardOutput: stdout, timeout: 300)
        XCTAssertFalse(r.timedOut, "swhv wedged writing to a stdout nobody reads")
        XCTAssertFalse(r.signalled, "swhv died of signal \(r.status): \(r.stderr)")
        return r
    }

    /// The count swhv reports on stderr, if any.
    func droppedCount(_ stderr: String) -> Int? {
        guard let r = stderr.range(of: " bytes of guest console output were dropped") else { return nil }
        return Int(stderr[..<r.lowerBound].split(whereSeparator: { !$0.isNumber }).last ?? "")
    }

    func testPipeNobodyReadsDoesNotWedgeTheGuest() throws {
        let out = Pipe()   // never read: fills after 64 KiB
        let r = try runChatterbox(stdout: out, closeReader: false)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("reset"), "the guest ran to its reset: \(r.stderr)")
        // Only the pipe's 64 KiB ever reached it; the rest (what the 1 MiB buffer still held at
        // exit included) is reported lost.
        let dropped = try XCTUnwrap(droppedCount(r.stderr), "the loss is reported: \(r.stderr)")
        XCTAssertGreaterThan(dropped, Self.chatterBytes - (1 << 20), r.stderr)
        XCTAssertLessThan(dropped, Self.chatterBytes, "the pipe took its share: \(r.stderr)")
    }

    /// A reader that went away before the first byte (EPIPE, SIGPIPE ignored): swhv runs the guest
    /// to its end, exits 0, and reports every byte as dropped.
    func testClosedStdoutDoesNotKillSwhvAndEveryByteIsCountedAsDropped() throws {
        let out = Pipe()
        let r = try runChatterbox(stdout: out, closeReader: true)
        XCTAssertEqual(r.status, 0, "no SIGPIPE death: \(r.stderr)")
        XCTAssertTrue(r.stderr.contains("reset"), r.stderr)
        XCTAssertEqual(droppedCount(r.stderr), Self.chatterBytes, r.stderr)
    }

    /// A reader that is merely slow gets everything: the buffer absorbs what it cannot take yet.
    func testSlowReaderGetsAllBytes() throws {
        let out = Pipe()
        let collected = LockedData()
        let reader = Thread {
            while true {
                usleep(2_000)
                let d = out.fileHandleForReading.availableData
                if d.isEmpty { break }
                collected.append(d)
            }
        }
        reader.start()
        let r = try runChatterbox(stdout: out, closeReader: false)
        XCTAssertEqual(r.status, 0, r.stderr)
        try out.fileHandleForWriting.close()
        while !reader.isFinished { usleep(10_000) }
        // What the reader got plus what was dropped is what the guest wrote, byte for byte.
        let got = collected.data.filter { $0 == 0x41 }.count
        XCTAssertEqual(got + (droppedCount(r.stderr) ?? 0), Self.chatterBytes, r.stderr)
        XCTAssertGreaterThan(got, 1 << 20)
    }
}
