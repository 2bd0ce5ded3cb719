// Native translation of the common SSE/SSE2 moves and integer/bitwise operations (what glibc's
// string functions and compiled user code run most). The host executes the same instruction on the
// guest's XMM registers, loaded from and stored back to the FXSAVE image (ctx FX): the semantics are
// the host CPU's own, which is the architecture's. Floating-point arithmetic stays with the
// interpreter (its MXCSR rounding and exception flags are the guest's, not the host's).
//
// Every form first checks that SSE is usable (CR0.EM and CR0.TS clear, CR4.OSFXSR set) and, for a
// memory operand, alignment where the instruction demands it and the TLB; anything else goes to the
// slow path, which runs the instruction in the interpreter (faults included).

/// How a native SSE instruction uses its operands.
enum SSEForm {
    /// xmm(reg) = op(xmm(reg), xmm/m(rm)): loads, shuffles and two-operand integer/bitwise ops.
    case toXMM(memSize: Int, aligned: Bool)
    /// xmm/m(rm) = op(xmm(rm), xmm(reg)): stores.
    case fromXMM(memSize: Int, aligned: Bool)
    /// xmm(reg) = r/m32 or r/m64 (MOVD/MOVQ).
    case fromGPR
    /// r/m32 or r/m64 = xmm(reg) (MOVD/MOVQ).
    case toGPR
    /// r32(reg) = PMOVMSKB xmm(rm).
    case mask
}

extension BlockTranslator {
    /// The mandatory prefix the interpreter decodes (F3 over F2 over 66), as a byte.
    static func ssePrefix(_ d: DecodedInsn) -> UInt8? {
        d.pfx & Pfx.rep != 0 ? 0xF3 : d.pfx & Pfx.repne != 0 ? 0xF2 : d.pfx & Pfx.opsize != 0 ? 0x66 : nil
    }

    /// The native form of an SSE instruction, or nil for the interpreter.
    static func sseForm(_ d: DecodedInsn) -> SSEForm? {
        let opcode = UInt8(truncatingIfNeeded: d.imm >> 8)
        let prefix = ssePrefix(d)
        switch (prefix, opcode) {
        case (nil, 0x10), (0x66, 0x10): return .toXMM(memSize: 16, aligned: false)      // MOVUPS/PD
        case (0xF3, 0x10): return .toXMM(memSize: 4, aligned: false)                      // MOVSS
        case (0xF2, 0x10): return .toXMM(memSize: 8, aligned: false)                      // MOVSD
        case (nil, 0x11), (0x66, 0x11): return .fromXMM(memSize: 16, aligned: false)
        case (0xF3, 0x11): return .fromXMM(memSize: 4, aligned: false)
        case (0xF2, 0x11): return .fromXMM(memSize: 8, aligned: false)
        case (nil, 0x28), (0x66, 0x28): return .toXMM(memSize: 16, aligned: true)        // MOVAPS/PD
        case (nil, 0x29), (0x66, 0x29): return .fromXMM(memSize: 16, aligned: true)
        case (0xF3, 0x6F): return .toXMM(memSize: 16, aligned: false)                     // MOVDQU
        case (0x66, 0x6F): return .toXMM(memSize: 16, aligned: true)                      // MOVDQA
        case (0xF3, 0x7F): return .fromXMM(memSize: 16, aligned: false)
        case (0x66, 0x7F): return .fromXMM(memSize: 16, aligned: true)
        case (0xF3, 0x7E): return .toXMM(memSize: 8, aligned: false)                      // MOVQ xmm, xmm/m64
        case (0x66, 0xD6): return .fromXMM(memSize: 8, aligned: false)                    // MOVQ xmm/m64, xmm
        case (0x66, 0x6E): return .fromGPR
        case (0x66, 0x7E): return .toGPR
        case (0x66, 0xD7): return d.mem ? nil : .mask
        case (0x66, 0x70): return .toXMM(memSize: 16, aligned: true)                      // PSHUFD
        // Bitwise: ANDPS/PD, ANDNPS/PD, ORPS/PD, XORPS/PD.
        case (nil, 0x54...0x57), (0x66, 0x54...0x57): return .toXMM(memSize: 16, aligned: true)
        // Integer SSE2 (66): unpacks, packs, compares, adds, subtracts, min/max, logic, averages.
        case (0x66, 0x60...0x6D), (0x66, 0x74...0x76), (0x66, 0xD4), (0x66, 0xD5), (0x66, 0xD8...0xDF),
             (0x66, 0xE0), (0x66, 0xE3), (0x66, 0xE4), (0x66, 0xE5), (0x66, 0xE8...0xEF), (0x66, 0xF4),
             (0x66, 0xF5), (0x66, 0xF6), (0x66, 0xF8...0xFE):
            return .toXMM(memSize: 16, aligned: true)
        default:
            return nil
        }
    }

    /// Host XMM1 as an r/m operand (register encodings are shared: 1 is RCX or XMM1).
    static let xmm1 = HRM.r(.rcx)

    /// The guest XMM register `n` in the FXSAVE image (rcx holds its base).
    static func guestXMM(_ n: UInt8) -> HRM { .m(HMem(.rcx, Int32(FX.xmm0) + Int32(n) * 16)) }

    mutating func emitSSE(_ i: Int) -> Bool {
        let d = insns[i]
        guard let form = BlockTranslator.sseForm(d) else { return false }
        let opcode = UInt8(truncatingIfNeeded: d.imm >> 8)
        let prefix = BlockTranslator.ssePrefix(d)
        let imm: UInt8? = opcode == 0x70 ? d.sub : nil
        let wide = d.pfx & Pfx.rexW != 0
        let xreg = d.reg >> 3, xrm = d.rm >> 3
        let movdqu = { (a: inout Assembler, toHost: Bool, x: UInt8, n: UInt8) in
            // MOVDQU xmmX, guest n / guest n, xmmX
            a.sse(0xF3, toHost ? 0x6F : 0x7F, reg: x, BlockTranslator.guestXMM(n))
        }
        var memSize = 0, aligned = false, write = false
        switch form {
        case .toXMM(let s, let al): memSize = s; aligned = al
        case .fromXMM(let s, let al): memSize = s; aligned = al; write = true
        case .fromGPR: memSize = wide ? 8 : 4
        case .toGPR: memSize = wide ? 8 : 4; write = true
        case .mask: break
        }
        // Guard: SSE usable; the memory operand aligned (if required) and in the TLB.
        if d.mem { address(i, segment: true) }
        let saved = saveFlagsIfLive(hostLiveAfter[i])
        let slow = a.newLabel()
        a.testImm(1, .m(HMem(.r14, JITLayout.cr0)), 0x0C)        // EM | TS
        a.jcc(5, slow)
        a.testImm(4, .m(HMem(.r14, JITLayout.cr4)), 0x200)       // OSFXSR
        a.jcc(4, slow)
        if d.mem {
            if aligned && memSize == 16 {
                a.testImm(1, .r(.rdi), 15)
                a.jcc(5, slow)
            }
            tlbLookup(size: memSize, write: write, slow: slow)
        }
        if saved { restoreFlags() } else { hostValid = 0 }
        a.load(8, .rcx, .m(HMem(.r12, JITLayout.ctxFX)))
        let mem = HRM.m(HMem(.rsi))
        switch form {
        case .toXMM:
            movdqu(&a, true, 0, xreg)
            if d.mem {
                a.sse(prefix, opcode, reg: 0, mem, imm: imm)
            } else {
                movdqu(&a, true, 1, xrm)
                a.sse(prefix, opcode, reg: 0, BlockTranslator.xmm1, imm: imm)
            }
            movdqu(&a, false, 0, xreg)
        case .fromXMM:
            movdqu(&a, true, 0, xreg)
            if d.mem {
                a.sse(prefix, opcode, reg: 0, mem)
            } else {
                movdqu(&a, true, 1, xrm)
                a.sse(prefix, opcode, reg: 0, BlockTranslator.xmm1)
                movdqu(&a, false, 1, xrm)
            }
        case .fromGPR:
            if d.mem {
                a.sse(0x66, 0x6E, reg: 0, mem, wide: wide)
            } else {
                a.load(8, .rax, greg(d.rm))
                a.sse(0x66, 0x6E, reg: 0, .r(.rax), wide: wide)
            }
            movdqu(&a, false, 0, xreg)
        case .toGPR:
            movdqu(&a, true, 0, xreg)
            if d.mem {
                a.sse(0x66, 0x7E, reg: 0, mem, wide: wide)
            } else {
                a.sse(0x66, 0x7E, reg: 0, .r(.rax), wide: wide, writesGPR: .rax)
                a.store(8, greg(d.rm), .rax)   // a 32-bit MOVD zero-extends, as the host's did
            }
        case .mask:
            movdqu(&a, true, 1, xrm)
            a.sse(0x66, 0xD7, reg: HReg.rax.rawValue, BlockTranslator.xmm1, writesGPR: .rax)
            a.store(8, greg(d.reg), .rax)
        }
        resume(i, slow)
        return true
    }
}
