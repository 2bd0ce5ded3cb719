import Foundation
import SwhvTestSupport
import XCTest

/// Runs the real `swhv` binary with bad command lines and files: each must fail with one clear
/// line on stderr and exit status 1 — never a crash, a hang (a generous watchdog), or a stack trace.
/// How fast bad input fails is measured by scripts/bench, not asserted here.
final class BadInvocationTests: XCTestCase {
    var scratch: URL!

    override func setUpWithError() throws {
        scratch = try Repository.scratchDirectory("swhv-cli")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Runs the swhv binary with `args` and no input; a run longer than `timeout` is a hang and fails.
    static func swhv(_ args: [String], input: Subprocess.Input = .null, timeout: Double = 120,
                     file: StaticString = #filePath, line: UInt = #line) throws -> Subprocess.Outcome {
        let r = try Subprocess.run(try Repository.swhvBinary(), args, input: input, timeout: timeout)
        XCTAssertFalse(r.timedOut, "swhv \(args) hung", file: file, line: line)
        XCTAssertFalse(r.signalled, "swhv \(args) died of signal \(r.status): \(r.stderr)", file: file, line: line)
        return r
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
        let r = try Self.swhv(args)
        XCTAssertEqual(r.status, 1, "exit status for \(args): stderr=\(r.stderr)", file: file, line: line)
        let lines = r.stderrLines
        XCTAssertEqual(lines.count, 1, "expected one error line for \(args), got: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(lines.first?.hasPrefix("swhv: error: ") ?? false, "\(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.lowercased().contains(mentions.lowercased()),
                      "error for \(args) should mention '\(mentions)': \(r.stderr)", file: file, line: line)
        XCTAssertEqual(r.stdout, "", "nothing on the guest console", file: file, line: line)
    }

    /// A tiny valid x86-64 vmlinux: gets past every file and format check, so what fails is the
    /// option under test.
    func tinyELF() -> [UInt8] { TinyKernel.elf(TinyKernel.printAndReset("tiny\n")) }

    func sparseFile(_ name: String, size: UInt64) throws -> String {
        let u = scratch.appendingPathComponent(name)
        FileManager.default.createFile(atPath: u.path, contents: nil)
        let h = try FileHandle(forWritingTo: u)
        try h.truncate(atOffset: size)
        try h.close()
        return u.path
    }

    func fifo(_ name: String) -> String {
        let path = scratch.appendingPathComponent(name).path
        XCTAssertEqual(mkfifo(path, 0o600), 0)
        return path
    }

    /// One bad command line: what the user typed and what swhv must answer.
    struct Case {
        let name: String
        let args: [String]
        /// 1 for swhv's own one-line errors, 64 for usage errors (ArgumentParser's EX_USAGE).
        var status: Int32 = 1
        let message: String
    }

    /// Builds the table; files are made in the per-test scratch directory.
    func badCases() throws -> [Case] {
        let missing = scratch.appendingPathComponent("nope").path
        let dir = scratch.path
        let k = try file("k", bzImageHeaderOnly())
        let elf = try file("vmlinux", tinyELF())
        var g = SystemRandomNumberGenerator()
        let random = try file("random", (0..<65536).map { _ in UInt8.random(in: 0...255, using: &g) })
        var elf32 = tinyELF(); elf32[4] = 1
        var arm64 = tinyELF(); arm64[0x12] = 183
        var oldProto = bzImageHeaderOnly(); oldProto[0x206] = 0x0B   // 2.11
        var no64 = bzImageHeaderOnly() + [UInt8](repeating: 0, count: 0x11000); no64[0x236] = 0
        let gzip = try file("initramfs.cpio.gz", [0x1F, 0x8B, 0x08, 0x00] + [UInt8](repeating: 0, count: 600))
        let disk = try sparseFile("disk.img", size: 1 << 20)
        let odd = try sparseFile("odd.img", size: 1000)
        let emptyDisk = try file("empty.img", [])
        let interp = ["--accel", "interp"]
        return [
            Case(name: "kernel missing", args: ["boot", "--kernel", missing], message: "No such file"),
            Case(name: "kernel is a directory", args: ["boot", "--kernel", dir], message: "is a directory"),
            Case(name: "kernel is a FIFO", args: ["boot", "--kernel", fifo("kfifo")], message: "not a regular file"),
            Case(name: "kernel is a character device", args: ["boot", "--kernel", "/dev/zero"], message: "not a regular file"),
            Case(name: "kernel empty", args: ["boot", "--kernel", try file("empty", [])], message: "empty"),
            Case(name: "kernel random bytes", args: ["boot", "--kernel", random], message: "not a Linux kernel"),
            Case(name: "kernel truncated bzImage", args: ["boot", "--kernel", k], message: "truncated"),
            Case(name: "kernel is a gzip (initrd and kernel swapped)", args: ["boot", "--kernel", gzip, "--initrd", k],
                 message: "not a Linux kernel"),
            Case(name: "kernel 32-bit ELF", args: ["boot", "--kernel", try file("elf32", elf32)], message: "not x86-64"),
            Case(name: "kernel arm64 ELF", args: ["boot", "--kernel", try file("arm64", arm64)], message: "EM_X86_64"),
            Case(name: "kernel boot protocol too old", args: ["boot", "--kernel", try file("old", oldProto)],
                 message: "too old"),
            Case(name: "kernel without 64-bit entry", args: ["boot", "--kernel", try file("no64", no64)],
                 message: "64-bit entry"),
            Case(name: "kernel larger than RAM", args: ["boot", "--kernel", try sparseFile("huge", size: 80 << 20),
                                                        "--memory", "64M"], message: "too large"),
            Case(name: "initrd missing", args: ["boot", "--kernel", k, "--initrd", missing], message: "initrd"),
            Case(name: "initrd is a directory", args: ["boot", "--kernel", k, "--initrd", dir], message: "is a directory"),
            Case(name: "initrd empty", args: ["boot", "--kernel", k, "--initrd", try file("e2", [])], message: "initrd"),
            Case(name: "initrd larger than RAM", args: ["boot", "--kernel", k, "--initrd",
                                                        try sparseFile("big", size: 80 << 20), "--memory", "64M"],
                 message: "larger than guest RAM"),
            Case(name: "initrd does not fit beside the kernel", args: ["boot", "--kernel", elf, "--initrd",
                                                                       try sparseFile("60m", size: 60 << 20),
                                                                       "--memory", "64M"] + interp,
                 message: "does not fit"),
            Case(name: "memory zero", args: ["boot", "--kernel", k, "--memory", "0"], message: "memory"),
            Case(name: "memory garbage", args: ["boot", "--kernel", k, "--memory", "lots"], message: "memory"),
            Case(name: "memory absurd", args: ["boot", "--kernel", k, "--memory", "99999T"], message: "memory"),
            Case(name: "memory too small", args: ["boot", "--kernel", k, "--memory", "512K"], message: "too small"),
            Case(name: "memory not whole pages", args: ["boot", "--kernel", k, "--memory", "2049K"], message: "4 KiB"),
            Case(name: "accelerator unknown", args: ["boot", "--kernel", k, "--accel", "warp"], message: "accel"),
            Case(name: "command line too long", args: ["boot", "--kernel", elf, "--cmdline",
                                                       String(repeating: "x", count: 5000)] + interp,
                 message: "command line"),
            Case(name: "quiet and verbose", args: ["boot", "--kernel", k, "--quiet", "--verbose"],
                 message: "--quiet and --verbose"),
            Case(name: "no default cmdline without cmdline", args: ["boot", "--kernel", k, "--no-default-cmdline"],
                 message: "--no-default-cmdline"),
            Case(name: "disk missing", args: ["boot", "--kernel", k, "--disk", missing] + interp, message: "No such file"),
            Case(name: "disk is a directory", args: ["boot", "--kernel", k, "--disk", dir] + interp,
                 message: "is a directory"),
            Case(name: "disk is a FIFO (read-only)", args: ["boot", "--kernel", k, "--disk", fifo("dfifo") + ",readonly"]
                 + interp, message: "not a regular file"),
            Case(name: "disk is a FIFO", args: ["boot", "--kernel", k, "--disk", fifo("dfifo2")] + interp,
                 message: "not a regular file"),
            Case(name: "disk empty", args: ["boot", "--kernel", k, "--disk", emptyDisk] + interp, message: "empty"),
            Case(name: "disk size not a multiple of 512", args: ["boot", "--kernel", k, "--disk", odd] + interp,
                 message: "not a multiple of 512"),
            Case(name: "disk option unknown", args: ["boot", "--kernel", k, "--disk", disk + ",fast"] + interp,
                 message: "unknown"),
            Case(name: "disk serial too long", args: ["boot", "--kernel", k, "--disk",
                                                      disk + ",serial=" + String(repeating: "s", count: 21)] + interp,
                 message: "longer than 20 bytes"),
            Case(name: "disk without a path", args: ["boot", "--kernel", k, "--disk", ",readonly"] + interp,
                 message: "no path"),
            Case(name: "disk given twice", args: ["boot", "--kernel", k, "--disk", disk, "--disk", disk] + interp,
                 message: "more than once"),
            Case(name: "net without a TAP", args: ["boot", "--kernel", k, "--net", "mac=52:54:00:00:00:01"] + interp,
                 message: "names no TAP"),
            Case(name: "net option not KEY=VALUE", args: ["boot", "--kernel", k, "--net", "tap0"] + interp,
                 message: "not KEY=VALUE"),
            Case(name: "net MAC malformed", args: ["boot", "--kernel", k, "--net", "tap=t0,mac=52:54"] + interp,
                 message: "not a MAC address"),
            Case(name: "net MAC multicast", args: ["boot", "--kernel", k, "--net", "tap=t0,mac=01:00:5e:00:00:01"] + interp,
                 message: "multicast"),
            Case(name: "net offload unknown", args: ["boot", "--kernel", k, "--net", "tap=t0,offload=fast"] + interp,
                 message: "not one of all, csum, none"),
            Case(name: "net TAP missing", args: ["boot", "--kernel", k, "--net", "tap=swhv-no-such"] + interp,
                 message: "TAP device 'swhv-no-such' does not exist"),
            Case(name: "net TAP name too long", args: ["boot", "--kernel", k, "--net", "tap=" + String(repeating: "t", count: 16)] + interp,
                 message: "not an interface name"),
            Case(name: "net TAP given twice", args: ["boot", "--kernel", k, "--net", "tap=t0", "--net", "tap=t0"] + interp,
                 message: "given twice"),
            Case(name: "unknown option", args: ["boot", "--kernel", k, "--turbo"], status: 64, message: "--turbo"),
            Case(name: "unknown subcommand", args: ["start"], status: 64, message: "start"),
            Case(name: "option without its value", args: ["boot", "--kernel"], status: 64, message: "--kernel"),
        ]
    }

    func testBadInvocationsFailFastWithOneLine() throws {
        let cases = try badCases()
        XCTAssertGreaterThanOrEqual(cases.count, 20)
        for c in cases {
            let r = try Self.swhv(c.args)
            XCTAssertEqual(r.status, c.status, "\(c.name): exit status; stderr=\(r.stderr)")
            let lines = r.stderrLines
            if c.status == 1 {
                XCTAssertEqual(lines.count, 1, "\(c.name): expected one line, got: \(r.stderr)")
                XCTAssertTrue(lines.first?.hasPrefix("swhv: error: ") ?? false, "\(c.name): \(r.stderr)")
            } else {
                XCTAssertTrue(lines.first?.hasPrefix("Error: ") ?? false, "\(c.name): \(r.stderr)")
            }
            XCTAssertTrue(lines.first?.lowercased().contains(c.message.lowercased()) ?? false,
                          "\(c.name): the error should mention '\(c.message)': \(r.stderr)")
            XCTAssertEqual(r.stdout, "", "\(c.name): nothing on the guest console")
        }
    }

    /// A writable image another process holds (as a second swhv would) is refused, not shared.
    func testDiskInUseIsRefused() throws {
        let disk = try sparseFile("locked.img", size: 1 << 20)
        let fd = open(disk, O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0)
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--disk", disk,
                                  "--accel", "interp"], mentions: "in use by another process")
        // Read-only users share the image with each other, but not with a writer.
        try assertOneLineFailure(["boot", "--kernel", try file("k", bzImageHeaderOnly()), "--disk", disk + ",readonly",
                                  "--accel", "interp"], mentions: "in use by another process")
    }

    func testMissingKernelOptionIsAUsageError() throws {
        let r = try Self.swhv(["boot"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--kernel"), r.stderr)
    }

    func testHelpExplainsTheOptions() throws {
        let r = try Self.swhv(["boot", "--help"])
        XCTAssertEqual(r.status, 0)
        for opt in ["--kernel", "--initrd", "--cmdline", "--memory", "--accel", "--disk", "--net", "--rng", "--no-seccomp",
                    "Ctrl-A x", "SIGTERM"] {
            XCTAssertTrue(r.stdout.contains(opt), "help should mention \(opt)")
        }
    }

    // MARK: A newcomer's first minute

    func testVersion() throws {
        let r = try Self.swhv(["--version"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("swhv "), r.stdout)
        XCTAssertEqual(r.stdout.split(separator: "\n").count, 1, r.stdout)
    }

    /// `boot --help` shows README's first command as its first example, so the example is the one
    /// TerminalTests proves works (it boots exactly TerminalTests.readmeArguments).
    func testHelpExampleIsReadmeCommandOne() throws {
        let r = try Self.swhv(["boot", "--help"])
        let readme = try String(contentsOf: Repository.root.appendingPathComponent("README.md"), encoding: .utf8)
        let command = ".build/release/swhv " + TerminalTests.readmeArguments.joined(separator: " ")
        XCTAssertTrue(readme.contains("swift build -c release && " + command + "\n"), "README command 1 should be `\(command)`")
        // Examples are shell lines continued with a backslash, to fit 80 columns.
        let text = r.stdout.replacingOccurrences(of: #" \\\n\s+"#, with: " ", options: .regularExpression)
        let examples = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .drop { !$0.hasPrefix("Examples") }.dropFirst()
        XCTAssertEqual(examples.first, command, "the first example in boot --help:\n\(r.stdout)")
    }

    /// README's first command without scripts/fetch-guest: one line that says what to run.
    func testMissingFixtureSaysToRunFetchGuest() throws {
        let r = try Self.swhv(["boot", "--kernel", "fixtures/no-such-kernel", "--initrd", "fixtures/initramfs.cpio.gz"])
        XCTAssertEqual(r.status, 1)
        XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains("run scripts/fetch-guest"), r.stderr)
        XCTAssertTrue(r.stderr.contains("fixtures/no-such-kernel"), r.stderr)
    }
    /// README's usage block and each subcommand's --help name the same options.
    func testReadmeUsageAgreesWithHelp() throws {
        let readme = try String(contentsOf: Repository.root.appendingPathComponent("README.md"), encoding: .utf8)
        guard let block = readme.components(separatedBy: "## Usage").dropFirst().first?
            .components(separatedBy: "```").dropFirst().first else { return XCTFail("no usage block in README") }
        var options: [String: Set<String>] = [:]
        var current: [String] = []
        for line in block.split(separator: "\n") {
            let words = line.split(separator: " ")
            if words.first == "swhv", words.count > 1 {
                // `swhv pause|resume|info --api-sock PATH` stands for three commands.
                current = words[1].hasPrefix("--") ? [] : words[1].split(separator: "|").map(String.init)
            }
            let found = line.matches(of: /--[a-z0-9-]+/).map { String($0.output) }
            for sub in current { options[sub, default: []].formUnion(found) }
        }
        XCTAssertEqual(Set(options.keys), ["boot", "run-image", "pause", "resume", "info", "snapshot", "restore"],
                       "subcommands in README's usage")
        for (sub, readmeOptions) in options {
            let help = try Self.swhv([sub, "--help"]).stdout
            let usage = help.components(separatedBy: "USAGE:").dropFirst().first?.components(separatedBy: "OPTIONS:").first ?? ""
            let helpOptions = Set(usage.matches(of: /--[a-z0-9-]+/).map { String($0.output) })
            XCTAssertEqual(readmeOptions, helpOptions, "README vs `swhv \(sub) --help`")
        }
    }
}
