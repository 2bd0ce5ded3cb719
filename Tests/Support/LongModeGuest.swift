import CPUBackend
import VMMemory

/// A flat 64-bit guest for the interpreter's tests and fuzz harness: identity-mapped 2 MiB pages
/// over the first GiB (user-accessible) and the 3-4 GiB MMIO range (supervisor-only), a GDT with
/// kernel and user code/data and a 64-bit TSS, and an IDT at `idtBase` (empty until `setGate`).
public enum LongModeGuest {
    public static let pml4: UInt64 = 0x1000
    public static let gdtBase: UInt64 = 0x500
    public static let idtBase: UInt64 = 0x4000
    public static let kernelCS: UInt16 = 0x10, kernelDS: UInt16 = 0x18
    public static let userCS: UInt16 = 0x2B, userDS: UInt16 = 0x23
    public static let code32CS: UInt16 = 0x30, tssSelector: UInt16 = 0x38
    public static let tssBase: UInt64 = 0x6000
    public static let rsp0: UInt64 = 0x80000
    public static let ist1: UInt64 = 0x90000

    public static func makeMemory(size: UInt64 = 8 << 20) throws -> GuestMemory {
        let mem = try GuestMemory(size: size)
        try install(in: mem)
        return mem
    }

    /// Writes the page tables, TSS and GDT (everything lies below 0x7000).
    public static func install(in mem: GuestMemory) throws {
        try mem.write(UInt64(0x2000 | 0x7), at: pml4)            // PML4[0] -> PDPT
        try mem.write(UInt64(0x3000 | 0x7), at: 0x2000)          // PDPT[0] -> PD
        for i in 0..<UInt64(512) {
            try mem.write(i << 21 | 0x87, at: 0x3000 + i * 8)    // 2 MiB, present, RW, user
        }
        // 3-4 GiB (local APIC and other MMIO), supervisor-only, uncached. 1-3 GiB stay unmapped.
        try mem.write(UInt64(0x5000 | 0x3), at: 0x2000 + 3 * 8)
        for i in 0..<UInt64(512) {
            try mem.write((0xC000_0000 + (i << 21)) | 0x9B, at: 0x5000 + i * 8)
        }
        // 64-bit TSS at tssBase: RSP0 and IST1.
        try mem.write(rsp0, at: tssBase + 4)
        try mem.write(ist1, at: tssBase + 0x24)
        let gdt: [UInt64] = [
            0,
            0,
            0x00AF_9B00_0000_FFFF,   // 0x10 kernel code 64
            0x00CF_9300_0000_FFFF,   // 0x18 kernel data
            0x00CF_F300_0000_FFFF,   // 0x20 user data
            0x00AF_FB00_0000_FFFF,   // 0x28 user code 64
            0x00CF_9B00_0000_FFFF,   // 0x30 kernel code 32
            0x67 | (tssBase & 0xFF_FFFF) << 16 | 0x89 << 40 | ((tssBase >> 24) & 0xFF) << 56,  // 0x38 TSS
            tssBase >> 32,
        ]
        for (i, d) in gdt.enumerated() { try mem.write(d, at: gdtBase + UInt64(i * 8)) }
    }

    /// Flat 64-bit ring-0 segments over `pml4`'s tables, with the GDT and IDT above.
    public static func entryState(rip: UInt64, rsp: UInt64) -> CPUEntryState {
        var s = CPUEntryState()
        s.rip = rip
        s.rsp = rsp
        s.cr0 = 0x8005_0033   // PG WP NE ET MP PE
        s.cr3 = pml4
        s.cr4 = 0x620         // PAE OSFXSR OSXMMEXCPT
        s.efer = 0xD01        // SCE LME LMA NXE
        s.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: kernelCS, type: 0xB, dpl: 0, db: false, l: true, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: kernelDS, type: 0x3, dpl: 0, db: true, g: true)
        s.ds = data; s.es = data; s.ss = data; s.fs = data; s.gs = data
        s.gdt = DescriptorTable(base: gdtBase, limit: 0x47)
        s.idt = DescriptorTable(base: idtBase, limit: 0xFFF)
        return s
    }

    /// Writes a 64-bit interrupt gate for `vector` to `handler` (selector 0x10, DPL 3, optional IST).
    public static func setGate(_ mem: GuestMemory, vector: Int, handler: UInt64, ist: UInt64 = 0, trap: Bool = false) throws {
        let type: UInt64 = trap ? 0xF : 0xE
        let lo = (handler & 0xFFFF) | UInt64(kernelCS) << 16 | ist << 32 | (type | 0x60 | 0x80) << 40
            | ((handler >> 16) & 0xFFFF) << 48
        try mem.write(lo, at: idtBase + UInt64(vector * 16))
        try mem.write(handler >> 32, at: idtBase + UInt64(vector * 16) + 8)
    }
}
