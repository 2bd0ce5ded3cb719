// MMX (0F map without a mandatory prefix) and the SSE/SSE2 instructions with MMX register operands.
//
// MMi is the significand of the x87 physical register Ri (FXSAVE-layout offset 32 + 16*i in `fx`),
// independent of TOP. As on hardware (Intel SDM vol. 1 table 9-1; confirmed on the host CPU):
//   - any MMX instruction sets TOP = 0 and marks all registers valid (abridged tag byte 0xFF);
//   - writing MMi also sets bits 79:64 of Ri (sign and exponent) to all ones;
//   - EMMS sets TOP = 0 and marks all registers empty;
//   - CR0.EM → #UD, CR0.TS → #NM, a pending unmasked x87 exception → #MF, in that order;
//   - the transition happens only when the instruction completes (a faulting one changes nothing).
// The SSE conversions that read an MMX source (CVTPI2PS/PD) make the transition, and check for a
// pending x87 exception, only with a register source: with a memory source no MMX register is
// touched (the host CPU and Bochs agree; the SDM says otherwise).
//
// The packed operations themselves are the XMM ones (`integerOp` and friends in SSE.swift) run on
// the low 8 bytes: each takes the operand width.

extension X86Interpreter {
    @inline(__always) func mmx(_ i: Int) -> UInt64 {
        fx.load(fromByteOffset: FX.st0 + 16 * (i & 7), as: UInt64.self)
    }

    @inline(__always) func setMMX(_ i: Int, _ v: UInt64) {
        let off = FX.st0 + 16 * (i & 7)
        fx.storeBytes(of: v, toByteOffset: off, as: UInt64.self)
        fx.storeBytes(of: UInt16(0xFFFF), toByteOffset: off + 8, as: UInt16.self)
        // The 6 bytes FXSAVE reserves after the 80-bit register stay zero, as for x87 stores.
        fx.storeBytes(of: UInt16(0), toByteOffset: off + 10, as: UInt16.self)
        fx.storeBytes(of: UInt32(0), toByteOffset: off + 12, as: UInt32.self)
    }

    /// The x87-to-MMX transition every MMX instruction but EMMS makes when it completes.
    @inline(__always) func enterMMXState() {
        fpuTop = 0
        ftw = 0xFF
    }

    /// MMX instructions: #UD with CR0.EM, #NM with CR0.TS, #MF for a pending unmasked x87 exception.
    /// They do not need CR4.OSFXSR (not even PSHUFW, PAVGB and the other SSE additions).
    @inline(__always)
    func checkMMXAvailable() throws(Fault) {
        let cr0 = st.pointee.cr0
        if cr0 & CR0.em != 0 { throw Fault.ud }
        if cr0 & CR0.ts != 0 { throw Fault.nm }
        try fpuCheckPending()
    }

    /// The 64-bit source operand of an MMX instruction (MMX register or m64).
    @inline(__always)
    func mmxSource(_ d: UnsafePointer<DecodedInsn>) throws(Fault) -> UInt64 {
        if d.pointee.mem { return try read(linearAddress(d), UInt64.self) }
        return mmx(Int(d.pointee.rm) >> 3)
    }

    /// Opcodes of the 0F map that have an MMX form without a prefix (the rest are #UD without one).
    static func hasMMXForm(_ opcode: UInt8) -> Bool {
        switch opcode {
        case 0x60...0x6B, 0x6E...0x77, 0x7E, 0x7F, 0xC4, 0xC5, 0xD1...0xD5, 0xD7...0xE5, 0xE7...0xEF, 0xF1...0xFE:
            return true
        default:
            return false
        }
    }

    /// MMX instructions (no mandatory prefix). REX.R/REX.B do not extend MMX register numbers.
    func executeMMX(_ d: UnsafePointer<DecodedInsn>, _ opcode: UInt8) throws(Fault) {
        let mem = d.pointee.mem
        let kind = Int((d.pointee.imm >> 3) & 7)   // ModRM.reg for the shift-by-immediate group
        // Encodings that do not exist raise #UD before any state check.
        switch opcode {
        case 0x71, 0x72: if mem || (kind != 2 && kind != 4 && kind != 6) { throw Fault.ud }
        case 0x73: if mem || (kind != 2 && kind != 6) { throw Fault.ud }
        case 0xC5, 0xD7, 0xF7: if mem { throw Fault.ud }
        case 0xE7: if !mem { throw Fault.ud }
        default: if !X86Interpreter.hasMMXForm(opcode) { throw Fault.ud }
        }
        try checkMMXAvailable()
        let dst = Int(d.pointee.reg) >> 3 & 7
        switch opcode {
        case 0x77:  // EMMS
            fpuTop = 0
            ftw = 0
            return
        case 0x6E:  // MOVD/MOVQ mm, r/m32/64
            setMMX(dst, try readESized(d, d.pointee.pfx & Pfx.rexW != 0 ? 3 : 2))
        case 0x7E:  // MOVD/MOVQ r/m32/64, mm
            try writeESized(d, d.pointee.pfx & Pfx.rexW != 0 ? 3 : 2, mmx(dst))
        case 0x6F:  // MOVQ mm, mm/m64
            setMMX(dst, try mmxSource(d))
        case 0x7F, 0xE7:  // MOVQ mm/m64, mm; MOVNTQ m64, mm
            if mem { try write(linearAddress(d), mmx(dst)) } else { setMMX(Int(d.pointee.rm) >> 3, mmx(dst)) }
        case 0x70:  // PSHUFW
            setMMX(dst, shuffleWords(V128(try mmxSource(d), 0), base: 0, imm: Int(d.pointee.sub))[0])
        case 0x71, 0x72, 0x73:  // shifts by immediate
            let r = Int(d.pointee.rm) >> 3
            setMMX(r, try shiftByImmediate(V128(mmx(r), 0), opcode, kind, UInt64(d.pointee.sub))[0])
        case 0xC4:  // PINSRW mm, r32/m16, imm8
            let w = UInt16(truncatingIfNeeded: try readESized(d, 1))
            setMMX(dst, insertWord(V128(mmx(dst), 0), Int(d.pointee.sub & 3), w)[0])
        case 0xC5:  // PEXTRW r32, mm, imm8
            let v = mmx(Int(d.pointee.rm) >> 3)
            setReg64(d.pointee.reg, (v >> (16 * UInt64(d.pointee.sub & 3))) & 0xFFFF)
        case 0xD7:  // PMOVMSKB r32, mm
            setReg64(d.pointee.reg, byteSignMask(V128(mmx(Int(d.pointee.rm) >> 3), 0), width: 8))
        case 0xF7:  // MASKMOVQ mm, mm: stores to DS:rDI (segment overridable)
            try maskedStore(d, data: V128(mmx(dst), 0), mask: V128(mmx(Int(d.pointee.rm) >> 3), 0), width: 8)
        default:
            let b = try mmxSource(d)
            guard let r = integerOp(opcode, V128(mmx(dst), 0), V128(b, 0), width: 8) else { throw Fault.ud }
            setMMX(dst, r[0])
        }
        enterMMXState()
    }

    /// The SSE/SSE2 instructions with an MMX operand: CVTPI2PS/PD (0F/66 0F 2A), CVT(T)PS2PI and
    /// CVT(T)PD2PI (0F/66 0F 2C, 2D), MOVQ2DQ (F3 0F D6) and MOVDQ2Q (F2 0F D6). SSE checks
    /// (CR4.OSFXSR, CR0.EM, CR0.TS) were made; this adds #MF and the MMX transition where an MMX
    /// register is involved.
    func executeSSEWithMMX(_ d: UnsafePointer<DecodedInsn>, _ opcode: UInt8, _ prefix: SSEPrefix) throws(Fault) {
        let dst = Int(d.pointee.reg) >> 3
        let mem = d.pointee.mem
        switch opcode {
        case 0x2A:  // CVTPI2PS / CVTPI2PD xmm, mm/m64
            if !mem { try fpuCheckPending() }
            let w = asDwords(V128(try mmxSource(d), 0))
            let i0 = Int32(bitPattern: w[0]), i1 = Int32(bitPattern: w[1])
            var v = xmm128(dst)
            if prefix == .p66 {
                v = V128(Double(i0).bitPattern, Double(i1).bitPattern)   // exact
            } else {
                let r = withMXCSRRounding { (roundToFloat(Float80(i0)), roundToFloat(Float80(i1))) }
                v[0] = UInt64(r.0.bitPattern) | UInt64(r.1.bitPattern) << 32
            }
            setXMM128(dst, v)
            if !mem { enterMMXState() }
        case 0x2C, 0x2D:  // CVT(T)PS2PI mm, xmm/m64; CVT(T)PD2PI mm, xmm/m128
            try fpuCheckPending()
            let truncate = opcode == 0x2C
            let lo: UInt64, hi: UInt64
            if prefix == .p66 {
                let f = daz(asDoubles(try sseSource(d)))
                lo = convertToInteger(f[0], wide: false, truncate: truncate)
                hi = convertToInteger(f[1], wide: false, truncate: truncate)
            } else {
                let f = daz(asFloats(V128(try scalarSource64(d), 0)))
                lo = convertToInteger(Double(f[0]), wide: false, truncate: truncate)
                hi = convertToInteger(Double(f[1]), wide: false, truncate: truncate)
            }
            setMMX(dst, (lo & 0xFFFF_FFFF) | hi << 32)
            enterMMXState()
        default:  // 0xD6
            guard !mem else { throw Fault.ud }
            try fpuCheckPending()
            if prefix == .f3 {  // MOVQ2DQ xmm, mm
                setXMM128(dst, V128(mmx(Int(d.pointee.rm) >> 3), 0))
            } else {  // MOVDQ2Q mm, xmm
                setMMX(dst, xmm128(Int(d.pointee.rm) >> 3)[0])
            }
            enterMMXState()
        }
    }
}
