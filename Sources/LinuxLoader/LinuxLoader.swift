import CPUBackend
import VMMemory

/// What the loader put where, and the vCPU state to start it.
public struct LoadedKernel: Equatable, Sendable {
    public enum Format: Equatable, Sendable, CustomStringConvertible {
        /// A bzImage; the protocol version from its header (e.g. 0x020F).
        case bzImage(protocolVersion: UInt16)
        /// An uncompressed vmlinux ELF.
        case elf
        /// A bzImage whose payload the host unpacked; the vmlinux inside was loaded as an ELF.
        case unpackedBzImage(protocolVersion: UInt16, compression: PayloadCompression)

        public var description: String {
            switch self {
            case .bzImage(let v): return "bzImage (boot protocol \(v >> 8).\(v & 0xFF))"
            case .elf: return "vmlinux ELF"
            case .unpackedBzImage(let v, let c):
                return "bzImage (boot protocol \(v >> 8).\(v & 0xFF)), \(c) payload unpacked on the host"
            }
        }
    }

    public var format: Format
    /// State for the 64-bit boot protocol entry: long mode, identity-mapped 4 GiB, rsi = zero page.
    public var entry: CPUEntryState
    /// Memory the kernel owns from the start: for a bzImage the load address plus `init_size`
    /// (where it decompresses itself), for an ELF the span of its loadable segments.
    public var kernel: Range<UInt64>
    /// Where the initrd was placed, if one was given.
    public var initrd: Range<UInt64>?
    /// Address of the zero page.
    public var bootParams: UInt64
    /// The command line bytes, without the terminating NUL.
    public var cmdline: Range<UInt64>
    /// The e820 map handed to the kernel.
    public var e820: [E820Entry]
    /// The setup header as written to the zero page.
    public var setupHeader: SetupHeader
}

/// Loads a Linux x86-64 kernel (bzImage or vmlinux ELF), an optional initrd and a command line into
/// guest memory following the 64-bit boot protocol (Documentation/arch/x86/boot.rst).
public struct LinuxLoader {
    /// Serial console, reboot through the keyboard controller, and reboot instead of hanging on panic
    /// (`panic=-1`) so a crashed guest ends the VM.
    public static let defaultCmdline = "console=ttyS0 reboot=k panic=-1"

    /// The oldest protocol with xloadflags (2.12), which is how a kernel says it has a 64-bit entry.
    public static let minimumProtocol: UInt16 = 0x020C
    /// Linux's build tool refuses setups longer than this many sectors (SETUP_SECT_MAX).
    static let maxSetupSects = 64
    /// Where Linux puts itself when relocatable and loaded lower (LOAD_PHYSICAL_ADDR default).
    static let defaultLoadAddress: UInt64 = 0x100_0000
    /// The real-mode heap end boot.rst suggests for a 64 KiB real-mode segment (0x10000 - 0x200).
    static let heapEndPtr: UInt16 = 0xFE00
    /// COMMAND_LINE_SIZE on x86 (used for ELF kernels, which carry no cmdline_size).
    static let elfCmdlineMax = 2047
    /// Loader id "undefined" (boot.rst: 0xFF for boot loaders without an assigned id).
    static let typeOfLoaderUndefined: UInt8 = 0xFF

    /// Loads `kernel` (bzImage or ELF) and `initrd` and writes boot_params, command line, e820 map,
    /// GDT and page tables. `extraE820` entries (e.g. ACPI tables, reserved MMIO) are added to the map;
    /// `acpiRSDP` is passed as boot_params.acpi_rsdp_addr.
    ///
    /// With `unpackOnHost`, a bzImage's payload is decompressed here and the vmlinux inside it is
    /// loaded and entered directly (with the bzImage's setup header in the zero page), skipping the
    /// in-guest decompressor: tens of millions of instructions an emulated guest would otherwise run.
    public static func load(kernel: [UInt8], initrd: [UInt8]?, cmdline: String, memory: GuestMemory,
                            extraE820: [E820Entry] = [], acpiRSDP: UInt64? = nil, unpackOnHost: Bool = false)
        throws(LoaderError) -> LoadedKernel
    {
        let lowEnd = memory.regions.first?.guestEnd ?? 0
        guard lowEnd >= BootLayout.lowMemoryNeeded else {
            throw .memoryTooSmall(size: lowEnd, needed: BootLayout.lowMemoryNeeded)
        }
        // Validate everything that can fail before writing anything to guest memory.
        let image = try KernelImage.parse(kernel, lowEnd: lowEnd, unpack: unpackOnHost)
        let cmdBytes = Array(cmdline.utf8)
        guard !cmdBytes.contains(0) else { throw .cmdlineContainsNul }
        let cmdMax = min(image.cmdlineMax, Int(BootLayout.cmdlineAreaSize) - 1)
        guard cmdBytes.count <= cmdMax else { throw .cmdlineTooLong(length: cmdBytes.count, max: cmdMax) }

        var initrdRange: Range<UInt64>?
        if let initrd {
            guard !initrd.isEmpty else { throw .emptyInitrd }
            initrdRange = try placeInitrd(size: UInt64(initrd.count), kernelEnd: image.reserved.upperBound,
                                          addrMax: image.initrdAddrMax, lowEnd: lowEnd)
        }
        let e820 = try e820Map(memory: memory, extra: extraE820)

        // Write.
        try image.write(into: memory)
        if let initrd, let r = initrdRange { try put(memory, initrd, at: r.lowerBound) }
        try zero(memory, at: BootLayout.cmdlineAddress, length: BootLayout.cmdlineAreaSize)
        try put(memory, cmdBytes, at: BootLayout.cmdlineAddress)
        try BootLayout.writeCPUTables(memory)

        var hdr = image.header
        hdr.typeOfLoader = typeOfLoaderUndefined
        hdr.loadflags |= SetupHeader.loadedHigh | SetupHeader.canUseHeap
        hdr.heapEndPtr = heapEndPtr
        hdr.vidMode = 0xFFFF  // "normal": no video mode change
        hdr.cmdLinePtr = UInt32(BootLayout.cmdlineAddress)
        var bp = BootParams()
        if let r = initrdRange {
            hdr.ramdiskImage = UInt32(truncatingIfNeeded: r.lowerBound)
            hdr.ramdiskSize = UInt32(truncatingIfNeeded: r.count)
            bp.extRamdiskImage = UInt32(truncatingIfNeeded: r.lowerBound >> 32)
            bp.extRamdiskSize = UInt32(truncatingIfNeeded: UInt64(r.count) >> 32)
        } else {
            hdr.ramdiskImage = 0
            hdr.ramdiskSize = 0
        }
        bp.hdr = hdr
        bp.e820Table = e820
        bp.acpiRsdpAddr = acpiRSDP ?? 0
        try put(memory, bp.serialized(), at: BootLayout.zeroPageAddress)

        return LoadedKernel(
            format: image.format, entry: BootLayout.entryState(rip: image.entry64),
            kernel: image.reserved, initrd: initrdRange, bootParams: BootLayout.zeroPageAddress,
            cmdline: BootLayout.cmdlineAddress..<BootLayout.cmdlineAddress + UInt64(cmdBytes.count),
            e820: e820, setupHeader: hdr)
    }

    /// The initrd goes page-aligned as high as allowed, like other loaders do: out of the way of the
    /// kernel's decompression buffer and early allocations, which grow upwards from the kernel.
    static func placeInitrd(size: UInt64, kernelEnd: UInt64, addrMax: UInt64, lowEnd: UInt64)
        throws(LoaderError) -> Range<UInt64>
    {
        let (maxPlusOne, o) = addrMax.addingReportingOverflow(1)
        let top = o ? lowEnd : min(maxPlusOne, lowEnd)
        let lowest = alignUp(kernelEnd, 4096) ?? UInt64.max
        guard size <= top, top - size >= lowest else {
            throw .initrdDoesNotFit(size: size, lowest: min(lowest, top), highest: top)
        }
        let addr = (top - size) & ~UInt64(4095)
        guard addr >= lowest else { throw .initrdDoesNotFit(size: size, lowest: lowest, highest: top) }
        return addr..<addr + size
    }

    /// usable 0..EBDA, reserved EBDA..1 MiB, usable 1 MiB..end of low RAM, usable above 4 GiB,
    /// then the caller's entries; sorted by address.
    static func e820Map(memory: GuestMemory, extra: [E820Entry]) throws(LoaderError) -> [E820Entry] {
        var map: [E820Entry] = [
            E820Entry(addr: 0, size: BootLayout.ebdaStart, type: E820Entry.ram),
            E820Entry(addr: BootLayout.ebdaStart, size: BootLayout.highMemoryStart - BootLayout.ebdaStart,
                      type: E820Entry.reserved),
        ]
        for (i, r) in memory.regions.enumerated() {
            let start = i == 0 ? BootLayout.highMemoryStart : r.guestBase
            if r.guestEnd > start { map.append(E820Entry(addr: start, size: r.guestEnd - start, type: E820Entry.ram)) }
        }
        map += extra
        guard map.count <= BootParams.maxE820Entries else { throw .tooManyE820Entries(map.count) }
        // Stable for equal addresses, so a caller's order among its own entries is kept.
        return map.enumerated().sorted { ($0.element.addr, $0.offset) < ($1.element.addr, $1.offset) }.map(\.element)
    }
}

/// Rounds up to a power-of-two alignment; nil on overflow.
@inline(__always)
func alignUp(_ v: UInt64, _ align: UInt64) -> UInt64? {
    let (s, o) = v.addingReportingOverflow(align - 1)
    return o ? nil : s & ~(align - 1)
}

/// A validated kernel ready to copy into guest memory.
struct KernelImage {
    var format: LoadedKernel.Format
    /// The header to copy into the zero page (synthesised for ELF kernels).
    var header: SetupHeader
    /// Physical 64-bit entry point.
    var entry64: UInt64
    /// Memory reserved for the kernel; the initrd goes above it.
    var reserved: Range<UInt64>
    var cmdlineMax: Int
    var initrdAddrMax: UInt64
    /// (file range, guest address, bytes to zero after the file bytes)
    var segments: [(file: Range<Int>, addr: UInt64, zeroFill: UInt64)]
    let bytes: [UInt8]

    /// Recognises and validates a kernel without touching guest memory.
    static func parse(_ bytes: [UInt8], lowEnd: UInt64, unpack: Bool = false) throws(LoaderError) -> KernelImage {
        if bytes.count >= 4 && bytes[0] == 0x7F && bytes[1] == 0x45 && bytes[2] == 0x4C && bytes[3] == 0x46 {
            return try KernelImage.elf(bytes, lowEnd: lowEnd)
        }
        guard unpack else { return try KernelImage.bzImage(bytes, lowEnd: lowEnd) }
        let h = try validatedHeader(bytes)
        let payload = try LinuxLoader.payload(ofBzImage: bytes)
        var image = try KernelImage.elf(try LinuxLoader.extractVmlinux(bzImage: bytes), lowEnd: lowEnd)
        // The kernel proper reads the setup header (version, cmdline_size, xloadflags...) from the
        // zero page as if its decompressor had run.
        image.format = .unpackedBzImage(protocolVersion: h.version, compression: payload.compression)
        image.header = h
        image.cmdlineMax = h.cmdlineMax
        image.initrdAddrMax = h.initrdMax
        return image
    }

    init(format: LoadedKernel.Format, header: SetupHeader, entry64: UInt64, reserved: Range<UInt64>,
         cmdlineMax: Int, initrdAddrMax: UInt64, segments: [(file: Range<Int>, addr: UInt64, zeroFill: UInt64)],
         bytes: [UInt8]) {
        self.format = format; self.header = header; self.entry64 = entry64; self.reserved = reserved
        self.cmdlineMax = cmdlineMax; self.initrdAddrMax = initrdAddrMax; self.segments = segments
        self.bytes = bytes
    }

    func write(into memory: GuestMemory) throws(LoaderError) {
        for s in segments {
            try put(memory, bytes[s.file], at: s.addr)
            if s.zeroFill > 0 { try zero(memory, at: s.addr + UInt64(s.file.count), length: s.zeroFill) }
        }
    }

    // MARK: bzImage

    static func bzImage(_ bytes: [UInt8], lowEnd: UInt64) throws(LoaderError) -> KernelImage {
        let h = try validatedHeader(bytes)
        let pmBytes = h.protectedModeBytes
        let relocatable = h.relocatableKernel != 0
        let align = UInt64(h.kernelAlignment)
        // The kernel decompresses itself within init_size bytes of where it runs.
        let needed = max(UInt64(h.initSize), pmBytes)

        func fits(_ addr: UInt64) -> Bool {
            let (end, o) = addr.addingReportingOverflow(needed)
            return !o && addr >= BootLayout.highMemoryStart && end <= lowEnd
        }
        let pref = h.prefAddress
        var load = pref
        let prefUsable = fits(pref) && (!relocatable || pref & (align - 1) == 0)
        if !prefUsable {
            guard relocatable else {
                throw .kernelDoesNotFit(loadAddress: pref, needed: needed, ramEnd: lowEnd)
            }
            // A relocatable 64-bit kernel below LOAD_PHYSICAL_ADDR moves itself up to it anyway,
            // so there is no point in going lower than 16 MiB.
            load = alignUp(LinuxLoader.defaultLoadAddress, align) ?? LinuxLoader.defaultLoadAddress
            guard fits(load) else { throw .kernelDoesNotFit(loadAddress: load, needed: needed, ramEnd: lowEnd) }
        }
        var hdr = h
        if load <= UInt64(UInt32.max) { hdr.code32Start = UInt32(load) }
        let setupBytes = h.setupBytes
        return KernelImage(
            format: .bzImage(protocolVersion: h.version), header: hdr, entry64: load + 0x200,
            reserved: load..<load + needed, cmdlineMax: h.cmdlineMax, initrdAddrMax: h.initrdMax,
            segments: [(file: setupBytes..<setupBytes + Int(pmBytes), addr: load, zeroFill: 0)], bytes: bytes)
    }

    /// Checks everything about a bzImage that does not depend on guest RAM and returns its header.
    static func validatedHeader(_ bytes: [UInt8]) throws(LoaderError) -> SetupHeader {
        let count = UInt64(bytes.count)
        // Recognise the image first: boot sector flag at 0x1FE and/or "HdrS" at 0x202.
        let bootFlag: UInt16 = readLE(bytes, 0x1FE)
        let magic: UInt32 = readLE(bytes, 0x202)
        guard bytes.count >= 0x206, magic == SetupHeader.magic || bootFlag == SetupHeader.bootFlagMagic else {
            if bytes.count >= 0x200 && bootFlag == SetupHeader.bootFlagMagic {
                throw .truncated(what: "the setup header", needed: UInt64(SetupHeader.end), have: count)
            }
            throw .notAKernel(size: bytes.count)
        }
        guard magic == SetupHeader.magic else {
            throw .badMagic(field: "setup header signature at 0x202", found: UInt64(magic),
                            expected: UInt64(SetupHeader.magic))
        }
        guard bootFlag == SetupHeader.bootFlagMagic else {
            throw .badMagic(field: "boot_flag at 0x1FE", found: UInt64(bootFlag),
                            expected: UInt64(SetupHeader.bootFlagMagic))
        }
        // Protocol 2.12 headers reach at least init_size (0x260..0x264).
        let needHeader = 0x264
        guard bytes.count >= needHeader else {
            throw .truncated(what: "the setup header", needed: UInt64(needHeader), have: count)
        }
        let version: UInt16 = readLE(bytes, 0x206)
        guard version >= LinuxLoader.minimumProtocol else { throw .protocolTooOld(version: version) }
        guard SetupHeader.headerEnd(bytes) >= needHeader else {
            throw .badHeader("header ends at \(hex(UInt64(SetupHeader.headerEnd(bytes)))) (jump at 0x200), "
                             + "before init_size at 0x260")
        }
        let h = SetupHeader(parsing: bytes)
        guard h.xloadflags & SetupHeader.xlfKernel64 != 0 else { throw .no64BitEntry(xloadflags: h.xloadflags) }
        guard h.effectiveSetupSects <= LinuxLoader.maxSetupSects else { throw .badSetupSects(Int(h.setupSects)) }
        let setupBytes = h.setupBytes
        guard bytes.count >= setupBytes else {
            throw .truncated(what: "the \(h.effectiveSetupSects)-sector setup code", needed: UInt64(setupBytes), have: count)
        }
        let pmBytes = h.protectedModeBytes
        guard pmBytes > 0 else { throw .badHeader("syssize is 0 (no protected-mode kernel)") }
        // Files may carry extra bytes after syssize (e.g. a signature); only syssize*16 is the kernel.
        guard count - UInt64(setupBytes) >= pmBytes else {
            throw .truncated(what: "setup + protected-mode kernel (syssize)", needed: UInt64(setupBytes) + pmBytes,
                             have: count)
        }
        guard h.initSize > 0 else { throw .badHeader("init_size is 0") }
        let align = UInt64(h.kernelAlignment)
        if h.relocatableKernel != 0 {
            guard align >= 4096, align & (align - 1) == 0, align <= 1 << 30 else {
                throw .badHeader("kernel_alignment \(hex(align)) is not a power of two between 4 KiB and 1 GiB")
            }
        }
        return h
    }

    // MARK: vmlinux ELF

    static func elf(_ bytes: [UInt8], lowEnd: UInt64) throws(LoaderError) -> KernelImage {
        let count = UInt64(bytes.count)
        guard bytes.count >= 64 else { throw .truncated(what: "the ELF header", needed: 64, have: count) }
        guard bytes[4] == 2 else { throw .elfNotX86_64("ELF class \(bytes[4]) (32-bit or invalid), need ELFCLASS64") }
        guard bytes[5] == 1 else { throw .elfNotX86_64("big-endian ELF") }
        let type: UInt16 = readLE(bytes, 0x10)
        let machine: UInt16 = readLE(bytes, 0x12)
        guard machine == 62 else { throw .elfNotX86_64("e_machine \(machine), need 62 (EM_X86_64)") }
        guard type == 2 else { throw .badELF("e_type \(type), need 2 (ET_EXEC)") }
        let entry: UInt64 = readLE(bytes, 0x18)
        let phoff: UInt64 = readLE(bytes, 0x20)
        let phentsize = Int(readLE(bytes, 0x36, as: UInt16.self))
        let phnum = Int(readLE(bytes, 0x38, as: UInt16.self))
        guard phnum > 0 else { throw .badELF("no program headers") }
        guard phentsize >= 56 else { throw .badELF("e_phentsize \(phentsize), need at least 56") }
        let (phTableSize, o1) = UInt64(phentsize).multipliedReportingOverflow(by: UInt64(phnum))
        let (phEnd, o2) = phoff.addingReportingOverflow(phTableSize)
        guard !o1, !o2, phEnd <= count else {
            throw .truncated(what: "the program header table", needed: o1 || o2 ? UInt64.max : phEnd, have: count)
        }

        var segments: [(file: Range<Int>, addr: UInt64, zeroFill: UInt64)] = []
        var lo = UInt64.max, hi: UInt64 = 0
        var physEntry: UInt64?
        for i in 0..<phnum {
            let ph = Int(phoff) + i * phentsize
            let pType: UInt32 = readLE(bytes, ph)
            guard pType == 1 else { continue }  // PT_LOAD
            let offset: UInt64 = readLE(bytes, ph + 8)
            let vaddr: UInt64 = readLE(bytes, ph + 16)
            let paddr: UInt64 = readLE(bytes, ph + 24)
            let filesz: UInt64 = readLE(bytes, ph + 32)
            let memsz: UInt64 = readLE(bytes, ph + 40)
            guard filesz <= memsz else { throw .badELF("segment \(i): p_filesz \(filesz) > p_memsz \(memsz)") }
            let (fileEnd, fo) = offset.addingReportingOverflow(filesz)
            guard !fo, fileEnd <= count else {
                throw .truncated(what: "segment \(i) (offset \(hex(offset)), \(filesz) bytes)",
                                 needed: fo ? UInt64.max : fileEnd, have: count)
            }
            let (memEnd, mo) = paddr.addingReportingOverflow(memsz)
            guard !mo, memEnd <= lowEnd else {
                throw .kernelDoesNotFit(loadAddress: paddr, needed: memsz, ramEnd: lowEnd)
            }
            guard memsz == 0 || paddr >= BootLayout.highMemoryStart else {
                throw .badELF("segment \(i) at \(hex(paddr)) is below 1 MiB, where the boot structures live")
            }
            if memsz == 0 { continue }
            // Segments may not overlap: the later would silently overwrite the earlier.
            for s in segments {
                let sEnd = s.addr + UInt64(s.file.count) + s.zeroFill
                if paddr < sEnd && s.addr < memEnd {
                    throw .badELF("segment \(i) at \(hex(paddr)) overlaps another segment")
                }
            }
            segments.append((file: Int(offset)..<Int(fileEnd), addr: paddr, zeroFill: memsz - filesz))
            lo = min(lo, paddr); hi = max(hi, memEnd)
            // Linux's vmlinux has a physical e_entry (phys_startup_64); others may give the virtual one.
            if physEntry == nil {
                if entry >= paddr && entry - paddr < memsz {
                    physEntry = entry
                } else if entry >= vaddr && entry - vaddr < memsz {
                    physEntry = paddr + (entry - vaddr)
                }
            }
        }
        guard !segments.isEmpty else { throw .badELF("no loadable (PT_LOAD) segments") }
        guard let physEntry else { throw .badELF("entry point \(hex(entry)) is not inside a loadable segment") }

        // A vmlinux carries no setup header: give the kernel the fields it reads.
        var hdr = SetupHeader()
        hdr.bootFlag = SetupHeader.bootFlagMagic
        hdr.header = SetupHeader.magic
        hdr.kernelAlignment = 0x100_0000
        hdr.cmdlineSize = UInt32(LinuxLoader.elfCmdlineMax)
        return KernelImage(format: .elf, header: hdr, entry64: physEntry, reserved: lo..<hi,
                           cmdlineMax: LinuxLoader.elfCmdlineMax, initrdAddrMax: 0x7FFF_FFFF,
                           segments: segments, bytes: bytes)
    }
}
