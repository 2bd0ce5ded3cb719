import XCTest
@testable import LinuxLoader
import VMMemory
import CPUBackend

final class BzImageTests: XCTestCase {
    let mem256: UInt64 = 256 << 20

    func load(_ kernel: [UInt8], initrd: [UInt8]? = nil, cmdline: String = LinuxLoader.defaultCmdline,
              memory: GuestMemory, extra: [E820Entry] = [], rsdp: UInt64? = nil) throws -> LoadedKernel {
        try LinuxLoader.load(kernel: kernel, initrd: initrd, cmdline: cmdline, memory: memory,
                             extraE820: extra, acpiRSDP: rsdp)
    }

    func testEntryStateIs64BitBootProtocol() throws {
        let m = try GuestMemory(size: mem256)
        let k = try load(Synth.bzImage(), memory: m)
        let e = k.entry
        XCTAssertEqual(k.format, .bzImage(protocolVersion: 0x020F))
        XCTAssertEqual(e.rip, 0x100_0200, "64-bit entry = load address + 0x200")
        XCTAssertEqual(e.rsi, 0x7000, "rsi points at the zero page")
        XCTAssertEqual(k.bootParams, 0x7000)
        XCTAssertEqual(e.cr0 & 0x8000_0001, 0x8000_0001, "protected mode and paging on")
        XCTAssertEqual(e.cr4 & 0x20, 0x20, "PAE")
        XCTAssertEqual(e.efer & 0x500, 0x500, "LME and LMA")
        XCTAssertEqual(e.rflags & 0x200, 0, "interrupts off")
        XCTAssertEqual(e.cs.selector, 0x10)
        XCTAssertTrue(e.cs.l); XCTAssertFalse(e.cs.db); XCTAssertTrue(e.cs.present); XCTAssertEqual(e.cs.type, 0xB)
        for s in [e.ds, e.es, e.ss, e.fs, e.gs] {
            XCTAssertEqual(s.selector, 0x18); XCTAssertEqual(s.type, 0x3); XCTAssertTrue(s.present)
            XCTAssertEqual(s.base, 0)
        }
        XCTAssertEqual(e.idt.limit, 0, "empty IDT")
        // The stack is usable RAM below 1 MiB, clear of every structure the loader wrote.
        XCTAssertTrue(e.rsp > 0x7000 + 4096 && e.rsp < 0x9000, "rsp \(hex(e.rsp))")
        XCTAssertEqual(e.rsp % 16, 0)
        // The protected-mode kernel is at the load address, byte for byte.
        let loaded = try m.readBytes(at: 0x100_0000, count: 0x10000)
        XCTAssertEqual(loaded, (0..<0x10000).map(Synth.payloadByte))
        XCTAssertEqual(k.kernel, 0x100_0000..<0x100_0000 + 0x40_0000, "load address + init_size")
    }

    func testBootParamsFieldsAtTheirOffsets() throws {
        let m = try GuestMemory(size: mem256)
        let file = Synth.bzImage()
        let initrd = [UInt8](repeating: 0x5A, count: 10_000)
        let k = try load(file, initrd: initrd, memory: m, rsdp: 0xE_0000)
        let zp = try m.readBytes(at: 0x7000, count: 4096)
        func u<T: FixedWidthInteger & UnsignedInteger>(_ off: Int, _: T.Type) -> T { readLE(zp, off) }
        XCTAssertEqual(u(0x1FE, UInt16.self), 0xAA55)
        XCTAssertEqual(u(0x202, UInt32.self), 0x5372_6448)
        XCTAssertEqual(u(0x206, UInt16.self), 0x020F)
        XCTAssertEqual(u(0x210, UInt8.self), 0xFF, "type_of_loader")
        XCTAssertEqual(u(0x211, UInt8.self) & 0x81, 0x81, "LOADED_HIGH | CAN_USE_HEAP")
        XCTAssertEqual(u(0x224, UInt16.self), 0xFE00, "heap_end_ptr")
        XCTAssertEqual(u(0x228, UInt32.self), 0x20000, "cmd_line_ptr")
        XCTAssertEqual(u(0x0C8, UInt32.self), 0, "ext_cmd_line_ptr")
        XCTAssertEqual(UInt64(u(0x218, UInt32.self)), k.initrd?.lowerBound, "ramdisk_image")
        XCTAssertEqual(u(0x21C, UInt32.self), 10_000, "ramdisk_size")
        XCTAssertEqual(u(0x0C0, UInt32.self), 0, "ext_ramdisk_image")
        XCTAssertEqual(u(0x0C4, UInt32.self), 0, "ext_ramdisk_size")
        XCTAssertEqual(u(0x070, UInt64.self), 0xE_0000, "acpi_rsdp_addr")
        // Fields the kernel set are copied unchanged from the file.
        for (off, size) in [(0x1F1, 1), (0x1F4, 4), (0x230, 4), (0x234, 1), (0x236, 2), (0x238, 4),
                            (0x248, 4), (0x24C, 4), (0x258, 8), (0x260, 4)] {
            XCTAssertEqual(Array(zp[off..<off + size]), Array(file[off..<off + size]), "header byte \(hex(UInt64(off)))")
        }
        XCTAssertEqual(Int(u(0x1E8, UInt8.self)), k.e820.count, "e820_entries")
        XCTAssertEqual(u(0x2D0, UInt64.self), 0, "first e820 entry starts at 0")
        XCTAssertEqual(u(0x2D8, UInt64.self), 0x9FC00)
        XCTAssertEqual(u(0x2E0, UInt32.self), 1)
        // The typed view decodes what was written.
        let bp = BootParams(bytes: zp)
        XCTAssertEqual(bp.e820Table, k.e820)
        XCTAssertEqual(bp.ramdiskAddress, k.initrd?.lowerBound)
        XCTAssertEqual(bp.cmdlineAddress, 0x20000)
        XCTAssertEqual(bp.hdr, k.setupHeader)
        XCTAssertEqual(bp.serialized(), zp, "serialise(decode(page)) reproduces the page")
    }

    func testE820MapForLowAndHighRAM() throws {
        let m = try GuestMemory(size: 512 << 20)
        let k = try load(Synth.bzImage(), memory: m)
        XCTAssertEqual(k.e820, [
            E820Entry(addr: 0, size: 0x9FC00, type: E820Entry.ram),
            E820Entry(addr: 0x9FC00, size: 0x10_0000 - 0x9FC00, type: E820Entry.reserved),
            E820Entry(addr: 0x10_0000, size: (512 << 20) - 0x10_0000, type: E820Entry.ram),
        ])
        // 5 GiB: 3 GiB below the PCI hole, 2 GiB from 4 GiB up. Extra entries are merged in address order.
        let big = try GuestMemory(size: 5 << 30)
        let acpi = E820Entry(addr: 0xE_0000, size: 0x2_0000, type: E820Entry.acpi)
        let mmio = E820Entry(addr: 0xE000_0000, size: 0x1000_0000, type: E820Entry.reserved)
        let k2 = try load(Synth.bzImage(), memory: big, extra: [mmio, acpi])
        XCTAssertEqual(k2.e820, [
            E820Entry(addr: 0, size: 0x9FC00, type: E820Entry.ram),
            E820Entry(addr: 0x9FC00, size: 0x10_0000 - 0x9FC00, type: E820Entry.reserved),
            acpi,
            E820Entry(addr: 0x10_0000, size: 0xC000_0000 - 0x10_0000, type: E820Entry.ram),
            mmio,
            E820Entry(addr: 1 << 32, size: 2 << 30, type: E820Entry.ram),
        ])
        let table = BootParams(bytes: try big.readBytes(at: 0x7000, count: 4096)).e820Table
        XCTAssertEqual(table, k2.e820)
    }

    func testTooManyE820Entries() throws {
        let m = try GuestMemory(size: mem256)
        let extra = (0..<126).map { E820Entry(addr: 0xD000_0000 + UInt64($0) * 0x1000, size: 0x1000, type: E820Entry.reserved) }
        // 3 standard + 125 = 128 fits; 3 + 126 does not.
        XCTAssertNoThrow(try load(Synth.bzImage(), memory: m, extra: Array(extra.prefix(125))))
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: nil, cmdline: "", memory: m,
                                                  extraE820: extra),
                             { if case .tooManyE820Entries(129) = $0 { return true }; return false }, "tooManyE820Entries")
    }

    func testPageTablesIdentityMapFirst4GiB() throws {
        let m = try GuestMemory(size: mem256)
        let k = try load(Synth.bzImage(), memory: m)
        XCTAssertEqual(k.entry.cr3 & 0xFFF, 0)
        for va: UInt64 in [0, 0x7000, 0x100_0200, 0x0FFF_FFFF, 0x4000_1234, 0x8765_4321, 0xBFFF_FFFF,
                           0xC000_0000, 0xFEE0_0000, 0xFFFF_FFFF] {
            let t = try walkPageTables(m, cr3: k.entry.cr3, va)
            XCTAssertEqual(t?.phys, va, "identity map at \(hex(va))")
            XCTAssertEqual(t?.writable, true, "writable at \(hex(va))")
        }
        XCTAssertNil(try walkPageTables(m, cr3: k.entry.cr3, 1 << 32), "nothing is mapped past 4 GiB")
        // The tables themselves lie inside RAM below 1 MiB, clear of the zero page and cmdline.
        XCTAssertTrue(k.entry.cr3 >= 0x8000 && k.entry.cr3 < 0x20000)
    }

    func testGDTDescriptorsMatchSegments() throws {
        let m = try GuestMemory(size: mem256)
        let k = try load(Synth.bzImage(), memory: m)
        let gdt = k.entry.gdt
        XCTAssertEqual(gdt.limit, 31, "four 8-byte descriptors")
        func desc(_ sel: UInt16) throws -> UInt64 { try m.read(at: gdt.base + UInt64(sel & ~7)) }
        let code = try desc(k.entry.cs.selector)
        let data = try desc(k.entry.ds.selector)
        XCTAssertEqual(try desc(0), 0, "null descriptor")
        // Access byte: present, DPL 0, code/data; type.
        XCTAssertEqual((code >> 40) & 0xFF, 0x9B, "present execute/read code")
        XCTAssertEqual((data >> 40) & 0xFF, 0x93, "present read/write data")
        XCTAssertEqual((code >> 53) & 1, 1, "code descriptor has L")
        XCTAssertEqual((code >> 54) & 1, 0, "L code must have D clear")
        XCTAssertEqual((data >> 54) & 1, 1, "data descriptor has D/B")
        XCTAssertEqual((code >> 55) & 1, 1, "4 KiB granularity")
        // Limit 0xFFFFF pages = 4 GiB, base 0, as the hidden state says.
        for d in [code, data] {
            XCTAssertEqual(d & 0xFFFF | (d >> 32) & 0xF_0000, 0xF_FFFF)
            XCTAssertEqual((d >> 16) & 0xFF_FFFF | (d >> 32) & 0xFF00_0000, 0)
        }
        XCTAssertEqual(k.entry.cs.limit, 0xFFFF_FFFF)
    }

    func testCmdlinePlacementAndLimit() throws {
        let m = try GuestMemory(size: mem256)
        let cmd = "console=ttyS0 root=/dev/vda rw init=/bin/sh"
        let k = try load(Synth.bzImage(), cmdline: cmd, memory: m)
        XCTAssertEqual(k.cmdline, 0x20000..<0x20000 + UInt64(cmd.utf8.count))
        XCTAssertEqual(try m.readBytes(at: 0x20000, count: cmd.utf8.count + 1), Array(cmd.utf8) + [0])
        // A longer previous command line leaves no tail behind.
        _ = try load(Synth.bzImage(), cmdline: String(repeating: "x", count: 500), memory: m)
        _ = try load(Synth.bzImage(), cmdline: "short", memory: m)
        XCTAssertEqual(try m.readBytes(at: 0x20000, count: 7), Array("short".utf8) + [0, 0])

        var o = Synth.BzOptions(); o.cmdlineSize = 100
        XCTAssertNoThrow(try load(Synth.bzImage(o), cmdline: String(repeating: "a", count: 100), memory: m))
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(o), initrd: nil,
                                                  cmdline: String(repeating: "a", count: 101), memory: m),
                             { $0 == .cmdlineTooLong(length: 101, max: 100) }, "cmdlineTooLong")
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: nil,
                                                  cmdline: String(repeating: "b", count: 5000), memory: m),
                             { $0 == .cmdlineTooLong(length: 5000, max: 0x7FF) }, "cmdlineTooLong")
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: nil, cmdline: "a\0b", memory: m),
                             { $0 == .cmdlineContainsNul }, "cmdlineContainsNul")
    }

    func testInitrdPlacedHighPageAlignedAndCopied() throws {
        let m = try GuestMemory(size: 512 << 20)
        var rng = Synth.Random(state: 42)
        let initrd = rng.bytes(3 * 4096 + 123)
        let k = try load(Synth.bzImage(), initrd: initrd, memory: m)
        let r = try XCTUnwrap(k.initrd)
        XCTAssertEqual(r.lowerBound % 4096, 0)
        XCTAssertEqual(r.count, initrd.count)
        XCTAssertLessThanOrEqual(r.upperBound, 512 << 20)
        XCTAssertGreaterThan(r.lowerBound + 4096, (512 << 20) - UInt64(initrd.count), "as high as possible")
        XCTAssertGreaterThanOrEqual(r.lowerBound, k.kernel.upperBound)
        XCTAssertEqual(try m.readBytes(at: r.lowerBound, count: initrd.count), initrd)

        // initrd_addr_max caps the placement below the end of RAM.
        var o = Synth.BzOptions(); o.initrdAddrMax = 0x0FFF_FFFF
        let k2 = try load(Synth.bzImage(o), initrd: initrd, memory: m)
        let r2 = try XCTUnwrap(k2.initrd)
        XCTAssertLessThanOrEqual(r2.upperBound, 0x1000_0000)
        XCTAssertGreaterThan(r2.lowerBound + 4096, 0x1000_0000 - UInt64(initrd.count))

        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: [], cmdline: "", memory: m),
                             { $0 == .emptyInitrd }, "emptyInitrd")
    }

    func testInitrdLargerThanRAMAndNotOverlappingKernel() throws {
        let m = try GuestMemory(size: 64 << 20)
        // Kernel at 16 MiB reserves 4 MiB (init_size): 20..64 MiB is free: 44 MiB.
        let fits = [UInt8](repeating: 1, count: 44 << 20)
        let k = try load(Synth.bzImage(), initrd: fits, memory: m)
        XCTAssertEqual(k.initrd?.lowerBound, 20 << 20)
        let tooBig = [UInt8](repeating: 1, count: (44 << 20) + 1)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: tooBig, cmdline: "", memory: m),
                             { if case .initrdDoesNotFit(let s, 20 << 20, 64 << 20) = $0 { return s == (44 << 20) + 1 }; return false },
                             "initrdDoesNotFit")
        let huge = [UInt8](repeating: 1, count: 65 << 20)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: huge, cmdline: "", memory: m),
                             { if case .initrdDoesNotFit = $0 { return $0.description.contains("65 MiB") }; return false },
                             "initrdDoesNotFit mentioning 65 MiB")
    }

    func testNothingIsWrittenWhenLoadingFails() throws {
        let m = try GuestMemory(size: 64 << 20)
        let huge = [UInt8](repeating: 1, count: 65 << 20)
        XCTAssertThrowsError(try load(Synth.bzImage(), initrd: huge, memory: m))
        XCTAssertEqual(try m.readBytes(at: 0x100_0000, count: 16), [UInt8](repeating: 0, count: 16))
        XCTAssertEqual(try m.read(UInt16.self, at: 0x7000 + 0x1FE), 0)
    }

    func testKernelLargerThanRAM() throws {
        let m = try GuestMemory(size: 64 << 20)
        var o = Synth.BzOptions(); o.initSize = 100 << 20
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(o), initrd: nil, cmdline: "", memory: m),
                             { $0 == .kernelDoesNotFit(loadAddress: 16 << 20, needed: 100 << 20, ramEnd: 64 << 20)
                                 && $0.description.contains("100 MiB") && $0.description.contains("64 MiB") },
                             "kernelDoesNotFit with sizes in MiB")
        // A small guest cannot even hold the kernel at its preferred address.
        let tiny = try GuestMemory(size: 8 << 20)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: nil, cmdline: "", memory: tiny),
                             { if case .kernelDoesNotFit = $0 { return true }; return false }, "kernelDoesNotFit")
    }

    func testRelocationWhenPrefAddressUnusable() throws {
        let m = try GuestMemory(size: 256 << 20)
        // pref_address 0 is unusable; relocatable: 16 MiB rounded up to kernel_alignment (64 MiB).
        var o = Synth.BzOptions(); o.prefAddress = 0; o.kernelAlignment = 0x400_0000
        let k = try load(Synth.bzImage(o), memory: m)
        XCTAssertEqual(k.entry.rip, 0x400_0200)
        XCTAssertEqual(try m.readBytes(at: 0x400_0000, count: 4), (0..<4).map(Synth.payloadByte))
        // Non-relocatable kernels must go exactly at pref_address.
        var n = Synth.BzOptions(); n.relocatable = 0; n.prefAddress = 0x2000_0000
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(n), initrd: nil, cmdline: "", memory: m),
                             { if case .kernelDoesNotFit(0x2000_0000, _, _) = $0 { return true }; return false },
                             "kernelDoesNotFit at pref_address")
        n.prefAddress = 0x200_0000
        XCTAssertEqual(try load(Synth.bzImage(n), memory: m).entry.rip, 0x200_0200)
        var bad = Synth.BzOptions(); bad.kernelAlignment = 0x30_0000
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(bad), initrd: nil, cmdline: "", memory: m),
                             { if case .badHeader = $0 { return true }; return false }, "badHeader for alignment")
    }

    func testTrailerAfterSyssizeIsIgnored() throws {
        let m = try GuestMemory(size: 256 << 20)
        var o = Synth.BzOptions(); o.trailer = 1472
        _ = try load(Synth.bzImage(o), memory: m)
        XCTAssertEqual(try m.readBytes(at: 0x100_0000 + 0x10000, count: 4), [0, 0, 0, 0], "signature not loaded")
    }

    // MARK: Malformed images

    func testEmptyAndRandomFilesAreNotKernels() throws {
        let m = try GuestMemory(size: 64 << 20)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: [], initrd: nil, cmdline: "", memory: m),
                             { $0 == .notAKernel(size: 0) && $0.description == "kernel file is empty" }, "notAKernel")
        var rng = Synth.Random(state: 7)
        for n in [1, 3, 4, 100, 0x1F1, 0x200, 0x264, 4096, 65536] {
            let junk = rng.bytes(n)
            XCTAssertLoaderError(try LinuxLoader.load(kernel: junk, initrd: nil, cmdline: "", memory: m),
                                 { $0 == .notAKernel(size: n) }, "notAKernel for \(n) random bytes")
        }
    }

    func testTruncatedBzImage() throws {
        let m = try GuestMemory(size: 64 << 20)
        let full = Synth.bzImage()
        // Header present, payload cut.
        let cut = Array(full.prefix(full.count - 1))
        XCTAssertLoaderError(try LinuxLoader.load(kernel: cut, initrd: nil, cmdline: "", memory: m),
                             { $0 == .truncated(what: "setup + protected-mode kernel (syssize)",
                                                needed: UInt64(full.count), have: UInt64(full.count - 1)) },
                             "truncated payload")
        // Every shorter length is an error too, never a crash.
        for n in stride(from: 0, to: full.count, by: 97) {
            XCTAssertThrowsError(try load(Array(full.prefix(n)), memory: m), "length \(n)")
        }
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Array(full.prefix(0x230)), initrd: nil, cmdline: "", memory: m),
                             { if case .truncated(what: "the setup header", _, _) = $0 { return true }; return false },
                             "truncated header")
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Array(full.prefix(0x400)), initrd: nil, cmdline: "", memory: m),
                             { if case .truncated(what: "the 4-sector setup code", 0xA00, 0x400) = $0 { return true }; return false },
                             "truncated setup")
    }

    func testBadMagic() throws {
        let m = try GuestMemory(size: 64 << 20)
        var noHdrS = Synth.bzImage(); noHdrS[0x203] = 0x00
        XCTAssertLoaderError(try LinuxLoader.load(kernel: noHdrS, initrd: nil, cmdline: "", memory: m),
                             { if case .badMagic(let f, _, 0x5372_6448) = $0 { return f.contains("0x202") }; return false },
                             "badMagic HdrS")
        var noFlag = Synth.bzImage(); noFlag[0x1FE] = 0x00
        XCTAssertLoaderError(try LinuxLoader.load(kernel: noFlag, initrd: nil, cmdline: "", memory: m),
                             { if case .badMagic(let f, 0xAA00, 0xAA55) = $0 { return f.contains("boot_flag") }; return false },
                             "badMagic boot_flag")
    }

    func testProtocolTooOldAndNo64BitEntry() throws {
        let m = try GuestMemory(size: 64 << 20)
        var o = Synth.BzOptions(); o.version = 0x020B
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(o), initrd: nil, cmdline: "", memory: m),
                             { $0 == .protocolTooOld(version: 0x020B) && $0.description.contains("2.11") }, "protocolTooOld")
        var x = Synth.BzOptions(); x.xloadflags = 0x02
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(x), initrd: nil, cmdline: "", memory: m),
                             { $0 == .no64BitEntry(xloadflags: 0x02) }, "no64BitEntry")
    }

    func testSetupSects() throws {
        let m = try GuestMemory(size: 64 << 20)
        // setup_sects 0 means 4.
        var z = Synth.BzOptions(); z.setupSects = 0
        XCTAssertEqual(try load(Synth.bzImage(z), memory: m).entry.rip, 0x100_0200)
        XCTAssertEqual(try m.readBytes(at: 0x100_0000, count: 4), (0..<4).map(Synth.payloadByte))
        // 200 sectors claims a 100 KiB setup: no kernel has that; with a short file it must not be trusted.
        var big = Synth.bzImage(); big[0x1F1] = 200
        XCTAssertLoaderError(try LinuxLoader.load(kernel: big, initrd: nil, cmdline: "", memory: m),
                             { $0 == .badSetupSects(200) }, "badSetupSects")
        var over = Synth.bzImage(); over[0x1F1] = 255
        XCTAssertLoaderError(try LinuxLoader.load(kernel: over, initrd: nil, cmdline: "", memory: m),
                             { $0 == .badSetupSects(255) }, "badSetupSects 255")
        // 64 sectors is legal, but this file is shorter than that.
        var sixtyFour = Synth.bzImage(); sixtyFour[0x1F1] = 64
        XCTAssertLoaderError(try LinuxLoader.load(kernel: sixtyFour, initrd: nil, cmdline: "", memory: m),
                             { if case .truncated = $0 { return true }; return false }, "truncated for 64 sectors")
    }

    func testHeaderFieldsThatCannotBeTrue() throws {
        let m = try GuestMemory(size: 64 << 20)
        var s = Synth.bzImage(); writeLE(UInt32(0), 0x1F4, into: &s)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: s, initrd: nil, cmdline: "", memory: m),
                             { if case .badHeader = $0 { return true }; return false }, "syssize 0")
        var i = Synth.bzImage(); writeLE(UInt32(0), 0x260, into: &i)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: i, initrd: nil, cmdline: "", memory: m),
                             { if case .badHeader = $0 { return true }; return false }, "init_size 0")
        var j = Synth.bzImage(); j[0x201] = 0x10
        XCTAssertLoaderError(try LinuxLoader.load(kernel: j, initrd: nil, cmdline: "", memory: m),
                             { if case .badHeader = $0 { return true }; return false }, "header ends before init_size")
        var huge = Synth.bzImage(); writeLE(UInt32.max, 0x1F4, into: &huge)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: huge, initrd: nil, cmdline: "", memory: m),
                             { if case .truncated = $0 { return true }; return false }, "syssize beyond file")
        var far = Synth.bzImage(); writeLE(UInt64.max - 0x1F_FFFF, 0x258, into: &far)
        // pref_address near 2^64 must not overflow; the relocatable kernel falls back to 16 MiB.
        XCTAssertEqual(try load(far, memory: m).entry.rip, 0x100_0200)
    }

    func testTooSmallGuest() throws {
        let m = try GuestMemory(size: 1 << 20)
        XCTAssertLoaderError(try LinuxLoader.load(kernel: Synth.bzImage(), initrd: nil, cmdline: "", memory: m),
                             { if case .kernelDoesNotFit = $0 { return true }; return false }, "kernelDoesNotFit in 1 MiB")
    }
}
