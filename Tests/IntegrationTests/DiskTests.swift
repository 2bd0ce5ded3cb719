import Foundation
import SwhvTestSupport
import XCTest

/// `--disk` as a user sees it: the Debian cloud kernel on the interpreter (release binary) reads and
/// writes host files through virtio-blk. Checks what the host file holds afterwards — byte for byte,
/// through ext4 (debugfs, e2fsck), after SIGKILL right after the guest's `sync` — and that read-only
/// disks stay bit-identical, writable disks are locked, and bad disks fail with one line; a block
/// device (a loop device) works as a disk too. scripts/test provides the fixtures, e2fsprogs and
/// the release build (SWHV_RELEASE_BINARY).
final class DiskTests: XCTestCase {
    func fixture(_ name: String) throws -> String { try Repository.fixture(name) }
    func releaseBinary() throws -> String { try Repository.releaseBinary() }

    /// `swhv boot` on the interpreter with the test kernel and initramfs, plus `extra` arguments.
    func bootArguments(_ extra: [String]) throws -> [String] {
        ["boot", "--quiet", "--accel", "interp", "--kernel", try fixture("vmlinuz-cloud"),
         "--initrd", try fixture("initramfs.cpio.gz")] + extra
    }

    /// A fresh directory, removed after the test.
    func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-disk-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        return dir
    }

    /// Deterministic pseudo-random bytes (xorshift64), so a mismatch is reproducible.
    static func pattern(count: Int, seed: UInt64) -> Data {
        var x = seed | 1
        var bytes = [UInt8](repeating: 0, count: count)
        for i in 0..<count {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            bytes[i] = UInt8(truncatingIfNeeded: x >> 24)
        }
        return Data(bytes)
    }

    static func replace(_ data: inout Data, at offset: Int, with bytes: Data) {
        data.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    /// Where two byte strings first differ, for a readable failure message.
    static func firstDifference(_ a: Data, _ b: Data) -> String {
        guard a.count == b.count else { return "sizes differ: \(a.count) vs \(b.count)" }
        guard let i = zip(a, b).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset else {
            return "identical"
        }
        return "first difference at byte \(i): 0x\(String(a[i], radix: 16)) vs 0x\(String(b[i], radix: 16))"
    }

    /// Runs a host program to completion (under a generous hang watchdog).
    @discardableResult
    func runHost(_ path: String, _ arguments: [String]) throws -> Subprocess.Outcome {
        let r = try Subprocess.run(path, arguments, timeout: 600)
        XCTAssertFalse(r.timedOut, "\(path) \(arguments) hung")
        return r
    }

    func hostTool(_ name: String) throws -> String {
        try Repository.tool(name, package: ["md5sum": "coreutils", "sha256sum": "coreutils", "losetup": "mount"][name] ?? "e2fsprogs")
    }

    /// The hex digest from coreutils' sha256sum or md5sum (busybox in the guest has the same tools;
    /// md5sum costs the interpreted guest half the time).
    func checksum(_ path: String, tool: String = "sha256sum") throws -> String {
        let r = try runHost(try hostTool(tool), [path])
        XCTAssertEqual(r.status, 0, r.stderr)
        return String(r.stdout.prefix(while: { $0 != " " }))
    }

    /// An ext4 image from scripts/make-disk (holding /hello.txt).
    func makeExt4(_ path: String, size: String = "64M") throws {
        _ = try hostTool("mkfs.ext4")
        let r = try runHost(Repository.path("scripts/make-disk"), ["--size", size, path])
        XCTAssertEqual(r.status, 0, "scripts/make-disk failed: \(r.stderr)")
    }

    // MARK: The guest console

    typealias Guest = ConsoleSession

    /// `reboot -f` (no sync by the guest; the test synced before) and swhv's exit status 0.
    func reboot(_ g: Guest, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(g.reboot(), 0, "swhv should exit 0 when the guest reboots; \(g.tail)", file: file, line: line)
    }

    func boot(_ diskArguments: [String]) throws -> Guest {
        let g = try ConsoleSession(binary: try releaseBinary(), arguments: try bootArguments(diskArguments))
        addTeardownBlock { if g.process.isRunning { kill(g.process.processIdentifier, SIGKILL) } }
        return g
    }

    // MARK: Raw disk

    /// The guest reads what the host wrote at several offsets (aligned, unaligned, the last bytes,
    /// and checksums of the whole disk, buffered and O_DIRECT), writes at several offsets (partial
    /// sectors, the end, a 1 MiB O_DIRECT copy, a multi-page copy), syncs and reboots; the host file
    /// then equals the expected image exactly.
    func testRawDiskReadsHostBytesAndWritesExactlyWhatTheGuestWrote() throws {
        let dir = try temporaryDirectory()
        let img = dir.appendingPathComponent("raw.img").path
        let size = 4 << 20
        var image = Self.pattern(count: size, seed: 0x5EED_D15C)
        let marks: [(Int, String)] = [(0, "HOST-MARK-AT-ZERO"), (1_000_003, "HOST-MARK-UNALIGNED"),
                                      (3 * 512, "HOST-MARK-SECTOR-3"), (size - 16, "HOST-MARK-LAST16")]
        for (offset, text) in marks { Self.replace(&image, at: offset, with: Data(text.utf8)) }
        try image.write(to: URL(fileURLWithPath: img))
        let hostSum = try checksum(img, tool: "md5sum")

        let g = try boot(["--disk", img])
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        XCTAssertEqual(g.run("cat /sys/block/vda/size"), "\(size / 512)", "capacity in sectors")
        for (offset, text) in marks {
            XCTAssertEqual(g.run("dd if=/dev/vda bs=1 skip=\(offset) count=\(text.utf8.count) 2>/dev/null"), text,
                           "guest read at offset \(offset)")
        }
        XCTAssertEqual(g.run("md5sum /dev/vda")?.prefix(32).description, hostSum, "whole-disk checksum in the guest")
        // O_DIRECT bypasses the guest's page cache: 1 MiB requests of many descriptors.
        XCTAssertEqual(g.run("dd if=/dev/vda bs=1M iflag=direct 2>/dev/null | md5sum")?.prefix(32).description,
                       hostSum, "whole-disk checksum with O_DIRECT reads")
        XCTAssertEqual(g.runWithStatus("dd if=/dev/vda of=/dev/vda bs=1M count=1 seek=2 iflag=direct oflag=direct")?.status, 0)
        Self.replace(&image, at: 2 << 20, with: image.subdata(in: 0..<(1 << 20)))

        // Writes: (offset, text) through the page cache (read-modify-write of partial pages).
        let writes: [(Int, String)] = [(512, "GUEST-WROTE-AT-512"), (1_500_001, "guest-unaligned-write"),
                                       (size - 12, "guest-at-end")]
        for (offset, text) in writes {
            XCTAssertEqual(g.runWithStatus("printf '\(text)' | dd of=/dev/vda bs=1 seek=\(offset) conv=notrunc")?.status,
                           0, "guest write at \(offset); \(g.tail)")
            Self.replace(&image, at: offset, with: Data(text.utf8))
        }
        // 32 KiB copied from 4096 to 900 * 4096 through the page cache.
        XCTAssertEqual(g.runWithStatus("dd if=/dev/vda of=/dev/vda bs=4096 skip=1 seek=900 count=8 conv=notrunc")?.status, 0)
        Self.replace(&image, at: 900 * 4096, with: image.subdata(in: 4096..<(4096 + 32768)))
        XCTAssertEqual(g.runWithStatus("sync")?.status, 0)
        reboot(g)

        let after = try Data(contentsOf: URL(fileURLWithPath: img))
        XCTAssertTrue(after == image, "host file differs from the expected image: \(Self.firstDifference(after, image))")
    }

    // MARK: ext4

    /// make-disk's ext4 image mounts in the guest; a file the guest writes is there for debugfs on
    /// the host after sync + umount + reboot, and e2fsck finds the file system clean.
    func testExt4ImageMountsAndGuestFilesReachTheHost() throws {
        let dir = try temporaryDirectory()
        let img = dir.appendingPathComponent("fs.img").path
        try makeExt4(img)
        let debugfs = try hostTool("debugfs"), e2fsck = try hostTool("e2fsck")
        let token = UUID().uuidString

        let g = try boot(["--disk", img])
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        XCTAssertEqual(g.runWithStatus("mkdir -p /mnt && mount -t ext4 /dev/vda /mnt")?.status, 0, g.tail)
        XCTAssertEqual(g.run("cat /mnt/hello.txt"), "hello from swhv make-disk")
        XCTAssertEqual(g.runWithStatus("echo 'written by the guest \(token)' > /mnt/newfile.txt")?.status, 0)
        // A larger file spans many blocks and extents.
        XCTAssertEqual(g.runWithStatus("seq 1 30000 > /mnt/seq.txt")?.status, 0)
        XCTAssertEqual(g.runWithStatus("sync && umount /mnt", timeout: 120)?.status, 0, g.tail)
        reboot(g)

        let cat = try runHost(debugfs, ["-R", "cat /newfile.txt", img])
        XCTAssertEqual(cat.stdout, "written by the guest \(token)\n", "debugfs: \(cat.stderr)")
        let seq = try runHost(debugfs, ["-R", "cat /seq.txt", img])
        XCTAssertTrue(seq.stdout == (1...30000).map { "\($0)\n" }.joined(), "seq.txt differs (\(seq.stdout.count) bytes)")
        let fsck = try runHost(e2fsck, ["-fn", img])
        XCTAssertEqual(fsck.status, 0, "e2fsck -fn is not clean:\n\(fsck.stdout)\(fsck.stderr)")
    }

    // MARK: SIGKILL durability

    /// Data the guest wrote is in the host file once the guest's `sync` returned, even when swhv is
    /// SIGKILLed at that moment. Three rounds of different data over two boots: one checked while
    /// swhv runs, two ending in SIGKILL; the second boot also reads the earlier rounds back.
    func testDataSyncedByTheGuestSurvivesSIGKILL() throws {
        let dir = try temporaryDirectory()
        let img = dir.appendingPathComponent("kill.img").path
        let size = 4 << 20
        try Data(count: size).write(to: URL(fileURLWithPath: img))
        let token = UUID().uuidString.prefix(8)

        // Round r: a header line and seq output at sector 1000 * r (~100 KiB, many requests).
        func expected(_ r: Int) -> Data { Data(("round-\(r)-\(token)\n" + (1...(15000 + r)).map { "\($0)\n" }.joined()).utf8) }
        func write(_ g: Guest, round r: Int) {
            g.send("{ echo round-\(r)-\(token); seq 1 \(15000 + r); } | dd of=/dev/vda bs=512 seek=\(1000 * r) conv=notrunc 2>/dev/null"
                   + " && sync && echo SYNCED-$((100+\(r)))\n")
        }
        func check(_ r: Int, file: StaticString = #filePath, line: UInt = #line) throws {
            let h = try FileHandle(forReadingFrom: URL(fileURLWithPath: img))
            defer { try? h.close() }
            try h.seek(toOffset: UInt64(1000 * r * 512))
            let want = expected(r)
            let got = try h.read(upToCount: want.count) ?? Data()
            XCTAssertTrue(got == want, "round \(r) not in the host file: \(Self.firstDifference(got, want))",
                          file: file, line: line)
        }

        let first = try boot(["--disk", img])
        XCTAssertTrue(first.waitForShell(), "no shell; \(first.tail)")
        write(first, round: 1)
        XCTAssertTrue(first.waitFor("SYNCED-101", timeout: 120), first.tail)
        try check(1)
        first.killWhenOutputContains("SYNCED-102")
        write(first, round: 2)
        _ = first.waitForExit(timeout: 120)
        XCTAssertTrue(first.killed, "the marker never came; \(first.tail)")
        try check(2)

        let second = try boot(["--disk", img])
        XCTAssertTrue(second.waitForShell(), "no shell; \(second.tail)")
        for r in 1...2 {
            XCTAssertEqual(second.run("dd if=/dev/vda bs=512 skip=\(1000 * r) count=1 2>/dev/null | head -n 1"),
                           "round-\(r)-\(token)", "the guest reads round \(r) back after SIGKILL")
        }
        second.killWhenOutputContains("SYNCED-103")
        write(second, round: 3)
        _ = second.waitForExit(timeout: 120)
        XCTAssertTrue(second.killed, "the marker never came; \(second.tail)")
        for r in 1...3 { try check(r) }
    }

    // MARK: Read-only and two disks

    /// `--disk a.img,serial=... --disk b.img,readonly`: the guest sees vda and vdb with their sizes
    /// and serial, vdb read-only; writing vdb fails while writing vda works; b.img stays
    /// bit-identical. a.img is a sparse 5 GiB file, so offsets past 4 GiB are exercised too.
    func testTwoDisksAndAReadOnlyDiskStaysBitIdentical() throws {
        let dir = try temporaryDirectory()
        let a = dir.appendingPathComponent("a.img").path, b = dir.appendingPathComponent("b.img").path
        let aSize: UInt64 = 5 << 30, bSize = 3 << 20
        let high: UInt64 = (4 << 30) + (512 << 20) + 3  // past 4 GiB, unaligned
        XCTAssertTrue(FileManager.default.createFile(atPath: a, contents: nil))
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: a))
        try h.truncate(atOffset: aSize)
        try h.seek(toOffset: high)
        try h.write(contentsOf: Data("HOST-PAST-4GIB".utf8))
        try h.close()
        try Self.pattern(count: bSize, seed: 0xB).write(to: URL(fileURLWithPath: b))
        let bSum = try checksum(b)

        let g = try boot(["--disk", "\(a),serial=swhv-test-a", "--disk", "\(b),readonly"])
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        XCTAssertEqual(g.run("cat /sys/block/vda/size /sys/block/vdb/size")?.split(separator: "\n"),
                       ["\(aSize / 512)", "\(bSize / 512)"], "sizes in sectors")
        XCTAssertEqual(g.run("cat /sys/block/vda/ro /sys/block/vdb/ro")?.split(separator: "\n"), ["0", "1"])
        XCTAssertEqual(g.run("cat /sys/block/vda/serial"), "swhv-test-a")
        XCTAssertEqual(g.run("dd if=/dev/vda bs=1 skip=\(high) count=14 2>/dev/null"), "HOST-PAST-4GIB")

        let roWrite = g.runWithStatus("printf 'must-not-land' | dd of=/dev/vdb bs=1 seek=4096 conv=notrunc")
        XCTAssertNotNil(roWrite, g.tail)
        XCTAssertNotEqual(roWrite?.status, 0, "writing the read-only disk succeeded: \(roWrite?.output ?? "")")
        XCTAssertEqual(g.runWithStatus("printf 'vda-last-bytes' | dd of=/dev/vda bs=1 seek=\(aSize - 14) conv=notrunc")?.status, 0)
        XCTAssertEqual(g.runWithStatus("sync")?.status, 0)
        reboot(g)

        XCTAssertEqual(try checksum(b), bSum, "the read-only disk changed")
        let r = try FileHandle(forReadingFrom: URL(fileURLWithPath: a))
        defer { try? r.close() }
        XCTAssertEqual(try r.seekToEnd(), aSize, "the writable disk changed size")
        try r.seek(toOffset: aSize - 14)
        XCTAssertEqual(try r.read(upToCount: 14), Data("vda-last-bytes".utf8), "the guest's write past 4 GiB")
        try r.seek(toOffset: high)
        XCTAssertEqual(try r.read(upToCount: 14), Data("HOST-PAST-4GIB".utf8))
    }

    // MARK: Locking

    /// While one swhv has a disk open for writing, a second one using it (writable or read-only)
    /// fails at once with one line naming the disk; read-only users share a disk.
    func testAWritableDiskIsLockedAgainstASecondVM() throws {
        let dir = try temporaryDirectory()
        let img = dir.appendingPathComponent("locked.img").path
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: img))
        let binary = try releaseBinary()

        let holder = try boot(["--disk", img])
        // The disk is opened before the guest runs: any console output means it is held.
        XCTAssertTrue(holder.waitFor(timeout: 60) { $0.isEmpty ? nil : true } ?? false, "no console output; \(holder.tail)")
        for spec in [img, "\(img),readonly"] {
            let second = try runHost(binary, try bootArguments(["--disk", spec]))
            XCTAssertEqual(second.status, 1, "second swhv with --disk \(spec): \(second.stderr)")
            assertOneLine(second.stderr, mentions: ["in use", img])
        }
        XCTAssertTrue(holder.process.isRunning, "the first swhv should keep running; \(holder.tail)")
        kill(holder.process.processIdentifier, SIGKILL)
        _ = holder.waitForExit(timeout: 10)

        // Two read-only users may share it: the second gets as far as running the guest.
        let r1 = try boot(["--disk", "\(img),readonly"]), r2 = try boot(["--disk", "\(img),readonly"])
        for g in [r1, r2] {
            XCTAssertTrue(g.waitFor(timeout: 60) { $0.isEmpty ? nil : true } ?? false, "no console output; \(g.tail)")
            XCTAssertTrue(g.process.isRunning, g.tail)
            kill(g.process.processIdentifier, SIGKILL)
        }
    }

    // MARK: Discard and write zeroes

    /// The next byte at or after `offset` that is data, not a hole (lseek SEEK_DATA); the file
    /// size when only a hole follows.
    func nextData(_ path: String, from offset: Int) throws -> Int {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw TestSetupError("cannot open \(path)") }
        defer { close(fd) }
        let r = lseek(fd, off_t(offset), 3 /* SEEK_DATA */)
        if r < 0 && errno == ENXIO { return Int(lseek(fd, 0, SEEK_END)) }
        return Int(r)
    }

    /// The md5sum of `count` zero bytes.
    func zeroChecksum(_ dir: URL, count: Int) throws -> String {
        let z = dir.appendingPathComponent("zeroes").path
        try Data(count: count).write(to: URL(fileURLWithPath: z))
        return try checksum(z, tool: "md5sum")
    }

    /// The Debian kernel negotiates VIRTIO_BLK_F_DISCARD and VIRTIO_BLK_F_WRITE_ZEROES with the
    /// limits from config space; `blkdiscard` on a range leaves zeroes there, as a hole in the host
    /// file, and nothing else changes. A read-only disk offers neither and its file stays identical.
    func testBlkdiscardInTheGuestPunchesAHoleInTheHostFile() throws {
        let dir = try temporaryDirectory()
        let img = dir.appendingPathComponent("trim.img").path, ro = dir.appendingPathComponent("ro.img").path
        let size = 16 << 20
        var image = Self.pattern(count: size, seed: 0xD15C_A4D)
        try image.write(to: URL(fileURLWithPath: img))
        try Self.pattern(count: 1 << 20, seed: 7).write(to: URL(fileURLWithPath: ro))
        let roSum = try checksum(ro)
        let zeroSum = try zeroChecksum(dir, count: 4 << 20)
        XCTAssertEqual(try nextData(img, from: 1 << 20), 1 << 20, "the image starts fully allocated")

        let g = try boot(["--disk", img, "--disk", "\(ro),readonly"])
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        let q = "/sys/block/vda/queue"
        XCTAssertEqual(g.run("cat \(q)/discard_max_bytes \(q)/write_zeroes_max_bytes \(q)/discard_granularity")?
                        .split(separator: "\n"), ["67108864", "33554432", "4096"],
                       "the guest took max_discard_sectors, max_write_zeroes_sectors and the alignment")
        XCTAssertEqual(g.run("cat /sys/block/vdb/queue/discard_max_bytes /sys/block/vdb/queue/write_zeroes_max_bytes")?
                        .split(separator: "\n"), ["0", "0"], "no discard on the read-only disk")

        XCTAssertEqual(g.runWithStatus("blkdiscard -o \(1 << 20) -l \(4 << 20) /dev/vda")?.status, 0, g.tail)
        XCTAssertEqual(g.run("dd if=/dev/vda bs=1M skip=1 count=4 iflag=direct 2>/dev/null | md5sum")?.prefix(32).description,
                       zeroSum, "the guest reads zeroes from the discarded range")
        XCTAssertNotEqual(g.runWithStatus("blkdiscard /dev/vdb")?.status, 0, "discarding the read-only disk worked")
        XCTAssertEqual(g.runWithStatus("sync")?.status, 0)
        reboot(g)

        Self.replace(&image, at: 1 << 20, with: Data(count: 4 << 20))
        let after = try Data(contentsOf: URL(fileURLWithPath: img))
        XCTAssertTrue(after == image, "host file differs from the expected image: \(Self.firstDifference(after, image))")
        XCTAssertEqual(try nextData(img, from: 1 << 20), 5 << 20, "the discarded 4 MiB are a hole in the host file")
        XCTAssertEqual(try nextData(img, from: 0), 0)
        XCTAssertEqual(try checksum(ro), roSum, "the read-only disk changed")
    }

    /// ext4 in the guest: online discard (mount -o discard) and fstrim give free space back to the
    /// host, and the lazy inode-table initialisation (ext4lazyinit, which uses write-zeroes with
    /// UNMAP) leaves zeroed holes where mkfs left garbage. e2fsck finds the file system clean.
    func testExt4DiscardFstrimAndLazyInodeTableZeroingReachTheHost() throws {
        let dir = try temporaryDirectory()
        let img = dir.appendingPathComponent("lazy.img").path
        let mkfs = try hostTool("mkfs.ext4"), dumpe2fs = try hostTool("dumpe2fs"), e2fsck = try hostTool("e2fsck")
        // Garbage everywhere mkfs does not write; four 16 MiB groups whose inode tables mkfs leaves
        // uninitialised (lazy_itable_init), as on a large disk.
        try Data(repeating: 0xA5, count: 64 << 20).write(to: URL(fileURLWithPath: img))
        let made = try runHost(mkfs, ["-q", "-F", "-b", "4096", "-g", "4096", "-E", "lazy_itable_init=1,nodiscard", img])
        XCTAssertEqual(made.status, 0, made.stderr)

        /// (group, first block, last block, ITABLE_ZEROED) for each group's inode table.
        func groups() throws -> [(Int, Int, Int, Bool)] {
            let out = try runHost(dumpe2fs, [img]).stdout
            var result: [(Int, Int, Int, Bool)] = []
            var zeroed = false, group = -1
            for line in out.split(separator: "\n") {
                if line.hasPrefix("Group ") {
                    group = Int(line.dropFirst(6).prefix { $0.isNumber }) ?? -1
                    zeroed = line.contains("ITABLE_ZEROED")
                } else if let r = line.range(of: "Inode table at ") {
                    let range = line[r.upperBound...].prefix { $0.isNumber || $0 == "-" }.split(separator: "-")
                    if range.count == 2, let a = Int(range[0]), let b = Int(range[1]) { result.append((group, a, b, zeroed)) }
                }
            }
            return result
        }
        let before = try groups()
        XCTAssertEqual(before.count, 4, "dumpe2fs: \(before)")
        guard let last = before.last, before.count == 4 else { return }
        XCTAssertFalse(last.3, "mkfs zeroed group \(last.0)'s inode table: the test would prove nothing")
        let itable = (last.1 * 4096)..<((last.2 + 1) * 4096)
        let allocatedBefore = try nextData(img, from: itable.lowerBound)
        XCTAssertEqual(allocatedBefore, itable.lowerBound)

        let g = try boot(["--disk", img])
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        XCTAssertEqual(g.runWithStatus("mkdir -p /mnt && mount -t ext4 -o discard,init_itable=0 /dev/vda /mnt")?.status, 0, g.tail)
        XCTAssertEqual(g.runWithStatus("dd if=/dev/vda of=/mnt/big bs=1M count=16 2>/dev/null && sync")?.status, 0)
        XCTAssertEqual(g.runWithStatus("rm /mnt/big && sync")?.status, 0)
        let trimmed = g.run("fstrim -v /mnt", timeout: 120)
        XCTAssertTrue(trimmed?.contains("bytes trimmed") ?? false, "fstrim: \(trimmed ?? "timeout"); \(g.tail)")
        // ext4lazyinit starts up to 5 s after the mount, then zeroes one group after another.
        XCTAssertEqual(g.runWithStatus("sleep 10; sync; umount /mnt", timeout: 180)?.status, 0, g.tail)
        reboot(g)

        let fsck = try runHost(e2fsck, ["-fn", img])
        XCTAssertEqual(fsck.status, 0, "e2fsck -fn is not clean:\n\(fsck.stdout)\(fsck.stderr)")
        let after = try groups()
        XCTAssertTrue(after.dropFirst().allSatisfy { $0.3 }, "ext4lazyinit did not finish: \(after)")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: img))
        XCTAssertTrue(bytes[itable].allSatisfy { $0 == 0 }, "group \(last.0)'s inode table is not zero")
        XCTAssertGreaterThanOrEqual(try nextData(img, from: itable.lowerBound), itable.upperBound,
                                    "the inode table was zeroed by writing zeroes, not by WRITE_ZEROES with UNMAP")
        // fstrim gave the free space back: the file holds little more than the journal and metadata.
        var st = stat()
        XCTAssertEqual(stat(img, &st), 0)
        XCTAssertLessThan(Int(st.st_blocks) * 512, 24 << 20, "host allocation after fstrim: \(Int(st.st_blocks) * 512) bytes")
    }

    // MARK: Block devices

    /// A block device (a loop device over a file) as a disk: the guest sees its size, reads what
    /// the host wrote and its writes reach the device; a read-only block device stays bit-identical.
    func testALoopDeviceIsADisk() throws {
        let losetup = try hostTool("losetup")
        let dir = try temporaryDirectory()
        let size = 8 << 20
        var image = Self.pattern(count: size, seed: 0xB10C)
        Self.replace(&image, at: 4096, with: Data("HOST-ON-BLOCKDEV".utf8))
        let backing = dir.appendingPathComponent("loop.img").path, roBacking = dir.appendingPathComponent("ro.img").path
        try image.write(to: URL(fileURLWithPath: backing))
        try Self.pattern(count: 1 << 20, seed: 0xB10D).write(to: URL(fileURLWithPath: roBacking))
        func attach(_ file: String) throws -> String {
            let r = try runHost(losetup, ["--find", "--show", file])
            guard r.status == 0 else { throw TestSetupError("losetup --find --show \(file) failed (root needed): \(r.stderr)") }
            let dev = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            addTeardownBlock { _ = try? Subprocess.run(losetup, ["-d", dev], timeout: 60) }
            return dev
        }
        let dev = try attach(backing), roDev = try attach(roBacking)
        let roSum = try checksum(roDev)

        let g = try boot(["--disk", dev, "--disk", "\(roDev),readonly"])
        XCTAssertTrue(g.waitForShell(), "no shell; \(g.tail)")
        XCTAssertEqual(g.run("cat /sys/block/vda/size /sys/block/vdb/ro")?.split(separator: "\n"), ["\(size / 512)", "1"])
        XCTAssertEqual(g.run("dd if=/dev/vda bs=1 skip=4096 count=16 2>/dev/null"), "HOST-ON-BLOCKDEV")
        XCTAssertEqual(g.runWithStatus("printf 'GUEST-ON-BLOCKDEV' | dd of=/dev/vda bs=1 seek=8192 conv=notrunc")?.status, 0)
        XCTAssertNotEqual(g.runWithStatus("printf 'no' | dd of=/dev/vdb bs=1 seek=0 conv=notrunc")?.status, 0,
                          "writing the read-only block device succeeded")
        XCTAssertEqual(g.runWithStatus("sync")?.status, 0)
        reboot(g)

        let h = try FileHandle(forReadingFrom: URL(fileURLWithPath: dev))
        defer { try? h.close() }
        try h.seek(toOffset: 8192)
        XCTAssertEqual(try h.read(upToCount: 17), Data("GUEST-ON-BLOCKDEV".utf8), "the guest's write on the block device")
        XCTAssertEqual(try checksum(roDev), roSum, "the read-only block device changed")
    }

    // MARK: Bad disks

    func assertOneLine(_ stderr: String, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        let lines = stderr.split(whereSeparator: { $0 == "\n" || $0 == "\r" })
        XCTAssertEqual(lines.count, 1, "expected one line on stderr, got: \(stderr)", file: file, line: line)
        for m in mentions {
            XCTAssertTrue(stderr.contains(m), "stderr should mention '\(m)': \(stderr)", file: file, line: line)
        }
    }

    /// Missing files, directories, empty files, sizes that are not whole sectors and a writable disk
    /// given twice: exit 1 with one line naming the disk and the problem, without starting the guest.
    func testBadDisksFailFastWithOneLine() throws {
        let dir = try temporaryDirectory()
        let binary = try releaseBinary()
        let odd = dir.appendingPathComponent("odd.img").path
        try Data(count: 1000).write(to: URL(fileURLWithPath: odd))
        let empty = dir.appendingPathComponent("empty.img").path
        try Data().write(to: URL(fileURLWithPath: empty))
        let missing = dir.appendingPathComponent("missing.img").path

        let fine = dir.appendingPathComponent("fine.img").path
        try Data(count: 4096).write(to: URL(fileURLWithPath: fine))

        let cases: [([String], [String])] = [
            ([missing], [missing, "No such file"]),
            ([dir.path], [dir.path, "directory"]),
            (["\(dir.path),readonly"], [dir.path, "directory"]),
            ([odd], [odd, "1000 bytes", "512"]),
            ([empty], [empty, "empty"]),
            ([fine, "\(fine),readonly"], [fine, "given more than once"]),
        ]
        for (specs, words) in cases {
            let r = try runHost(binary, try bootArguments(specs.flatMap { ["--disk", $0] }))
            XCTAssertEqual(r.status, 1, "--disk \(specs): \(r.stderr)")
            XCTAssertEqual(r.stdout, "", "--disk \(specs) started the guest")
            assertOneLine(r.stderr, mentions: words)
        }
    }
}
