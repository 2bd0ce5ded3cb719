import LinuxLoader
import VMMemory

/// Kernel images from the fuzzer through `LinuxLoader.load` into a small guest, with properties
/// every successful load must have. The first byte picks a mode:
/// - raw: the rest is the kernel file (bzImage, ELF, or anything);
/// - wrapped: the rest is a compressed payload that the harness wraps in a valid bzImage header,
///   so the decompressor glue (and `extractVmlinux`) is reached without the fuzzer first having
///   to rediscover the setup header.
/// Other bits choose the guest RAM size, host-side unpacking and an initrd.
public enum LoaderFuzzer {
    public static func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var input = FuzzInput(data)
        let mode = input.u8()
        let ramSizes: [UInt64] = [1 << 20, 2 << 20, 24 << 20, 64 << 20]
        let ram = ramSizes[Int(mode >> 2) & 3]
        let unpack = mode & 0x10 != 0
        let initrdSize = mode & 0x20 != 0 ? Int(input.u8()) * 4096 + Int(input.u8()) : 0
        let kernel: [UInt8]
        var extracted = 0
        if mode & 3 == 1 {
            let compression = PayloadCompression.allCases[Int(input.u8()) % PayloadCompression.allCases.count]
            // Cap the size claim: the real limit (1 GiB) is tested elsewhere and would only slow the fuzzer.
            let claimed = input.u32() % (1 << 20)
            kernel = wrappedBzImage(payload: Array(input.rest()), magicOf: compression, uncompressedSize: claimed)
            // The decompressors on their own, as the loader calls them.
            if let elf = try? LinuxLoader.extractVmlinux(bzImage: kernel) {
                extracted = 1
                checks.expect(elf.count == Int(claimed), "extractVmlinux returned \(elf.count) bytes, header says \(claimed)")
                checks.expect(elf.starts(with: [0x7F, 0x45, 0x4C, 0x46]), "extractVmlinux returned a non-ELF")
            }
        } else {
            kernel = Array(input.rest())
        }
        guard let memory = try? GuestMemory(size: ram) else { fuzzSetupFailure("\(ram >> 20) MiB of guest RAM") }
        let initrd: [UInt8]? = initrdSize > 0 ? [UInt8](repeating: 0xA5, count: initrdSize) : nil
        guard let loaded = try? LinuxLoader.load(kernel: kernel, initrd: initrd, cmdline: "console=ttyS0",
                                                 memory: memory, unpackOnHost: unpack) else {
            return ["loaded": 0, "extracted": extracted]
        }
        check(loaded, memory: memory, initrd: initrd, checks)
        return ["loaded": 1, "extracted": extracted]
    }

    /// What any accepted kernel must satisfy: everything lies in guest RAM, nothing overlaps the
    /// boot structures below 1 MiB or each other, the entry point is inside the kernel.
    static func check(_ k: LoadedKernel, memory: GuestMemory, initrd: [UInt8]?, _ checks: FuzzChecks) {
        let lowEnd = memory.regions.first?.guestEnd ?? 0
        checks.expect(k.kernel.lowerBound >= 0x10_0000, "kernel at \(k.kernel) overlaps low memory")
        checks.expect(k.kernel.upperBound <= lowEnd, "kernel \(k.kernel) past low RAM end \(lowEnd)")
        checks.expect(k.kernel.contains(k.entry.rip), "entry \(k.entry.rip) outside kernel \(k.kernel)")
        if let r = k.initrd {
            checks.expect(UInt64(r.count) == UInt64(initrd?.count ?? -1), "initrd size changed")
            checks.expect(memory.contains(r.lowerBound, length: UInt64(r.count)), "initrd \(r) outside RAM")
            checks.expect(r.lowerBound >= k.kernel.upperBound || r.upperBound <= k.kernel.lowerBound,
                      "initrd \(r) overlaps kernel \(k.kernel)")
            checks.expect(r.lowerBound % 4096 == 0, "initrd not page-aligned")
        } else {
            checks.expect(initrd == nil, "initrd was dropped")
        }
        checks.expect(memory.contains(k.cmdline.lowerBound, length: UInt64(k.cmdline.count) + 1), "cmdline outside RAM")
        checks.expect(k.e820.count <= 128, "e820 has \(k.e820.count) entries")
        for (a, b) in zip(k.e820, k.e820.dropFirst()) {
            checks.expect(a.addr <= b.addr, "e820 not sorted")
        }
    }

    /// A minimal protocol-2.15 64-bit bzImage whose payload is `payload` with `magicOf`'s magic
    /// bytes in front and `uncompressedSize` as the trailing le32, as the kernel build lays it out.
    public static func wrappedBzImage(payload: [UInt8], magicOf c: PayloadCompression, uncompressedSize: UInt32)
        -> [UInt8]
    {
        let magic: [UInt8] = switch c {
        case .gzip: [0x1F, 0x8B]
        case .bzip2: [0x42, 0x5A, 0x68]
        case .xz: [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]
        case .lzma: [0x5D, 0x00, 0x00]
        case .lzo: [0x89, 0x4C, 0x5A, 0x4F]
        case .lz4: [0x02, 0x21, 0x4C, 0x18]
        case .zstd: [0x28, 0xB5, 0x2F, 0xFD]
        }
        // The fuzzer's bytes follow the magic unless they already start with it.
        var body = payload.starts(with: magic) ? payload : magic + payload
        for i in 0..<4 { body.append(UInt8(truncatingIfNeeded: uncompressedSize >> (8 * UInt32(i)))) }
        let setupSects = 4
        let pmOffset = (setupSects + 1) * 512
        let pmSize = (body.count + 15) & ~15
        var b = [UInt8](repeating: 0, count: pmOffset + pmSize)
        func put(_ v: UInt64, _ off: Int, _ width: Int) {
            for i in 0..<width { b[off + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
        }
        put(UInt64(setupSects), 0x1F1, 1)
        put(UInt64(pmSize / 16), 0x1F4, 4)
        put(0xAA55, 0x1FE, 2)
        b[0x200] = 0xEB; b[0x201] = 0x6A              // header ends at 0x26C
        put(0x5372_6448, 0x202, 4)                     // "HdrS"
        put(0x020F, 0x206, 2)
        put(0x01, 0x211, 1)                            // LOADED_HIGH
        put(0x7FFF_FFFF, 0x22C, 4)                     // initrd_addr_max
        put(0x20_0000, 0x230, 4)                       // kernel_alignment
        put(1, 0x234, 1)                               // relocatable
        put(0x7F, 0x236, 2)                            // xloadflags: 64-bit entry
        put(0x7FF, 0x238, 4)                           // cmdline_size
        put(0, 0x248, 4)                               // payload_offset
        put(UInt64(body.count), 0x24C, 4)              // payload_length
        put(0x100_0000, 0x258, 8)                      // pref_address
        put(0x40_0000, 0x260, 4)                       // init_size
        b.replaceSubrange(pmOffset..<pmOffset + body.count, with: body)
        return b
    }
}
