// Native translations of the generic (not specialised) integer forms: every operand size, register
// or memory operands, 32-bit addressing. Same contract as TranslatorOps.swift: the interpreter's
// state exactly, flags in the lazy form the interpreter would leave.

extension BlockTranslator {
    /// Operand sizes in bytes from the decoder's size index.
    static func bytes(_ osz: UInt8) -> Int { 1 << Int(osz) }

    /// Loads a guest value of `size` bytes from `src` into `dst`, zero-extended.
    mutating func loadZX(_ size: Int, _ dst: HReg, _ src: HRM) {
        if size >= 4 { a.load(size, dst, src) } else { a.movzx(dst, srcSize: size, src) }
    }

    /// Stores `size` bytes of `src` into a guest register (a 4-byte value zero-extends: the host
    /// register already holds it zero-extended) or memory.
    mutating func storeE(_ size: Int, _ dst: HRM, toRegister: Bool, _ src: HReg) {
        a.store(toRegister && size == 4 ? 8 : size, dst, src)
    }

    /// Shape of a generic form, or nil when the interpreter runs it.
    func genericShape(_ d: DecodedInsn) -> Shape? {
        // LOCKed forms run in the interpreter, which makes them atomic across vCPU threads
        // (SMP/Atomics.swift); natively they would need the host's LOCK prefix.
        if d.pfx & Pfx.lock != 0 { return nil }
        var s = Shape()
        s.native = true
        s.lookup = d.mem
        s.mayExit = d.mem
        let all = GF.all
        switch d.op {
        case .aluEG, .aluGE, .aluEI:
            let k = d.sub & 7
            s.writes = all
            if k == AluKind.adc || k == AluKind.sbb { s.reads = GF.cf }
            s.set = k == AluKind.and || k == AluKind.or || k == AluKind.xor ? all & ~GF.af : all
        case .testEG, .testEI:
            s.writes = all; s.set = all & ~GF.af
        case .negE:
            s.writes = all; s.set = all
        case .incE, .decE:
            s.reads = GF.cf; s.writes = all & ~GF.cf; s.keep = GF.cf; s.set = all & ~GF.cf
        case .movEG, .movGE, .movEI, .notE, .movzx, .movsx, .movsxd, .bswap:
            s.keep = all
        case .mulE, .imulE:
            s.writes = all; s.set = 0
        case .bsf, .bsr:
            guard d.osz >= 1 else { return nil }
            s.writes = all; s.set = all & ~GF.af
        case .cbw, .cwd:
            guard d.osz >= 1 else { return nil }
            s.keep = all; s.lookup = false; s.mayExit = false
        case .nop:
            s.keep = all; s.lookup = false; s.mayExit = false   // a NOP's operand is never accessed
        case .shiftEI:
            let w = 8 << Int(d.osz)
            let c = Int(truncatingIfNeeded: d.imm & (w == 64 ? 0x3F : 0x1F))
            guard c >= 1 && c < w else { return nil }
            switch d.sub & 7 {
            case 4, 5, 6, 7:
                s.writes = all; s.set = GF.cf | GF.zf | GF.sf | GF.pf | (c == 1 ? GF.of : 0)
            case 0, 1:
                s.writes = GF.cf | GF.of; s.keep = all & ~(GF.cf | GF.of); s.set = GF.cf | (c == 1 ? GF.of : 0)
            default:
                return nil
            }
        case .shiftECL:
            // 32/64-bit SHL/SHR/SAR by CL: a zero count leaves the flags alone, so the lazy state
            // must be exact before it (reads all) and the host flags are unknown after it.
            guard d.osz >= 2, [4, 5, 6, 7].contains(d.sub & 7) else { return nil }
            s.reads = all; s.writes = all; s.set = 0
            s.mayExit = true   // the zero-count path keeps the lazy state: it must be exact before
        default:
            return nil
        }
        if d.mem && d.asz < 2 { return nil }   // 16-bit addressing does not exist in 64-bit code
        return s
    }

    /// The E operand of instruction `i`: a guest register slot, or [rsi] after a TLB lookup (whose
    /// slow-path label is returned).
    mutating func eOperand(_ i: Int, size: Int, write: Bool, live: UInt16) -> (HRM, Label?) {
        let d = insns[i]
        if !d.mem { return (greg(d.rm), nil) }
        let slow = memoryAccess(i, size: size, write: write, live: live)
        return (.m(HMem(.rsi)), slow)
    }

    mutating func finish(_ i: Int, _ slow: Label?) {
        if let slow { resume(i, slow) }
    }

    mutating func emitGeneric(_ i: Int) -> Bool {
        let d = insns[i]
        guard genericShape(d) != nil else { return false }
        let size = BlockTranslator.bytes(d.osz)
        let live = hostLiveAfter[i]
        switch d.op {
        case .aluEG, .aluEI:
            // E op= G / imm.
            let kind = d.sub & 7
            let carry = kind == AluKind.adc || kind == AluKind.sbb
            var imm: Int32 = 0
            if d.op == .aluEI { guard let v = BlockTranslator.immediate(d.imm, size) else { return false }; imm = v }
            if carry { need(GF.cf) }
            let (e, slow) = eOperand(i, size: size, write: kind != AluKind.cmp, live: carry ? GF.cf : 0)
            if carry { carryIn(i) }
            loadZX(size, .rcx, e)
            if d.op == .aluEI {
                if memLiveAfter[i] != 0 && BlockTranslator.usesSrc(kind) { a.movImm(.rdx, d.imm & sizeMask(Int(d.osz))) }
                a.aluImm(kind == AluKind.cmp ? AluKind.sub : kind, size, .r(.rcx), imm)
            } else {
                loadZX(size, .rdx, greg(d.reg))
                a.alu(kind == AluKind.cmp ? AluKind.sub : kind, size, .rcx, .r(.rdx))
            }
            if kind != AluKind.cmp { storeE(size, e, toRegister: !d.mem, .rcx) }
            aluFlags(i, kind: kind, size: size, src: .rdx)
            finish(i, slow)
        case .aluGE:
            // G op= E.
            let kind = d.sub & 7
            let carry = kind == AluKind.adc || kind == AluKind.sbb
            if carry { need(GF.cf) }
            let (e, slow) = eOperand(i, size: size, write: false, live: carry ? GF.cf : 0)
            if carry { carryIn(i) }
            loadZX(size, .rdx, e)
            loadZX(size, .rcx, greg(d.reg))
            a.alu(kind == AluKind.cmp ? AluKind.sub : kind, size, .rcx, .r(.rdx))
            if kind != AluKind.cmp { storeE(size, greg(d.reg), toRegister: true, .rcx) }
            aluFlags(i, kind: kind, size: size, src: .rdx)
            finish(i, slow)
        case .testEG, .testEI:
            let (e, slow) = eOperand(i, size: size, write: false, live: 0)
            loadZX(size, .rcx, e)
            if d.op == .testEI {
                guard let imm = BlockTranslator.immediate(d.imm, size) else { return false }
                a.aluImm(AluKind.and, size, .r(.rcx), imm)
            } else {
                a.alu(AluKind.and, size, .rcx, greg(d.reg))
            }
            aluFlags(i, kind: AluKind.and, size: size, src: .rdx)
            finish(i, slow)
        case .negE:
            let (e, slow) = eOperand(i, size: size, write: true, live: 0)
            loadZX(size, .rdx, e)
            a.movImm(.rcx, 0)
            a.alu(AluKind.sub, size, .rcx, .r(.rdx))
            storeE(size, e, toRegister: !d.mem, .rcx)
            aluFlags(i, kind: AluKind.sub, size: size, src: .rdx)
            finish(i, slow)
        case .notE:
            let (e, slow) = eOperand(i, size: size, write: true, live: live)
            loadZX(size, .rcx, e)
            a.group3(2, size, .r(.rcx))
            storeE(size, e, toRegister: !d.mem, .rcx)
            finish(i, slow)
        case .incE, .decE:
            let inc = d.op == .incE
            let wantCarry = memLiveAfter[i] & GF.cf != 0 || hostLiveAfter[i] & GF.cf != 0
            if wantCarry { need(GF.cf) }
            let (e, slow) = eOperand(i, size: size, write: true, live: wantCarry ? GF.cf : 0)
            if wantCarry { carryIn(i) }
            loadZX(size, .rcx, e)
            a.incDec(inc ? 0 : 1, size, .r(.rcx))
            storeE(size, e, toRegister: !d.mem, .rcx)
            if memLiveAfter[i] != 0 {
                lazy(i, kind: inc ? CC.inc : CC.dec, size: size, dst: .rcx, src: nil)
                a.store(8, BlockTranslator.ccSrc2M, .r8)
            }
            hostValid = (hostValid & GF.cf) | (GF.all & ~GF.cf)
            finish(i, slow)
        case .movEG:
            let (e, slow) = eOperand(i, size: size, write: true, live: live)
            loadZX(size, .rcx, greg(d.reg))
            storeE(size, e, toRegister: !d.mem, .rcx)
            finish(i, slow)
        case .movGE:
            let (e, slow) = eOperand(i, size: size, write: false, live: live)
            loadZX(size, .rcx, e)
            storeE(size, greg(d.reg), toRegister: true, .rcx)
            finish(i, slow)
        case .movEI:
            guard let imm = BlockTranslator.immediate(d.imm, size) else { return false }
            let (e, slow) = eOperand(i, size: size, write: true, live: live)
            if d.mem || size != 4 {
                a.storeImm(size, e, imm)
            } else {
                a.movImm(.rcx, d.imm & 0xFFFF_FFFF)
                a.store(8, e, .rcx)
            }
            finish(i, slow)
        case .movzx, .movsx, .movsxd:
            let srcSize = d.op == .movsxd ? 4 : d.sub == 0 ? 1 : 2
            let (e, slow) = eOperand(i, size: srcSize, write: false, live: live)
            if d.op == .movzx {
                loadZX(srcSize, .rcx, e)
            } else if srcSize == 4 && size < 8 {
                a.load(4, .rcx, e)   // MOVSXD with a 32/16-bit destination is a plain move
            } else {
                a.movsx(size == 8 ? 8 : 4, .rcx, srcSize: srcSize, e)   // 32-bit form zero-extends
            }
            storeE(size, greg(d.reg), toRegister: true, .rcx)
            finish(i, slow)
        case .nop:
            break
        case .cbw:
            // CBW/CWDE/CDQE: rAX from its lower half, sign-extended (a 32-bit result zero-extends).
            switch d.osz {
            case 1:
                a.movsx(2, .rcx, srcSize: 1, greg(0))
                a.store(2, greg(0), .rcx)
            case 2:
                a.movsx(4, .rcx, srcSize: 2, greg(0))
                a.store(8, greg(0), .rcx)
            default:
                a.movsx(8, .rcx, srcSize: 4, greg(0))
                a.store(8, greg(0), .rcx)
            }
        case .mulE, .imulE:
            // rDX:rAX = rAX * E (AX = AL * E for bytes) by the host's MUL/IMUL; the lazy state as the
            // interpreter's: SF ZF PF from the low half, CF = OF = the high half is significant.
            let (e, slow) = eOperand(i, size: size, write: false, live: 0)
            loadZX(size, .rcx, e)
            a.load(8, .rax, greg(0))
            a.group3(d.op == .mulE ? 4 : 5, size, .r(.rcx))
            if memLiveAfter[i] != 0 || hostLiveAfter[i] != 0 {
                a.movImm(.r8, 0)
                a.setcc(2, .r(.r8))                       // SETC R8B
                a.imul(4, .r8, .r(.r8), imm: 0x801)       // CF | OF
                lazy(i, kind: CC.szp, size: size, dst: .rax, src: .r8)
            }
            switch size {
            case 1:
                a.store(2, greg(0), .rax)
            case 2:
                a.store(2, greg(0), .rax)
                a.store(2, greg(UInt8(Reg.rdx * 8)), .rdx)
            default:
                a.store(8, greg(0), .rax)
                a.store(8, greg(UInt8(Reg.rdx * 8)), .rdx)
            }
            hostValid = 0
            finish(i, slow)
        case .bsf, .bsr:
            // The index of the lowest/highest set bit; a zero source leaves the destination (but a
            // 32-bit one loses its upper half, as the interpreter and QEMU have it); flags as a
            // logical operation on the source.
            let (e, slow) = eOperand(i, size: size, write: false, live: 0)
            loadZX(size, .rcx, e)
            let zero = a.newLabel(), done = a.newLabel()
            a.test(8, .r(.rcx), .rcx)
            a.jcc(4, zero)
            a.raw(d.op == .bsf ? [0x48, 0x0F, 0xBC, 0xD1] : [0x48, 0x0F, 0xBD, 0xD1])   // BSF/BSR rdx, rcx
            storeE(size, greg(d.reg), toRegister: true, .rdx)
            a.jmp(done)
            a.bind(zero)
            if size == 4 {
                a.load(4, .rdx, greg(d.reg))
                a.store(8, greg(d.reg), .rdx)
            }
            a.bind(done)
            a.alu(AluKind.and, size, .rcx, .r(.rcx))
            aluFlags(i, kind: AluKind.and, size: size, src: .rdx)
            finish(i, slow)
        case .cwd:
            // CWD/CDQ/CQO: rDX from the sign of rAX, by the host's own instruction (flags untouched).
            a.load(8, .rax, greg(0))
            a.raw(d.osz == 1 ? [0x66, 0x99] : d.osz == 2 ? [0x99] : [0x48, 0x99])
            a.store(d.osz == 1 ? 2 : 8, greg(UInt8(Reg.rdx * 8)), .rdx)
        case .bswap:
            guard size >= 4 else { return false }   // BSWAP r16 is undefined; the interpreter decides
            a.load(size, .rcx, greg(d.rm))
            a.bswap(size, .rcx)
            a.store(8, greg(d.rm), .rcx)
        case .shiftEI:
            let w = 8 * size
            let count = UInt8(truncatingIfNeeded: d.imm & (w == 64 ? 0x3F : 0x1F))
            let sub = d.sub & 7
            let rotate = sub <= 1
            let (e, slow) = eOperand(i, size: size, write: true, live: rotate ? live : 0)
            loadZX(size, .rcx, e)
            a.mov(.rdx, .rcx)
            a.shiftImm(sub == 6 ? 4 : sub, size, .r(.rcx), count)
            storeE(size, e, toRegister: !d.mem, .rcx)
            if rotate {
                hostValid = (hostValid & ~(GF.cf | GF.of)) | GF.cf | (count == 1 ? GF.of : 0)
                rotateFlags(i, size: size, left: sub == 0)
            } else {
                if memLiveAfter[i] != 0 {
                    lazy(i, kind: sub == 5 ? CC.shr : sub == 7 ? CC.sar : CC.shl, size: size, dst: .rcx, src: .rdx)
                    a.storeImm(8, BlockTranslator.ccSrc2M, Int32(count))
                }
                hostValid = GF.cf | GF.zf | GF.sf | GF.pf | (count == 1 ? GF.of : 0)
            }
            finish(i, slow)
        case .shiftECL:
            let sub = d.sub & 7
            let (e, slow) = eOperand(i, size: size, write: true, live: 0)
            // r8 = masked count; a zero count changes nothing but the zero-extension of a 32-bit
            // register (its store below is harmless) and checks memory access (done above).
            a.load(4, .r8, greg(UInt8(Reg.rcx * 8)))
            a.aluImm(AluKind.and, 4, .r(.r8), size == 8 ? 0x3F : 0x1F)
            loadZX(size, .rdx, e)
            let zero = a.newLabel(), done = a.newLabel()
            a.jcc(4, zero)   // JZ (from the AND)
            a.mov(.rcx, .r8)
            a.mov(.r9, .rdx)
            a.shiftCL(sub == 6 ? 4 : sub, size, .r(.r9))
            storeE(size, e, toRegister: !d.mem, .r9)
            a.store(8, BlockTranslator.ccDstM, .r9)
            a.store(8, BlockTranslator.ccSrcM, .rdx)
            a.store(8, BlockTranslator.ccSrc2M, .r8)
            a.storeImm(4, BlockTranslator.ccOpM, Int32(truncatingIfNeeded: (sub == 5 ? CC.shr : sub == 7 ? CC.sar : CC.shl) << 2 | UInt32(d.osz)))
            memKindRot = false
            a.jmp(done)
            a.bind(zero)
            if !d.mem && size == 4 { a.store(8, e, .rdx) }
            a.bind(done)
            hostValid = 0
            finish(i, slow)
        default:
            return false
        }
        return true
    }

    /// The lazy state after a ROL/ROR whose result is in rcx: CC.rol/ror, keeping the state before
    /// it (for SF ZF AF PF) in the `...Prev` fields, unless that state is itself a rotate's (then
    /// the one it kept stays). Only when some flag can be looked at (analysis).
    mutating func rotateFlags(_ i: Int, size: Int, left: Bool) {
        guard memLiveAfter[i] != 0 else { return }
        let skip = a.newLabel()
        switch memKindRot {
        case true?: break
        case false?: copyLazyToPrev()
        case nil:
            let saved = saveFlagsIfLive(hostLiveAfter[i])
            a.load(4, .rdx, BlockTranslator.ccOpM)
            a.shiftImm(5, 4, .r(.rdx), 2)
            a.aluImm(7, 4, .r(.rdx), Int32(CC.rol))
            let restore = a.newLabel()
            a.jcc(3, restore)   // JAE: already a rotate's
            copyLazyToPrev()
            a.bind(restore)
            if saved { restoreFlags() } else { hostValid = 0 }
        }
        a.bind(skip)
        a.storeImm(4, BlockTranslator.ccOpM, Int32(truncatingIfNeeded: (left ? CC.rol : CC.ror) << 2 | UInt32(truncatingIfNeeded: sizeIndexOf(size))))
        a.store(8, BlockTranslator.ccDstM, .rcx)
        memKindRot = true
    }

    mutating func copyLazyToPrev() {
        a.load(4, .rdx, BlockTranslator.ccOpM); a.store(4, .m(HMem(.r14, JITLayout.ccOpPrev)), .rdx)
        a.load(8, .rdx, BlockTranslator.ccDstM); a.store(8, .m(HMem(.r14, JITLayout.ccDstPrev)), .rdx)
        a.load(8, .rdx, BlockTranslator.ccSrcM); a.store(8, .m(HMem(.r14, JITLayout.ccSrcPrev)), .rdx)
        a.load(8, .rdx, BlockTranslator.ccSrc2M); a.store(8, .m(HMem(.r14, JITLayout.ccSrc2Prev)), .rdx)
    }
}
