import Foundation
import XCTest

/// Runs the real `swhv` binary with bad command lines and files: each must fail fast with one
/// clear line on stderr and exit status 1 — never a crash, a hang, or a stack trace.
final class BadInvocationTests: XCTestCase {
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    /// The binary under test: SWHV_RELEASE_BINARY (set by scripts/test), else the debug build.
    static var binary: URL? {
        if let p = ProcessInfo.processInfo.environment["SWHV_RELEASE_BINARY"],
           FileManager.default.isExecutableFile(atPath: p) { return URL(fileURLWithPath: p) }
        for dir in [".build/debug", ".build/x86_64-unknown-linux-gnu/debug"] {
            let u = repoRoot.appendingPathComponent(dir).appendingPathComponent("swhv")
            if FileManager.default.isExecutableFile(atPath: u.path) { return u }
        }
        return nil
    }

    var scratch: URL!

    override func setUpWithError() throws {
        scratch = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    struct Outcome { let status: Int32; let stderr: String; let stdout: String; let seconds: Double }

    func swhv(_ args: [String], timeout: Double = 10) throws -> Outcome {
        guard let bin = Self.binary else { throw XCTSkip("swhv binary not built (run scripts/test)") }
        let p = Process()
        p.executableURL = bin
        p.arguments = args
        let err = Pipe(), out = Pipe()
        p.standardError = err
        p.standardOutput = out
        p.standardInput = FileHandle.nullDevice
        let start = Date()
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(10_000) }
        if p.isRunning { p.terminate(); p.waitUntilExit(); XCTFail("swhv \(args) hung"); }
        p.waitUntilExit()
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let o = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return Outcome(status: p.terminationStatus, stderr: e, stdout: o, seconds: Date().timeIntervalSince(start))
    }

    func file(_ name: String, _ bytes: [UInt8]) throws -> String {
        let u = scratch.appendingPathComponent(name)
        try Data(bytes).write(to: u)
        return u.path
    }

    /// A syntactically valid but tiny bzImage header, good enough to get past file checks.
    func bzImageHeaderOnly() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 1024)
        b[0x1F1] = 4                                  // setup_sects
        b[0x1FE] = 0x55; b[0x1FF] = 0xAA
        b[0x202] = 0x48; b[0x203] = 0x64; b[0x204] = 0x72; b[0x205] = 0x53  // "HdrS"
        b[0x206] = 0x0F; b[0x207] = 0x02               // protocol 2.15
        b[0x200] = 0xEB; b[0x201] = 0x66               // jump over a header that reaches 0x268
        b[0x1F4] = 0x00; b[0x1F5] = 0x10               // syssize: 0x1000 paragraphs (64 KiB)
        b[0x236] = 0x01                                // xloadflags: XLF_KERNEL_64
        b[0x262] = 0x10                                // init_size: 1 MiB
        return b  // 1 KiB: far shorter than setup (5 sectors) + payload
    }

    func assertOneLineFailure(_ args: [String], mentions: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try swhv(args)
        XCTAssertEqual(r.status, 1, "exit status for \(args): stderr=\(r.stderr)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n", omittingEmptySubsequences: true)
            .map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\r")) }
        XCTAssertEqual(lines.count, 1, "expected one error line for \(args), got: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(lines.first?.hasPrefix("swhv: error: ") ?? false, "\(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.lowercased().contains(mentions.lowercased()),
                      "error for \(args) should mention '\(mentions)': \(r.stderr)", file: file, line: line)
        XCTAssertLessThan(r.seconds, 5, "bad input must fail fast", file: file, line: line)
        XCTAssertEqual(r.stdout, "", "nothing on the guest console", file: file, line: line)
    }

    func testMissingKernelFile() throws {
        try assertOneLineFailure(["boot", "--kernel", scratch.appendingPathComponent("nope").path], mentions: "No such file")
    }

    func testKernelIsDirectory() throws {
        try assertOneLineFailure(["boot", "--kernel", scratch.path], mentions: "directory")
    }

    func testEmptyKernel() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("empty", [])], mentions: "empty")
    }

    func testRandomFileAsKernel() throws {
        var g = SystemRandomNumberGenerator()
        let bytes = (0..<65536).map { _ in UInt8.random(in: 0...255, using: &g) }
        try assertOneLineFailure(["boot", "--kernel", try file("random", bytes)], mentions: "kernel")
    }

    func testTruncatedBzImage() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("trunc", bzImageHeaderOnly())], mentions: "truncated")
    }

    func testMissingInitrd() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()),
                                  "--initrd", scratch.appendingPathComponent("missing.gz").path],
                                 mentions: "initrd")
    }

    func testInitrdLargerThanRAM() throws {
        let big = scratch.appendingPathComponent("big.img")
        FileManager.default.createFile(atPath: big.path, contents: nil)
        let h = try FileHandle(forWritingTo: big)
        try h.truncate(atOffset: 80 << 20)  // sparse: 80 MiB
        try h.close()
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--initrd", big.path,
                                  "--memory", "64M"], mentions: "larger than guest RAM")
    }

    func testZeroMemory() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--memory", "0"],
                                 mentions: "memory")
    }

    func testGarbageMemorySize() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--memory", "lots"],
                                 mentions: "memory")
    }

    func testAbsurdMemorySize() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--memory", "99999T"],
                                 mentions: "memory")
    }

    func testUnknownAccelerator() throws {
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--accel", "warp"],
                                 mentions: "accel")
    }

    func testMissingKernelOptionIsAUsageError() throws {
        let r = try swhv(["boot"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--kernel"), r.stderr)
    }

    func testHelpExplainsTheOptions() throws {
        let r = try swhv(["boot", "--help"])
        XCTAssertEqual(r.status, 0)
        for opt in ["--kernel", "--initrd", "--cmdline", "--memory", "--accel", "Ctrl-A x"] {
            XCTAssertTrue(r.stdout.contains(opt), "help should mention \(opt)")
        }
    }
}
