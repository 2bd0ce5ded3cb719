// The binary translator: turns a decoded block of 64-bit guest code (the interpreter's trace of
// `DecodedInsn`s) into host x86-64 code.
//
// Design (docs/architecture.md, "The translator"):
// - Guest registers stay in the interpreter's register file (r15 points at it); every translated
//   instruction reads and writes them there, so guest state is exact at every instruction boundary
//   and slow paths need no write-back. The block's entry RIP is in rbx; every RIP-dependent value is
//   rbx + a constant, so a translation serves any linear address its physical page is mapped at.
// - Flags: the interpreter's lazy representation (ccOp/ccDst/ccSrc/ccSrc2 in CPUState, r14) is the
//   truth at every exit, slow path and helper call. A producer stores it only when something after
//   it may look before the next full producer (backward liveness). Within a block the host's own
//   RFLAGS, left by the same operation run natively, serve Jcc/SETcc/CMOVcc/ADC directly; when a
//   TLB check would clobber them while they are still needed, they are saved in AH/AL and restored.
// - Memory: an inline lookup in the interpreter's software TLB (r13); a miss, a page crossing, MMIO
//   or a write to a page holding decoded code goes to the slow path, which runs the whole instruction
//   in the interpreter (nothing was changed before the check, so this is exact, faults included).
// - Anything not translated natively is run by the interpreter through a helper call, one
//   instruction at a time, with RIP and flags exactly as the interpreter expects them.
// - Budget: each entry of the block subtracts its length from an instruction budget (r12+0) and
//   leaves if it would go negative; every early exit gives back what it did not retire. A loop back
//   to the block start goes through that check, so no translated loop runs unbounded.

/// What the translator needs to know about the interpreter's memory layout.
struct JITLayout {
    static let regsRip: Int32 = Int32(Reg.rip * 8)
    static let ccOp = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccOp)!)
    static let ccDst = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccDst)!)
    static let ccSrc = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccSrc)!)
    static let ccSrc2 = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccSrc2)!)
    static let ccOpPrev = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccOpPrev)!)
    static let ccDstPrev = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccDstPrev)!)
    static let ccSrcPrev = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccSrcPrev)!)
    static let ccSrc2Prev = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.ccSrc2Prev)!)
    static let eventCheck = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.eventCheck)!)
    static let tlbStride = Int32(MemoryLayout<TLBEntry>.stride)
    static let tlbRtag = Int32(MemoryLayout<TLBEntry>.offset(of: \TLBEntry.rtag)!)
    static let tlbWtag = Int32(MemoryLayout<TLBEntry>.offset(of: \TLBEntry.wtag)!)
    static let tlbAddend = Int32(MemoryLayout<TLBEntry>.offset(of: \TLBEntry.addend)!)
    static let tlbXtag = Int32(MemoryLayout<TLBEntry>.offset(of: \TLBEntry.xtag)!)
    static let tlbPhys = Int32(MemoryLayout<TLBEntry>.offset(of: \TLBEntry.phys)!)

    // The JIT context (r12): see JITRuntime.swift.
    static let ctxBudget: Int32 = 0
    static let ctxSelf: Int32 = 8
    static let ctxHelperExec: Int32 = 16
    static let ctxHelperFlags: Int32 = 24
    static let ctxRegs: Int32 = 32
    static let ctxState: Int32 = 40
    static let ctxTLB: Int32 = 48
    static let ctxPageGen: Int32 = 56
    static let ctxSegBase: Int32 = 64   // 8 x UInt64: the interpreter's segBase array lives here
    /// Where the last chainable exit left (its link site), for the dispatcher to patch.
    static let ctxExitSite: Int32 = 128
    /// The indirect-branch table (see `JIT.ibtc`).
    static let ctxIBTC: Int32 = 136
    /// The FXSAVE image holding the XMM registers.
    static let ctxFX: Int32 = 144
    static let ctxSize = 192
    static let cr0 = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.cr0)!)
    static let cr4 = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.cr4)!)
    static let chainEpoch = Int32(MemoryLayout<CPUState>.offset(of: \CPUState.chainEpoch)!)
}

/// Guest arithmetic flag bits, as in RFLAGS.
enum GF {
    static let cf: UInt16 = 0x1, pf: UInt16 = 0x4, af: UInt16 = 0x10, zf: UInt16 = 0x40, sf: UInt16 = 0x80
    static let of: UInt16 = 0x800
    static let all: UInt16 = cf | pf | af | zf | sf | of

    /// Flags a condition code reads.
    static func read(_ cc: UInt8) -> UInt16 {
        switch cc >> 1 {
        case 0: return of
        case 1: return cf
        case 2: return zf
        case 3: return cf | zf
        case 4: return sf
        case 5: return pf
        case 6: return sf | of
        default: return zf | sf | of
        }
    }
}

/// Helper status codes returned by the interpreter helper and by translated code.
enum JITStatus {
    /// Continue with the next instruction.
    static let next: UInt32 = 0
    /// Leave the block; the instruction retired and RIP is set.
    static let exitRetired: UInt32 = 1
    /// Leave the block; the instruction faulted (nothing retired, fault pending, RIP at it).
    static let exitFault: UInt32 = 2
    /// Left through a direct exit whose link site (ctx exitSite) can be patched to jump straight
    /// to the next translation.
    static let exitChain: UInt32 = 3
    /// Why a retired exit left (bits 8-10, for the profile; 0: a helper asked).
    static let reasonFallOff: UInt32 = 1 << 8
    static let reasonIndirect: UInt32 = 2 << 8
    static let reasonBudget: UInt32 = 3 << 8
    static let reasonEvent: UInt32 = 4 << 8
}

/// The patchable link at a direct exit of translated code, in two fixed encodings. Both start with
/// `lea rbx, [rbx+delta]` (the target's RIP). Within the block's own page the target's mapping is
/// the one this block was entered through, so the link is just `jmp TARGET`. To another page it
/// checks, like a fetch would, that the current TLB maps the target page for execution to the
/// physical page the target was translated from, and that the page's code is unchanged:
/// `TLB[la].xtag == la page; TLB[la].phys >> 12 == PAGE; pageGen[PAGE] == GEN; jmp TARGET`.
/// Unpatched, the jump goes to the slow exit (and PAGE/GEN never match: GEN 0 with PAGE 0 could,
/// but the jump still leads to the slow exit until patched).
enum LinkSite {
    static let samePageJump = 8, samePageEnd = 12
    static let pageImm = 62, pageDisp = 82, genImm = 86, crossJump = 97, crossEnd = 101
    /// The byte at +7 tells the encodings apart.
    static let samePageTag: UInt8 = 0xE9
}

struct TranslatedBlock {
    var code: [UInt8]
}

/// Translates one block. Not reusable: create one per block.
struct BlockTranslator {
    let insns: UnsafeMutablePointer<DecodedInsn>
    let count: Int
    /// Page offset of each instruction, and of the instruction after the last one.
    var offsets: [Int] = []
    let entryOffset: Int
    /// Displacement of this CPL's half of the TLB.
    let tlbHalf: Int32

    var a = Assembler()
    /// Flags the host RFLAGS currently holds exactly as the guest sees them.
    var hostValid: UInt16 = 0
    /// Whether the lazy state in memory is a rotate's (CC.rol/ror), when known at this point.
    var memKindRot: Bool? = nil
    /// Per instruction: flags that must be exact in the lazy state after it (a producer stores its
    /// lazy form only when some of these are its own).
    var memLiveAfter: [UInt16] = []
    /// Per instruction: translated natively (after analysis).
    var nativeAllowed: [Bool] = []
    /// Per instruction: flags some later native consumer wants from the host before the next full
    /// producer (decides whether host flags are saved around clobbering code).
    var hostLiveAfter: [UInt16] = []

    /// Out-of-line code emitted after the block body.
    var stubs: [(Label, Stub)] = []
    let head: Label
    var usesHelpers = false

    enum Stub {
        /// Run instruction `index` in the interpreter, then continue at `resume`.
        case slowPath(index: Int, resume: Label, reloadFlags: Bool)
        /// Leave the block with RIP = entry + `ripDelta` after `retired` instructions.
        case exit(ripDelta: Int, retired: Int)
        /// Leave after a helper said so (status in eax), `index` being the instruction it ran.
        case helperExit(index: Int)
        /// Not enough budget at the head.
        case budget
        /// Back to the head after `retired` instructions (a loop to the block's own start).
        case backEdge(retired: Int)
    }

    init(insns: UnsafeMutablePointer<DecodedInsn>, count: Int, entryOffset: Int, cpl: Int) {
        self.insns = insns
        self.count = count
        self.entryOffset = entryOffset
        self.tlbHalf = cpl == 3 ? Int32(TLBSize.entries) * JITLayout.tlbStride : 0
        var o = entryOffset
        offsets.reserveCapacity(count + 1)
        for i in 0..<count {
            offsets.append(o)
            let d = insns[i]
            o = d.pfx & Pfx.trace != 0 ? Int(UInt32(bitPattern: d.disp)) : o + Int(d.len)
        }
        offsets.append(o)
        head = a.newLabel()
    }

    // MARK: Instruction classes

    /// How the translator handles an instruction, and what it does to flags.
    struct Shape {
        var native = false
        /// Flags it reads (natively from the host, or from the lazy state).
        var reads: UInt16 = 0
        /// Flags it sets.
        var writes: UInt16 = 0
        /// May leave the block or run the interpreter (slow path, helper, branch out); every flag
        /// must then be exact in the lazy state.
        var mayExit = true
        /// Has a TLB lookup, which clobbers the host flags unless they are saved around it.
        var lookup = false
        /// Host flags valid afterwards: (hostIn & keep) | set.
        var keep: UInt16 = 0
        var set: UInt16 = 0
    }

    func shape(_ d: DecodedInsn) -> Shape {
        var s = Shape()
        let all = GF.all
        switch d.op {
        case .mov64RR, .mov32RR, .lea64, .lea32, .movsxd64RR, .movImm64R, .movImm32R, .nopFast,
             .movzx8R, .movzx16R:
            s.native = true; s.mayExit = false; s.keep = all
        case .load64, .load32, .store64, .store32, .store8, .storeImm64, .storeImm32, .movzx8M, .movzx16M,
             .push64R, .pop64R:
            s.native = true; s.lookup = true; s.keep = all
        case .add64RR, .sub64RR, .cmp64RR, .add32RR, .sub32RR, .cmp32RR, .add64RI, .sub64RI, .cmp64RI,
             .add32RI, .sub32RI, .cmp32RI, .cmp8RI:
            s.native = true; s.writes = all; s.mayExit = false; s.set = all
        case .and64RR, .or64RR, .xor64RR, .test64RR, .and32RR, .or32RR, .xor32RR, .test32RR,
             .and64RI, .or64RI, .xor64RI, .and32RI, .or32RI, .xor32RI, .test8RR:
            s.native = true; s.writes = all; s.mayExit = false; s.set = all & ~GF.af
        case .shl64RI, .shr64RI, .sar64RI, .shl32RI, .shr32RI, .sar32RI:
            s.native = true; s.writes = all; s.mayExit = false
            s.set = GF.cf | GF.zf | GF.sf | GF.pf | (d.imm == 1 ? GF.of : 0)
        case .rol64RI, .ror64RI, .rol32RI, .ror32RI:
            s.native = true; s.writes = GF.cf | GF.of; s.mayExit = false
            s.keep = all & ~(GF.cf | GF.of); s.set = GF.cf | (d.imm == 1 ? GF.of : 0)
        case .imul64RR, .imul64RRI:
            s.native = true; s.writes = all; s.mayExit = false
        case .adc64RR, .sbb64RR, .adc64RI:
            s.native = true; s.reads = GF.cf; s.writes = all; s.mayExit = false; s.set = all
        case .add64RM, .cmp64RM, .cmp64MI, .cmp32MI, .cmp64MR, .cmp32MR, .cmp8MI:
            s.native = true; s.writes = all; s.lookup = true; s.set = all
        case .test8MI:
            s.native = true; s.writes = all; s.lookup = true; s.set = all & ~GF.af
        case .alu64MR, .alu32MR, .alu64MI, .alu32MI:
            s.native = true; s.writes = all; s.lookup = true
            let k = d.sub & 7
            if k == AluKind.adc || k == AluKind.sbb { s.reads = GF.cf }
            s.set = k == AluKind.and || k == AluKind.or || k == AluKind.xor ? all & ~GF.af : all
        case .inc64R, .dec64R, .inc32R, .dec32R:
            s.native = true; s.reads = GF.cf; s.writes = all & ~GF.cf; s.mayExit = false
            s.keep = GF.cf; s.set = all & ~GF.cf
        case .setccR, .cmov64RR, .cmov32RR:
            s.native = true; s.reads = GF.read(d.sub); s.mayExit = false; s.keep = all
        case .jz64, .jnz64, .jcc64:
            s.native = true; s.reads = d.op == .jcc64 ? GF.read(d.sub) : GF.zf; s.keep = all
        case .jmp64:
            s.native = true; s.mayExit = d.pfx & Pfx.trace == 0; s.keep = all
        case .call64, .ret64:
            s.native = true; s.lookup = true; s.keep = all
        case .sse where BlockTranslator.sseForm(d) != nil:
            s.native = true; s.lookup = true; s.keep = all
        default:
            if let g = genericShape(d) { return g }
            s.reads = all   // the interpreter may read any flag
            s.writes = all
        }
        return s
    }

    // MARK: Analysis

    /// Per instruction, what the emitter needs to know about flags (see the file comment).
    mutating func analyse() {
        let shapes = (0..<count).map { shape(insns[$0]) }
        do {
            // 1. Which flags some later native consumer wants from the host (syntactic: up to the
            //    next writer of those flags; a helper call ends it).
            hostLiveAfter = Array(repeating: 0, count: count)
            var hostLive: UInt16 = 0
            for i in stride(from: count - 1, through: 0, by: -1) {
                hostLiveAfter[i] = hostLive
                let s = shapes[i]
                if !s.native { hostLive = 0; continue }
                hostLive = (hostLive & ~s.writes) | s.reads
            }
            // 2. Forward: which flags the host holds before each instruction, and which consumers
            //    will have to load them from the lazy state.
            var fromMemory = Array(repeating: false, count: count)
            var host: UInt16 = 0
            for i in 0..<count {
                let s = shapes[i]
                if !s.native { host = 0; continue }
                if s.reads & host != s.reads { fromMemory[i] = true; host = GF.all }
                if s.lookup {
                    let liveAcross = s.reads | (hostLiveAfter[i] & ~s.writes)
                    if !(host != 0 && liveAcross != 0) { host = 0 }
                }
                host = (host & s.keep) | s.set
                if s.lookup && !(host != 0 && hostLiveAfter[i] != 0) { host = 0 }
            }
            // 3. Backward: which flags must be exact in the lazy state after each instruction.
            memLiveAfter = Array(repeating: 0, count: count)
            var live = GF.all   // the block's exit
            for i in stride(from: count - 1, through: 0, by: -1) {
                memLiveAfter[i] = live
                let s = shapes[i]
                // INC/DEC store CF too (taken from the host): for the lazy state they define every
                // flag. A rotate's lazy form keeps the state before it for SF ZF AF PF.
                live &= s.native && s.keep == GF.cf ? 0 : ~s.writes
                if s.mayExit || !s.native { live = GF.all }
                if fromMemory[i] { live |= s.reads }
            }
            nativeAllowed = shapes.map { $0.native }
            return
        }
    }

    // MARK: Emission helpers

    func greg(_ off: UInt8) -> HRM { .m(HMem(.r15, Int32(off))) }
    static let ccOpM = HRM.m(HMem(.r14, JITLayout.ccOp))
    static let ccDstM = HRM.m(HMem(.r14, JITLayout.ccDst))
    static let ccSrcM = HRM.m(HMem(.r14, JITLayout.ccSrc))
    static let ccSrc2M = HRM.m(HMem(.r14, JITLayout.ccSrc2))

    /// Stores the lazy flags of a producer (only when they can be looked at).
    mutating func lazy(_ i: Int, kind: UInt32, size: Int, dst: HReg, src: HReg?) {
        guard memLiveAfter[i] != 0 else { return }
        memKindRot = false
        a.storeImm(4, BlockTranslator.ccOpM, Int32(kind << 2 | UInt32(sizeIndexOf(size))))
        a.store(8, BlockTranslator.ccDstM, dst)
        if let src { a.store(8, BlockTranslator.ccSrcM, src) }
    }

    func sizeIndexOf(_ size: Int) -> Int { size == 1 ? 0 : size == 2 ? 1 : size == 4 ? 2 : 3 }

    /// Saves host flags into AH/AL if they must survive clobbering code at instruction `i`.
    mutating func saveFlagsIfLive(_ live: UInt16) -> Bool {
        guard hostValid & live != 0 else { return false }
        a.lahf()
        a.setcc(0, .r(.rax))   // SETO AL
        return true
    }

    mutating func restoreFlags() {
        a.aluImm(0, 1, .r(.rax), 0x7F)   // ADD AL, 0x7F: OF from AL
        a.sahf()
    }

    /// Makes the host flags hold the guest flags, from the lazy state (helper call).
    mutating func materialiseFlags() {
        a.mov(.rdi, .r12)
        a.call(.m(HMem(.r12, JITLayout.ctxHelperFlags)))
        restoreFlags()
        hostValid = GF.all
    }

    /// Ensures the host flags hold `needed`.
    mutating func need(_ needed: UInt16) {
        if hostValid & needed != needed { materialiseFlags() }
    }

    func ripDelta(_ pageOffset: Int) -> Int32 { Int32(pageOffset - entryOffset) }

    /// Computes the linear address of instruction `i`'s memory operand into rdi (no flags touched);
    /// `segment: false` gives the effective address (LEA).
    mutating func address(_ i: Int, segment: Bool) {
        let d = insns[i]
        let disp = Int64(d.disp)
        if Int(d.base) == Reg.rip * 8 {
            let off = Int64(ripDelta(offsets[i + 1])) + disp
            if let o = Int32(exactly: off) {
                a.lea(.rdi, HMem(.rbx, o))
            } else {
                a.movImm(.rdi, UInt64(bitPattern: off))
                a.lea(.rdi, HMem(.rdi, index: .rbx, scale: 0))
            }
        } else {
            let hasBase = Int(d.base) != Reg.zero * 8
            let hasIndex = Int(d.index) != Reg.zero * 8
            if hasBase { a.load(8, .rdi, greg(d.base)) } else { a.movImm(.rdi, 0) }
            if hasIndex {
                a.load(8, .rdx, greg(d.index))
                a.lea(.rdi, HMem(.rdi, index: .rdx, scale: d.scale, disp: d.disp))
            } else if d.disp != 0 {
                a.lea(.rdi, HMem(.rdi, d.disp))
            }
        }
        if d.asz == 2 { a.load(4, .rdi, .r(.rdi)) }   // 32-bit addressing: the offset wraps at 4 GiB
        let seg = Int(d.seg)
        if segment && (seg == Seg.fs || seg == Seg.gs) {
            a.load(8, .rdx, .m(HMem(.r12, JITLayout.ctxSegBase + Int32(seg * 8))))
            a.lea(.rdi, HMem(.rdi, index: .rdx, scale: 0))
        }
    }

    /// TLB lookup for an access of `size` bytes at rdi: on a hit rsi = host pointer, otherwise
    /// jumps to `slow`. Clobbers rdx, rsi and the flags.
    mutating func tlbLookup(size: Int, write: Bool, slow: Label) {
        a.mov(.rsi, .rdi)
        a.shiftImm(5, 8, .r(.rsi), 12)
        a.aluImm(4, 4, .r(.rsi), Int32(TLBSize.mask))
        a.lea(.rsi, HMem(.rsi, index: .rsi, scale: 2))   // * 5: entries are 40 bytes, scaled by 8 below
        if size > 1 { a.lea(.rdx, HMem(.rdi, Int32(size - 1))) } else { a.mov(.rdx, .rdi) }
        a.aluImm(4, 8, .r(.rdx), -4096)
        let tag = write ? JITLayout.tlbWtag : JITLayout.tlbRtag
        a.alu(7, 8, .rdx, .m(HMem(.r13, index: .rsi, scale: 3, disp: tlbHalf + tag)))
        a.jcc(5, slow)   // JNE
        a.load(8, .rsi, .m(HMem(.r13, index: .rsi, scale: 3, disp: tlbHalf + JITLayout.tlbAddend)))
        a.alu(0, 8, .rsi, .r(.rdi))
    }

    /// Registers the slow path of instruction `i` and binds its resume point here.
    mutating func slowPath(_ i: Int, _ slow: Label, resume: Label) {
        // After the interpreter ran the instruction, the host flags hold nothing unless reloaded.
        let reload = hostValid != 0 && hostLiveAfter[i] != 0
        stubs.append((slow, .slowPath(index: i, resume: resume, reloadFlags: reload)))
    }

    mutating func stubs_appendBackEdge(_ l: Label, retired: Int) {
        stubs.append((l, .backEdge(retired: retired)))
    }

    mutating func exitStub(ripDelta: Int, retired: Int) -> Label {
        let l = a.newLabel()
        stubs.append((l, .exit(ripDelta: ripDelta, retired: retired)))
        return l
    }

    // MARK: Translation

    /// Translates the block (even one of helpers only: its exits still link to the blocks around
    /// it). Nil when the code does not fit the assembler's limits.
    mutating func translate() -> [UInt8]? {
        analyse()
        // Head: budget check.
        a.bind(head)
        let budgetFail = a.newLabel()
        stubs.append((budgetFail, .budget))
        a.aluImm(5, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(count))
        a.jcc(0xC, budgetFail)   // JL
        hostValid = 0
        var i = 0
        var ended = false
        while i < count {
            if !(nativeAllowed[i] && emitNative(i)) {
                emitHelper(i)
            }
            if blockEnded { ended = true; break }
            i += 1
        }
        if !ended {
            // Fell off the end: continue at the next instruction — through a link when the block
            // ended only for its length or page (or after port I/O, POPF, or a data-segment load,
            // which leave the code's mapping alone and raise events the link checks for).
            if count > 0, Self.fallOffCanLink(insns[count - 1]) {
                emitChainableExit(ripDelta: Int(ripDelta(offsets[count])), retired: count)
            } else {
                emitExit(ripDelta: Int(ripDelta(offsets[count])), retired: count)
            }
        }

        emitStubs()
        guard a.finish() else { return nil }
        return a.bytes
    }

    /// Whether a block whose last instruction is `d` may continue into the next block through a
    /// link: not after an instruction that can change how code is fetched (paging, CS, mode).
    static func fallOffCanLink(_ d: DecodedInsn) -> Bool {
        switch d.op {
        case .inDX, .outDX, .inImm, .outImm, .popf: return true
        case .movSregE: return d.reg != UInt8(Seg.ss)
        case .lgdt, .lidt, .lmsw, .invlpg, .movToCR, .movToDR, .wrmsr, .popSeg, .lxs, .ins, .outs, .ud, .unimpl,
             .hlt, .sti, .int, .int1, .int3, .into, .iret, .retf, .callFarImm, .jmpFarImm, .callFarE, .jmpFarE,
             .syscall, .sysret, .sysenter, .sysexit:
            return false
        default:
            // Ops the decoder does not end blocks with: the block ended for its length or page.
            return true
        }
    }

    /// Set by a control transfer that ends the block.
    var blockEnded = false

    /// Leaves with RIP = entry + delta after `retired` instructions.
    mutating func emitExit(ripDelta: Int, retired: Int) {
        a.lea(.rcx, HMem(.rbx, Int32(ripDelta)))
        a.store(8, .m(HMem(.r15, JITLayout.regsRip)), .rcx)
        emitReturn(retired: retired, status: JITStatus.exitRetired | JITStatus.reasonFallOff)
    }

    /// A direct exit: gives back the unretired budget, then follows its link when the dispatcher
    /// has patched one (and no event wants the run loop), else leaves with RIP set and its site.
    mutating func emitChainableExit(ripDelta: Int, retired: Int) {
        if retired < count { a.aluImm(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(count - retired)) }
        let slow = a.newLabel(), late = a.newLabel()
        a.aluImm(7, 1, .m(HMem(.r14, JITLayout.eventCheck)), 0)
        a.jcc(5, slow)
        let site = a.newLabel()
        a.bind(site)
        let start = a.position
        a.raw([0x48, 0x8D, 0x9B]); a.u32(UInt32(bitPattern: Int32(ripDelta)))   // lea rbx, [rbx+delta]
        let targetOffset = entryOffset + ripDelta
        if targetOffset >= 0 && targetOffset < 4096 {
            a.jmp(late)
            precondition(a.position - start == LinkSite.samePageEnd, "link site layout")
        } else {
            let xtag = UInt32(bitPattern: tlbHalf + JITLayout.tlbXtag), phys = UInt32(bitPattern: tlbHalf + JITLayout.tlbPhys)
            a.raw([0x48, 0x89, 0xDE, 0x48, 0xC1, 0xEE, 0x0C, 0x81, 0xE6, 0xFF, 0x03, 0x00, 0x00,
                   0x48, 0x8D, 0x34, 0xB6, 0x48, 0x89, 0xDA, 0x48, 0x81, 0xE2, 0x00, 0xF0, 0xFF, 0xFF,
                   0x49, 0x3B, 0x94, 0xF5])
            a.u32(xtag)
            a.jcc(5, late)
            a.raw([0x49, 0x8B, 0x94, 0xF5]); a.u32(phys)
            a.raw([0x48, 0xC1, 0xEA, 0x0C, 0x81, 0xFA]); a.u32(0)
            a.jcc(5, late)
            a.raw([0x49, 0x8B, 0x84, 0x24]); a.u32(UInt32(bitPattern: JITLayout.ctxPageGen))
            a.raw([0x81, 0xB8]); a.u32(0); a.u32(0)
            a.jcc(5, late)
            a.jmp(late)
            precondition(a.position - start == LinkSite.crossEnd, "link site layout")
        }
        a.bind(slow)
        a.lea(.rbx, HMem(.rbx, Int32(ripDelta)))
        a.bind(late)   // rbx = the target's RIP from here
        a.store(8, .m(HMem(.r15, JITLayout.regsRip)), .rbx)
        a.leaRIP(.rax, site)
        a.store(8, .m(HMem(.r12, JITLayout.ctxExitSite)), .rax)
        a.movImm(.rax, UInt64(JITStatus.exitChain))
        a.ret()
    }

    /// Leaves after an indirect branch whose target RIP is in rcx (already stored as RIP), through
    /// the indirect-branch table when it holds a translation valid for that RIP now (same checks
    /// as a cross-page link, see `LinkSite`), else back to the dispatcher.
    mutating func emitIndirectExit(retired: Int) {
        if retired < count { a.aluImm(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(count - retired)) }
        let slow = a.newLabel()
        a.mov(.rbx, .rcx)
        a.aluImm(7, 1, .m(HMem(.r14, JITLayout.eventCheck)), 0)
        a.jcc(5, slow)
        a.load(8, .rdi, .m(HMem(.r12, JITLayout.ctxIBTC)))
        a.mov(.rdx, .rbx)
        a.shiftImm(5, 8, .r(.rdx), 12)
        a.alu(6, 8, .rdx, .r(.rbx))
        a.aluImm(4, 4, .r(.rdx), Int32(truncatingIfNeeded: JIT.ibtcEntries - 1))
        a.shiftImm(4, 4, .r(.rdx), 5)
        a.alu(0, 8, .rdi, .r(.rdx))                                  // rdi = entry
        a.alu(7, 8, .rbx, .m(HMem(.rdi, 0)))                          // la
        a.jcc(5, slow)
        a.aluImm(7, 4, .m(HMem(.rdi, 24)), Int32(truncatingIfNeeded: tlbHalf == 0 ? 0 : 3))   // translated for this CPL
        a.jcc(5, slow)
        a.mov(.rsi, .rbx)
        a.shiftImm(5, 8, .r(.rsi), 12)
        a.aluImm(4, 4, .r(.rsi), Int32(TLBSize.mask))
        a.lea(.rsi, HMem(.rsi, index: .rsi, scale: 2))
        a.mov(.rdx, .rbx)
        a.aluImm(4, 8, .r(.rdx), -4096)
        a.alu(7, 8, .rdx, .m(HMem(.r13, index: .rsi, scale: 3, disp: tlbHalf + JITLayout.tlbXtag)))
        a.jcc(5, slow)
        a.load(8, .rdx, .m(HMem(.r13, index: .rsi, scale: 3, disp: tlbHalf + JITLayout.tlbPhys)))
        a.shiftImm(5, 8, .r(.rdx), 12)
        a.alu(7, 4, .rdx, .m(HMem(.rdi, 16)))                         // the page it was translated from
        a.jcc(5, slow)
        a.load(8, .rax, .m(HMem(.r12, JITLayout.ctxPageGen)))
        a.load(4, .rdx, .m(HMem(.rax, index: .rdx, scale: 2)))
        a.alu(7, 4, .rdx, .m(HMem(.rdi, 20)))                         // and its code is unchanged
        a.jcc(5, slow)
        a.jmp(.m(HMem(.rdi, 8)))
        a.bind(slow)
        a.movImm(.rax, UInt64(JITStatus.exitRetired | JITStatus.reasonIndirect))
        a.ret()
    }

    mutating func emitReturn(retired: Int, status: UInt32) {
        if retired < count { a.aluImm(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(count - retired)) }
        a.movImm(.rax, UInt64(status))
        a.ret()
    }

    /// Runs instruction `i` in the interpreter.
    mutating func emitHelper(_ i: Int) {
        usesHelpers = true
        callInterpreter(i)
        if insns[i].op == .callE || insns[i].op == .jmpE {
            // An indirect call or jump: the interpreter computes the target (and pushes), then the
            // block leaves through the indirect-branch table rather than the run loop.
            a.aluImm(7, 4, .r(.rax), Int32(JITStatus.exitFault))
            let out = a.newLabel()
            stubs.append((out, .helperExit(index: i)))
            a.jcc(4, out)   // JE: faulted
            a.load(8, .rcx, .m(HMem(.r15, JITLayout.regsRip)))
            emitIndirectExit(retired: i + 1)
            hostValid = 0
            memKindRot = nil
            blockEnded = true
            return
        }
        a.aluImm(7, 4, .r(.rax), 0)   // CMP EAX, 0
        let out = a.newLabel()
        stubs.append((out, .helperExit(index: i)))
        a.jcc(5, out)
        hostValid = 0
        memKindRot = nil
    }

    mutating func callInterpreter(_ i: Int) {
        a.mov(.rdi, .r12)
        a.movImm(.rsi, UInt64(UInt(bitPattern: insns + i)))
        // RIP after the instruction itself (for a branch inside a trace, not the trace's next).
        a.lea(.rdx, HMem(.rbx, ripDelta(offsets[i] + Int(insns[i].len))))
        a.call(.m(HMem(.r12, JITLayout.ctxHelperExec)))
    }

    mutating func emitStubs() {
        var k = 0
        while k < stubs.count {
            let (label, stub) = stubs[k]
            k += 1
            a.bind(label)
            switch stub {
            case .budget:
                a.aluImm(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(count))
                a.store(8, .m(HMem(.r15, JITLayout.regsRip)), .rbx)
                a.movImm(.rax, UInt64(JITStatus.exitRetired | JITStatus.reasonBudget))
                a.ret()
            case .exit(let delta, let retired):
                emitChainableExit(ripDelta: delta, retired: retired)
            case .slowPath(let index, let resume, let reload):
                callInterpreter(index)
                a.aluImm(7, 4, .r(.rax), 0)
                let out = a.newLabel()
                stubs.append((out, .helperExit(index: index)))
                a.jcc(5, out)
                if reload {
                    a.mov(.rdi, .r12)
                    a.call(.m(HMem(.r12, JITLayout.ctxHelperFlags)))
                    restoreFlags()
                }
                a.jmp(resume)
            case .backEdge(let retired):
                if retired < count { a.aluImm(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(count - retired)) }
                // Something a helper did may want the run loop (an interrupt to take): leave at the head.
                a.aluImm(7, 1, .m(HMem(.r14, JITLayout.eventCheck)), 0)
                let out = a.newLabel()
                a.jcc(5, out)
                a.jmp(head)
                a.bind(out)
                a.store(8, .m(HMem(.r15, JITLayout.regsRip)), .rbx)
                a.movImm(.rax, UInt64(JITStatus.exitRetired | JITStatus.reasonEvent))
                a.ret()
            case .helperExit(let index):
                // eax: 1 = retired (RIP set by the helper), 2 = faulted (not retired).
                let unretired = count - index - 1
                if unretired > 0 { a.aluImm(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), Int32(unretired)) }
                a.lea(.rcx, HMem(.rax, -1))
                a.alu(0, 8, .m(HMem(.r12, JITLayout.ctxBudget)), .rcx)
                a.ret()
            }
        }
    }
}
