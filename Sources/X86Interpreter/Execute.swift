import CHost
#if canImport(Glibc)
import Glibc
#endif

// The executor: one switch over decoded operations. On entry RIP already points at the next
// instruction; a fault restores it (precise exceptions), so handlers must do every access that
// can fault before changing architectural state.

@inline(__always) func sizeIndex<T: FixedWidthInteger>(_: T.Type) -> Int {
    T.bitWidth == 8 ? 0 : T.bitWidth == 16 ? 1 : T.bitWidth == 32 ? 2 : 3
}

extension X86Interpreter {
    @inline(__always)
    func execute(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        switch d.pointee.op {
        case .movEG:
            if d.pointee.mem {
                let la = linearAddress(d)
                switch d.pointee.osz {
                case 0: try write(la, getReg(d.pointee.reg, UInt8.self))
                case 1: try write(la, getReg(d.pointee.reg, UInt16.self))
                case 2: try write(la, getReg(d.pointee.reg, UInt32.self))
                default: try write(la, getReg(d.pointee.reg, UInt64.self))
                }
            } else {
                setRegSized(d.pointee.rm, Int(d.pointee.osz), getRegSized(d.pointee.reg, Int(d.pointee.osz)))
            }
        case .movGE:
            let s = Int(d.pointee.osz)
            if d.pointee.mem {
                setRegSized(d.pointee.reg, s, try readSized(linearAddress(d), s))
            } else {
                setRegSized(d.pointee.reg, s, getRegSized(d.pointee.rm, s))
            }
        case .movEI:
            try writeESized(d, Int(d.pointee.osz), d.pointee.imm)
        case .lea:
            setRegSized(d.pointee.reg, Int(d.pointee.osz), effectiveAddress(d))
        case .aluEG:
            switch d.pointee.osz {
            case 0: try aluE(d, getReg(d.pointee.reg, UInt8.self))
            case 1: try aluE(d, getReg(d.pointee.reg, UInt16.self))
            case 2: try aluE(d, getReg(d.pointee.reg, UInt32.self))
            default: try aluE(d, getReg(d.pointee.reg, UInt64.self))
            }
        case .aluEI:
            let imm = d.pointee.imm
            switch d.pointee.osz {
            case 0: try aluE(d, UInt8(truncatingIfNeeded: imm))
            case 1: try aluE(d, UInt16(truncatingIfNeeded: imm))
            case 2: try aluE(d, UInt32(truncatingIfNeeded: imm))
            default: try aluE(d, imm)
            }
        case .aluGE:
            switch d.pointee.osz {
            case 0: try aluG(d, UInt8.self)
            case 1: try aluG(d, UInt16.self)
            case 2: try aluG(d, UInt32.self)
            default: try aluG(d, UInt64.self)
            }
        case .testEG:
            let s = Int(d.pointee.osz)
            let v = try readESized(d, s) & getRegSized(d.pointee.reg, s)
            setCC(CC.logic, s, dst: v, src: 0)
        case .testEI:
            let s = Int(d.pointee.osz)
            let v = try readESized(d, s) & d.pointee.imm & sizeMask(s)
            setCC(CC.logic, s, dst: v, src: 0)
        case .jcc:
            if condition(d.pointee.sub) { branchRelative(d) }
        case .jmpRel:
            branchRelative(d)
        case .callRel:
            let s = Int(d.pointee.osz)
            try push(rip, s)
            branchRelative(d)
        case .ret:
            let s = Int(d.pointee.osz)
            let target = try pop(s)
            rip = target
            if d.pointee.imm != 0 { adjustSP(d.pointee.imm) }
        case .pushE:
            let s = Int(d.pointee.osz)
            try push(try readESized(d, s), s)
        case .popE:
            try popE(d)
        case .pushI:
            let s = Int(d.pointee.osz)
            try push(d.pointee.imm & sizeMask(s), s)
        case .incE, .decE:
            switch d.pointee.osz {
            case 0: try incDec(d, UInt8.self)
            case 1: try incDec(d, UInt16.self)
            case 2: try incDec(d, UInt32.self)
            default: try incDec(d, UInt64.self)
            }
        case .movzx:
            let v = d.pointee.sub == 0 ? try readESized(d, 0) : try readESized(d, 1)
            setRegSized(d.pointee.reg, Int(d.pointee.osz), v)
        case .movsx:
            let srcSize = Int(d.pointee.sub)
            let v = UInt64(bitPattern: signExtend(try readESized(d, srcSize), srcSize))
            setRegSized(d.pointee.reg, Int(d.pointee.osz), v)
        case .movsxd:
            let v = UInt64(bitPattern: signExtend(try readESized(d, 2), 2))
            setRegSized(d.pointee.reg, Int(d.pointee.osz), v)
        case .jmpE:
            rip = try readESized(d, Int(d.pointee.osz))
        case .callE:
            let s = Int(d.pointee.osz)
            let target = try readESized(d, s)
            try push(rip, s)
            rip = target
        case .cmovcc:
            let s = Int(d.pointee.osz)
            let v = try readESized(d, s)
            if condition(d.pointee.sub) { setRegSized(d.pointee.reg, s, v) }
            else if s == 2 { setRegSized(d.pointee.reg, 2, getRegSized(d.pointee.reg, 2)) }
        case .setcc:
            try writeESized(d, 0, condition(d.pointee.sub) ? 1 : 0)
        case .shiftEI, .shiftECL:
            let count = d.pointee.op == .shiftEI ? UInt8(truncatingIfNeeded: d.pointee.imm) : UInt8(truncatingIfNeeded: gpr(Reg.rcx))
            switch d.pointee.osz {
            case 0: try shiftE(d, count, UInt8.self)
            case 1: try shiftE(d, count, UInt16.self)
            case 2: try shiftE(d, count, UInt32.self)
            default: try shiftE(d, count, UInt64.self)
            }
        case .rdwrFSGSBase:
            guard st.pointee.cr4 & CR4.fsgsbase != 0 else { throw Fault.ud }
            let seg = d.pointee.sub & 1 == 0 ? Seg.fs : Seg.gs
            let wide = d.pointee.pfx & Pfx.rexW != 0
            if d.pointee.sub < 2 {
                let v = segs[seg].base
                setReg64(d.pointee.rm, wide ? v : v & 0xFFFF_FFFF)
            } else {
                let v = wide ? reg64(d.pointee.rm) : reg64(d.pointee.rm) & 0xFFFF_FFFF
                let top = Int64(bitPattern: v) >> 47
                guard top == 0 || top == -1 else { throw Fault.gp(0) }
                segs[seg].base = v
                refreshSegBases()
            }
        case .nop, .pause, .fence, .wbinvd, .clflush:
            if d.pointee.op == .wbinvd && st.pointee.cpl != 0 { throw Fault.gp(0) }
            // MFENCE and friends order this vCPU's accesses against the other vCPUs' threads.
            if d.pointee.op == .fence && atomicMemory { chost_fence() }
            // PAUSE marks a spin-wait. On a host with fewer free cores than vCPUs the CPU this one
            // waits for (a lock holder, an IPI's target) may be off its host core: every 32nd PAUSE
            // gives the core up, as pause-loop exiting does under hardware virtualisation.
            if d.pointee.op == .pause && atomicMemory {
                pausesSeen &+= 1
                if pausesSeen & 31 == 0 { sched_yield() }
            }
        case .xchgEG:
            let s = Int(d.pointee.osz)
            let r = getRegSized(d.pointee.reg, s)
            if d.pointee.mem && atomicMemory {
                // XCHG with memory is always locked.
                setRegSized(d.pointee.reg, s, try lockedRMW(linearAddress(d), s) { _ in r })
            } else if d.pointee.mem {
                let la = linearAddress(d)
                let m = try readSized(la, s)
                try writeSized(la, s, r)
                setRegSized(d.pointee.reg, s, m)
            } else {
                let m = getRegSized(d.pointee.rm, s)
                setRegSized(d.pointee.rm, s, r)
                setRegSized(d.pointee.reg, s, m)
            }
        case .notE:
            let s = Int(d.pointee.osz)
            try rmwSized(d, s) { v in ~v }
        case .negE:
            switch d.pointee.osz {
            case 0: try negE(d, UInt8.self)
            case 1: try negE(d, UInt16.self)
            case 2: try negE(d, UInt32.self)
            default: try negE(d, UInt64.self)
            }
        case .mulE, .imulE:
            try multiplyAcc(d)
        case .divE, .idivE:
            try divideAcc(d)
        case .imulGE, .imulGEI:
            let s = Int(d.pointee.osz)
            let a = d.pointee.op == .imulGE ? getRegSized(d.pointee.reg, s) : try readESized(d, s)
            let b = d.pointee.op == .imulGE ? try readESized(d, s) : d.pointee.imm & sizeMask(s)
            setRegSized(d.pointee.reg, s, imulTruncated(a, b, s))
        case .cbw:
            switch d.pointee.osz {
            case 1: setRegSized(0, 1, UInt64(bitPattern: signExtend(gpr(0), 0)))
            case 2: setRegSized(0, 2, UInt64(bitPattern: signExtend(gpr(0), 1)))
            default: setGPR(0, UInt64(bitPattern: signExtend(gpr(0), 2)))
            }
        case .cwd:
            let s = Int(d.pointee.osz)
            let neg = gpr(0) & signBit(s) != 0
            setRegSized(UInt8(Reg.rdx * 8), s, neg ? ~0 : 0)
        case .leave:
            let s = Int(d.pointee.osz)
            let mask = st.pointee.stackMask
            let bp = gpr(Reg.rbp) & mask
            let v = try readSized(linear(Seg.ss, bp), s)
            setGPR(Reg.rsp, (gpr(Reg.rsp) & ~mask) | ((bp &+ UInt64(1 << s)) & mask))
            setRegSized(UInt8(Reg.rbp * 8), s, v)
        case .enter:
            try enter(d)
        case .btEG, .btEI:
            try bitTest(d)
        case .bsf, .bsr:
            let s = Int(d.pointee.osz)
            let v = try readESized(d, s)
            if v != 0 {
                let idx = d.pointee.op == .bsf ? v.trailingZeroBitCount : 63 - v.leadingZeroBitCount
                setRegSized(d.pointee.reg, s, UInt64(idx))
            } else if s == 2 {
                // The destination keeps its value but, like any 32-bit write, loses the upper half (as QEMU).
                setRegSized(d.pointee.reg, 2, getRegSized(d.pointee.reg, 2))
            }
            setCC(CC.logic, s, dst: v, src: 0)
        case .xadd:
            try xadd(d)
        case .cmpxchg:
            try cmpxchg(d)
        case .cmpxchg8b:
            try cmpxchg8b(d)
        case .bswap:
            let s = Int(d.pointee.osz)
            if s == 3 { setReg64(d.pointee.rm, reg64(d.pointee.rm).byteSwapped) }
            else if s == 2 { setRegSized(d.pointee.rm, 2, UInt64(UInt32(truncatingIfNeeded: reg64(d.pointee.rm)).byteSwapped)) }
            else { setRegSized(d.pointee.rm, 1, 0) }   // BSWAP r16 is undefined; hardware (and QEMU) zero it
        case .shldI, .shldCL, .shrdI, .shrdCL:
            try doubleShift(d)
        case .movAccMoffs:
            let s = Int(d.pointee.osz)
            setRegSized(0, s, try readSized(linear(Int(d.pointee.seg), d.pointee.imm), s))
        case .movMoffsAcc:
            let s = Int(d.pointee.osz)
            try writeSized(linear(Int(d.pointee.seg), d.pointee.imm), s, getRegSized(0, s))
        case .clc: setArithFlags(arithFlags() & ~Flag.cf)
        case .stc: setArithFlags(arithFlags() | Flag.cf)
        case .cmc: setArithFlags(arithFlags() ^ Flag.cf)
        case .cld: st.pointee.flagsRest &= ~Flag.df
        case .std: st.pointee.flagsRest |= Flag.df
        case .lahf:
            let f = arithFlags() & (Flag.sf | Flag.zf | Flag.af | Flag.pf | Flag.cf) | Flag.fixed1
            regs.storeBytes(of: UInt8(truncatingIfNeeded: f), toByteOffset: 1, as: UInt8.self)
        case .sahf:
            let ah = UInt64(regs.load(fromByteOffset: 1, as: UInt8.self))
            setArithFlags((arithFlags() & Flag.of) | (ah & (Flag.sf | Flag.zf | Flag.af | Flag.pf | Flag.cf)))
        case .pushf:
            try pushf(d)
        case .popf:
            try popf(d)
        case .loop:
            let mask: UInt64 = d.pointee.asz == 3 ? ~0 : (d.pointee.asz == 2 ? 0xFFFF_FFFF : 0xFFFF)
            let c = (gpr(Reg.rcx) &- 1) & mask
            // LOOP with a 32-bit address size writes ECX, which clears the upper half like any
            // 32-bit register write; only the 16-bit CX form keeps the rest of the register.
            setGPR(Reg.rcx, d.pointee.asz == 1 ? (gpr(Reg.rcx) & ~mask) | c : c)
            var take = c != 0
            if d.pointee.sub == 0 { take = take && !condition(4) }
            if d.pointee.sub == 1 { take = take && condition(4) }
            if take { branchRelative(d) }
        case .jcxz:
            let mask: UInt64 = d.pointee.asz == 3 ? ~0 : (d.pointee.asz == 2 ? 0xFFFF_FFFF : 0xFFFF)
            if gpr(Reg.rcx) & mask == 0 { branchRelative(d) }
        case .movs, .stos, .lods, .cmps, .scas:
            try stringOp(d)
        case .ins, .outs:
            try stringIO(d)
        case .inImm, .inDX, .outImm, .outDX:
            try portIO(d)
        case .cli:
            try checkIOPL()
            st.pointee.flagsRest &= ~Flag.if
        case .sti:
            try checkIOPL()
            if st.pointee.flagsRest & Flag.if == 0 {
                st.pointee.flagsRest |= Flag.if
                st.pointee.interruptShadow = true
                st.pointee.eventCheck = true
            }
        case .hlt:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            st.pointee.halted = true
        case .xlat:
            let mask: UInt64 = d.pointee.asz == 3 ? ~0 : (d.pointee.asz == 2 ? 0xFFFF_FFFF : 0xFFFF)
            let off = (gpr(Reg.rbx) &+ (gpr(0) & 0xFF)) & mask
            setRegSized(0, 0, UInt64(try read(linear(Int(d.pointee.seg), off), UInt8.self)))
        case .daa, .das, .aaa, .aas, .aam, .aad, .salc:
            try decimalAdjust(d)
        case .ud:
            if d.pointee.sub == 13 { throw Fault.gp(0) }
            throw Fault.ud
        case .unimpl:
            unimplementedCount &+= 1
            lastUnimplemented = UInt32(truncatingIfNeeded: d.pointee.imm)
            throw Fault.ud
        default:
            try executeSystem(d)
        }
    }

    // MARK: Operand helpers

    @inline(__always)
    func readESized(_ d: UnsafePointer<DecodedInsn>, _ s: Int) throws(Fault) -> UInt64 {
        if d.pointee.mem { return try readSized(linearAddress(d), s) }
        return getRegSized(d.pointee.rm, s)
    }

    @inline(__always)
    func writeESized(_ d: UnsafePointer<DecodedInsn>, _ s: Int, _ v: UInt64) throws(Fault) {
        if d.pointee.mem { try writeSized(linearAddress(d), s, v) } else { setRegSized(d.pointee.rm, s, v) }
    }

    /// Read-modify-write of the E operand at size index `s`.
    @inline(__always)
    func rmwSized(_ d: UnsafePointer<DecodedInsn>, _ s: Int, _ f: (UInt64) -> UInt64) throws(Fault) {
        if locked(d) {
            try lockedRMW(linearAddress(d), s, f)
        } else if d.pointee.mem {
            let la = linearAddress(d)
            let v = try readSized(la, s)
            try writeSized(la, s, f(v))
        } else {
            setRegSized(d.pointee.rm, s, f(getRegSized(d.pointee.rm, s)))
        }
    }

    @inline(__always)
    func branchRelative(_ d: UnsafePointer<DecodedInsn>) {
        let t = rip &+ d.pointee.imm
        switch d.pointee.osz {
        case 1: rip = t & 0xFFFF
        case 2: rip = t & 0xFFFF_FFFF
        default: rip = t
        }
    }

    // MARK: ALU

    @inline(__always)
    func alu<T: FixedWidthInteger & UnsignedInteger>(_ kind: UInt8, _ a: T, _ b: T) -> T {
        let s = sizeIndex(T.self)
        switch kind {
        case AluKind.add:
            let r = a &+ b
            setCC(CC.add, s, dst: UInt64(r), src: UInt64(b))
            return r
        case AluKind.or:
            let r = a | b
            setCC(CC.logic, s, dst: UInt64(r), src: 0)
            return r
        case AluKind.adc:
            let c: T = carryFlag ? 1 : 0
            let r = a &+ b &+ c
            st.pointee.ccSrc2 = UInt64(c)
            setCC(CC.adc, s, dst: UInt64(r), src: UInt64(b))
            return r
        case AluKind.sbb:
            let c: T = carryFlag ? 1 : 0
            let r = a &- b &- c
            st.pointee.ccSrc2 = UInt64(c)
            setCC(CC.sbb, s, dst: UInt64(r), src: UInt64(b))
            return r
        case AluKind.and:
            let r = a & b
            setCC(CC.logic, s, dst: UInt64(r), src: 0)
            return r
        case AluKind.xor:
            let r = a ^ b
            setCC(CC.logic, s, dst: UInt64(r), src: 0)
            return r
        default:  // sub, cmp
            let r = a &- b
            setCC(CC.sub, s, dst: UInt64(r), src: UInt64(b))
            return r
        }
    }

    /// E op= src (ALU kind in d.sub; CMP does not write).
    @inline(__always)
    func aluE<T: FixedWidthInteger & UnsignedInteger>(_ d: UnsafePointer<DecodedInsn>, _ b: T) throws(Fault) {
        let kind = d.pointee.sub
        if !d.pointee.mem {
            let r = alu(kind, getReg(d.pointee.rm, T.self), b)
            if kind != AluKind.cmp { setReg(d.pointee.rm, r) }
            return
        }
        let la = linearAddress(d)
        if kind == AluKind.cmp {
            _ = alu(kind, try read(la, T.self), b)
            return
        }
        if locked(d) {
            try lockedRMW(la, sizeIndex(T.self)) { UInt64(alu(kind, T(truncatingIfNeeded: $0), b)) }
        } else if let p = try rmwPointer(la, MemoryLayout<T>.size) {
            p.storeBytes(of: alu(kind, p.loadUnaligned(as: T.self), b), as: T.self)
        } else {
            let a = try read(la, T.self)
            try write(la, alu(kind, a, b))
        }
    }

    /// reg op= E.
    @inline(__always)
    func aluG<T: FixedWidthInteger & UnsignedInteger>(_ d: UnsafePointer<DecodedInsn>, _: T.Type) throws(Fault) {
        let b: T = d.pointee.mem ? try read(linearAddress(d), T.self) : getReg(d.pointee.rm, T.self)
        let r = alu(d.pointee.sub, getReg(d.pointee.reg, T.self), b)
        if d.pointee.sub != AluKind.cmp { setReg(d.pointee.reg, r) }
    }

    @inline(__always)
    func incDec<T: FixedWidthInteger & UnsignedInteger>(_ d: UnsafePointer<DecodedInsn>, _: T.Type) throws(Fault) {
        let inc = d.pointee.op == .incE
        let s = sizeIndex(T.self)
        @inline(__always) func f(_ v: T) -> T {
            st.pointee.ccSrc2 = carryFlag ? 1 : 0
            let r = inc ? v &+ 1 : v &- 1
            setCC(inc ? CC.inc : CC.dec, s, dst: UInt64(r), src: 0)
            return r
        }
        if !d.pointee.mem {
            setReg(d.pointee.rm, f(getReg(d.pointee.rm, T.self)))
            return
        }
        let la = linearAddress(d)
        if locked(d) {
            try lockedRMW(la, s) { UInt64(f(T(truncatingIfNeeded: $0))) }
        } else if let p = try rmwPointer(la, MemoryLayout<T>.size) {
            p.storeBytes(of: f(p.loadUnaligned(as: T.self)), as: T.self)
        } else {
            let v = try read(la, T.self)
            try write(la, f(v))
        }
    }

    func negE<T: FixedWidthInteger & UnsignedInteger>(_ d: UnsafePointer<DecodedInsn>, _: T.Type) throws(Fault) {
        let s = sizeIndex(T.self)
        if locked(d) {
            try lockedRMW(linearAddress(d), s) { old in
                let v = T(truncatingIfNeeded: old)
                let r = 0 &- v
                setCC(CC.sub, s, dst: UInt64(r), src: UInt64(v))
                return UInt64(r)
            }
            return
        }
        let la = d.pointee.mem ? linearAddress(d) : 0
        let v: T = d.pointee.mem ? try read(la, T.self) : getReg(d.pointee.rm, T.self)
        let r = 0 &- v
        if d.pointee.mem { try write(la, r) } else { setReg(d.pointee.rm, r) }
        setCC(CC.sub, s, dst: UInt64(r), src: UInt64(v))
    }

    // MARK: Shifts and rotates

    func shiftE<T: FixedWidthInteger & UnsignedInteger>(_ d: UnsafePointer<DecodedInsn>, _ countIn: UInt8, _: T.Type) throws(Fault) {
        let w = T.bitWidth
        let count = Int(countIn & (w == 64 ? 0x3F : 0x1F))
        if count == 0 {
            // No flags change, but a memory operand is still checked for access and a 32-bit
            // register is still written (zero-extended).
            if d.pointee.mem { _ = try rmwPointer(linearAddress(d), MemoryLayout<T>.size) }
            else if w == 32 { setReg(d.pointee.rm, getReg(d.pointee.rm, T.self)) }
            return
        }
        let la = d.pointee.mem ? linearAddress(d) : 0
        let v: T = d.pointee.mem ? try read(la, T.self) : getReg(d.pointee.rm, T.self)
        let s = sizeIndex(T.self)
        let msb = { (x: T) -> UInt64 in UInt64(x >> T(w - 1)) & 1 }
        var r: T
        switch d.pointee.sub & 7 {
        case 0, 1:  // ROL, ROR: only CF and OF change
            let c = count % w
            let left = d.pointee.sub == 0
            r = c == 0 ? v : (left ? (v << T(c)) | (v >> T(w - c)) : (v >> T(c)) | (v << T(w - c)))
            var f = arithFlags() & ~(Flag.cf | Flag.of)
            if left {
                let cf = UInt64(r & 1)
                f |= cf | ((msb(r) ^ cf) != 0 ? Flag.of : 0)
            } else {
                let cf = msb(r)
                f |= cf | ((msb(r) ^ (UInt64(r >> T(w - 2)) & 1)) != 0 ? Flag.of : 0)
            }
            setArithFlags(f)
        case 2, 3:  // RCL, RCR through carry
            let c = w == 8 ? count % 9 : (w == 16 ? count % 17 : count)
            var cf: UInt64 = carryFlag ? 1 : 0
            r = v
            if d.pointee.sub == 2 {
                for _ in 0..<c { let out = msb(r); r = (r << 1) | T(cf); cf = out }
            } else {
                for _ in 0..<c { let out = UInt64(r & 1); r = (r >> 1) | (T(cf) << T(w - 1)); cf = out }
            }
            if c != 0 {
                var f = arithFlags() & ~(Flag.cf | Flag.of)
                let of = d.pointee.sub == 2 ? msb(r) ^ cf : msb(r) ^ (UInt64(r >> T(w - 2)) & 1)
                f |= cf | (of != 0 ? Flag.of : 0)
                setArithFlags(f)
            }
        case 5:  // SHR
            r = count < w ? v >> T(count) : 0
            let cf: UInt64 = count <= w ? UInt64(v >> T(count - 1)) & 1 : 0
            setCC(CC.szp, s, dst: UInt64(r), src: cf | (msb(v) != 0 ? Flag.of : 0))
        case 7:  // SAR
            let sv = UInt64(bitPattern: signExtend(UInt64(v), s))
            let sh = min(count, w - 1)
            r = T(truncatingIfNeeded: UInt64(bitPattern: Int64(bitPattern: sv) >> Int64(sh)))
            let cf = UInt64(bitPattern: Int64(bitPattern: sv) >> Int64(min(count - 1, 63))) & 1
            setCC(CC.szp, s, dst: UInt64(r), src: cf)
        default:  // SHL, SAL (4 and 6)
            r = count < w ? v << T(count) : 0
            let cf: UInt64 = count <= w ? UInt64(v >> T(w - count)) & 1 : 0
            setCC(CC.szp, s, dst: UInt64(r), src: cf | ((msb(r) ^ cf) != 0 ? Flag.of : 0))
        }
        if d.pointee.mem { try write(la, r) } else { setReg(d.pointee.rm, r) }
    }

    func doubleShift(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let w = 8 << s
        let op = d.pointee.op
        let raw = op == .shldI || op == .shrdI ? UInt8(truncatingIfNeeded: d.pointee.imm) : UInt8(truncatingIfNeeded: gpr(Reg.rcx))
        let count = Int(raw & (w == 64 ? 0x3F : 0x1F))
        if count == 0 {
            if d.pointee.mem { _ = try rmwPointer(linearAddress(d), 1 << s) }
            else if s == 2 { setRegSized(d.pointee.rm, 2, getRegSized(d.pointee.rm, 2)) }
            return
        }
        let la = d.pointee.mem ? linearAddress(d) : 0
        let v = d.pointee.mem ? try readSized(la, s) : getRegSized(d.pointee.rm, s)
        let src = getRegSized(d.pointee.reg, s)
        let mask = sizeMask(s)
        let left = op == .shldI || op == .shldCL
        var r: UInt64, cf: UInt64
        if w == 16 {
            // 16-bit operands with counts above 16 shift through the 32-bit concatenation (as QEMU).
            if left {
                let cat = (v << 32) | (src << 16) | v
                r = (cat << UInt64(count)) >> 32 & 0xFFFF
                cf = (cat << UInt64(count - 1)) >> 47 & 1
            } else {
                let cat = (v << 32) | (src << 16) | v
                r = (cat >> UInt64(count)) & 0xFFFF
                cf = (cat >> UInt64(count - 1)) & 1
            }
        } else if left {
            r = ((v << UInt64(count)) | (count == w ? 0 : src >> UInt64(w - count))) & mask
            cf = (v >> UInt64(w - count)) & 1
        } else {
            r = ((v >> UInt64(count)) | (src << UInt64(w - count))) & mask
            cf = (v >> UInt64(count - 1)) & 1
        }
        let of = ((r ^ v) & signBit(s)) != 0 ? Flag.of : 0
        if d.pointee.mem { try writeSized(la, s, r) } else { setRegSized(d.pointee.rm, s, r) }
        setCC(CC.szp, s, dst: r, src: cf | of)
    }

    // MARK: Multiply and divide

    func multiplyAcc(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let src = try readESized(d, s)
        let signed = d.pointee.op == .imulE
        let a = getRegSized(0, s)
        switch s {
        case 0:
            let r: UInt64 = signed ? UInt64(bitPattern: signExtend(a, 0) &* signExtend(src, 0)) & 0xFFFF : a &* src
            setRegSized(0, 1, r)
            let over = signed ? UInt64(bitPattern: signExtend(r, 0)) & 0xFFFF != r : r >> 8 != 0
            setCC(CC.szp, 0, dst: r & 0xFF, src: over ? Flag.cf | Flag.of : 0)
        case 1, 2:
            let bits = UInt64(8 << s)
            let r: UInt64 = signed ? UInt64(bitPattern: signExtend(a, s) &* signExtend(src, s)) : a &* src
            let lo = r & sizeMask(s), hi = (r >> bits) & sizeMask(s)
            setRegSized(0, s, lo)
            setRegSized(UInt8(Reg.rdx * 8), s, hi)
            let over = signed ? signExtend(lo, s) != Int64(bitPattern: r) : hi != 0
            setCC(CC.szp, s, dst: lo, src: over ? Flag.cf | Flag.of : 0)
        default:
            let hi: UInt64, lo: UInt64, over: Bool
            if signed {
                let (h, l) = Int64(bitPattern: a).multipliedFullWidth(by: Int64(bitPattern: src))
                hi = UInt64(bitPattern: h); lo = l
                over = h != (Int64(bitPattern: l) >> 63)
            } else {
                (hi, lo) = a.multipliedFullWidth(by: src)
                over = hi != 0
            }
            setGPR(0, lo); setGPR(Reg.rdx, hi)
            setCC(CC.szp, 3, dst: lo, src: over ? Flag.cf | Flag.of : 0)
        }
    }

    /// Two/three-operand IMUL: truncated product, CF = OF = signed overflow.
    func imulTruncated(_ a: UInt64, _ b: UInt64, _ s: Int) -> UInt64 {
        let (h, l) = signExtend(a, s).multipliedFullWidth(by: signExtend(b, s))
        let r = l & sizeMask(s)
        let over: Bool
        if s == 3 { over = h != (Int64(bitPattern: l) >> 63) }
        else { over = signExtend(r, s) != Int64(bitPattern: l) }
        setCC(CC.szp, s, dst: r, src: over ? Flag.cf | Flag.of : 0)
        return r
    }

    func divideAcc(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let divisor = try readESized(d, s)
        if divisor == 0 { throw Fault.de }
        let signed = d.pointee.op == .idivE
        switch s {
        case 0, 1, 2:
            let bits = UInt64(8 << s)
            let dividend: UInt64 = s == 0 ? gpr(0) & 0xFFFF : (getRegSized(UInt8(Reg.rdx * 8), s) << bits) | getRegSized(0, s)
            var q: UInt64, r: UInt64
            if signed {
                let n = signExtend(dividend, s + 1)
                let dv = signExtend(divisor, s)
                if n == Int64.min && dv == -1 { throw Fault.de }
                let qq = n / dv, rr = n % dv
                if qq > Int64(bitPattern: sizeMask(s) >> 1) || qq < -Int64(bitPattern: sizeMask(s) >> 1) - 1 { throw Fault.de }
                q = UInt64(bitPattern: qq) & sizeMask(s); r = UInt64(bitPattern: rr) & sizeMask(s)
            } else {
                q = dividend / divisor; r = dividend % divisor
                if q > sizeMask(s) { throw Fault.de }
            }
            if s == 0 { setRegSized(0, 1, (r << 8) | q) }
            else { setRegSized(0, s, q); setRegSized(UInt8(Reg.rdx * 8), s, r) }
        default:
            let hi = gpr(Reg.rdx), lo = gpr(0)
            if signed {
                let neg = Int64(bitPattern: hi) < 0
                // |dividend| as 128 bits.
                var mh = hi, ml = lo
                if neg { ml = ~lo &+ 1; mh = ~hi &+ (ml == 0 ? 1 : 0) }
                let dneg = Int64(bitPattern: divisor) < 0
                let md = dneg ? ~divisor &+ 1 : divisor
                if mh >= md { throw Fault.de }
                let (q, r) = md.dividingFullWidth((mh, ml))
                let qneg = neg != dneg
                if qneg ? q > UInt64(1) << 63 : q >= UInt64(1) << 63 { throw Fault.de }
                setGPR(0, qneg ? ~q &+ 1 : q)
                setGPR(Reg.rdx, neg ? ~r &+ 1 : r)
            } else {
                if hi >= divisor { throw Fault.de }
                let (q, r) = divisor.dividingFullWidth((hi, lo))
                setGPR(0, q); setGPR(Reg.rdx, r)
            }
        }
    }

    // MARK: Bit operations

    func bitTest(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let w = 8 << s
        let kind = d.pointee.sub
        var bit: Int
        var la: UInt64 = 0
        if d.pointee.op == .btEI {
            bit = Int(d.pointee.imm) & (w - 1)
            if d.pointee.mem { la = linearAddress(d) }
        } else {
            let off = signExtend(getRegSized(d.pointee.reg, s), s)
            bit = Int(off & Int64(w - 1))
            if d.pointee.mem {
                // The register offset selects any bit relative to the operand, in operand-size units.
                let ea = effectiveAddress(d) &+ UInt64(bitPattern: (off >> Int64(3 + s)) << Int64(s))
                let asz = d.pointee.asz
                let ea2 = asz == 3 ? ea : (asz == 2 ? ea & 0xFFFF_FFFF : ea & 0xFFFF)
                la = linear(Int(d.pointee.seg), ea2)
            }
        }
        let m = UInt64(1) << UInt64(bit)
        if kind != 0 && locked(d) {
            let old = try lockedRMW(la, s) { v in kind == 1 ? v | m : (kind == 2 ? v & ~m : v ^ m) }
            setArithFlags((arithFlags() & ~Flag.cf) | ((old >> UInt64(bit)) & 1))
            return
        }
        let v = d.pointee.mem ? try readSized(la, s) : getRegSized(d.pointee.rm, s)
        let cf = (v >> UInt64(bit)) & 1
        var r = v
        switch kind {
        case 1: r = v | m
        case 2: r = v & ~m
        case 3: r = v ^ m
        default: break
        }
        if kind != 0 {
            if d.pointee.mem { try writeSized(la, s, r) } else { setRegSized(d.pointee.rm, s, r) }
        }
        setArithFlags((arithFlags() & ~Flag.cf) | cf)
    }

    func xadd(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        if locked(d) {
            let src = getRegSized(d.pointee.reg, s)
            let old = try lockedRMW(linearAddress(d), s) { $0 &+ src }
            setRegSized(d.pointee.reg, s, old)
            setCC(CC.add, s, dst: (old &+ src) & sizeMask(s), src: src)
            return
        }
        let la = d.pointee.mem ? linearAddress(d) : 0
        let dst = d.pointee.mem ? try readSized(la, s) : getRegSized(d.pointee.rm, s)
        let src = getRegSized(d.pointee.reg, s)
        let sum = (dst &+ src) & sizeMask(s)
        if d.pointee.mem { try writeSized(la, s, sum) }
        setRegSized(d.pointee.reg, s, dst)
        if !d.pointee.mem { setRegSized(d.pointee.rm, s, sum) }
        setCC(CC.add, s, dst: sum, src: src)
    }

    func cmpxchg(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        if locked(d) { return try lockedCmpxchg(d) }
        let s = Int(d.pointee.osz)
        let la = d.pointee.mem ? linearAddress(d) : 0
        let dst = d.pointee.mem ? try readSized(la, s) : getRegSized(d.pointee.rm, s)
        let acc = getRegSized(0, s)
        let equal = acc == dst
        if d.pointee.mem {
            // The destination is always written (the locked cycle), with its old value on failure.
            try writeSized(la, s, equal ? getRegSized(d.pointee.reg, s) : dst)
        } else if equal {
            // A register destination is written only on success (hardware; QEMU before 8.1 and
            // unicorn also write it back, zero-extending, on failure).
            setRegSized(d.pointee.rm, s, getRegSized(d.pointee.reg, s))
        }
        if !equal { setRegSized(0, s, dst) }
        setCC(CC.sub, s, dst: (acc &- dst) & sizeMask(s), src: dst)
    }

    func cmpxchg8b(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        // CMPXCHG16B (REX.W) needs CPUID.CX16, which is not offered.
        if d.pointee.pfx & Pfx.rexW != 0 { throw Fault.ud }
        if locked(d) { return try lockedCmpxchg8b(d) }
        let la = linearAddress(d)
        let m = try read(la, UInt64.self)
        let cmp = (gpr(Reg.rdx) & 0xFFFF_FFFF) << 32 | (gpr(0) & 0xFFFF_FFFF)
        var f = arithFlags() & ~Flag.zf
        if m == cmp {
            try write(la, (gpr(Reg.rcx) & 0xFFFF_FFFF) << 32 | (gpr(Reg.rbx) & 0xFFFF_FFFF))
            f |= Flag.zf
        } else {
            try write(la, m)
            setGPR(0, m & 0xFFFF_FFFF)
            setGPR(Reg.rdx, m >> 32)
        }
        setArithFlags(f)
    }

    // MARK: Stack

    /// The linear address of an implicit stack access. In 64-bit mode a non-canonical stack
    /// address raises #SS(0), not the #GP(0) of other data references.
    @inline(__always)
    func stackAddress(_ offset: UInt64, _ s: Int) throws(Fault) -> UInt64 {
        let la = linear(Seg.ss, offset)
        if st.pointee.codeSize == 2 {
            let first = Int64(bitPattern: la) >> 47, last = Int64(bitPattern: la &+ UInt64((1 << s) - 1)) >> 47
            if (first != 0 && first != -1) || (last != 0 && last != -1) { throw Fault.ss(0) }
        }
        return la
    }

    @inline(__always)
    func push(_ v: UInt64, _ s: Int) throws(Fault) {
        let mask = st.pointee.stackMask
        let sp = gpr(Reg.rsp)
        let nsp = (sp &- UInt64(1 << s)) & mask
        let la = try stackAddress(nsp, s)
        switch s {
        case 1: try write(la, UInt16(truncatingIfNeeded: v))
        case 2: try write(la, UInt32(truncatingIfNeeded: v))
        default: try write(la, v)
        }
        setGPR(Reg.rsp, (sp & ~mask) | nsp)
    }

    @inline(__always)
    func pop(_ s: Int) throws(Fault) -> UInt64 {
        let mask = st.pointee.stackMask
        let sp = gpr(Reg.rsp)
        let v = try readSized(try stackAddress(sp & mask, s), s)
        setGPR(Reg.rsp, (sp & ~mask) | ((sp &+ UInt64(1 << s)) & mask))
        return v
    }

    /// Reads the value `pop` would return without moving the stack pointer (offset in bytes above SP).
    func peek(_ s: Int, at offset: UInt64 = 0) throws(Fault) -> UInt64 {
        let mask = st.pointee.stackMask
        return try readSized(try stackAddress((gpr(Reg.rsp) &+ offset) & mask, s), s)
    }

    func adjustSP(_ n: UInt64) {
        let mask = st.pointee.stackMask
        let sp = gpr(Reg.rsp)
        setGPR(Reg.rsp, (sp & ~mask) | ((sp &+ n) & mask))
    }

    func popE(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        if !d.pointee.mem {
            let v = try pop(s)
            setRegSized(d.pointee.rm, s, v)
            return
        }
        // POP m: the address is computed after RSP is incremented.
        let oldSP = gpr(Reg.rsp)
        let v = try pop(s)
        do {
            try writeSized(linearAddress(d), s, v)
        } catch {
            setGPR(Reg.rsp, oldSP)
            throw error
        }
    }

    func enter(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let size = UInt64(1 << s)
        let level = Int(d.pointee.sub & 31)
        let mask = st.pointee.stackMask
        let oldSP = gpr(Reg.rsp)
        let bp = gpr(Reg.rbp)
        do {
            try push(bp, s)
            let frame = gpr(Reg.rsp) & mask
            if level > 0 {
                var tbp = bp & mask
                for _ in 1..<level {
                    tbp = (tbp &- size) & mask
                    try push(try readSized(linear(Seg.ss, tbp), s), s)
                }
                try push(frame, s)
            }
            let nsp = (gpr(Reg.rsp) &- d.pointee.imm) & mask
            // The final stack area must be writable.
            _ = try rmwPointer(linear(Seg.ss, nsp), 1)
            // The frame pointer has the stack's width, not the operand size.
            setRegSized(UInt8(Reg.rbp * 8), mask == 0xFFFF ? 1 : (mask == ~0 ? 3 : 2), frame)
            setGPR(Reg.rsp, (gpr(Reg.rsp) & ~mask) | nsp)
        } catch {
            setGPR(Reg.rsp, oldSP)
            throw error
        }
    }

    func pushf(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        try push(rflags & ~(Flag.vm | Flag.rf), s)
    }

    func popf(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let v = try pop(s)
        var changeable: UInt64 = Flag.arith | Flag.tf | Flag.df | Flag.nt | Flag.ac | Flag.id
        let cpl = st.pointee.cpl
        let iopl = Int((st.pointee.flagsRest >> 12) & 3)
        if st.pointee.cr0 & CR0.pe == 0 || cpl == 0 { changeable |= Flag.iopl | Flag.if }
        else if cpl <= iopl { changeable |= Flag.if }
        if s == 1 { changeable &= 0xFFFF }
        let old = rflags
        let new = (old & ~changeable) | (v & changeable)
        setRFlags(new)
        if new & Flag.if != 0 && old & Flag.if == 0 { st.pointee.eventCheck = true }
    }

    /// CLI/STI/IN/OUT privilege: CPL must not exceed IOPL in protected mode.
    @inline(__always)
    func checkIOPL() throws(Fault) {
        if st.pointee.cr0 & CR0.pe != 0 && st.pointee.cpl > Int((st.pointee.flagsRest >> 12) & 3) { throw Fault.gp(0) }
    }

    /// IN/OUT/INS/OUTS permission: allowed when CPL <= IOPL, otherwise only if every bit for
    /// `port..<port+size` in the TSS I/O permission bitmap is clear (SDM Vol. 1, 19.5.2).
    func checkIOPermission(port: UInt16, size: Int) throws(Fault) {
        guard st.pointee.cr0 & CR0.pe != 0 && st.pointee.cpl > Int((st.pointee.flagsRest >> 12) & 3) else { return }
        let tr = st.pointee.tr
        // Only a 32/64-bit TSS (available or busy) has a bitmap; its base field is at offset 0x66.
        guard tr.attr & 0x0D == 0x09, tr.limit >= 0x67 else { throw Fault.gp(0) }
        let mapBase = try readSys(tr.base &+ 0x66, 2) & 0xFFFF
        let byteOffset = mapBase &+ UInt64(port >> 3)
        // Both bytes the check reads must be inside the TSS limit.
        guard byteOffset &+ 1 <= UInt64(tr.limit) else { throw Fault.gp(0) }
        let bits = try readSys(tr.base &+ byteOffset, 2)
        let mask = ((UInt64(1) << UInt64(size)) - 1) << UInt64(port & 7)
        if bits & mask != 0 { throw Fault.gp(0) }
    }

    // MARK: BCD

    func decimalAdjust(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        var al = gpr(0) & 0xFF
        var f = arithFlags()
        let cf = f & Flag.cf != 0, af = f & Flag.af != 0
        switch d.pointee.op {
        case .daa, .das:
            let oldAL = al
            var newCF = false, newAF = false
            if al & 0xF > 9 || af {
                al = d.pointee.op == .daa ? (al &+ 6) & 0xFF : (al &- 6) & 0xFF
                newCF = cf || (d.pointee.op == .daa ? oldAL > 0xF9 : oldAL < 6)
                newAF = true
            }
            if oldAL > 0x99 || cf {
                al = d.pointee.op == .daa ? (al &+ 0x60) & 0xFF : (al &- 0x60) & 0xFF
                newCF = true
            }
            setRegSized(0, 0, al)
            f = (newCF ? Flag.cf : 0) | (newAF ? Flag.af : 0) | (al == 0 ? Flag.zf : 0) | (al & 0x80 != 0 ? Flag.sf : 0) | parityFlag(al)
            setArithFlags(f)
        case .aaa, .aas:
            var ax = gpr(0) & 0xFFFF
            if al & 0xF > 9 || af {
                if d.pointee.op == .aaa { ax = (ax &+ 0x106) & 0xFFFF } else {
                    ax = (ax &- 6) & 0xFFFF
                    ax = (ax & 0xFF) | (((ax >> 8) &- 1) & 0xFF) << 8
                }
                f = (f & ~(Flag.cf | Flag.af)) | Flag.cf | Flag.af
            } else {
                f &= ~(Flag.cf | Flag.af)
            }
            ax &= 0xFF0F
            setRegSized(0, 1, ax)
            setArithFlags(f)
        case .aam:
            let base = d.pointee.imm & 0xFF
            if base == 0 { throw Fault.de }
            let ah = al / base
            al = al % base
            setRegSized(0, 1, ah << 8 | al)
            setCC(CC.logic, 0, dst: al, src: 0)
        case .aad:
            let base = d.pointee.imm & 0xFF
            let ah = (gpr(0) >> 8) & 0xFF
            al = (al &+ ah &* base) & 0xFF
            setRegSized(0, 1, al)
            setCC(CC.logic, 0, dst: al, src: 0)
        default:  // SALC
            setRegSized(0, 0, carryFlag ? 0xFF : 0)
        }
    }
}
