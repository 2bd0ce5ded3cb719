import XCTest
import Foundation
@testable import LinuxLoader
import VMMemory
import CPUBackend
import SwhvTestSupport

/// Tests against Debian's cloud kernel, fetched by scripts/fetch-guest into fixtures/ (not committed).
final class RealKernelTests: XCTestCase {
    func realKernel() throws -> [UInt8] {
        [UInt8](try Data(contentsOf: URL(fileURLWithPath: try Repository.fixture("vmlinuz-cloud"))))
    }

    func testLoadsDebianCloudKernelInto512MiB() throws {
        let file = try realKernel()
        let m = try GuestMemory(size: 512 << 20)
        let initrd = [UInt8](repeating: 0x42, count: 1 << 20)
        let k = try LinuxLoader.load(kernel: file, initrd: initrd, cmdline: LinuxLoader.defaultCmdline, memory: m)
        let h = k.setupHeader
        guard case .bzImage(let version) = k.format else { return XCTFail("not loaded as bzImage") }
        XCTAssertGreaterThanOrEqual(version, 0x020C)
        XCTAssertNotEqual(h.xloadflags & SetupHeader.xlfKernel64, 0)
        XCTAssertEqual(h.relocatableKernel, 1)
        // Loaded at pref_address, entry 0x200 in, init_size reserved, initrd above it.
        XCTAssertEqual(k.entry.rip, h.prefAddress + 0x200)
        XCTAssertEqual(k.kernel.count, Int(max(UInt64(h.initSize), h.protectedModeBytes)))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(k.initrd).lowerBound, k.kernel.upperBound)
        let pm = h.setupBytes
        XCTAssertEqual(try m.readBytes(at: h.prefAddress, count: 4096), Array(file[pm..<pm + 4096]))
        let lastOff = pm + Int(h.protectedModeBytes) - 4096
        XCTAssertEqual(try m.readBytes(at: h.prefAddress + UInt64(lastOff - pm), count: 4096),
                       Array(file[lastOff..<lastOff + 4096]))
        // The payload the decompressor will read lies inside the loaded image.
        XCTAssertLessThanOrEqual(UInt64(h.payloadOffset) + UInt64(h.payloadLength), h.protectedModeBytes)
        let walk = try walkPageTables(m, cr3: k.entry.cr3, k.entry.rip)
        XCTAssertEqual(walk?.phys, k.entry.rip)
        let bp = BootParams(bytes: try m.readBytes(at: k.bootParams, count: 4096))
        XCTAssertEqual(bp.hdr.cmdlineSize, h.cmdlineSize)
        XCTAssertEqual(try m.readBytes(at: bp.cmdlineAddress, count: LinuxLoader.defaultCmdline.utf8.count),
                       Array(LinuxLoader.defaultCmdline.utf8))
    }

    func testTooLittleRAMForDebianKernel() throws {
        let file = try realKernel()
        let m = try GuestMemory(size: 48 << 20)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: file, initrd: nil, cmdline: "", memory: m),
                             { if case .kernelDoesNotFit = $0 { return true }; return false }, "kernelDoesNotFit")
    }

    func testTruncatedCopiesAlwaysFail() throws {
        let file = try realKernel()
        let h = SetupHeader(parsing: file)
        let m = try GuestMemory(size: 512 << 20)
        let kernelEnd = h.setupBytes + Int(h.protectedModeBytes)
        var lengths = [0, 1, 2, 0x1F1, 0x1FF, 0x200, 0x201, 0x202, 0x205, 0x206, 0x207, 0x230, 0x263, 0x264,
                       0x26B, 0x26C, 0x400, h.setupBytes - 1, h.setupBytes, h.setupBytes + 1, kernelEnd - 1]
        var rng = Synth.Random(state: 2024)
        for _ in 0..<40 { lengths.append(Int(rng.next() % UInt64(kernelEnd))) }
        for n in lengths {
            XCTAssertThrowsError(try LinuxLoader.load(kernel: Array(file.prefix(n)), initrd: nil, cmdline: "", memory: m),
                                 "a \(n)-byte prefix must not load") { error in
                switch error as? LoaderError {
                case .truncated?, .notAKernel?: break
                default: XCTFail("length \(n): unexpected \(error)")
                }
            }
        }
        // Dropping only the appended signature still leaves a complete kernel.
        XCTAssertNoThrow(try LinuxLoader.load(kernel: Array(file.prefix(kernelEnd)), initrd: nil, cmdline: "", memory: m))
    }

    func testCorruptedHeaderBytesNeverCrash() throws {
        let original = try realKernel()
        let m = try GuestMemory(size: 512 << 20)
        var file = original
        var loaded = 0, refused = 0
        for off in SetupHeader.offset..<SetupHeader.end {
            let keep = file[off]
            for v in Set([0x00, 0xFF, keep ^ 0x80, keep &+ 1]) {
                file[off] = v
                do {
                    let k = try LinuxLoader.load(kernel: file, initrd: [1], cmdline: "console=ttyS0", memory: m)
                    // Whatever loaded stays inside RAM below the PCI hole.
                    XCTAssertLessThanOrEqual(k.kernel.upperBound, 512 << 20)
                    XCTAssertGreaterThanOrEqual(k.kernel.lowerBound, 1 << 20)
                    loaded += 1
                } catch {
                    refused += 1
                }
            }
            file[off] = keep
        }
        XCTAssertGreaterThan(loaded, 0)
        XCTAssertGreaterThan(refused, 0)
        // Fields that must be refused when broken.
        func refuse(_ off: Int, _ v: UInt8, _ check: (LoaderError) -> Bool, _ what: String, line: UInt = #line) {
            var f = original; f[off] = v
            XCTAssertLoaderError(try LinuxLoader.load(kernel: f, initrd: nil, cmdline: "", memory: m), check, what, line: line)
        }
        refuse(0x202, 0, { if case .badMagic = $0 { return true }; return false }, "HdrS")
        refuse(0x1FF, 0, { if case .badMagic = $0 { return true }; return false }, "boot_flag")
        refuse(0x207, 1, { if case .protocolTooOld = $0 { return true }; return false }, "version 1.x")
        refuse(0x236, 0, { if case .no64BitEntry = $0 { return true }; return false }, "xloadflags")
        refuse(0x1F1, 0xFF, { $0 == .badSetupSects(255) }, "setup_sects")
        refuse(0x1F7, 0xFF, { if case .truncated = $0 { return true }; return false }, "syssize")
        refuse(0x263, 0x40, { if case .kernelDoesNotFit = $0 { return true }; return false }, "init_size 1 GiB")
    }
}
