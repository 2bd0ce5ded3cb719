import CPUBackend
import VMMemory

/// Fixed guest-physical layout of the structures the loader builds below 1 MiB (the same places
/// Firecracker uses, so the numbers are familiar):
///
///     0x0000_0500  GDT: null, null, 0x10 = 64-bit code, 0x18 = data (Linux's __BOOT_CS/__BOOT_DS)
///     0x0000_0520  IDT: empty (IDTR limit 0); the kernel installs its own before enabling interrupts
///     0x0000_7000  boot_params, the "zero page" (4 KiB); rsi points here at entry
///     0x0000_8000  boot stack, growing down from 0x8FF0 (rsp)
///     0x0000_9000  PML4
///     0x0000_A000  PDPT
///     0x0000_B000  4 page directories of 2 MiB pages (to 0xEFFF): identity map of 0..4 GiB
///     0x0002_0000  kernel command line (up to 64 KiB, NUL-terminated)
///     0x0009_FC00  EBDA .. 1 MiB: reserved in e820, as on a PC
///     0x0010_0000  first byte the kernel and initrd may use
///
/// 2 MiB pages rather than 1 GiB ones because not every CPU (or our interpreter's CPUID) has
/// PDPE1GB; 4 GiB covers every address the kernel touches before it builds its own page tables.
public enum BootLayout {
    public static let gdtAddress: UInt64 = 0x500
    public static let idtAddress: UInt64 = 0x520
    public static let zeroPageAddress: UInt64 = 0x7000
    public static let stackPointer: UInt64 = 0x8FF0
    public static let pml4Address: UInt64 = 0x9000
    public static let pdptAddress: UInt64 = 0xA000
    public static let pdAddress: UInt64 = 0xB000
    /// Gigabytes identity-mapped by the boot page tables (one page directory each).
    public static let identityMappedGiB = 4
    public static let cmdlineAddress: UInt64 = 0x20000
    public static let cmdlineAreaSize: UInt64 = 0x10000
    public static let ebdaStart: UInt64 = 0x9FC00
    public static let highMemoryStart: UInt64 = 0x10_0000
    /// RAM the fixed structures need.
    public static let lowMemoryNeeded: UInt64 = highMemoryStart

    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18

    /// GDT entries (flat 4 GiB, base 0): index 2 = 64-bit code (L, P, DPL 0, execute/read accessed),
    /// index 3 = data (D/B, P, read/write accessed). Linux's 64-bit entry expects exactly these selectors.
    public static let gdt: [UInt64] = [
        0,
        0,
        0x00AF_9B00_0000_FFFF,
        0x00CF_9300_0000_FFFF,
    ]

    // Control-register bits for the entry state.
    static let cr0PE: UInt64 = 1 << 0
    static let cr0ET: UInt64 = 1 << 4
    static let cr0PG: UInt64 = 1 << 31
    static let cr4PAE: UInt64 = 1 << 5
    static let eferLME: UInt64 = 1 << 8
    static let eferLMA: UInt64 = 1 << 10

    // Page-table entry bits.
    static let ptePresent: UInt64 = 1 << 0
    static let pteWritable: UInt64 = 1 << 1
    static let ptePageSize: UInt64 = 1 << 7

    /// The code and data segments matching `gdt`, as the vCPU's hidden segment state.
    public static var codeSegment: Segment {
        Segment(base: 0, limit: 0xFFFF_FFFF, selector: codeSelector, type: 0xB, present: true, dpl: 0,
                db: false, s: true, l: true, g: true)
    }
    public static var dataSegment: Segment {
        Segment(base: 0, limit: 0xFFFF_FFFF, selector: dataSelector, type: 0x3, present: true, dpl: 0,
                db: true, s: true, l: false, g: true)
    }

    /// Writes GDT, IDT and page tables into guest memory.
    static func writeCPUTables(_ memory: GuestMemory) throws(LoaderError) {
        var gdtBytes = [UInt8](repeating: 0, count: gdt.count * 8)
        for (i, d) in gdt.enumerated() { writeLE(d, i * 8, into: &gdtBytes) }
        try put(memory, gdtBytes, at: gdtAddress)
        try put(memory, [UInt8](repeating: 0, count: 8), at: idtAddress)

        // One page each: PML4, PDPT, then the page directories.
        var pml4 = [UInt8](repeating: 0, count: 4096)
        writeLE(pdptAddress | ptePresent | pteWritable, 0, into: &pml4)
        try put(memory, pml4, at: pml4Address)
        var pdpt = [UInt8](repeating: 0, count: 4096)
        var pds = [UInt8](repeating: 0, count: 4096 * identityMappedGiB)
        for g in 0..<identityMappedGiB {
            writeLE((pdAddress + UInt64(g) * 4096) | ptePresent | pteWritable, g * 8, into: &pdpt)
            for i in 0..<512 {
                let phys = UInt64(g) << 30 | UInt64(i) << 21
                writeLE(phys | ptePresent | pteWritable | ptePageSize, g * 4096 + i * 8, into: &pds)
            }
        }
        try put(memory, pdpt, at: pdptAddress)
        try put(memory, pds, at: pdAddress)
    }

    /// The vCPU state for Linux's 64-bit entry: long mode with the tables above, interrupts off.
    static func entryState(rip: UInt64) -> CPUEntryState {
        var s = CPUEntryState()
        s.rip = rip
        s.rsi = zeroPageAddress
        s.rsp = stackPointer
        s.rbp = stackPointer
        s.rflags = 0x2
        s.cr0 = cr0PE | cr0ET | cr0PG
        s.cr3 = pml4Address
        s.cr4 = cr4PAE
        s.efer = eferLME | eferLMA
        s.cs = codeSegment
        let d = dataSegment
        s.ds = d; s.es = d; s.fs = d; s.gs = d; s.ss = d
        s.gdt = DescriptorTable(base: gdtAddress, limit: UInt16(gdt.count * 8 - 1))
        s.idt = DescriptorTable(base: idtAddress, limit: 0)
        return s
    }
}

/// Copies bytes into guest memory, turning a memory error into a loader error. Callers have
/// already checked the range, so a failure here means a loader bug or an unusually small guest.
func put(_ memory: GuestMemory, _ bytes: [UInt8], at address: UInt64) throws(LoaderError) {
    try put(memory, bytes[...], at: address)
}

func put(_ memory: GuestMemory, _ bytes: ArraySlice<UInt8>, at address: UInt64) throws(LoaderError) {
    do {
        try bytes.withUnsafeBytes { try memory.write(buffer: $0, at: address) }
    } catch {
        throw LoaderError.kernelDoesNotFit(loadAddress: address, needed: UInt64(bytes.count),
                                           ramEnd: memory.regions.first?.guestEnd ?? 0)
    }
}

func zero(_ memory: GuestMemory, at address: UInt64, length: UInt64) throws(LoaderError) {
    do {
        try memory.fill(0, at: address, length: length)
    } catch {
        throw LoaderError.kernelDoesNotFit(loadAddress: address, needed: length,
                                           ramEnd: memory.regions.first?.guestEnd ?? 0)
    }
}
