// Decode-time specialisation of the hottest instruction forms in 64-bit code.
//
// A Linux boot on the interpreter spends most of its instructions in a few dozen forms (register
// moves, 64-bit ALU on registers, loads and stores with 64-bit addressing, Jcc, PUSH/POP, CALL/RET).
// The generic executor handles each through nested decisions on operand size, register-or-memory
// and ALU kind; here a decoded instruction whose shape is known is rewritten to an op that has none
// of those left, so the executor's switch goes straight to a few lines of straight code. Every
// specialised op must behave exactly like the generic one it replaces (flags, faults, zero
// extension); oracle vectors and the differential fuzzer cover both through the same decoder.

extension DecodedInsn {
    /// Rewrites `self` to a specialised op when one applies; `mode` is the code size it was decoded
    /// for (specialisation is only done for 64-bit code, where segment bases of ES/CS/SS/DS are 0,
    /// linear addresses are 64 bits wide and 64-bit addressing needs no truncation).
    mutating func specialise(mode: UInt32) {
        guard mode == 2, pfx & (Pfx.lock | Pfx.rep | Pfx.repne) == 0 else { return }
        let mem64 = mem && asz == 3
        if osz == 0 {
            // Byte forms: register offsets may name AH..BH (offset + 1); the handlers use them as is.
            switch op {
            case .setcc: if !mem { op = .setccR }
            case .testEG: if !mem { op = .test8RR }
            case .testEI: if mem64 { op = .test8MI }
            case .aluEI where sub == AluKind.cmp: if !mem { op = .cmp8RI } else if mem64 { op = .cmp8MI }
            case .movEG: if mem64 { op = .store8 }
            default: break
            }
            return
        }
        let wide = osz == 3, dword = osz == 2
        guard wide || dword else { return }
        switch op {
        case .movEG:
            if !mem { op = wide ? .mov64RR : .mov32RR }
            else if mem64 { op = wide ? .store64 : .store32 }
        case .movGE:
            if !mem { swap(&reg, &rm); op = wide ? .mov64RR : .mov32RR }
            else if mem64 { op = wide ? .load64 : .load32 }
        case .lea:
            if mem64 { op = wide ? .lea64 : .lea32 }
        case .movsxd:
            if wide && !mem { op = .movsxd64RR }
        case .movzx:
            // 32- and 64-bit destinations both end up zero-extended to 64 bits.
            if !mem { op = sub == 0 ? .movzx8R : .movzx16R }
            else if mem64 { op = sub == 0 ? .movzx8M : .movzx16M }
        case .cmovcc:
            if !mem { op = wide ? .cmov64RR : .cmov32RR }
        case .movEI:
            if !mem { op = wide ? .movImm64R : .movImm32R }
            else if mem64 { op = wide ? .storeImm64 : .storeImm32 }
        case .nop:
            op = .nopFast
        case .aluEG:
            if mem64 {
                op = sub == AluKind.cmp ? (wide ? .cmp64MR : .cmp32MR) : (wide ? .alu64MR : .alu32MR)
                return
            }
            guard !mem, let o = (wide ? Op.aluRR64 : Op.aluRR32)[Int(sub & 7)] else { return }
            op = o
        case .aluGE:
            if !mem {
                // G op= E: swapped into the RR forms' E op= G.
                if let o = (wide ? Op.aluRR64 : Op.aluRR32)[Int(sub & 7)] { swap(&reg, &rm); op = o }
            } else if wide && mem64 && sub == AluKind.add {
                op = .add64RM
            } else if wide && mem64 && sub == AluKind.cmp {
                op = .cmp64RM
            }
        case .aluEI:
            if !mem {
                if let o = (wide ? Op.aluRI64 : Op.aluRI32)[Int(sub & 7)] { op = o }
            } else if mem64 && sub == AluKind.cmp {
                op = wide ? .cmp64MI : .cmp32MI
            } else if mem64 {
                op = wide ? .alu64MI : .alu32MI
            }
        case .testEG:
            if !mem { op = wide ? .test64RR : .test32RR }
        case .shiftEI:
            // A masked count of 0 changes no flags: left to the generic code.
            let count = imm & (wide ? 0x3F : 0x1F)
            guard !mem && count != 0 else { return }
            switch sub & 7 {
            case 4, 6: op = wide ? .shl64RI : .shl32RI
            case 5: op = wide ? .shr64RI : .shr32RI
            case 7: op = wide ? .sar64RI : .sar32RI
            case 0: op = wide ? .rol64RI : .rol32RI
            case 1: op = wide ? .ror64RI : .ror32RI
            default: return
            }
            imm = count
        case .imulGE:
            if wide && !mem { op = .imul64RR }
        case .imulGEI:
            if wide && !mem { op = .imul64RRI }
        case .incE:
            if !mem { op = wide ? .inc64R : .inc32R }
        case .decE:
            if !mem { op = wide ? .dec64R : .dec32R }
        case .pushE:
            if wide && !mem { op = .push64R }
        case .popE:
            if wide && !mem { op = .pop64R }
        case .jcc:
            if wide { op = sub == 4 ? .jz64 : sub == 5 ? .jnz64 : .jcc64 }
        case .jmpRel:
            if wide { op = .jmp64 }
        case .callRel:
            if wide { op = .call64 }
        case .ret:
            if wide && imm == 0 { op = .ret64 }
        default:
            break
        }
    }
}

extension X86Interpreter {
    /// Effective address of a 64-bit-addressed memory operand (no truncation to do).
    @inline(__always)
    func effectiveAddress64(_ d: UnsafePointer<DecodedInsn>) -> UInt64 {
        UInt64(bitPattern: Int64(d.pointee.disp)) &+ reg64(d.pointee.base) &+ (reg64(d.pointee.index) &<< UInt64(d.pointee.scale))
    }

    /// Linear address of a 64-bit-addressed memory operand in 64-bit code.
    @inline(__always)
    func linearAddress64(_ d: UnsafePointer<DecodedInsn>) -> UInt64 {
        effectiveAddress64(d) &+ segBase[Int(d.pointee.seg)]
    }

    @inline(__always)
    func rr64(_ d: UnsafePointer<DecodedInsn>) -> (UInt64, UInt64) { (reg64(d.pointee.rm), reg64(d.pointee.reg)) }

    @inline(__always)
    func rr32(_ d: UnsafePointer<DecodedInsn>) -> (UInt32, UInt32) {
        (getReg(d.pointee.rm, UInt32.self), getReg(d.pointee.reg, UInt32.self))
    }

    @inline(__always)
    func setReg32(_ off: UInt8, _ v: UInt32) { setReg64(off, UInt64(v)) }

    /// Executes a specialised op (see `DecodedInsn.specialise`); the block loop calls it only for those.
    @inline(__always)
    func executeSpecialised(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        switch d.pointee.op {
        case .mov64RR: setReg64(d.pointee.rm, reg64(d.pointee.reg))
        case .mov32RR: setReg64(d.pointee.rm, reg64(d.pointee.reg) & 0xFFFF_FFFF)
        case .load64: setReg64(d.pointee.reg, try read(linearAddress64(d), UInt64.self))
        case .load32: setReg32(d.pointee.reg, try read(linearAddress64(d), UInt32.self))
        case .store64: try write(linearAddress64(d), reg64(d.pointee.reg))
        case .store32: try write(linearAddress64(d), getReg(d.pointee.reg, UInt32.self))
        case .lea64: setReg64(d.pointee.reg, effectiveAddress64(d))
        case .movsxd64RR:
            setReg64(d.pointee.reg, UInt64(bitPattern: Int64(Int32(bitPattern: getReg(d.pointee.rm, UInt32.self)))))

        case .add64RR: let (a, b) = rr64(d); let r = a &+ b; setReg64(d.pointee.rm, r); setCC(CC.add, 3, dst: r, src: b)
        case .sub64RR: let (a, b) = rr64(d); let r = a &- b; setReg64(d.pointee.rm, r); setCC(CC.sub, 3, dst: r, src: b)
        case .cmp64RR: let (a, b) = rr64(d); setCC(CC.sub, 3, dst: a &- b, src: b)
        case .and64RR: let (a, b) = rr64(d); let r = a & b; setReg64(d.pointee.rm, r); setCC(CC.logic, 3, dst: r, src: 0)
        case .or64RR: let (a, b) = rr64(d); let r = a | b; setReg64(d.pointee.rm, r); setCC(CC.logic, 3, dst: r, src: 0)
        case .xor64RR: let (a, b) = rr64(d); let r = a ^ b; setReg64(d.pointee.rm, r); setCC(CC.logic, 3, dst: r, src: 0)
        case .test64RR: let (a, b) = rr64(d); setCC(CC.logic, 3, dst: a & b, src: 0)
        case .adc64RR: let (a, b) = rr64(d); setReg64(d.pointee.rm, alu(AluKind.adc, a, b))
        case .sbb64RR: let (a, b) = rr64(d); setReg64(d.pointee.rm, alu(AluKind.sbb, a, b))

        case .add32RR: let (a, b) = rr32(d); let r = a &+ b; setReg32(d.pointee.rm, r); setCC(CC.add, 2, dst: UInt64(r), src: UInt64(b))
        case .sub32RR: let (a, b) = rr32(d); let r = a &- b; setReg32(d.pointee.rm, r); setCC(CC.sub, 2, dst: UInt64(r), src: UInt64(b))
        case .cmp32RR: let (a, b) = rr32(d); setCC(CC.sub, 2, dst: UInt64(a &- b), src: UInt64(b))
        case .and32RR: let (a, b) = rr32(d); let r = a & b; setReg32(d.pointee.rm, r); setCC(CC.logic, 2, dst: UInt64(r), src: 0)
        case .or32RR: let (a, b) = rr32(d); let r = a | b; setReg32(d.pointee.rm, r); setCC(CC.logic, 2, dst: UInt64(r), src: 0)
        case .xor32RR: let (a, b) = rr32(d); let r = a ^ b; setReg32(d.pointee.rm, r); setCC(CC.logic, 2, dst: UInt64(r), src: 0)
        case .test32RR: let (a, b) = rr32(d); setCC(CC.logic, 2, dst: UInt64(a & b), src: 0)

        case .add64RI: let a = reg64(d.pointee.rm), b = d.pointee.imm; let r = a &+ b; setReg64(d.pointee.rm, r); setCC(CC.add, 3, dst: r, src: b)
        case .sub64RI: let a = reg64(d.pointee.rm), b = d.pointee.imm; let r = a &- b; setReg64(d.pointee.rm, r); setCC(CC.sub, 3, dst: r, src: b)
        case .cmp64RI: let a = reg64(d.pointee.rm), b = d.pointee.imm; setCC(CC.sub, 3, dst: a &- b, src: b)
        case .and64RI: let r = reg64(d.pointee.rm) & d.pointee.imm; setReg64(d.pointee.rm, r); setCC(CC.logic, 3, dst: r, src: 0)
        case .or64RI: let r = reg64(d.pointee.rm) | d.pointee.imm; setReg64(d.pointee.rm, r); setCC(CC.logic, 3, dst: r, src: 0)
        case .xor64RI: let r = reg64(d.pointee.rm) ^ d.pointee.imm; setReg64(d.pointee.rm, r); setCC(CC.logic, 3, dst: r, src: 0)

        case .add32RI:
            let a = getReg(d.pointee.rm, UInt32.self), b = UInt32(truncatingIfNeeded: d.pointee.imm), r = a &+ b
            setReg32(d.pointee.rm, r); setCC(CC.add, 2, dst: UInt64(r), src: UInt64(b))
        case .sub32RI:
            let a = getReg(d.pointee.rm, UInt32.self), b = UInt32(truncatingIfNeeded: d.pointee.imm), r = a &- b
            setReg32(d.pointee.rm, r); setCC(CC.sub, 2, dst: UInt64(r), src: UInt64(b))
        case .cmp32RI:
            let a = getReg(d.pointee.rm, UInt32.self), b = UInt32(truncatingIfNeeded: d.pointee.imm)
            setCC(CC.sub, 2, dst: UInt64(a &- b), src: UInt64(b))
        case .and32RI:
            let r = getReg(d.pointee.rm, UInt32.self) & UInt32(truncatingIfNeeded: d.pointee.imm)
            setReg32(d.pointee.rm, r); setCC(CC.logic, 2, dst: UInt64(r), src: 0)
        case .or32RI:
            let r = getReg(d.pointee.rm, UInt32.self) | UInt32(truncatingIfNeeded: d.pointee.imm)
            setReg32(d.pointee.rm, r); setCC(CC.logic, 2, dst: UInt64(r), src: 0)
        case .xor32RI:
            let r = getReg(d.pointee.rm, UInt32.self) ^ UInt32(truncatingIfNeeded: d.pointee.imm)
            setReg32(d.pointee.rm, r); setCC(CC.logic, 2, dst: UInt64(r), src: 0)

        case .add64RM:
            let b = try read(linearAddress64(d), UInt64.self), r = reg64(d.pointee.reg) &+ b
            setReg64(d.pointee.reg, r); setCC(CC.add, 3, dst: r, src: b)
        case .cmp64RM:
            let b = try read(linearAddress64(d), UInt64.self)
            setCC(CC.sub, 3, dst: reg64(d.pointee.reg) &- b, src: b)
        case .cmp64MI:
            let a = try read(linearAddress64(d), UInt64.self), b = d.pointee.imm
            setCC(CC.sub, 3, dst: a &- b, src: b)
        case .cmp32MI:
            let a = try read(linearAddress64(d), UInt32.self), b = UInt32(truncatingIfNeeded: d.pointee.imm)
            setCC(CC.sub, 2, dst: UInt64(a &- b), src: UInt64(b))

        // Shifts by an immediate whose masked count is 1...width-1 (the decoder keeps the masked count).
        case .shl64RI:
            let v = reg64(d.pointee.rm), c = d.pointee.imm
            setReg64(d.pointee.rm, v &<< c); setShiftCC(CC.shl, 3, v &<< c, v, c)
        case .shr64RI:
            let v = reg64(d.pointee.rm), c = d.pointee.imm
            setReg64(d.pointee.rm, v &>> c); setShiftCC(CC.shr, 3, v &>> c, v, c)
        case .sar64RI:
            let v = reg64(d.pointee.rm), c = d.pointee.imm, r = UInt64(bitPattern: Int64(bitPattern: v) &>> c)
            setReg64(d.pointee.rm, r); setShiftCC(CC.sar, 3, r, v, c)
        case .shl32RI:
            let v = getReg(d.pointee.rm, UInt32.self), c = UInt32(d.pointee.imm), r = v &<< c
            setReg32(d.pointee.rm, r); setShiftCC(CC.shl, 2, UInt64(r), UInt64(v), UInt64(c))
        case .shr32RI:
            let v = getReg(d.pointee.rm, UInt32.self), c = UInt32(d.pointee.imm), r = v &>> c
            setReg32(d.pointee.rm, r); setShiftCC(CC.shr, 2, UInt64(r), UInt64(v), UInt64(c))
        case .sar32RI:
            let v = getReg(d.pointee.rm, UInt32.self), c = UInt32(d.pointee.imm)
            let r = UInt32(bitPattern: Int32(bitPattern: v) &>> Int32(c))
            setReg32(d.pointee.rm, r); setShiftCC(CC.sar, 2, UInt64(r), UInt64(v), UInt64(c))

        case .imul64RR:
            setReg64(d.pointee.reg, imul64(reg64(d.pointee.reg), reg64(d.pointee.rm)))
        case .imul64RRI:
            setReg64(d.pointee.reg, imul64(reg64(d.pointee.rm), d.pointee.imm))

        case .inc64R, .dec64R:
            let inc = d.pointee.op == .inc64R
            st.pointee.ccSrc2 = carryFlag ? 1 : 0
            let r = inc ? reg64(d.pointee.rm) &+ 1 : reg64(d.pointee.rm) &- 1
            setReg64(d.pointee.rm, r)
            setCC(inc ? CC.inc : CC.dec, 3, dst: r, src: 0)
        case .inc32R, .dec32R:
            let inc = d.pointee.op == .inc32R
            st.pointee.ccSrc2 = carryFlag ? 1 : 0
            let v = getReg(d.pointee.rm, UInt32.self)
            let r = inc ? v &+ 1 : v &- 1
            setReg32(d.pointee.rm, r)
            setCC(inc ? CC.inc : CC.dec, 2, dst: UInt64(r), src: 0)

        case .push64R: try push64(reg64(d.pointee.rm))
        case .pop64R:
            let v = try pop64()
            setReg64(d.pointee.rm, v)

        case .movzx8R: setReg64(d.pointee.reg, UInt64(getReg(d.pointee.rm, UInt8.self)))
        case .movzx16R: setReg64(d.pointee.reg, UInt64(getReg(d.pointee.rm, UInt16.self)))
        case .movzx8M: setReg64(d.pointee.reg, UInt64(try read(linearAddress64(d), UInt8.self)))
        case .movzx16M: setReg64(d.pointee.reg, UInt64(try read(linearAddress64(d), UInt16.self)))
        case .setccR: regs.storeBytes(of: condition(d.pointee.sub) ? UInt8(1) : 0, toByteOffset: Int(d.pointee.rm), as: UInt8.self)
        case .cmov64RR: if condition(d.pointee.sub) { setReg64(d.pointee.reg, reg64(d.pointee.rm)) }
        case .cmov32RR:
            // A 32-bit CMOV zero-extends its destination even when the condition is false.
            let v = condition(d.pointee.sub) ? reg64(d.pointee.rm) : reg64(d.pointee.reg)
            setReg64(d.pointee.reg, v & 0xFFFF_FFFF)
        case .movImm64R: setReg64(d.pointee.rm, d.pointee.imm)
        case .movImm32R: setReg64(d.pointee.rm, d.pointee.imm & 0xFFFF_FFFF)
        case .nopFast: break
        case .test8RR:
            setCC(CC.logic, 0, dst: UInt64(getReg(d.pointee.rm, UInt8.self) & getReg(d.pointee.reg, UInt8.self)), src: 0)
        case .cmp8RI:
            let a = getReg(d.pointee.rm, UInt8.self), b = UInt8(truncatingIfNeeded: d.pointee.imm)
            setCC(CC.sub, 0, dst: UInt64(a &- b), src: UInt64(b))
        case .cmp8MI:
            let a = try read(linearAddress64(d), UInt8.self), b = UInt8(truncatingIfNeeded: d.pointee.imm)
            setCC(CC.sub, 0, dst: UInt64(a &- b), src: UInt64(b))
        case .test8MI:
            let a = try read(linearAddress64(d), UInt8.self)
            setCC(CC.logic, 0, dst: UInt64(a & UInt8(truncatingIfNeeded: d.pointee.imm)), src: 0)
        case .rol64RI:
            let r = reg64(d.pointee.rm).rotated(left: d.pointee.imm)
            setReg64(d.pointee.rm, r); setRotateFlags(cf: r & 1, msb: r >> 63, msb2: 0, left: true)
        case .ror64RI:
            let r = reg64(d.pointee.rm).rotated(left: 64 &- d.pointee.imm)
            setReg64(d.pointee.rm, r); setRotateFlags(cf: r >> 63, msb: r >> 63, msb2: (r >> 62) & 1, left: false)
        case .rol32RI:
            let r = UInt64(getReg(d.pointee.rm, UInt32.self).rotated(left: UInt32(d.pointee.imm)))
            setReg64(d.pointee.rm, r); setRotateFlags(cf: r & 1, msb: r >> 31, msb2: 0, left: true)
        case .ror32RI:
            let r = UInt64(getReg(d.pointee.rm, UInt32.self).rotated(left: 32 &- UInt32(d.pointee.imm)))
            setReg64(d.pointee.rm, r); setRotateFlags(cf: r >> 31, msb: r >> 31, msb2: (r >> 30) & 1, left: false)
        case .lea32: setReg64(d.pointee.reg, effectiveAddress64(d) & 0xFFFF_FFFF)
        case .adc64RI: setReg64(d.pointee.rm, alu(AluKind.adc, reg64(d.pointee.rm), d.pointee.imm))
        case .cmp64MR:
            let a = try read(linearAddress64(d), UInt64.self), b = reg64(d.pointee.reg)
            setCC(CC.sub, 3, dst: a &- b, src: b)
        case .cmp32MR:
            let a = try read(linearAddress64(d), UInt32.self), b = getReg(d.pointee.reg, UInt32.self)
            setCC(CC.sub, 2, dst: UInt64(a &- b), src: UInt64(b))
        case .alu64MR: try aluM(d, reg64(d.pointee.reg))
        case .alu32MR: try aluM(d, getReg(d.pointee.reg, UInt32.self))
        case .alu64MI: try aluM(d, d.pointee.imm)
        case .alu32MI: try aluM(d, UInt32(truncatingIfNeeded: d.pointee.imm))
        case .store8: try write(linearAddress64(d), getReg(d.pointee.reg, UInt8.self))
        case .storeImm64: try write(linearAddress64(d), d.pointee.imm)
        case .storeImm32: try write(linearAddress64(d), UInt32(truncatingIfNeeded: d.pointee.imm))

        case .jz64:
            if zeroFlag { rip &+= d.pointee.imm }
        case .jnz64:
            if !zeroFlag { rip &+= d.pointee.imm }
        case .jcc64:
            if condition(d.pointee.sub) { rip &+= d.pointee.imm }
        case .jmp64:
            rip &+= d.pointee.imm
        case .call64:
            let r = rip
            try push64(r)
            rip = r &+ d.pointee.imm
        case .ret64:
            rip = try pop64()
        default:
            break
        }
    }

    /// Lazy flags of a shift by a non-zero masked count (CC.shl/shr/sar).
    @inline(__always)
    func setShiftCC(_ kind: UInt32, _ size: Int, _ r: UInt64, _ v: UInt64, _ c: UInt64) {
        st.pointee.ccSrc2 = c
        setCC(kind, size, dst: r, src: v)
    }

    /// ROL/ROR by a non-zero count: only CF and OF change (OF as for a count of 1).
    @inline(__always)
    func setRotateFlags(cf: UInt64, msb: UInt64, msb2: UInt64, left: Bool) {
        let of = left ? msb ^ cf : msb ^ msb2
        setArithFlags(arithFlags() & ~(Flag.cf | Flag.of) | cf | (of != 0 ? Flag.of : 0))
    }

    /// Read-modify-write ALU (not CMP) on a 64-bit-addressed memory operand, ALU kind in `sub`.
    @inline(__always)
    func aluM<T: FixedWidthInteger & UnsignedInteger>(_ d: UnsafePointer<DecodedInsn>, _ b: T) throws(Fault) {
        let la = linearAddress64(d)
        if let p = try rmwPointer(la, MemoryLayout<T>.size) {
            p.storeBytes(of: alu(d.pointee.sub, p.loadUnaligned(as: T.self), b), as: T.self)
        } else {
            // MMIO or a page crossing: rmwPointer has checked write access to every byte.
            let a = try read(la, T.self)
            try write(la, alu(d.pointee.sub, a, b))
        }
    }

    @inline(__always)
    func imul64(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (h, l) = Int64(bitPattern: a).multipliedFullWidth(by: Int64(bitPattern: b))
        setCC(CC.szp, 3, dst: l, src: h != (Int64(bitPattern: l) >> 63) ? Flag.cf | Flag.of : 0)
        return l
    }

    /// ZF from the lazy flags (every lazy kind keeps the result in ccDst).
    @inline(__always)
    var zeroFlag: Bool {
        let op = st.pointee.ccOp
        if op >> 2 == CC.eflags { return st.pointee.ccSrc & Flag.zf != 0 }
        if op >> 2 >= CC.rol { return arithFlags() & Flag.zf != 0 }
        return st.pointee.ccDst & sizeMask(Int(op & 3)) == 0
    }

    /// PUSH of 8 bytes in 64-bit mode: a TLB hit stores directly; anything else (a miss, a page
    /// crossing, a non-canonical RSP that must raise #SS) takes the generic path.
    @inline(__always)
    func push64(_ v: UInt64) throws(Fault) {
        let nsp = gpr(Reg.rsp) &- 8
        let la = nsp &+ segBase[Seg.ss]
        let e = tlbSlot(la)
        if e.pointee.wtag == la & ~0xFFF && la & 0xFFF <= 4088 {
            UnsafeMutableRawPointer(bitPattern: UInt(la) &+ e.pointee.addend).unsafelyUnwrapped.storeBytes(of: v, as: UInt64.self)
            setGPR(Reg.rsp, nsp)
            return
        }
        try push(v, 3)
    }

    @inline(__always)
    func pop64() throws(Fault) -> UInt64 {
        let sp = gpr(Reg.rsp)
        let la = sp &+ segBase[Seg.ss]
        let e = tlbSlot(la)
        if e.pointee.rtag == la & ~0xFFF && la & 0xFFF <= 4088 {
            let v = UnsafeRawPointer(bitPattern: UInt(la) &+ e.pointee.addend).unsafelyUnwrapped.loadUnaligned(as: UInt64.self)
            setGPR(Reg.rsp, sp &+ 8)
            return v
        }
        return try pop(3)
    }
}

extension FixedWidthInteger {
    /// Rotates left by `n` (taken modulo the width).
    @inline(__always)
    func rotated(left n: Self) -> Self { (self &<< n) | (self &>> (Self(truncatingIfNeeded: Self.bitWidth) &- n)) }
}

extension Op {
    /// Specialised forms by ALU kind (the encoding's order: ADD OR ADC SBB AND SUB XOR CMP); nil where
    /// the generic code stays.
    static let aluRR64: [Op?] = [.add64RR, .or64RR, .adc64RR, .sbb64RR, .and64RR, .sub64RR, .xor64RR, .cmp64RR]
    static let aluRR32: [Op?] = [.add32RR, .or32RR, nil, nil, .and32RR, .sub32RR, .xor32RR, .cmp32RR]
    static let aluRI64: [Op?] = [.add64RI, .or64RI, .adc64RI, nil, .and64RI, .sub64RI, .xor64RI, .cmp64RI]
    static let aluRI32: [Op?] = [.add32RI, .or32RI, nil, nil, .and32RI, .sub32RI, .xor32RI, .cmp32RI]
}
