import XCTest
@testable import LinuxLoader
import VMMemory
import CPUBackend

final class ELFTests: XCTestCase {
    let kbase: UInt64 = 0xFFFF_FFFF_8100_0000

    /// A vmlinux-like image: text at 16 MiB (virtual 0xffffffff81000000), data + bss after it.
    func vmlinux(entry: UInt64? = nil) -> [UInt8] {
        let data = (0..<0x3000).map { UInt8(truncatingIfNeeded: $0 * 13 + 1) }
        return Synth.elf(entry: entry ?? kbase + 0x100, segments: [
            .init(offset: 0x1000, vaddr: kbase, paddr: 0x100_0000, filesz: 0x2000, memsz: 0x2000),
            .init(type: 4, offset: 0, vaddr: 0, paddr: 0, filesz: 0, memsz: 0),  // PT_NOTE, ignored
            .init(offset: 0x3000, vaddr: kbase + 0x20_0000, paddr: 0x120_0000, filesz: 0x1000, memsz: 0x5000),
        ], data: data)
    }

    func testLoadsSegmentsZeroesBssAndTranslatesEntry() throws {
        let m = try GuestMemory(size: 128 << 20)
        try m.fill(0xAA, at: 0x120_0000, length: 0x8000)  // stale bytes where the bss goes
        let file = vmlinux()
        let k = try LinuxLoader.load(kernel: file, initrd: [1, 2, 3], cmdline: "console=ttyS0", memory: m)
        XCTAssertEqual(k.format, .elf)
        XCTAssertEqual(k.entry.rip, 0x100_0100, "virtual e_entry translated through its segment")
        XCTAssertEqual(k.entry.rsi, 0x7000)
        XCTAssertEqual(k.kernel, 0x100_0000..<0x120_5000)
        XCTAssertEqual(try m.readBytes(at: 0x100_0000, count: 0x2000), Array(file[0x1000..<0x3000]))
        XCTAssertEqual(try m.readBytes(at: 0x120_0000, count: 0x1000), Array(file[0x3000..<0x4000]))
        XCTAssertEqual(try m.readBytes(at: 0x120_1000, count: 0x4000), [UInt8](repeating: 0, count: 0x4000), "bss zeroed")
        XCTAssertEqual(try m.readBytes(at: 0x120_5000, count: 4), [0xAA, 0xAA, 0xAA, 0xAA], "nothing past memsz")
        let bp = BootParams(bytes: try m.readBytes(at: 0x7000, count: 4096))
        XCTAssertEqual(bp.hdr.bootFlag, 0xAA55)
        XCTAssertEqual(bp.hdr.header, 0x5372_6448)
        XCTAssertEqual(bp.hdr.typeOfLoader, 0xFF)
        XCTAssertEqual(bp.cmdlineAddress, 0x20000)
        XCTAssertEqual(bp.ramdiskSize, 3)
        XCTAssertGreaterThanOrEqual(bp.ramdiskAddress, 0x120_5000)
        XCTAssertEqual(try m.readBytes(at: bp.ramdiskAddress, count: 3), [1, 2, 3])
    }

    func testPhysicalEntryAsLinuxVmlinuxHasIt() throws {
        // Linux's vmlinux says ENTRY(phys_startup_64): e_entry is already physical.
        let m = try GuestMemory(size: 128 << 20)
        let k = try LinuxLoader.load(kernel: vmlinux(entry: 0x100_0000), initrd: nil, cmdline: "", memory: m)
        XCTAssertEqual(k.entry.rip, 0x100_0000)
    }

    func testRejectsOtherArchitecturesAndBadHeaders() throws {
        let m = try GuestMemory(size: 128 << 20)
        func fails(_ file: [UInt8], _ what: String, _ check: (LoaderError) -> Bool, line: UInt = #line) {
            XCTAssertLoaderError(try LinuxLoader.load(kernel: file, initrd: nil, cmdline: "", memory: m), check, what, line: line)
        }
        let seg = Synth.ElfSegment(offset: 0x1000, vaddr: 0x100_0000, paddr: 0x100_0000, filesz: 0x100, memsz: 0x100)
        let data = [UInt8](repeating: 0x90, count: 0x100)
        fails(Array(vmlinux().prefix(40)), "short header") { if case .truncated = $0 { return true }; return false }
        fails(Synth.elf(entry: 0x100_0000, segments: [seg], data: data, elfClass: 1), "32-bit") {
            if case .elfNotX86_64 = $0 { return true }; return false }
        fails(Synth.elf(entry: 0x100_0000, segments: [seg], data: data, machine: 3), "i386") {
            if case .elfNotX86_64(let s) = $0 { return s.contains("3") }; return false }
        fails(Synth.elf(entry: 0x100_0000, segments: [seg], data: data, type: 1), "relocatable object") {
            if case .badELF = $0 { return true }; return false }
        fails(Synth.elf(entry: 0x100_0000, segments: [], data: data), "no phdrs") {
            if case .badELF = $0 { return true }; return false }
        fails(Synth.elf(entry: 0x200_0000, segments: [seg], data: data), "entry outside") {
            if case .badELF(let s) = $0 { return s.contains("entry") }; return false }
        var big = seg; big.filesz = 0x200; big.memsz = 0x100
        fails(Synth.elf(entry: 0x100_0000, segments: [big], data: data), "filesz > memsz") {
            if case .badELF = $0 { return true }; return false }
        var past = seg; past.filesz = 0x1000; past.memsz = 0x1000
        fails(Synth.elf(entry: 0x100_0000, segments: [past], data: data), "segment past EOF") {
            if case .truncated = $0 { return true }; return false }
        var wrapOff = seg; wrapOff.offset = UInt64.max - 0x10
        fails(Synth.elf(entry: 0x100_0000, segments: [wrapOff], data: data), "offset overflow") {
            if case .truncated = $0 { return true }; return false }
        var wrapAddr = seg; wrapAddr.paddr = UInt64.max - 0x10; wrapAddr.vaddr = wrapAddr.paddr
        fails(Synth.elf(entry: wrapAddr.paddr, segments: [wrapAddr], data: data), "paddr overflow") {
            if case .kernelDoesNotFit = $0 { return true }; return false }
        var low = seg; low.paddr = 0x8000; low.vaddr = 0x8000
        fails(Synth.elf(entry: 0x8000, segments: [low], data: data), "segment over boot structures") {
            if case .badELF = $0 { return true }; return false }
        var beyond = seg; beyond.paddr = 200 << 20; beyond.vaddr = 200 << 20
        fails(Synth.elf(entry: 200 << 20, segments: [beyond], data: data), "segment beyond RAM") {
            if case .kernelDoesNotFit = $0 { return true }; return false }
        fails(Synth.elf(entry: 0x100_0000, segments: [seg, seg], data: data), "overlapping segments") {
            if case .badELF = $0 { return true }; return false }
        // Program header table beyond the file.
        var phoff = Synth.elf(entry: 0x100_0000, segments: [seg], data: data)
        writeLE(UInt64.max - 8, 0x20, into: &phoff)
        fails(phoff, "phoff overflow") { if case .truncated = $0 { return true }; return false }
        // Every truncation of a good image fails cleanly.
        let good = vmlinux()
        for n in stride(from: 4, to: good.count, by: 61) {
            XCTAssertThrowsError(try LinuxLoader.load(kernel: Array(good.prefix(n)), initrd: nil, cmdline: "", memory: m))
        }
    }
}
