// Native translations of the specialised 64-bit instruction forms (Specialise.swift). Each must
// leave exactly the state the interpreter's `executeSpecialised` leaves: registers, memory, and
// the lazy flags (when they can be looked at). Returns false to let the interpreter run the
// instruction instead.

extension BlockTranslator {
    /// Host registers used for guest values: rcx and rdx carry operands, r8 the incoming carry.
    mutating func emitNative(_ i: Int) -> Bool {
        let d = insns[i]
        switch d.op {
        // MARK: Register moves
        case .mov64RR:
            a.load(8, .rcx, greg(d.reg)); a.store(8, greg(d.rm), .rcx)
        case .mov32RR:
            a.load(4, .rcx, greg(d.reg)); a.store(8, greg(d.rm), .rcx)
        case .movsxd64RR:
            a.movsx(8, .rcx, srcSize: 4, greg(d.rm)); a.store(8, greg(d.reg), .rcx)
        case .movImm64R:
            storeConstant(greg(d.rm), d.imm)
        case .movImm32R:
            storeConstant(greg(d.rm), d.imm & 0xFFFF_FFFF)
        case .movzx8R:
            a.movzx(.rcx, srcSize: 1, greg(d.rm)); a.store(8, greg(d.reg), .rcx)
        case .movzx16R:
            a.movzx(.rcx, srcSize: 2, greg(d.rm)); a.store(8, greg(d.reg), .rcx)
        case .lea64, .lea32:
            address(i, segment: false)
            if d.op == .lea32 { a.load(4, .rdi, .r(.rdi)) }
            a.store(8, greg(d.reg), .rdi)
        case .nopFast:
            break

        // MARK: Register ALU
        case .add64RR, .sub64RR, .cmp64RR, .and64RR, .or64RR, .xor64RR, .test64RR, .adc64RR, .sbb64RR,
             .add32RR, .sub32RR, .cmp32RR, .and32RR, .or32RR, .xor32RR, .test32RR:
            let (kind, size, writes) = BlockTranslator.rrForm(d.op)
            let carry = kind == AluKind.adc || kind == AluKind.sbb
            if carry { carryIn(i) }
            a.load(size, .rcx, greg(d.rm))
            a.load(size, .rdx, greg(d.reg))
            a.alu(kind == AluKind.cmp ? AluKind.sub : kind == 8 ? AluKind.and : kind, size, .rcx, .r(.rdx))
            if writes { a.store(8, greg(d.rm), .rcx) }
            aluFlags(i, kind: kind == 8 ? AluKind.and : kind, size: size, src: .rdx)
        case .add64RI, .sub64RI, .cmp64RI, .and64RI, .or64RI, .xor64RI, .adc64RI,
             .add32RI, .sub32RI, .cmp32RI, .and32RI, .or32RI, .xor32RI:
            let (kind, size) = BlockTranslator.riForm(d.op)
            guard let imm = BlockTranslator.immediate(d.imm, size) else { return false }
            if kind == AluKind.adc { carryIn(i) }
            a.load(size, .rcx, greg(d.rm))
            a.aluImm(kind == AluKind.cmp ? AluKind.sub : kind, size, .r(.rcx), imm)
            if kind != AluKind.cmp { a.store(8, greg(d.rm), .rcx) }
            if memLiveAfter[i] != 0 && BlockTranslator.usesSrc(kind) {
                a.movImm(.rdx, size == 8 ? d.imm : d.imm & 0xFFFF_FFFF)
            }
            aluFlags(i, kind: kind, size: size, src: .rdx)
        case .test8RR:
            a.movzx(.rcx, srcSize: 1, greg(d.rm))
            a.alu(AluKind.and, 1, .rcx, greg(d.reg))
            aluFlags(i, kind: AluKind.and, size: 1, src: .rdx)
        case .cmp8RI:
            a.movzx(.rcx, srcSize: 1, greg(d.rm))
            a.aluImm(AluKind.sub, 1, .r(.rcx), Int32(truncatingIfNeeded: d.imm))
            if memLiveAfter[i] != 0 { a.movImm(.rdx, d.imm & 0xFF) }
            aluFlags(i, kind: AluKind.sub, size: 1, src: .rdx)

        // MARK: Shifts, rotates, multiply, inc/dec
        case .shl64RI, .shr64RI, .sar64RI, .shl32RI, .shr32RI, .sar32RI:
            let size = d.op == .shl64RI || d.op == .shr64RI || d.op == .sar64RI ? 8 : 4
            let (sub, kind): (UInt8, UInt32) = d.op == .shl64RI || d.op == .shl32RI ? (4, CC.shl)
                : d.op == .shr64RI || d.op == .shr32RI ? (5, CC.shr) : (7, CC.sar)
            let count = UInt8(truncatingIfNeeded: d.imm)
            a.load(size, .rcx, greg(d.rm))
            a.mov(.rdx, .rcx)
            a.shiftImm(sub, size, .r(.rcx), count)
            a.store(8, greg(d.rm), .rcx)
            if memLiveAfter[i] != 0 {
                lazy(i, kind: kind, size: size, dst: .rcx, src: .rdx)
                a.storeImm(8, BlockTranslator.ccSrc2M, Int32(count))
            }
            hostValid = GF.cf | GF.zf | GF.sf | GF.pf | (count == 1 ? GF.of : 0)
        case .imul64RR, .imul64RRI:
            if d.op == .imul64RR {
                a.load(8, .rcx, greg(d.reg))
                a.imul(8, .rcx, greg(d.rm))
            } else {
                guard let imm = Int32(exactly: Int64(bitPattern: d.imm)) else { return false }
                a.imul(8, .rcx, greg(d.rm), imm: imm)
            }
            a.store(8, greg(d.reg), .rcx)
            if memLiveAfter[i] != 0 || hostLiveAfter[i] != 0 {
                // Lazy form as the interpreter's imul64: SZP from the result, CF = OF = overflow.
                a.setcc(2, .r(.rdx))                  // SETC DL
                a.movzx(.rdx, srcSize: 1, .r(.rdx))
                a.imul(4, .rdx, .r(.rdx), imm: 0x801)
                lazy(i, kind: CC.szp, size: 8, dst: .rcx, src: .rdx)
            }
            hostValid = 0
        case .inc64R, .dec64R, .inc32R, .dec32R:
            let size = d.op == .inc64R || d.op == .dec64R ? 8 : 4
            let inc = d.op == .inc64R || d.op == .inc32R
            let wantCarry = memLiveAfter[i] & GF.cf != 0 || hostLiveAfter[i] & GF.cf != 0
            if wantCarry { carryIn(i) }
            a.load(size, .rcx, greg(d.rm))
            a.incDec(inc ? 0 : 1, size, .r(.rcx))
            a.store(8, greg(d.rm), .rcx)
            if memLiveAfter[i] != 0 {
                lazy(i, kind: inc ? CC.inc : CC.dec, size: size, dst: .rcx, src: nil)
                a.store(8, BlockTranslator.ccSrc2M, .r8)
            }
            hostValid = (hostValid & GF.cf) | (GF.all & ~GF.cf)
        case .rol64RI, .ror64RI, .rol32RI, .ror32RI:
            let size = d.op == .rol64RI || d.op == .ror64RI ? 8 : 4
            let left = d.op == .rol64RI || d.op == .rol32RI
            let count = UInt8(truncatingIfNeeded: d.imm)
            a.load(size, .rcx, greg(d.rm))
            a.shiftImm(left ? 0 : 1, size, .r(.rcx), count)
            a.store(8, greg(d.rm), .rcx)
            // The rotate's own CF (and OF for a 1-bit count) over what the host held before.
            hostValid = (hostValid & ~(GF.cf | GF.of)) | GF.cf | (count == 1 ? GF.of : 0)
            rotateFlags(i, size: size, left: left)
        case .setccR:
            need(GF.read(d.sub))
            a.setcc(d.sub, greg(d.rm))
        case .cmov64RR, .cmov32RR:
            need(GF.read(d.sub))
            let size = d.op == .cmov64RR ? 8 : 4
            a.load(size, .rcx, greg(d.reg))
            a.cmov(d.sub, size, .rcx, greg(d.rm))
            a.store(8, greg(d.reg), .rcx)

        // MARK: Memory
        case .load64, .load32, .movzx8M, .movzx16M:
            let size = d.op == .load64 ? 8 : d.op == .load32 ? 4 : d.op == .movzx8M ? 1 : 2
            let slow = memoryAccess(i, size: size, write: false, live: hostLiveAfter[i])
            switch size {
            case 8, 4: a.load(size, .rcx, .m(HMem(.rsi)))
            default: a.movzx(.rcx, srcSize: size, .m(HMem(.rsi)))
            }
            a.store(8, greg(d.reg), .rcx)
            resume(i, slow)
        case .store64, .store32, .store8:
            let size = d.op == .store64 ? 8 : d.op == .store32 ? 4 : 1
            let slow = memoryAccess(i, size: size, write: true, live: hostLiveAfter[i])
            a.load(size, .rcx, greg(d.reg))
            a.store(size, .m(HMem(.rsi)), .rcx)
            resume(i, slow)
        case .storeImm64, .storeImm32:
            let size = d.op == .storeImm64 ? 8 : 4
            guard let imm = BlockTranslator.immediate(d.imm, size) else { return false }
            let slow = memoryAccess(i, size: size, write: true, live: hostLiveAfter[i])
            a.storeImm(size, .m(HMem(.rsi)), imm)
            resume(i, slow)
        case .add64RM, .cmp64RM:
            let slow = memoryAccess(i, size: 8, write: false, live: 0)
            a.load(8, .rcx, greg(d.reg))
            a.load(8, .rdx, .m(HMem(.rsi)))
            a.alu(d.op == .add64RM ? AluKind.add : AluKind.sub, 8, .rcx, .r(.rdx))
            if d.op == .add64RM { a.store(8, greg(d.reg), .rcx) }
            aluFlags(i, kind: d.op == .add64RM ? AluKind.add : AluKind.sub, size: 8, src: .rdx)
            resume(i, slow)
        case .cmp64MR, .cmp32MR:
            let size = d.op == .cmp64MR ? 8 : 4
            let slow = memoryAccess(i, size: size, write: false, live: 0)
            a.load(size, .rcx, .m(HMem(.rsi)))
            a.load(size, .rdx, greg(d.reg))
            a.alu(AluKind.sub, size, .rcx, .r(.rdx))
            aluFlags(i, kind: AluKind.sub, size: size, src: .rdx)
            resume(i, slow)
        case .cmp64MI, .cmp32MI, .cmp8MI, .test8MI:
            let size = d.op == .cmp64MI ? 8 : d.op == .cmp32MI ? 4 : 1
            let kind = d.op == .test8MI ? AluKind.and : AluKind.sub
            guard let imm = BlockTranslator.immediate(d.imm, size) else { return false }
            let slow = memoryAccess(i, size: size, write: false, live: 0)
            if size == 1 { a.movzx(.rcx, srcSize: 1, .m(HMem(.rsi))) } else { a.load(size, .rcx, .m(HMem(.rsi))) }
            a.aluImm(kind, size, .r(.rcx), imm)
            if memLiveAfter[i] != 0 && kind == AluKind.sub {
                a.movImm(.rdx, size == 8 ? d.imm : size == 4 ? d.imm & 0xFFFF_FFFF : d.imm & 0xFF)
            }
            aluFlags(i, kind: kind, size: size, src: .rdx)
            resume(i, slow)
        case .alu64MR, .alu32MR, .alu64MI, .alu32MI:
            let size = d.op == .alu64MR || d.op == .alu64MI ? 8 : 4
            let kind = d.sub & 7
            let carry = kind == AluKind.adc || kind == AluKind.sbb
            let imm: Int32?
            if d.op == .alu64MI || d.op == .alu32MI {
                imm = BlockTranslator.immediate(d.imm, size)
                guard imm != nil else { return false }
            } else {
                imm = nil
            }
            if carry { need(GF.cf) }
            let slow = memoryAccess(i, size: size, write: true, live: carry ? GF.cf : 0)
            if carry { carryIn(i) }
            a.load(size, .rcx, .m(HMem(.rsi)))
            if let imm {
                if memLiveAfter[i] != 0 && BlockTranslator.usesSrc(kind) {
                    a.movImm(.rdx, size == 8 ? d.imm : d.imm & 0xFFFF_FFFF)
                }
                a.aluImm(kind, size, .r(.rcx), imm)
            } else {
                a.load(size, .rdx, greg(d.reg))
                a.alu(kind, size, .rcx, .r(.rdx))
            }
            a.store(size, .m(HMem(.rsi)), .rcx)
            aluFlags(i, kind: kind, size: size, src: .rdx)
            resume(i, slow)

        // MARK: Stack
        case .push64R:
            a.load(8, .rdi, greg(UInt8(Reg.rsp * 8)))
            a.lea(.rdi, HMem(.rdi, -8))
            let slow = stackAccess(i, write: true)
            a.load(8, .rcx, greg(d.rm))
            a.store(8, .m(HMem(.rsi)), .rcx)
            a.store(8, greg(UInt8(Reg.rsp * 8)), .rdi)
            resume(i, slow)
        case .pop64R:
            a.load(8, .rdi, greg(UInt8(Reg.rsp * 8)))
            let slow = stackAccess(i, write: false)
            a.load(8, .rcx, .m(HMem(.rsi)))
            a.lea(.rdi, HMem(.rdi, 8))
            a.store(8, greg(UInt8(Reg.rsp * 8)), .rdi)
            a.store(8, greg(d.rm), .rcx)
            resume(i, slow)

        // MARK: Control flow
        case .jz64, .jnz64, .jcc64:
            let cc: UInt8 = d.op == .jz64 ? 4 : d.op == .jnz64 ? 5 : d.sub
            need(GF.read(cc))
            let target = Int(ripDelta(offsets[i] + Int(d.len))) + Int(Int64(bitPattern: d.imm))
            if d.pfx & Pfx.trace != 0 {
                a.jcc(cc, branch(to: target, retired: i + 1))
            } else {
                a.jcc(cc, branch(to: target, retired: i + 1))
                a.jmp(branch(to: Int(ripDelta(offsets[i] + Int(d.len))), retired: i + 1))
                blockEnded = true
            }
        case .jmp64:
            if d.pfx & Pfx.trace == 0 {
                let target = Int(ripDelta(offsets[i] + Int(d.len))) + Int(Int64(bitPattern: d.imm))
                a.jmp(branch(to: target, retired: i + 1))
                blockEnded = true
            }
        case .call64:
            let next = Int(ripDelta(offsets[i] + Int(d.len)))
            a.load(8, .rdi, greg(UInt8(Reg.rsp * 8)))
            a.lea(.rdi, HMem(.rdi, -8))
            let slow = stackAccess(i, write: true)
            a.lea(.rcx, HMem(.rbx, Int32(next)))
            a.store(8, .m(HMem(.rsi)), .rcx)
            a.store(8, greg(UInt8(Reg.rsp * 8)), .rdi)
            // The interpreter's slow path leaves RIP at the target itself and reports a branch.
            let done = a.newLabel()
            a.bind(done)
            slowPath(i, slow, resume: done)
            hostValid = 0
            if d.pfx & Pfx.trace == 0 {
                a.jmp(branch(to: next + Int(Int64(bitPattern: d.imm)), retired: i + 1))
                blockEnded = true
            }
        case .ret64:
            a.load(8, .rdi, greg(UInt8(Reg.rsp * 8)))
            let slow = stackAccess(i, write: false)
            a.load(8, .rcx, .m(HMem(.rsi)))
            a.lea(.rdi, HMem(.rdi, 8))
            a.store(8, greg(UInt8(Reg.rsp * 8)), .rdi)
            a.store(8, .m(HMem(.r15, JITLayout.regsRip)), .rcx)
            emitIndirectExit(retired: i + 1)
            // The interpreter's slow path set RIP (a RET to the next instruction comes back here).
            let done = a.newLabel()
            a.bind(done)
            slowPath(i, slow, resume: done)
            a.load(8, .rcx, .m(HMem(.r15, JITLayout.regsRip)))
            emitIndirectExit(retired: i + 1)
            blockEnded = true
        case .sse:
            return emitSSE(i)
        default:
            return emitGeneric(i)
        }
        return true
    }

    // MARK: Pieces

    /// (ALU kind, size, writes the destination) of a register-register form; kind 8 = TEST.
    static func rrForm(_ op: Op) -> (UInt8, Int, Bool) {
        switch op {
        case .add64RR: return (AluKind.add, 8, true)
        case .sub64RR: return (AluKind.sub, 8, true)
        case .cmp64RR: return (AluKind.cmp, 8, false)
        case .and64RR: return (AluKind.and, 8, true)
        case .or64RR: return (AluKind.or, 8, true)
        case .xor64RR: return (AluKind.xor, 8, true)
        case .test64RR: return (8, 8, false)
        case .adc64RR: return (AluKind.adc, 8, true)
        case .sbb64RR: return (AluKind.sbb, 8, true)
        case .add32RR: return (AluKind.add, 4, true)
        case .sub32RR: return (AluKind.sub, 4, true)
        case .cmp32RR: return (AluKind.cmp, 4, false)
        case .and32RR: return (AluKind.and, 4, true)
        case .or32RR: return (AluKind.or, 4, true)
        case .xor32RR: return (AluKind.xor, 4, true)
        default: return (8, 4, false)   // test32RR
        }
    }

    static func riForm(_ op: Op) -> (UInt8, Int) {
        switch op {
        case .add64RI: return (AluKind.add, 8)
        case .sub64RI: return (AluKind.sub, 8)
        case .cmp64RI: return (AluKind.cmp, 8)
        case .and64RI: return (AluKind.and, 8)
        case .or64RI: return (AluKind.or, 8)
        case .xor64RI: return (AluKind.xor, 8)
        case .adc64RI: return (AluKind.adc, 8)
        case .add32RI: return (AluKind.add, 4)
        case .sub32RI: return (AluKind.sub, 4)
        case .cmp32RI: return (AluKind.cmp, 4)
        case .and32RI: return (AluKind.and, 4)
        case .or32RI: return (AluKind.or, 4)
        default: return (AluKind.xor, 4)
        }
    }

    /// An instruction immediate as the host's sign-extended imm32 (8/16/32-bit forms take the low
    /// bits as they are); nil when a 64-bit immediate does not fit.
    static func immediate(_ imm: UInt64, _ size: Int) -> Int32? {
        size == 8 ? Int32(exactly: Int64(bitPattern: imm)) : Int32(truncatingIfNeeded: imm)
    }

    /// Whether the lazy form of an ALU kind keeps the second operand.
    static func usesSrc(_ kind: UInt8) -> Bool {
        kind == AluKind.add || kind == AluKind.sub || kind == AluKind.cmp || kind == AluKind.adc || kind == AluKind.sbb
    }

    /// Stores the lazy flags of an ALU operation whose result is in rcx and second operand in `src`,
    /// and records which host flags now hold guest flags.
    mutating func aluFlags(_ i: Int, kind: UInt8, size: Int, src: HReg) {
        switch kind {
        case AluKind.add: lazy(i, kind: CC.add, size: size, dst: .rcx, src: src); hostValid = GF.all
        case AluKind.sub, AluKind.cmp: lazy(i, kind: CC.sub, size: size, dst: .rcx, src: src); hostValid = GF.all
        case AluKind.adc, AluKind.sbb:
            lazy(i, kind: kind == AluKind.adc ? CC.adc : CC.sbb, size: size, dst: .rcx, src: src)
            if memLiveAfter[i] != 0 { a.store(8, BlockTranslator.ccSrc2M, .r8) }
            hostValid = GF.all
        default:
            // AND/OR/XOR/TEST: AF is undefined on the host; the interpreter says 0.
            lazy(i, kind: CC.logic, size: size, dst: .rcx, src: nil)
            hostValid = GF.all & ~GF.af
        }
    }

    /// Puts the incoming carry in r8 (0 or 1) for ADC/SBB/INC/DEC, keeping it in the host CF.
    mutating func carryIn(_ i: Int) {
        need(GF.cf)
        a.movImm(.r8, 0)
        a.setcc(2, .r(.r8))   // SETC R8B
    }

    /// Stores a 64-bit constant into a guest register.
    mutating func storeConstant(_ dst: HRM, _ v: UInt64) {
        if let imm = Int32(exactly: Int64(bitPattern: v)) {
            a.storeImm(8, dst, imm)
        } else {
            a.movImm(.rcx, v)
            a.store(8, dst, .rcx)
        }
    }

    /// Address and TLB lookup of instruction `i`'s memory operand; the caller then accesses [rsi].
    mutating func memoryAccess(_ i: Int, size: Int, write: Bool, live: UInt16) -> Label {
        address(i, segment: true)
        return lookup(size: size, write: write, live: live)
    }

    /// The stack slot at rdi (8 bytes; SS has base 0 in 64-bit mode).
    mutating func stackAccess(_ i: Int, write: Bool) -> Label {
        lookup(size: 8, write: write, live: hostLiveAfter[i])
    }

    mutating func lookup(size: Int, write: Bool, live: UInt16) -> Label {
        let saved = saveFlagsIfLive(live)
        let slow = a.newLabel()
        tlbLookup(size: size, write: write, slow: slow)
        if saved { restoreFlags() } else { hostValid = 0 }
        return slow
    }

    /// Binds the point after instruction `i` where its slow path rejoins.
    mutating func resume(_ i: Int, _ slow: Label) {
        let done = a.newLabel()
        a.bind(done)
        slowPath(i, slow, resume: done)
        memKindRot = nil   // the interpreter's path may have left another lazy form
        if !(hostValid != 0 && hostLiveAfter[i] != 0) { hostValid = 0 }
    }

    /// A branch to entry + `delta` after `retired` instructions: back to the head when it is the
    /// block's own start, otherwise out of the block.
    mutating func branch(to delta: Int, retired: Int) -> Label {
        if delta == 0 {
            let l = a.newLabel()
            stubs_appendBackEdge(l, retired: retired)
            return l
        }
        return exitStub(ripDelta: delta, retired: retired)
    }
}
