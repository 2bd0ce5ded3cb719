// The decoded form of one instruction: what the decoder produces once per instruction (cached by
// physical address) and what the executor's big switch consumes. 32 bytes, no references.

/// Operation ids. Forms that differ only in operand size share an id (size is in `osz`); ALU kinds,
/// condition codes and group sub-opcodes go in `sub`.
enum Op: UInt16 {
    case ud            // architecturally undefined: #UD
    case unimpl        // valid on real CPUs but not modelled: counted, then #UD
    case nop

    // Integer ALU. sub = AluKind.
    case aluEG, aluGE, aluEI
    case testEG, testEI
    case incE, decE, notE, negE
    case mulE, imulE, divE, idivE
    case imulGE, imulGEI
    case shiftEI, shiftECL       // sub = ModRM.reg (ROL ROR RCL RCR SHL SHR SAL SAR), imm = count
    case shldI, shldCL, shrdI, shrdCL
    case btEG, btEI              // sub: 0 BT, 1 BTS, 2 BTR, 3 BTC
    case bsf, bsr
    case xadd, cmpxchg, cmpxchg8b
    case bswap
    case daa, das, aaa, aas, aam, aad, salc

    // Moves.
    case movEG, movGE, movEI
    case movzx, movsx            // sub = source size index
    case movsxd
    case lea
    case xchgEG
    case cmovcc, setcc           // sub = condition
    case cbw, cwd
    case movEsreg, movSregE      // reg = segment number
    case lxs                     // LDS/LES/LSS/LFS/LGS, sub = segment
    case xlat
    case movAccMoffs, movMoffsAcc

    // Stack.
    case pushE, pushI, popE, pushSeg, popSeg, pusha, popa, pushf, popf, enter, leave

    // Control flow.
    case jcc, jmpRel, callRel, jmpE, callE, ret, retf, iret
    case jmpFarImm, callFarImm, jmpFarE, callFarE
    case loop, jcxz              // loop: sub 0 LOOPNE, 1 LOOPE, 2 LOOP
    case int, int3, into, int1, bound

    // Flags.
    case sahf, lahf, clc, stc, cmc, cld, std, cli, sti

    // Strings. sub unused; pfx carries REP/REPNE.
    case movs, cmps, stos, lods, scas, ins, outs

    // I/O.
    case inImm, inDX, outImm, outDX

    // System.
    case hlt, cpuid, rdtsc, rdtscp, rdmsr, wrmsr, rdpmc
    case syscall, sysret, sysenter, sysexit, swapgs
    case movToCR, movFromCR, movToDR, movFromDR
    case lgdt, lidt, sgdt, sidt, lldt, ltr, sldt, str, smsw, lmsw, invlpg, clts
    case lar, lsl, verr, verw, arpl
    case wbinvd, fence, clflush, pause
    case rdwrFSGSBase            // sub: 0 RDFSBASE, 1 RDGSBASE, 2 WRFSBASE, 3 WRGSBASE

    // FPU / SIMD. imm holds the opcode (and ModRM) for the sub-decoder.
    case fwait, x87, sse, fxsave, fxrstor, ldmxcsr, stmxcsr

    // Specialised forms of the hottest instructions in 64-bit code (Specialise.swift): no operand
    // size, addressing-size or register/memory decisions left for run time. RR/RI forms write
    // `rm` from `reg` (or `imm`); memory forms have 64-bit addressing in 64-bit mode only.
    // Ordered in three groups the block loop relies on: ops that write no memory and do not
    // branch (from mov64RR), ops that write memory (from store64), control transfers (from jz64).
    case mov64RR, mov32RR, load64, load32, lea64, movsxd64RR
    case add64RR, sub64RR, cmp64RR, and64RR, or64RR, xor64RR, adc64RR, sbb64RR, test64RR
    case add32RR, sub32RR, cmp32RR, and32RR, or32RR, xor32RR, test32RR
    case add64RI, sub64RI, cmp64RI, and64RI, or64RI, xor64RI
    case add32RI, sub32RI, cmp32RI, and32RI, or32RI, xor32RI
    case add64RM, cmp64RM, cmp64MI, cmp32MI
    case shl64RI, shr64RI, sar64RI, shl32RI, shr32RI, sar32RI
    case imul64RR, imul64RRI
    case inc64R, dec64R, inc32R, dec32R
    case pop64R
    case movzx8R, movzx16R, movzx8M, movzx16M, setccR, cmov64RR, cmov32RR, movImm64R, movImm32R, nopFast
    case test8RR, cmp8RI, cmp8MI, test8MI
    case rol64RI, ror64RI, rol32RI, ror32RI, lea32, adc64RI, cmp64MR, cmp32MR
    case store64, store32, push64R, store8, storeImm64, storeImm32
    case alu64MR, alu32MR, alu64MI, alu32MI
    case jz64, jnz64, jcc64, jmp64, call64, ret64
}

/// ALU kinds in the encoding's order (the reg field of 0x80-0x83, bits 3-5 of 0x00-0x3F).
enum AluKind {
    static let add: UInt8 = 0, or: UInt8 = 1, adc: UInt8 = 2, sbb: UInt8 = 3
    static let and: UInt8 = 4, sub: UInt8 = 5, xor: UInt8 = 6, cmp: UInt8 = 7
}

/// Prefix bits kept for execution.
enum Pfx {
    static let rep: UInt8 = 1      // F3
    static let repne: UInt8 = 2    // F2
    static let lock: UInt8 = 4
    static let opsize: UInt8 = 8   // 66 (mandatory prefix for SSE)
    static let rexW: UInt8 = 16
    static let rex: UInt8 = 32
    /// A branch inside a trace: the block continues only if RIP lands on page offset `disp`.
    static let trace: UInt8 = 64
}

struct DecodedInsn {
    var op: Op = .ud
    var len: UInt8 = 0
    /// Operand size index: 0 = 8, 1 = 16, 2 = 32, 3 = 64 bits.
    var osz: UInt8 = 0
    /// Address size index: 1 = 16, 2 = 32, 3 = 64 bits.
    var asz: UInt8 = 0
    /// Segment register of the memory operand (after overrides).
    var seg: UInt8 = UInt8(Seg.ds)
    /// Register-file byte offset of ModRM.reg (for 8-bit operands AH..BH are offset+1), or a
    /// register number for segment/control/debug register forms.
    var reg: UInt8 = 0
    /// Register-file byte offset of ModRM.rm when `mem` is false.
    var rm: UInt8 = 0
    /// Address: disp + reg[base] + reg[index] << scale (byte offsets; Reg.zero when absent).
    var base: UInt8 = UInt8(Reg.zero * 8)
    var index: UInt8 = UInt8(Reg.zero * 8)
    var scale: UInt8 = 0
    var sub: UInt8 = 0
    var pfx: UInt8 = 0
    var mem: Bool = false
    var disp: Int32 = 0
    var imm: UInt64 = 0
}
