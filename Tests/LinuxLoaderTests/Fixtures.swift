import XCTest
@testable import LinuxLoader
import VMMemory
import CPUBackend

/// Builders for synthetic kernels and helpers to inspect guest memory.
enum Synth {
    struct BzOptions {
        var setupSects: UInt8 = 4
        var payloadSize = 0x10000
        var version: UInt16 = 0x020F
        var xloadflags: UInt16 = 0x7F
        var initSize: UInt32 = 0x40_0000
        var prefAddress: UInt64 = 0x100_0000
        var kernelAlignment: UInt32 = 0x20_0000
        var relocatable: UInt8 = 1
        var cmdlineSize: UInt32 = 0x7FF
        var initrdAddrMax: UInt32 = 0x7FFF_FFFF
        var loadflags: UInt8 = 0x01
        var trailer = 0   // bytes after syssize*16, like a signed kernel's signature
    }

    /// Byte `i` of the synthetic protected-mode payload: a pattern that shows misplaced copies.
    static func payloadByte(_ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 7 &+ (i >> 8)) }

    static func bzImage(_ o: BzOptions = BzOptions()) -> [UInt8] {
        let sects = o.setupSects == 0 ? 4 : Int(o.setupSects)
        var b = [UInt8](repeating: 0, count: (sects + 1) * 512)
        func p<T: FixedWidthInteger & UnsignedInteger>(_ v: T, _ off: Int) { writeLE(v, off, into: &b) }
        p(o.setupSects, 0x1F1)
        p(UInt32(o.payloadSize / 16), 0x1F4)
        p(UInt16(0xAA55), 0x1FE)
        b[0x200] = 0xEB; b[0x201] = 0x6A           // jmp to 0x26C: header ends there
        p(UInt32(0x5372_6448), 0x202)              // "HdrS"
        p(o.version, 0x206)
        p(o.loadflags, 0x211)
        p(UInt32(0x10_0000), 0x214)
        p(o.initrdAddrMax, 0x22C)
        p(o.kernelAlignment, 0x230)
        p(o.relocatable, 0x234)
        p(UInt8(21), 0x235)
        p(o.xloadflags, 0x236)
        p(o.cmdlineSize, 0x238)
        p(UInt32(0x100), 0x248)
        p(UInt32(max(0, o.payloadSize - 0x200)), 0x24C)
        p(o.prefAddress, 0x258)
        p(o.initSize, 0x260)
        b += (0..<o.payloadSize).map(payloadByte)
        b += [UInt8](repeating: 0xEE, count: o.trailer)
        return b
    }

    /// A bzImage whose protected-mode part is 0x100 filler bytes then `payload` (payload_offset 0x100).
    static func bzImage(wrapping payload: [UInt8]) -> [UInt8] {
        var o = BzOptions()
        o.payloadSize = (0x100 + payload.count + 15) & ~15
        var b = bzImage(o)
        let pm = (Int(o.setupSects) + 1) * 512
        writeLE(UInt32(0x100), 0x248, into: &b)
        writeLE(UInt32(payload.count), 0x24C, into: &b)
        b.replaceSubrange(pm + 0x100..<pm + 0x100 + payload.count, with: payload)
        return b
    }

    struct ElfSegment {
        var type: UInt32 = 1
        var offset: UInt64
        var vaddr: UInt64
        var paddr: UInt64
        var filesz: UInt64
        var memsz: UInt64
    }

    /// An ELF64 file: header, program headers right after it, then `data` at 0x1000.
    static func elf(entry: UInt64, segments: [ElfSegment], data: [UInt8], machine: UInt16 = 62,
                    elfClass: UInt8 = 2, type: UInt16 = 2) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x1000)
        b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46
        b[4] = elfClass; b[5] = 1; b[6] = 1
        func p<T: FixedWidthInteger & UnsignedInteger>(_ v: T, _ off: Int) { writeLE(v, off, into: &b) }
        p(type, 0x10); p(machine, 0x12); p(UInt32(1), 0x14)
        p(entry, 0x18); p(UInt64(64), 0x20)
        p(UInt16(64), 0x34); p(UInt16(56), 0x36); p(UInt16(segments.count), 0x38)
        for (i, s) in segments.enumerated() {
            let o = 64 + i * 56
            p(s.type, o); p(UInt32(7), o + 4); p(s.offset, o + 8); p(s.vaddr, o + 16); p(s.paddr, o + 24)
            p(s.filesz, o + 32); p(s.memsz, o + 40); p(UInt64(0x20_0000), o + 48)
        }
        return b + data
    }

    /// A deterministic byte generator (SplitMix64).
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: next()) } }
    }
}

/// Translates a virtual address through the 4-level page tables rooted at `cr3`, as the CPU would.
/// Returns nil if some level is not present.
func walkPageTables(_ memory: GuestMemory, cr3: UInt64, _ va: UInt64) throws -> (phys: UInt64, writable: Bool)? {
    let addrMask: UInt64 = 0x000F_FFFF_FFFF_F000
    let pml4e: UInt64 = try memory.read(at: (cr3 & addrMask) + ((va >> 39) & 0x1FF) * 8)
    guard pml4e & 1 != 0 else { return nil }
    let pdpte: UInt64 = try memory.read(at: (pml4e & addrMask) + ((va >> 30) & 0x1FF) * 8)
    guard pdpte & 1 != 0 else { return nil }
    var writable = pml4e & pdpte & 2 != 0
    if pdpte & 0x80 != 0 { return ((pdpte & 0x000F_FFFF_C000_0000) | (va & 0x3FFF_FFFF), writable) }
    let pde: UInt64 = try memory.read(at: (pdpte & addrMask) + ((va >> 21) & 0x1FF) * 8)
    guard pde & 1 != 0 else { return nil }
    writable = writable && pde & 2 != 0
    if pde & 0x80 != 0 { return ((pde & 0x000F_FFFF_FFE0_0000) | (va & 0x1F_FFFF), writable) }
    let pte: UInt64 = try memory.read(at: (pde & addrMask) + ((va >> 12) & 0x1FF) * 8)
    guard pte & 1 != 0 else { return nil }
    return ((pte & addrMask) | (va & 0xFFF), writable && pte & 2 != 0)
}

/// Runs `body` expecting a specific LoaderError.
func XCTAssertLoaderError<T>(_ body: @autoclosure () throws(LoaderError) -> T,
                             _ check: (LoaderError) -> Bool, _ what: String,
                             file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error (\(what)) but loading succeeded", file: file, line: line)
    } catch {
        XCTAssertTrue(check(error), "expected \(what), got: \(error)", file: file, line: line)
        XCTAssertFalse(error.description.isEmpty, file: file, line: line)
        XCTAssertFalse(error.description.contains("\n"), "messages are one line", file: file, line: line)
    }
}
