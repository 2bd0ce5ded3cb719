#if canImport(Glibc)
import Glibc
#endif

// x87 floating point (D8-DF) on the host's 80-bit Float80. Registers live in the FXSAVE image in
// physical order (32 + 16 * physical index); FXSAVE/FXRSTOR rotate them to ST(i) order. The
// abridged tag byte marks valid physical registers. Rounding control applies to the arithmetic,
// FSQRT and stores to float/double (fesetround/fesetenv change it: glibc's rint, fenv tests);
// precision control is not applied (glibc and Linux keep extended precision).

enum X87Status {
    static let ie: UInt16 = 1, de: UInt16 = 2, ze: UInt16 = 4, oe: UInt16 = 8, ue: UInt16 = 16, pe: UInt16 = 32
    static let sf: UInt16 = 64, es: UInt16 = 0x80
    static let c0: UInt16 = 0x100, c1: UInt16 = 0x200, c2: UInt16 = 0x400, c3: UInt16 = 0x4000
    static let cc: UInt16 = c0 | c1 | c2 | c3
}

extension X86Interpreter {
    var fpuTop: Int {
        get { Int((fsw >> 11) & 7) }
        set { fsw = (fsw & ~0x3800) | UInt16(newValue & 7) << 11 }
    }
    var ftw: UInt8 {
        get { fx.load(fromByteOffset: FX.ftw, as: UInt8.self) }
        set { fx.storeBytes(of: newValue, toByteOffset: FX.ftw, as: UInt8.self) }
    }

    @inline(__always) func physical(_ i: Int) -> Int { (fpuTop + i) & 7 }

    func stIsEmpty(_ i: Int) -> Bool { ftw & (1 << UInt8(physical(i))) == 0 }

    func st(_ i: Int) -> Float80 {
        fx.load(fromByteOffset: FX.st0 + 16 * physical(i), as: Float80.self)
    }
    func setST(_ i: Int, _ v: Float80) {
        let off = FX.st0 + 16 * physical(i)
        fx.storeBytes(of: v, toByteOffset: off, as: Float80.self)
        // Keep the 6 padding bytes zero, as FXSAVE stores them.
        fx.storeBytes(of: UInt32(0), toByteOffset: off + 10, as: UInt32.self)
        fx.storeBytes(of: UInt16(0), toByteOffset: off + 14, as: UInt16.self)
        ftw |= 1 << UInt8(physical(i))
    }

    static let indefinite: Float80 = -Float80.nan

    /// Records an x87 exception; with it unmasked in FCW, sets ES (reported at the next FWAIT/x87 op).
    func fpuException(_ bits: UInt16) {
        var s = fsw | bits
        if bits & ~fcw & 0x3F != 0 { s |= X87Status.es }
        fsw = s
    }

    func fpuPush(_ v: Float80) {
        let newTop = (fpuTop - 1) & 7
        if ftw & (1 << UInt8(newTop)) != 0 {
            fpuException(X87Status.ie | X87Status.sf | X87Status.c1)   // stack overflow
            fpuTop = newTop
            setST(0, X86Interpreter.indefinite)
            return
        }
        fpuTop = newTop
        setST(0, v)
    }

    func fpuPop() {
        ftw &= ~(1 << UInt8(fpuTop))
        fpuTop = fpuTop + 1
    }

    /// ST(i) for reading; an empty register is a stack underflow yielding the indefinite NaN.
    func stRead(_ i: Int) -> Float80 {
        if stIsEmpty(i) {
            fpuException(X87Status.ie | X87Status.sf)
            fsw &= ~X87Status.c1
            return X86Interpreter.indefinite
        }
        return st(i)
    }

    func load80(_ la: UInt64) throws(Fault) -> Float80 {
        let lo = try read(la, UInt64.self), hi = try read(la &+ 8, UInt16.self)
        var v: Float80 = 0
        withUnsafeMutableBytes(of: &v) { b in
            b.storeBytes(of: lo, toByteOffset: 0, as: UInt64.self)
            b.storeBytes(of: hi, toByteOffset: 8, as: UInt16.self)
        }
        return v
    }
    func store80(_ la: UInt64, _ v: Float80) throws(Fault) {
        var x = v
        let (lo, hi) = withUnsafeBytes(of: &x) { b in (b.load(fromByteOffset: 0, as: UInt64.self), b.load(fromByteOffset: 8, as: UInt16.self)) }
        _ = try rmwPointer(la &+ 9, 1)
        try write(la, lo)
        try write(la &+ 8, hi)
    }

    /// Rounds to an integer per FCW.RC (or truncates), for FIST/FRNDINT.
    func roundX87(_ v: Float80, truncate: Bool = false) -> Float80 {
        if truncate { return v.rounded(.towardZero) }
        switch (fcw >> 10) & 3 {
        case 0: return v.rounded(.toNearestOrEven)
        case 1: return v.rounded(.down)
        case 2: return v.rounded(.up)
        default: return v.rounded(.towardZero)
        }
    }

    func toInteger(_ v: Float80, bits: Int, truncate: Bool) -> Int64 {
        let indefinite = Int64(-1) << Int64(bits - 1)
        if v.isNaN || v.isInfinite { fpuException(X87Status.ie); return indefinite }
        let r = roundX87(v, truncate: truncate)
        let limit = Float80(sign: .plus, exponent: bits - 1, significand: 1)
        if r >= limit || r < -limit { fpuException(X87Status.ie); return indefinite }
        if r != v { fpuException(X87Status.pe) }
        return Int64(r)
    }

    /// Sets C0/C2/C3 from a comparison (C1 cleared).
    func fpuCompare(_ a: Float80, _ b: Float80, unordered: Bool) {
        var s = fsw & ~X87Status.cc
        if a.isNaN || b.isNaN {
            s |= X87Status.c0 | X87Status.c2 | X87Status.c3
            if !unordered || a.isSignalingNaN || b.isSignalingNaN { fsw = s; fpuException(X87Status.ie); return }
        } else if a < b { s |= X87Status.c0 } else if a == b { s |= X87Status.c3 }
        fsw = s
    }

    /// FCOMI/FUCOMI: the comparison goes to ZF/PF/CF.
    func fpuCompareEFLAGS(_ a: Float80, _ b: Float80, unordered: Bool) {
        var f: UInt64 = 0
        if a.isNaN || b.isNaN {
            f = Flag.zf | Flag.pf | Flag.cf
            if !unordered || a.isSignalingNaN || b.isSignalingNaN { fpuException(X87Status.ie) }
        } else if a < b { f = Flag.cf } else if a == b { f = Flag.zf }
        fsw &= ~X87Status.c1
        setArithFlags(f)
    }

    /// Runs `body` with the host's rounding mode set to FCW.RC: the host's x87 performs the
    /// Float80 operations and conversions, so they round as the guest asked.
    @inline(__always)
    func withX87Rounding<R>(_ body: () -> R) -> R {
        let rc = Int(fcw >> 10) & 3
        if rc == 0 { return body() }
        // glibc's FE_DOWNWARD, FE_UPWARD, FE_TOWARDZERO are the RC field values in place.
        fesetround(Int32(rc) << 10)
        defer { fesetround(0) }
        return body()
    }

    /// The eight arithmetic operations selected by ModRM.reg: ADD MUL COM COMP SUB SUBR DIV DIVR.
    func fpuArith(_ op: Int, _ a: Float80, _ b: Float80) -> Float80 {
        withX87Rounding { fpuArithNearest(op, a, b) }
    }

    private func fpuArithNearest(_ op: Int, _ a: Float80, _ b: Float80) -> Float80 {
        switch op {
        case 0: return a + b
        case 1: return a * b
        case 4: return a - b
        case 5: return b - a
        case 6:
            if b == 0 && !a.isNaN { fpuException(a == 0 ? X87Status.ie : X87Status.ze) }
            return a / b
        default:
            if a == 0 && !b.isNaN { fpuException(b == 0 ? X87Status.ie : X87Status.ze) }
            return b / a
        }
    }

    func executeX87(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        try checkFPUAvailable()
        let opcode = Int(d.pointee.imm >> 8) & 7   // D8..DF -> 0..7
        let modrm = UInt8(truncatingIfNeeded: d.pointee.imm)
        let reg = Int(modrm >> 3) & 7
        let isControl = !d.pointee.mem && ((opcode == 3 && (modrm == 0xE2 || modrm == 0xE3)) || (opcode == 7 && modrm == 0xE0))
        let isMemControl = d.pointee.mem && ((opcode == 1 && reg >= 4) || (opcode == 5 && (reg == 4 || reg == 6 || reg == 7)))
        if !isControl && !isMemControl && fsw & X87Status.es != 0 && st.pointee.cr0 & CR0.ne != 0 { throw Fault.mf }
        if d.pointee.mem {
            try x87Memory(d, opcode, reg)
        } else {
            try x87Register(opcode, modrm)
        }
    }

    func x87Memory(_ d: UnsafePointer<DecodedInsn>, _ opcode: Int, _ reg: Int) throws(Fault) {
        let la = linearAddress(d)
        switch (opcode, reg) {
        case (0, _), (2, _), (4, _), (6, _):
            // Arithmetic with a memory operand: m32fp, m32int, m64fp, m16int.
            let v: Float80
            switch opcode {
            case 0: v = Float80(Float(bitPattern: try read(la, UInt32.self)))
            case 2: v = Float80(Int32(bitPattern: try read(la, UInt32.self)))
            case 4: v = Float80(Double(bitPattern: try read(la, UInt64.self)))
            default: v = Float80(Int16(bitPattern: try read(la, UInt16.self)))
            }
            let a = stRead(0)
            if reg == 2 || reg == 3 {
                fpuCompare(a, v, unordered: false)
                if reg == 3 { fpuPop() }
            } else {
                setST(0, fpuArith(reg, a, v))
            }
        case (1, 0): fpuPush(Float80(Float(bitPattern: try read(la, UInt32.self))))
        case (1, 2), (1, 3):
            let v = stRead(0)
            try write(la, withX87Rounding { Float(v) }.bitPattern)
            if reg == 3 { fpuPop() }
        case (1, 4), (5, 4): try fpuLoadEnvironment(la, d, withRegisters: opcode == 5)
        case (1, 5): fcw = try read(la, UInt16.self) | 0x40
        case (1, 6), (5, 6): try fpuStoreEnvironment(la, d, withRegisters: opcode == 5)
        case (1, 7): try write(la, fcw)
        case (3, 0): fpuPush(Float80(Int32(bitPattern: try read(la, UInt32.self))))
        case (3, 1), (3, 2), (3, 3):
            let i = toInteger(stRead(0), bits: 32, truncate: reg == 1)
            try write(la, UInt32(truncatingIfNeeded: i))
            if reg != 2 { fpuPop() }
        case (3, 5): fpuPush(try load80(la))
        case (3, 7):
            try store80(la, stRead(0))
            fpuPop()
        case (5, 0): fpuPush(Float80(Double(bitPattern: try read(la, UInt64.self))))
        case (5, 1):
            try write(la, UInt64(bitPattern: toInteger(stRead(0), bits: 64, truncate: true)))
            fpuPop()
        case (5, 2), (5, 3):
            let v = stRead(0)
            try write(la, withX87Rounding { Double(v) }.bitPattern)
            if reg == 3 { fpuPop() }
        case (5, 7): try write(la, fsw)
        case (7, 0): fpuPush(Float80(Int16(bitPattern: try read(la, UInt16.self))))
        case (7, 1), (7, 2), (7, 3):
            let i = toInteger(stRead(0), bits: 16, truncate: reg == 1)
            try write(la, UInt16(truncatingIfNeeded: i))
            if reg != 2 { fpuPop() }
        case (7, 5): fpuPush(Float80(Int64(bitPattern: try read(la, UInt64.self))))
        case (7, 7):
            try write(la, UInt64(bitPattern: toInteger(stRead(0), bits: 64, truncate: false)))
            fpuPop()
        default:
            // FBLD/FBSTP (packed BCD): not modelled.
            unimplementedCount &+= 1
            lastUnimplemented = UInt32(0xD8 + opcode) << 8 | UInt32(reg << 3)
            throw Fault.ud
        }
    }

    func x87Register(_ opcode: Int, _ modrm: UInt8) throws(Fault) {
        let i = Int(modrm & 7)
        let reg = Int(modrm >> 3) & 7
        switch opcode {
        case 0:  // D8: ST0 = ST0 op STi
            let a = stRead(0), b = stRead(i)
            if reg == 2 || reg == 3 {
                fpuCompare(a, b, unordered: false)
                if reg == 3 { fpuPop() }
            } else { setST(0, fpuArith(reg, a, b)) }
        case 1:
            // F2XM1 FYL2X FPTAN FPATAN FYL2XP1 FSINCOS FSIN FCOS: results differ between CPU models.
            if modrm >= 0xF0 && (0xCA0F >> (modrm & 15)) & 1 != 0 { noteModelSpecificResult() }
            switch modrm {
            case 0xC0...0xC7: fpuPush(stRead(i))
            case 0xC8...0xCF:
                let a = stRead(0), b = stRead(i)
                setST(0, b); setST(i, a)
            case 0xD0: break  // FNOP
            case 0xE0: setST(0, -stRead(0))
            case 0xE1: setST(0, abs(stRead(0)))
            case 0xE4: fpuCompare(stRead(0), 0, unordered: false)
            case 0xE5: fxam()
            case 0xE8: fpuPush(1)
            // The constants as the FPU holds them (66-bit values rounded to nearest), not computed
            // in double precision (and Float80.pi is rounded down).
            case 0xE9: fpuPush(x87Constant(0x4000, 0xD49A_784B_CD1B_8AFE))   // log2(10)
            case 0xEA: fpuPush(x87Constant(0x3FFF, 0xB8AA_3B29_5C17_F0BC))   // log2(e)
            case 0xEB: fpuPush(x87Constant(0x4000, 0xC90F_DAA2_2168_C235))   // pi
            case 0xEC: fpuPush(x87Constant(0x3FFD, 0x9A20_9A84_FBCF_F799))   // log10(2)
            case 0xED: fpuPush(x87Constant(0x3FFE, 0xB172_17F7_D1CF_79AC))   // ln(2)
            case 0xEE: fpuPush(0)
            // F2XM1, FYL2X, FPATAN, FYL2XP1: correctly rounded (X87Transcendental.swift); operands
            // outside their domain keep the plain evaluation.
            case 0xF0: setST(0, X87Transcendental.exp2m1(stRead(0)))
            case 0xF1:
                let x = stRead(0), y = stRead(1)
                let r = X87Transcendental.ylog2x(y, x) ?? y * Float80(log2(Double(x)))
                fpuPop(); setST(0, r)
            case 0xF2:
                setST(0, Float80(tan(Double(stRead(0)))))
                fsw &= ~X87Status.c2
                fpuPush(1)
            case 0xF3:
                let x = stRead(0), y = stRead(1)
                let r = X87Transcendental.atan2(y, x) ?? Float80(atan2(Double(y), Double(x)))
                fpuPop(); setST(0, r)
            case 0xF4:
                // FXTRACT: the significand keeps the sign; 0 gives exponent -inf (#Z), infinity +inf.
                // With no room for the push (stack overflow) both results are the indefinite NaN.
                let v = stRead(0)
                if ftw & (1 << UInt8((fpuTop - 1) & 7)) != 0 {
                    setST(0, X86Interpreter.indefinite)
                    fpuPush(0)
                } else if v.isNaN {
                    fpuPush(v)
                } else if v.isInfinite {
                    setST(0, .infinity)
                    fpuPush(v)
                } else if v == 0 {
                    fpuException(X87Status.ze)
                    setST(0, -.infinity)
                    fpuPush(v)
                } else {
                    setST(0, Float80(v.exponent))
                    fpuPush(Float80(sign: v.sign, exponent: 0, significand: v.significand))
                }
            case 0xF5, 0xF8:
                let a = stRead(0), b = stRead(1)
                if !a.isFinite || b == 0 || b.isNaN {
                    fpuException(X87Status.ie)
                    setST(0, X86Interpreter.indefinite)
                    fsw &= ~X87Status.cc
                    break
                }
                if b.isInfinite { fsw &= ~X87Status.cc; break }   // remainder is ST0 itself
                var q = modrm == 0xF8 ? (a / b).rounded(.towardZero) : (a / b).rounded(.toNearestOrEven)
                var r = a - q * b
                if a != 0 && a.exponent - b.exponent < 64 {
                    // The exact remainder (a - q * b rounds once the quotient passes 2^11 or so); the
                    // quotient, below 2^64, comes back exactly from it.
                    r = modrm == 0xF8 ? a.truncatingRemainder(dividingBy: b) : a.remainder(dividingBy: b)
                    q = ((a - r) / b).rounded()
                }
                setST(0, r)
                // A NaN or infinite quotient (divisor 0, infinite or NaN operands) has no low bits.
                let qi = q.isFinite ? UInt64(abs(q).truncatingRemainder(dividingBy: 8)) : 0
                var s = fsw & ~X87Status.cc
                if qi & 1 != 0 { s |= X87Status.c1 }
                if qi & 2 != 0 { s |= X87Status.c3 }
                if qi & 4 != 0 { s |= X87Status.c0 }
                fsw = s
            case 0xF6: fpuTop = fpuTop - 1
            case 0xF7: fpuTop = fpuTop + 1
            case 0xF9:
                let x = stRead(0), y = stRead(1)
                let r = X87Transcendental.ylog2xp1(y, x) ?? y * Float80(log2(1 + Double(x)))
                fpuPop(); setST(0, r)
            case 0xFA:
                let v = stRead(0)
                setST(0, withX87Rounding { v.squareRoot() })
            case 0xFB:
                let v = Double(stRead(0))
                setST(0, Float80(sin(v)))
                fpuPush(Float80(cos(v)))
                fsw &= ~X87Status.c2
            case 0xFC: setST(0, roundX87(stRead(0)))
            case 0xFD:
                let s = stRead(1).rounded(.towardZero)
                let v = stRead(0)
                if s.isFinite && abs(s) < 65536 {
                    setST(0, Float80(sign: .plus, exponent: Int(s), significand: 1) * v)
                } else if s.isFinite {
                    // A huge finite scale: zeros and infinities stay, anything else overflows or
                    // underflows (exp2 of it is inf or 0, and 0 * inf would be an invalid NaN).
                    setST(0, v == 0 || !v.isFinite ? v : v * (s > 0 ? Float80.infinity : 0))
                } else {
                    setST(0, v * Float80(exp2(Double(s))))
                }
            case 0xFE: setST(0, Float80(sin(Double(stRead(0))))); fsw &= ~X87Status.c2
            case 0xFF: setST(0, Float80(cos(Double(stRead(0))))); fsw &= ~X87Status.c2
            default: throw Fault.ud
            }
        case 2, 3:
            if opcode == 2 && modrm == 0xE9 {  // FUCOMPP
                fpuCompare(stRead(0), stRead(1), unordered: true)
                fpuPop(); fpuPop()
            } else if opcode == 3 && modrm == 0xE2 {  // FNCLEX
                fsw &= ~(0x80FF)
            } else if opcode == 3 && modrm == 0xE3 {  // FNINIT
                fcw = 0x37F; fsw = 0; ftw = 0
                fx.storeBytes(of: UInt16(0), toByteOffset: FX.fop, as: UInt16.self)
                fx.storeBytes(of: UInt64(0), toByteOffset: FX.fip, as: UInt64.self)
                fx.storeBytes(of: UInt64(0), toByteOffset: FX.fdp, as: UInt64.self)
            } else if opcode == 3 && (reg == 5 || reg == 6) {  // FUCOMI / FCOMI
                fpuCompareEFLAGS(stRead(0), stRead(i), unordered: reg == 5)
            } else if reg < 4 {  // FCMOVcc
                let conds: [UInt8] = [2, 4, 6, 10]   // B, E, BE, P
                var take = condition(conds[reg])
                if opcode == 3 { take = !take }
                // An empty source (or ST0) is a stack underflow whether or not the move happens:
                // ST0 gets the indefinite NaN, as on hardware.
                let empty = stIsEmpty(i) || stIsEmpty(0)
                let v = stRead(i)
                if take || empty { setST(0, empty ? X86Interpreter.indefinite : v) }
            } else if opcode == 3 && modrm == 0xE4 {
                break  // FNSETPM (287): no-op
            } else {
                throw Fault.ud
            }
        case 4, 6:  // DC / DE: STi = STi op ST0 (DE pops)
            let a = stRead(i), b = stRead(0)
            if opcode == 6 && modrm == 0xD9 {  // FCOMPP
                fpuCompare(b, a, unordered: false)
                fpuPop(); fpuPop()
                return
            }
            if reg == 2 || reg == 3 {
                fpuCompare(b, a, unordered: false)
                if reg == 3 || opcode == 6 { fpuPop() }
                return
            }
            // In the DC/DE encodings SUB/SUBR and DIV/DIVR swap roles.
            let op = reg >= 4 ? reg ^ 1 : reg
            setST(i, fpuArith(op, a, b))
            if opcode == 6 { fpuPop() }
        case 5:
            switch reg {
            case 0: ftw &= ~(1 << UInt8(physical(i)))  // FFREE
            case 2: setST(i, stRead(0))
            case 3: setST(i, stRead(0)); fpuPop()
            case 4: fpuCompare(stRead(0), stRead(i), unordered: true)
            case 5: fpuCompare(stRead(0), stRead(i), unordered: true); fpuPop()
            default: throw Fault.ud
            }
        default:  // DF
            if modrm == 0xE0 {
                setRegSized(0, 1, UInt64(fsw))
            } else if reg == 5 || reg == 6 {  // FUCOMIP / FCOMIP
                fpuCompareEFLAGS(stRead(0), stRead(i), unordered: reg == 5)
                fpuPop()
            } else if reg == 0 {  // FFREEP
                ftw &= ~(1 << UInt8(physical(i)))
                fpuPop()
            } else {
                throw Fault.ud
            }
        }
    }

    /// A positive normal extended-precision value from its exponent and 64-bit significand.
    func x87Constant(_ exponent: UInt, _ significand: UInt64) -> Float80 {
        Float80(sign: .plus, exponentBitPattern: exponent, significandBitPattern: significand & ~(1 << 63))
    }

    /// FXAM: classifies ST0 into C3/C2/C0 (and the sign into C1).
    func fxam() {
        var s = fsw & ~X87Status.cc
        if stIsEmpty(0) {
            s |= X87Status.c3 | X87Status.c0
        } else {
            let v = st(0)
            if v.sign == .minus { s |= X87Status.c1 }
            if v.isNaN { s |= X87Status.c0 }
            else if v.isInfinite { s |= X87Status.c2 | X87Status.c0 }
            else if v == 0 { s |= X87Status.c3 }
            else if v.isSubnormal { s |= X87Status.c3 | X87Status.c2 }
            else { s |= X87Status.c2 }
        }
        fsw = s
    }

    /// Full tag word (2 bits per physical register) from the abridged form.
    func fullTagWord() -> UInt16 {
        var t: UInt16 = 0
        for p in 0..<8 {
            let tag: UInt16
            if ftw & (1 << UInt8(p)) == 0 { tag = 3 } else {
                let v = fx.load(fromByteOffset: FX.st0 + 16 * p, as: Float80.self)
                tag = v == 0 ? 1 : (v.isFinite && v.isNormal ? 0 : 2)
            }
            t |= tag << UInt16(2 * p)
        }
        return t
    }

    /// FNSTENV/FNSAVE (32-bit protected-mode layout; 16-bit forms use the same offsets halved).
    func fpuStoreEnvironment(_ la: UInt64, _ d: UnsafePointer<DecodedInsn>, withRegisters: Bool) throws(Fault) {
        let wide = d.pointee.osz != 1
        let unit: UInt64 = wide ? 4 : 2
        let fields: [UInt64] = [UInt64(fcw) | (wide ? 0xFFFF_0000 : 0), UInt64(fsw) | (wide ? 0xFFFF_0000 : 0),
                                UInt64(fullTagWord()) | (wide ? 0xFFFF_0000 : 0), 0, 0, 0, 0]
        for (k, v) in fields.enumerated() { try writeSized(la &+ UInt64(k) * unit, wide ? 2 : 1, v) }
        if withRegisters {
            for k in 0..<8 { try store80(la &+ 7 * unit &+ UInt64(k * 10), st(k)) }
            fcw = 0x37F; fsw = 0; ftw = 0
        }
        fcw |= 0x3F   // FNSTENV masks all exceptions
    }

    func fpuLoadEnvironment(_ la: UInt64, _ d: UnsafePointer<DecodedInsn>, withRegisters: Bool) throws(Fault) {
        let wide = d.pointee.osz != 1
        let unit: UInt64 = wide ? 4 : 2
        let cw = UInt16(truncatingIfNeeded: try readSized(la, wide ? 2 : 1))
        let sw = UInt16(truncatingIfNeeded: try readSized(la &+ unit, wide ? 2 : 1))
        let tw = UInt16(truncatingIfNeeded: try readSized(la &+ 2 * unit, wide ? 2 : 1))
        var regs: [Float80] = []
        if withRegisters { for k in 0..<8 { regs.append(try load80(la &+ 7 * unit &+ UInt64(k * 10))) } }
        fcw = cw; fsw = sw
        var abridged: UInt8 = 0
        for p in 0..<8 where (tw >> UInt16(2 * p)) & 3 != 3 { abridged |= 1 << UInt8(p) }
        if withRegisters {
            ftw = 0xFF
            for k in 0..<8 { setST(k, regs[k]) }
        }
        ftw = abridged
    }
}
