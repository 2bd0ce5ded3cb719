import XCTest
import Foundation
@testable import LinuxLoader
import VMMemory
import SwhvTestSupport

/// Host-side unpacking of bzImage payloads. Synthetic payloads are compressed with the same tools
/// and flags the kernel build uses (scripts/Makefile.lib), plus its le32 size trailer.
final class DecompressTests: XCTestCase {
    /// A small vmlinux-like ELF: one 64 KiB segment at 16 MiB with a virtual address, as Linux's has.
    static let elfImage: [UInt8] = {
        var rng = Synth.Random(state: 99)
        // Half random, half repetitive: compressible, but not trivially.
        let data = rng.bytes(0x8000) + (0..<0x8000).map { UInt8(truncatingIfNeeded: $0 / 64) }
        return Synth.elf(entry: 0x100_0000, segments: [
            .init(offset: 0x1000, vaddr: 0xFFFF_FFFF_8100_0000, paddr: 0x100_0000, filesz: 0x10000, memsz: 0x18000),
        ], data: data)
    }()

    /// Runs `command` (a shell pipeline reading stdin, writing stdout) over `input`.
    func run(_ command: String, _ input: [UInt8]) throws -> [UInt8] {
        let r = try Subprocess.run("/bin/sh", ["-c", command], input: .bytes(Data(input)), timeout: 300)
        guard r.status == 0, !r.signalled else { throw TestSetupError("`\(command)` failed: \(r.stderr)") }
        return Array(r.stdoutData)
    }

    func sizeTrailer(_ n: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: n >> (8 * $0)) } }

    /// The kernel's compression commands (CONFIG_KERNEL_*), each with its size trailer. Every tool
    /// is required (scripts/test installs gzip, xz-utils, lz4 and zstd).
    func compressedPayloads() throws -> [(PayloadCompression, [UInt8])] {
        let elf = DecompressTests.elfImage
        var out: [(PayloadCompression, [UInt8])] = []
        let tools: [(PayloadCompression, String, String, Bool)] = [
            (.gzip, "gzip", "gzip -n -f -9", false),
            (.xz, "xz-utils", "xz --check=crc32 --x86 --lzma2=dict=1MiB", true),
            (.lzma, "xz-utils", "lzma -9", true),
            (.lz4, "lz4", "lz4 -l -9 -c -", true),
            (.zstd, "zstd", "zstd -19 -c", true),
        ]
        for (c, package, cmd, trailer) in tools {
            _ = try Repository.tool(String(cmd.prefix { $0 != " " }), package: package)
            let z = try run(cmd, elf)
            out.append((c, trailer ? z + sizeTrailer(elf.count) : z))
        }
        return out
    }

    func testUnpacksEveryKernelCompressionFormat() throws {
        let payloads = try compressedPayloads()
        XCTAssertEqual(payloads.map(\.0), [.gzip, .xz, .lzma, .lz4, .zstd], "every format the kernel build can use")
        for (c, z) in payloads {
            let bz = Synth.bzImage(wrapping: z)
            let p = try LinuxLoader.payload(ofBzImage: bz)
            XCTAssertEqual(p.compression, c)
            XCTAssertEqual(p.uncompressedSize, DecompressTests.elfImage.count, "\(c)")
            XCTAssertEqual(try LinuxLoader.extractVmlinux(bzImage: bz), DecompressTests.elfImage, "\(c) round trip")

            // Loading with unpackOnHost enters the ELF directly, with the bzImage's header in the zero page.
            let m = try GuestMemory(size: 64 << 20)
            try m.fill(0xCC, at: 0x101_0000, length: 0x8000)
            let k = try LinuxLoader.load(kernel: bz, initrd: [9], cmdline: "quiet", memory: m, unpackOnHost: true)
            XCTAssertEqual(k.format, .unpackedBzImage(protocolVersion: 0x020F, compression: c))
            XCTAssertEqual(k.entry.rip, 0x100_0000)
            XCTAssertEqual(try m.readBytes(at: 0x100_0000, count: 0x10000), Array(DecompressTests.elfImage[0x1000..<0x11000]))
            XCTAssertEqual(try m.readBytes(at: 0x101_0000, count: 0x8000), [UInt8](repeating: 0, count: 0x8000), "bss")
            let bp = BootParams(bytes: try m.readBytes(at: 0x7000, count: 4096))
            XCTAssertEqual(bp.hdr.version, 0x020F)
            XCTAssertEqual(bp.hdr.xloadflags, 0x7F)
            XCTAssertEqual(bp.hdr.typeOfLoader, 0xFF)
            XCTAssertEqual(bp.ramdiskSize, 1)
        }
    }

    func testCorruptPayloadsFailCleanly() throws {
        for (c, z) in try compressedPayloads() {
            var rng = Synth.Random(state: UInt64(z.count))
            // Cut short: every format must notice (the size no longer matches, or the stream ends early).
            for cut in [8, z.count / 3, z.count - 5] where cut > 8 && cut < z.count {
                let short = Array(z.prefix(cut)) + sizeTrailer(DecompressTests.elfImage.count)
                XCTAssertThrowsError(try LinuxLoader.extractVmlinux(bzImage: Synth.bzImage(wrapping: short)),
                                     "\(c) cut at \(cut)")
            }
            // Flipped bytes: an error, or (formats without checksums) a same-sized but different image.
            for _ in 0..<20 {
                var bad = z
                let i = 6 + Int(rng.next() % UInt64(max(1, bad.count - 10)))
                bad[i] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                do {
                    let out = try LinuxLoader.extractVmlinux(bzImage: Synth.bzImage(wrapping: bad))
                    XCTAssertEqual(out.count, DecompressTests.elfImage.count)
                } catch {
                    guard case .decompression = error else { return XCTFail("\(c): unexpected \(error)") }
                }
            }
            // A size trailer that lies.
            if c != .gzip {
                let lying = Array(z.dropLast(4)) + sizeTrailer(DecompressTests.elfImage.count + 1)
                XCTAssertLoaderError(try LinuxLoader.extractVmlinux(bzImage: Synth.bzImage(wrapping: lying)),
                                     { if case .decompression = $0 { return true }; return false }, "\(c) size mismatch")
            }
        }
    }

    func testUnsupportedAndUnknownPayloads() throws {
        let bz2 = Synth.bzImage(wrapping: Array("BZh91AY&SY".utf8) + [UInt8](repeating: 0, count: 32) + sizeTrailer(100))
        XCTAssertEqual(try LinuxLoader.payload(ofBzImage: bz2).compression, .bzip2)
        XCTAssertLoaderError(try LinuxLoader.extractVmlinux(bzImage: bz2),
                             { $0.description.contains("bzip2") && $0.description.contains("not supported") }, "bzip2 unsupported")
        let junk = Synth.bzImage(wrapping: [0x12, 0x34, 0x56, 0x78] + [UInt8](repeating: 0, count: 32))
        XCTAssertLoaderError(try LinuxLoader.extractVmlinux(bzImage: junk),
                             { $0.description.contains("unknown payload compression") }, "unknown")
        // A payload range outside the kernel.
        var out = Synth.bzImage(wrapping: [0x1F, 0x8B, 0, 0, 0, 0, 0, 0, 0, 0])
        writeLE(UInt32.max, 0x24C, into: &out)
        XCTAssertLoaderError(try LinuxLoader.extractVmlinux(bzImage: out),
                             { if case .decompression = $0 { return true }; return false }, "payload outside")
        // An absurd size trailer is refused before allocating.
        let huge = Synth.bzImage(wrapping: [0x02, 0x21, 0x4C, 0x18, 1, 0, 0, 0, 0] + sizeTrailer(0xFFFF_FFFF))
        XCTAssertLoaderError(try LinuxLoader.extractVmlinux(bzImage: huge),
                             { $0.description.contains("MiB uncompressed") }, "size cap")
        // Not an ELF inside.
        let z = try run("gzip -n -9", [UInt8](repeating: 0x41, count: 5000))
        XCTAssertLoaderError(try LinuxLoader.extractVmlinux(bzImage: Synth.bzImage(wrapping: z)),
                             { $0.description.contains("not an ELF") }, "not an ELF")
    }

    func testDebianKernelUnpacksOnHost() throws {
        let file = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try Repository.fixture("vmlinuz-cloud"))))
        let p = try LinuxLoader.payload(ofBzImage: file)
        XCTAssertEqual(p.compression, .lz4)
        let vmlinux = try LinuxLoader.extractVmlinux(bzImage: file)
        XCTAssertEqual(vmlinux.count, p.uncompressedSize)
        let m = try GuestMemory(size: 512 << 20)
        let k = try LinuxLoader.load(kernel: file, initrd: [1, 2, 3], cmdline: LinuxLoader.defaultCmdline,
                                     memory: m, unpackOnHost: true)
        XCTAssertEqual(k.format, .unpackedBzImage(protocolVersion: 0x020F, compression: .lz4))
        // Linux's vmlinux enters at phys_startup_64, its first byte at LOAD_PHYSICAL_ADDR.
        XCTAssertEqual(k.entry.rip, 0x100_0000)
        XCTAssertEqual(k.kernel.lowerBound, 0x100_0000)
        let textOffset = Int(readLE(vmlinux, 64 + 8, as: UInt64.self))  // first program header's p_offset
        XCTAssertEqual(try m.readBytes(at: 0x100_0000, count: 4096), Array(vmlinux[textOffset..<textOffset + 4096]))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(k.initrd).lowerBound, k.kernel.upperBound)

        // Corrupt the compressed stream: never a crash.
        var rng = Synth.Random(state: 5)
        for _ in 0..<6 {
            var bad = file
            let i = p.range.lowerBound + 8 + Int(rng.next() % UInt64(p.range.count - 16))
            bad[i] ^= 0x5A
            do { _ = try LinuxLoader.extractVmlinux(bzImage: bad) } catch { XCTAssertFalse(error.description.isEmpty) }
        }
    }
}
