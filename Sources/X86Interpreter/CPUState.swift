// The architectural state of one x86-64 CPU, kept in manually allocated storage so the hot loop
// touches plain memory: no class stored properties (exclusivity checks), no Array bounds checks.

/// Segment register numbers in the order instructions encode them.
enum Seg {
    static let es = 0, cs = 1, ss = 2, ds = 3, fs = 4, gs = 5
    /// Not a segment register: decoded instructions use it for "no memory operand".
    static let none = 6
}

/// Register file layout (byte offsets are index * 8). Slots 0-15 are RAX..R15, slot 16 is RIP so that
/// RIP-relative addressing is ordinary base-register addressing, slot 17 always reads as zero (the
/// "no base"/"no index" register of decoded addresses).
enum Reg {
    static let rax = 0, rcx = 1, rdx = 2, rbx = 3, rsp = 4, rbp = 5, rsi = 6, rdi = 7
    static let rip = 16
    static let zero = 17
    static let count = 18
}

/// RFLAGS bits.
enum Flag {
    static let cf: UInt64 = 1 << 0
    static let fixed1: UInt64 = 1 << 1
    static let pf: UInt64 = 1 << 2
    static let af: UInt64 = 1 << 4
    static let zf: UInt64 = 1 << 6
    static let sf: UInt64 = 1 << 7
    static let tf: UInt64 = 1 << 8
    static let `if`: UInt64 = 1 << 9
    static let df: UInt64 = 1 << 10
    static let of: UInt64 = 1 << 11
    static let iopl: UInt64 = 3 << 12
    static let nt: UInt64 = 1 << 14
    static let rf: UInt64 = 1 << 16
    static let vm: UInt64 = 1 << 17
    static let ac: UInt64 = 1 << 18
    static let vif: UInt64 = 1 << 19
    static let vip: UInt64 = 1 << 20
    static let id: UInt64 = 1 << 21
    /// The six arithmetic flags the lazy-flags machinery owns.
    static let arith: UInt64 = cf | pf | af | zf | sf | of
}

enum CR0 {
    static let pe: UInt64 = 1 << 0, mp: UInt64 = 1 << 1, em: UInt64 = 1 << 2, ts: UInt64 = 1 << 3
    static let et: UInt64 = 1 << 4, ne: UInt64 = 1 << 5, wp: UInt64 = 1 << 16, am: UInt64 = 1 << 18
    static let nw: UInt64 = 1 << 29, cd: UInt64 = 1 << 30, pg: UInt64 = 1 << 31
}

enum CR4 {
    static let vme: UInt64 = 1 << 0, pvi: UInt64 = 1 << 1, tsd: UInt64 = 1 << 2, de: UInt64 = 1 << 3
    static let pse: UInt64 = 1 << 4, pae: UInt64 = 1 << 5, mce: UInt64 = 1 << 6, pge: UInt64 = 1 << 7
    static let pce: UInt64 = 1 << 8, osfxsr: UInt64 = 1 << 9, osxmmexcpt: UInt64 = 1 << 10
    static let fsgsbase: UInt64 = 1 << 16
    /// Bits a guest may set: only features CPUID advertises.
    static let allowed: UInt64 = vme | pvi | tsd | de | pse | pae | mce | pge | pce | osfxsr | osxmmexcpt | fsgsbase
}

enum EFER {
    static let sce: UInt64 = 1 << 0, lme: UInt64 = 1 << 8, lma: UInt64 = 1 << 10, nxe: UInt64 = 1 << 11
    static let allowed: UInt64 = sce | lme | lma | nxe
}

/// A segment register's hidden part, as loaded from a descriptor.
struct SegmentCache: Equatable {
    var selector: UInt16 = 0
    var base: UInt64 = 0
    /// Byte-granular limit (already scaled by G).
    var limit: UInt32 = 0xFFFF
    /// Descriptor attribute bits 8-15 and 20-23 of the high dword, packed as in VMX access rights:
    /// bits 0-3 type, 4 S, 5-6 DPL, 7 P, 12 AVL, 13 L, 14 D/B, 15 G.
    var attr: UInt16 = 0x93

    var type: UInt8 { UInt8(attr & 0xF) }
    var dpl: Int { Int(attr >> 5) & 3 }
    var present: Bool { attr & 0x80 != 0 }
    var s: Bool { attr & 0x10 != 0 }
    var l: Bool { attr & 0x2000 != 0 }
    var db: Bool { attr & 0x4000 != 0 }
    var isCode: Bool { s && attr & 0x8 != 0 }

    init() {}
    init(selector: UInt16, base: UInt64, limit: UInt32, attr: UInt16) {
        self.selector = selector; self.base = base; self.limit = limit; self.attr = attr
    }
}

/// Lazy-flags operation kinds. The value stored is `kind << 2 | sizeIndex` (0 = 8-bit ... 3 = 64-bit).
enum CC {
    /// Flags are materialised in `ccSrc` (OSZAPC bits).
    static let eflags: UInt32 = 0
    static let add: UInt32 = 1, adc: UInt32 = 2, sub: UInt32 = 3, sbb: UInt32 = 4
    static let logic: UInt32 = 5, inc: UInt32 = 6, dec: UInt32 = 7
    /// SF/ZF/PF from `ccDst`; CF, OF and AF given explicitly in `ccSrc` (shifts, rotates, multiplies).
    static let szp: UInt32 = 8
    /// Shifts by a non-zero masked count: `ccDst` the result, `ccSrc` the value shifted, `ccSrc2` the
    /// count. CF is the last bit shifted out; OF as for a 1-bit shift (hardware leaves it undefined
    /// for larger counts); AF 0.
    static let shl: UInt32 = 9, shr: UInt32 = 10, sar: UInt32 = 11
    /// ROL/ROR by a non-zero count: `ccDst` the result (CF and OF follow from it, OF as for a
    /// 1-bit rotate); SF ZF AF PF are those of the lazy state saved in the `...Prev` fields.
    static let rol: UInt32 = 12, ror: UInt32 = 13
}

/// Everything the interpreter keeps per CPU except the general registers (in their own buffer).
struct CPUState {
    // Lazy arithmetic flags: see Flags.swift.
    var ccOp: UInt32 = CC.eflags
    var ccDst: UInt64 = 0
    var ccSrc: UInt64 = 0
    var ccSrc2: UInt64 = 0
    /// The lazy state a rotate keeps SF ZF AF PF from (CC.rol/ror); never itself a rotate's.
    var ccOpPrev: UInt32 = CC.eflags
    var ccDstPrev: UInt64 = 0
    var ccSrcPrev: UInt64 = 0
    var ccSrc2Prev: UInt64 = 0
    /// RFLAGS bits other than OSZAPC (bit 1 always set).
    var flagsRest: UInt64 = Flag.fixed1

    var cr0: UInt64 = CR0.et
    var cr2: UInt64 = 0
    var cr3: UInt64 = 0
    var cr4: UInt64 = 0
    var efer: UInt64 = 0
    var dr: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
    var dr6: UInt64 = 0xFFFF0FF0
    var dr7: UInt64 = 0x400

    var gdtBase: UInt64 = 0, gdtLimit: UInt32 = 0xFFFF
    var idtBase: UInt64 = 0, idtLimit: UInt32 = 0xFFFF
    var ldtr = SegmentCache(selector: 0, base: 0, limit: 0xFFFF, attr: 0x82)
    var tr = SegmentCache(selector: 0, base: 0, limit: 0xFFFF, attr: 0x8B)

    /// Current privilege level (CS.RPL in protected mode, 0 in real mode).
    var cpl: Int = 0
    /// Default code size: 0 = 16-bit, 1 = 32-bit, 2 = 64-bit (long mode with CS.L).
    var codeSize: Int = 0
    /// Stack pointer width: 0xFFFF, 0xFFFF_FFFF or all ones (from SS.B and the mode).
    var stackMask: UInt64 = 0xFFFF
    /// Linear addresses are truncated to 32 bits outside long mode.
    var linearMask: UInt64 = 0xFFFF_FFFF

    // MSRs.
    var star: UInt64 = 0, lstar: UInt64 = 0, cstar: UInt64 = 0, sfmask: UInt64 = 0
    var kernelGSBase: UInt64 = 0
    var sysenterCS: UInt64 = 0, sysenterESP: UInt64 = 0, sysenterEIP: UInt64 = 0
    var pat: UInt64 = 0x0007_0406_0007_0406
    var miscEnable: UInt64 = 1  // fast strings
    var tscOffset: UInt64 = 0
    var tscAux: UInt64 = 0
    /// MTRRs enabled, default type write-back (no firmware runs to program them).
    var mtrrDefType: UInt64 = 0x806

    // Execution bookkeeping.
    /// 0 when CPL < 3, TLBSize.entries at CPL 3: user and supervisor translations live apart.
    var tlbHalf: Int = 0
    /// Something may have made an interrupt deliverable (device I/O, APIC write, IF set, timer).
    var eventCheck = true
    var halted = false
    /// Interrupts are inhibited until after the next instruction (STI, MOV SS, POP SS).
    var interruptShadow = false
    /// Ends the current block after this instruction: a write invalidated decoded code, or a REP
    /// instruction yielded part-way.
    var codeModified = false
    /// A triple fault happened: the run loop returns `.shutdown`.
    var shutdown = false
    /// A fault raised inside executeBlock, for the caller to deliver.
    var pendingFault = false
    var faultVector: UInt8 = 0
    var faultCode: UInt32 = 0
    var faultHasCode = false
    /// An intercepted exception stops the run loop (test hook).
    var testStop = false
    /// Nested exception bookkeeping during delivery (for #DF / triple fault).
    var deliveringVector: Int = -1
    /// Validity of block chain links (BlockCache.swift); here so translated code can check it.
    var chainEpoch: UInt32 = 1
}

