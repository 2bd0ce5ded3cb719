#if canImport(Glibc)
import Glibc
#endif

// SSE/SSE2 instructions (0F map with none/66/F3/F2 prefixes), operating on the XMM registers in the
// FXSAVE image. 128-bit values are SIMD2<UInt64> reinterpreted lane-wise. Floating point uses the
// host's IEEE arithmetic; MXCSR exception flags are gathered from the host's FP environment.
// MMX forms (no prefix on the integer opcodes) are in MMX.swift; they share the packed-integer
// bodies here, which take the operand width (8 bytes for MMX, 16 for XMM).

typealias V128 = SIMD2<UInt64>

// glibc's x86-64 <fenv.h> values (the macros are not all importable).
private let feInvalid: Int32 = 0x01, feDivByZero: Int32 = 0x04, feOverflow: Int32 = 0x08
private let feUnderflow: Int32 = 0x10, feInexact: Int32 = 0x20, feAllExcept: Int32 = 0x3F
private let roundingModes: [Int32] = [0, 0x400, 0x800, 0xC00]   // nearest, down, up, toward zero

@inline(__always) func bytesFrom(_ f: (Int) -> UInt8) -> V128 {
    var r = SIMD16<UInt8>()
    for i in 0..<16 { r[i] = f(i) }
    return unsafeBitCast(r, to: V128.self)
}
@inline(__always) func wordsFrom(_ f: (Int) -> UInt16) -> V128 {
    var r = SIMD8<UInt16>()
    for i in 0..<8 { r[i] = f(i) }
    return unsafeBitCast(r, to: V128.self)
}
@inline(__always) func dwordsFrom(_ f: (Int) -> UInt32) -> V128 {
    var r = SIMD4<UInt32>()
    for i in 0..<4 { r[i] = f(i) }
    return unsafeBitCast(r, to: V128.self)
}

@inline(__always) func asBytes(_ v: V128) -> SIMD16<UInt8> { unsafeBitCast(v, to: SIMD16<UInt8>.self) }
@inline(__always) func asWords(_ v: V128) -> SIMD8<UInt16> { unsafeBitCast(v, to: SIMD8<UInt16>.self) }
@inline(__always) func asDwords(_ v: V128) -> SIMD4<UInt32> { unsafeBitCast(v, to: SIMD4<UInt32>.self) }
@inline(__always) func asFloats(_ v: V128) -> SIMD4<Float> { unsafeBitCast(v, to: SIMD4<Float>.self) }
@inline(__always) func asDoubles(_ v: V128) -> SIMD2<Double> { unsafeBitCast(v, to: SIMD2<Double>.self) }
@inline(__always) func v128<T: SIMD>(_ x: T) -> V128 { unsafeBitCast(x, to: V128.self) }

/// Which prefix selects the SSE form.
enum SSEPrefix { case none, p66, f3, f2 }

extension X86Interpreter {
    @inline(__always) func xmm128(_ i: Int) -> V128 {
        let off = FX.xmm0 + i * 16
        return V128(fx.load(fromByteOffset: off, as: UInt64.self), fx.load(fromByteOffset: off + 8, as: UInt64.self))
    }
    @inline(__always) func setXMM128(_ i: Int, _ v: V128) {
        let off = FX.xmm0 + i * 16
        fx.storeBytes(of: v[0], toByteOffset: off, as: UInt64.self)
        fx.storeBytes(of: v[1], toByteOffset: off + 8, as: UInt64.self)
    }

    func read128(_ la: UInt64, aligned: Bool) throws(Fault) -> V128 {
        if aligned && la & 15 != 0 { throw Fault.gp(0) }
        return V128(try read(la, UInt64.self), try read(la &+ 8, UInt64.self))
    }
    func write128(_ la: UInt64, _ v: V128, aligned: Bool) throws(Fault) {
        if aligned && la & 15 != 0 { throw Fault.gp(0) }
        // Check both halves before writing either.
        _ = try rmwPointer(la, 1)
        _ = try rmwPointer(la &+ 15, 1)
        try write(la, v[0])
        try write(la &+ 8, v[1])
    }

    /// The 128-bit source operand (XMM register or memory).
    @inline(__always)
    func sseSource(_ d: UnsafePointer<DecodedInsn>, aligned: Bool = true) throws(Fault) -> V128 {
        if d.pointee.mem { return try read128(linearAddress(d), aligned: aligned) }
        return xmm128(Int(d.pointee.rm) >> 3)
    }

    /// The scalar source of an SS/SD-form instruction: the low lane of an XMM register, or m32/m64.
    @inline(__always)
    func scalarSource32(_ d: UnsafePointer<DecodedInsn>) throws(Fault) -> UInt32 {
        if d.pointee.mem { return try read(linearAddress(d), UInt32.self) }
        return UInt32(truncatingIfNeeded: xmm128(Int(d.pointee.rm) >> 3)[0])
    }
    @inline(__always)
    func scalarSource64(_ d: UnsafePointer<DecodedInsn>) throws(Fault) -> UInt64 {
        if d.pointee.mem { return try read(linearAddress(d), UInt64.self) }
        return xmm128(Int(d.pointee.rm) >> 3)[0]
    }

    /// MXCSR exception flags from the host FP environment after an operation.
    func collectFPExceptions() {
        let e = fetestexcept(feAllExcept)
        if e == 0 { return }
        var f: UInt32 = 0
        if e & feInvalid != 0 { f |= 1 }
        if e & feDivByZero != 0 { f |= 4 }
        if e & feOverflow != 0 { f |= 8 }
        if e & feUnderflow != 0 { f |= 16 }
        if e & feInexact != 0 { f |= 32 }
        mxcsr |= f
        feclearexcept(feAllExcept)
    }

    /// Runs a floating-point computation under MXCSR's rounding mode.
    @inline(__always)
    func withMXCSRRounding<R>(_ body: () -> R) -> R {
        let rc = (mxcsr >> 13) & 3
        feclearexcept(feAllExcept)
        if rc != 0 {
            fesetround(roundingModes[Int(rc)])
        }
        let r = body()
        if rc != 0 { fesetround(roundingModes[0]) }
        collectFPExceptions()
        return r
    }

    func executeSSE(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let opcode = UInt8(truncatingIfNeeded: d.pointee.imm >> 8)
        let pfx = d.pointee.pfx
        let prefix: SSEPrefix = pfx & Pfx.rep != 0 ? .f3 : (pfx & Pfx.repne != 0 ? .f2 : (pfx & Pfx.opsize != 0 ? .p66 : .none))
        // Without a prefix, 0F 60-7F and C4-FF (but SHUFPS) are MMX (or undefined).
        if prefix == .none && (opcode == 0x77 || (0x60...0x7F).contains(opcode) || (opcode >= 0xC4 && opcode != 0xC6)) {
            return try executeMMX(d, opcode)
        }
        if opcode == 0x77 { throw Fault.ud }   // EMMS has no prefixed forms
        // F3/F2 with an MMX opcode: undefined, except MOVDQU, PSHUFHW/LW and MOVQ xmm.
        if prefix == .f3 || prefix == .f2, X86Interpreter.hasMMXForm(opcode),
           !(opcode == 0x70 || (prefix == .f3 && (opcode == 0x6F || opcode == 0x7F || opcode == 0x7E))) {
            throw Fault.ud
        }
        try checkSSEAvailable()
        if ((opcode == 0x2A || opcode == 0x2C || opcode == 0x2D) && (prefix == .none || prefix == .p66))
            || (opcode == 0xD6 && (prefix == .f3 || prefix == .f2)) {
            return try executeSSEWithMMX(d, opcode, prefix)
        }
        let dst = Int(d.pointee.reg) >> 3
        switch opcode {
        case 0x10, 0x11:  // MOVUPS/MOVUPD/MOVSS/MOVSD
            let load = opcode == 0x10
            switch prefix {
            case .none, .p66:
                if load { setXMM128(dst, try sseSource(d, aligned: false)) }
                else { try storeXMM(d, xmm128(dst), aligned: false) }
            case .f3, .f2:
                let wide = prefix == .f2
                if load {
                    if d.pointee.mem {
                        let la = linearAddress(d)
                        setXMM128(dst, V128(wide ? try read(la, UInt64.self) : UInt64(try read(la, UInt32.self)), 0))
                    } else {
                        var v = xmm128(dst)
                        let s = xmm128(Int(d.pointee.rm) >> 3)
                        v[0] = wide ? s[0] : (v[0] & ~0xFFFF_FFFF) | (s[0] & 0xFFFF_FFFF)
                        setXMM128(dst, v)
                    }
                } else {
                    let s = xmm128(dst)
                    if d.pointee.mem {
                        let la = linearAddress(d)
                        if wide { try write(la, s[0]) } else { try write(la, UInt32(truncatingIfNeeded: s[0])) }
                    } else {
                        let r = Int(d.pointee.rm) >> 3
                        var v = xmm128(r)
                        v[0] = wide ? s[0] : (v[0] & ~0xFFFF_FFFF) | (s[0] & 0xFFFF_FFFF)
                        setXMM128(r, v)
                    }
                }
            }
        case 0x12, 0x13, 0x16, 0x17:  // MOVLPS/MOVLPD/MOVHLPS, MOVHPS/MOVHPD/MOVLHPS
            if prefix == .f3 || prefix == .f2 { return try unimplementedSSE(opcode) }   // SSE3
            let high = opcode >= 0x16
            if opcode & 1 == 0 {
                var v = xmm128(dst)
                if d.pointee.mem {
                    let q = try read(linearAddress(d), UInt64.self)
                    if high { v[1] = q } else { v[0] = q }
                } else {
                    if prefix == .p66 { throw Fault.ud }
                    let s = xmm128(Int(d.pointee.rm) >> 3)
                    if high { v[1] = s[0] } else { v[0] = s[1] }   // MOVLHPS / MOVHLPS
                }
                setXMM128(dst, v)
            } else {
                guard d.pointee.mem else { throw Fault.ud }
                let v = xmm128(dst)
                try write(linearAddress(d), high ? v[1] : v[0])
            }
        case 0x14, 0x15:  // UNPCKLPS/PD, UNPCKHPS/PD
            let a = xmm128(dst), b = try sseSource(d)
            let high = opcode == 0x15
            if prefix == .p66 {
                setXMM128(dst, high ? V128(a[1], b[1]) : V128(a[0], b[0]))
            } else {
                let x = asDwords(a), y = asDwords(b)
                let r = high ? SIMD4<UInt32>(x[2], y[2], x[3], y[3]) : SIMD4<UInt32>(x[0], y[0], x[1], y[1])
                setXMM128(dst, v128(r))
            }
        case 0x28:  // MOVAPS/MOVAPD
            setXMM128(dst, try sseSource(d))
        case 0x29, 0x2B:  // MOVAPS store, MOVNTPS/PD
            if opcode == 0x2B && !d.pointee.mem { throw Fault.ud }
            try storeXMM(d, xmm128(dst), aligned: true)
        case 0x2A:  // CVTSI2SS/SD (CVTPI2PS/PD: executeSSEWithMMX)
            let wide = d.pointee.pfx & Pfx.rexW != 0
            let src = try readESized(d, wide ? 3 : 2)
            let i = wide ? Int64(bitPattern: src) : Int64(Int32(truncatingIfNeeded: src))
            var v = xmm128(dst)
            if prefix == .f2 {
                v[0] = withMXCSRRounding { roundToDouble(Float80(i)) }.bitPattern
            } else {
                v[0] = (v[0] & ~0xFFFF_FFFF) | UInt64(withMXCSRRounding { roundToFloat(Float80(i)) }.bitPattern)
            }
            setXMM128(dst, v)
        case 0x2C, 0x2D:  // CVTT/CVT SS/SD -> integer (the PS/PD -> MMX forms: executeSSEWithMMX)
            let wide = d.pointee.pfx & Pfx.rexW != 0
            let value: Double
            if prefix == .f2 {
                value = daz(Double(bitPattern: try scalarSource64(d)))
            } else {
                value = Double(daz(Float(bitPattern: try scalarSource32(d))))
            }
            let r = convertToInteger(value, wide: wide, truncate: opcode == 0x2C)
            setRegSized(d.pointee.reg, wide ? 3 : 2, r)
        case 0x2E, 0x2F:  // UCOMISS/UCOMISD/COMISS/COMISD
            let a: Double, b: Double
            let signaling = opcode == 0x2F
            if prefix == .p66 {
                a = daz(Double(bitPattern: xmm128(dst)[0]))
                b = daz(Double(bitPattern: try scalarSource64(d)))
                noteLaneFlags(a, b, quietInvalid: signaling)
            } else {
                // Checked as floats: widening quiets a signaling NaN and normalizes a denormal.
                let fa = daz(Float(bitPattern: UInt32(truncatingIfNeeded: xmm128(dst)[0])))
                let fb = daz(Float(bitPattern: try scalarSource32(d)))
                noteLaneFlags(fa, fb, quietInvalid: signaling)
                a = Double(fa)
                b = Double(fb)
            }
            var f: UInt64 = 0
            if a.isNaN || b.isNaN {
                f = Flag.zf | Flag.pf | Flag.cf
            } else if a < b { f = Flag.cf } else if a == b { f = Flag.zf }
            setArithFlags(f)
        case 0x50:  // MOVMSKPS/PD
            guard !d.pointee.mem else { throw Fault.ud }
            let s = xmm128(Int(d.pointee.rm) >> 3)
            var m: UInt64 = 0
            if prefix == .p66 { m = (s[0] >> 63) | (s[1] >> 63) << 1 }
            else { let w = asDwords(s); for i in 0..<4 { m |= UInt64(w[i] >> 31) << UInt64(i) } }
            setReg64(d.pointee.reg, m)
        case 0x51, 0x58, 0x59, 0x5C, 0x5D, 0x5E, 0x5F:
            try floatArithmetic(d, opcode, prefix, dst)
        case 0x52, 0x53:  // RSQRTPS/SS, RCPPS/SS (SSEEstimates.swift)
            try reciprocalEstimate(d, opcode, prefix, dst)
        case 0x54, 0x55, 0x56, 0x57:  // ANDPS/ANDNPS/ORPS/XORPS (and PD)
            let a = xmm128(dst), b = try sseSource(d)
            let r: V128
            switch opcode {
            case 0x54: r = a & b
            case 0x55: r = ~a & b
            case 0x56: r = a | b
            default: r = a ^ b
            }
            setXMM128(dst, r)
        case 0x5A:  // CVTPS2PD / CVTPD2PS / CVTSS2SD / CVTSD2SS
            var v = xmm128(dst)
            switch prefix {
            case .none:
                let s = d.pointee.mem ? V128(try read(linearAddress(d), UInt64.self), 0) : xmm128(Int(d.pointee.rm) >> 3)
                let f = daz(asFloats(s))
                v = withMXCSRRounding { V128(Double(f[0]).bitPattern, Double(f[1]).bitPattern) }
                for i in 0..<2 { noteLaneFlags(f[i], f[i], unary: true) }
            case .p66:
                let s = daz(asDoubles(try sseSource(d)))
                let r = withMXCSRRounding { SIMD2<Float>(roundToFloat(Float80(s[0])), roundToFloat(Float80(s[1]))) }
                v = V128(UInt64(ftz(r[0]).bitPattern) | UInt64(ftz(r[1]).bitPattern) << 32, 0)
                for i in 0..<2 { noteLaneFlags(s[i], s[i], unary: true) }
            case .f3:
                let x = daz(Float(bitPattern: try scalarSource32(d)))
                v[0] = withMXCSRRounding { Double(x).bitPattern }
                noteLaneFlags(x, x, unary: true)
            case .f2:
                let x = daz(Double(bitPattern: try scalarSource64(d)))
                v[0] = (v[0] & ~0xFFFF_FFFF) | UInt64(ftz(withMXCSRRounding { roundToFloat(Float80(x)) }).bitPattern)
                noteLaneFlags(x, x, unary: true)
            }
            setXMM128(dst, v)
        case 0x5B:  // CVTDQ2PS / CVTPS2DQ / CVTTPS2DQ
            let s = try sseSource(d)
            var r = SIMD4<UInt32>()
            if prefix == .none {
                let w = asDwords(s)
                withMXCSRRounding { for i in 0..<4 { r[i] = roundToFloat(Float80(Int32(bitPattern: w[i]))).bitPattern } }
            } else if prefix == .p66 || prefix == .f3 {
                let f = daz(asFloats(s))
                for i in 0..<4 { r[i] = UInt32(truncatingIfNeeded: convertToInteger(Double(f[i]), wide: false, truncate: prefix == .f3)) }
            } else { return try unimplementedSSE(opcode) }
            setXMM128(dst, v128(r))
        case 0xE6:  // CVTTPD2DQ / CVTDQ2PD / CVTPD2DQ
            let s = try sseSource(d, aligned: prefix != .f3 || !d.pointee.mem)
            switch prefix {
            case .f3:
                let w = asDwords(d.pointee.mem ? V128(try read(linearAddress(d), UInt64.self), 0) : s)
                setXMM128(dst, V128(Double(Int32(bitPattern: w[0])).bitPattern, Double(Int32(bitPattern: w[1])).bitPattern))
            case .p66, .f2:
                let f = daz(asDoubles(s))
                let lo = convertToInteger(f[0], wide: false, truncate: prefix == .p66) & 0xFFFF_FFFF
                let hi = convertToInteger(f[1], wide: false, truncate: prefix == .p66) & 0xFFFF_FFFF
                setXMM128(dst, V128(lo | hi << 32, 0))
            default: return try unimplementedSSE(opcode)
            }
        case 0x6E:  // MOVD/MOVQ xmm, r/m
            let wide = d.pointee.pfx & Pfx.rexW != 0
            setXMM128(dst, V128(try readESized(d, wide ? 3 : 2), 0))
        case 0x7E:
            if prefix == .f3 {  // MOVQ xmm, xmm/m64
                let q = try scalarSource64(d)
                setXMM128(dst, V128(q, 0))
            } else {  // MOVD/MOVQ r/m, xmm
                let wide = d.pointee.pfx & Pfx.rexW != 0
                try writeESized(d, wide ? 3 : 2, xmm128(dst)[0])
            }
        case 0x6F:  // MOVDQA / MOVDQU
            guard prefix == .p66 || prefix == .f3 else { return try unimplementedSSE(opcode) }
            setXMM128(dst, try sseSource(d, aligned: prefix == .p66))
        case 0x7F:
            guard prefix == .p66 || prefix == .f3 else { return try unimplementedSSE(opcode) }
            try storeXMM(d, xmm128(dst), aligned: prefix == .p66)
        case 0xD6:  // MOVQ xmm/m64, xmm
            guard prefix == .p66 else { return try unimplementedSSE(opcode) }
            let q = xmm128(dst)[0]
            if d.pointee.mem { try write(linearAddress(d), q) } else { setXMM128(Int(d.pointee.rm) >> 3, V128(q, 0)) }
        case 0xE7:  // MOVNTDQ
            guard prefix == .p66, d.pointee.mem else { throw Fault.ud }
            try storeXMM(d, xmm128(dst), aligned: true)
        case 0xC3:  // MOVNTI
            guard prefix == .none, d.pointee.mem else { throw Fault.ud }
            let s = d.pointee.pfx & Pfx.rexW != 0 ? 3 : 2
            try writeSized(linearAddress(d), s, getRegSized(d.pointee.reg, s))
        case 0x70:  // PSHUFD / PSHUFHW / PSHUFLW
            let s = try sseSource(d)
            let imm = Int(d.pointee.sub)
            switch prefix {
            case .p66:
                let w = asDwords(s)
                setXMM128(dst, v128(SIMD4<UInt32>(w[imm & 3], w[(imm >> 2) & 3], w[(imm >> 4) & 3], w[(imm >> 6) & 3])))
            case .f3, .f2:
                setXMM128(dst, shuffleWords(s, base: prefix == .f3 ? 4 : 0, imm: imm))
            default: return try unimplementedSSE(opcode)
            }
        case 0x71, 0x72, 0x73:  // shifts by immediate
            guard prefix == .p66, !d.pointee.mem else { return try unimplementedSSE(opcode) }
            let r = Int(d.pointee.rm) >> 3
            let kind = Int((d.pointee.imm >> 3) & 7)
            setXMM128(r, try shiftByImmediate(xmm128(r), opcode, kind, UInt64(d.pointee.sub)))
        case 0xC2:  // CMPPS/PD/SS/SD
            try floatCompare(d, prefix, dst)
        case 0xC4:  // PINSRW
            guard prefix == .p66 else { return try unimplementedSSE(opcode) }
            setXMM128(dst, insertWord(xmm128(dst), Int(d.pointee.sub & 7), UInt16(truncatingIfNeeded: try readESized(d, 1))))
        case 0xC5:  // PEXTRW
            guard prefix == .p66, !d.pointee.mem else { return try unimplementedSSE(opcode) }
            let w = asWords(xmm128(Int(d.pointee.rm) >> 3))
            setReg64(d.pointee.reg, UInt64(w[Int(d.pointee.sub & 7)]))
        case 0xC6:  // SHUFPS / SHUFPD
            let a = xmm128(dst), b = try sseSource(d)
            let imm = Int(d.pointee.sub)
            if prefix == .p66 {
                setXMM128(dst, V128(a[imm & 1], b[(imm >> 1) & 1]))
            } else {
                let x = asDwords(a), y = asDwords(b)
                setXMM128(dst, v128(SIMD4<UInt32>(x[imm & 3], x[(imm >> 2) & 3], y[(imm >> 4) & 3], y[(imm >> 6) & 3])))
            }
        case 0xD7:  // PMOVMSKB
            guard prefix == .p66, !d.pointee.mem else { return try unimplementedSSE(opcode) }
            setReg64(d.pointee.reg, byteSignMask(xmm128(Int(d.pointee.rm) >> 3), width: 16))
        case 0xF7:  // MASKMOVDQU
            guard prefix == .p66, !d.pointee.mem else { throw Fault.ud }
            try maskedStore(d, data: xmm128(dst), mask: xmm128(Int(d.pointee.rm) >> 3), width: 16)
        default:
            guard prefix == .p66 else { return try unimplementedSSE(opcode) }
            guard let r = integerOp(opcode, xmm128(dst), try sseSource(d), width: 16) else { return try unimplementedSSE(opcode) }
            setXMM128(dst, r)
        }
    }

    func unimplementedSSE(_ opcode: UInt8) throws(Fault) {
        unimplementedCount &+= 1
        lastUnimplemented = 0x0F00 | UInt32(opcode)
        throw Fault.ud
    }

    func storeXMM(_ d: UnsafePointer<DecodedInsn>, _ v: V128, aligned: Bool) throws(Fault) {
        if d.pointee.mem { try write128(linearAddress(d), v, aligned: aligned) }
        else { setXMM128(Int(d.pointee.rm) >> 3, v) }
    }

    /// CVT(T)SS2SI and friends: out-of-range and NaN give the "integer indefinite" value.
    func convertToInteger(_ x: Double, wide: Bool, truncate: Bool) -> UInt64 {
        let indefinite: UInt64 = wide ? 0x8000_0000_0000_0000 : 0x8000_0000
        if x.isNaN { mxcsr |= 1; return indefinite }
        let r: Double
        if truncate { r = x.rounded(.towardZero) } else {
            switch (mxcsr >> 13) & 3 {
            case 0: r = x.rounded(.toNearestOrEven)
            case 1: r = x.rounded(.down)
            case 2: r = x.rounded(.up)
            default: r = x.rounded(.towardZero)
            }
        }
        let limit = wide ? 9_223_372_036_854_775_808.0 : 2_147_483_648.0
        if r >= limit || r < -limit { mxcsr |= 1; return indefinite }
        if r != x { mxcsr |= 32 }
        return wide ? UInt64(bitPattern: Int64(r)) : UInt64(UInt32(bitPattern: Int32(r)))
    }

    /// `x` (exact in Float80) rounded to Float or Double as MXCSR.RC says. The host's conversion may
    /// run under round-to-nearest whatever fesetround said (the compiler assumes the default FP
    /// environment and may move it), so a result on the wrong side of `x` is stepped by one ulp.
    @inline(__always)
    func roundByMXCSR<F: BinaryFloatingPoint>(_ x: Float80, to _: F.Type) -> F {
        var f = F(x)
        if x.isNaN { return f }
        switch (mxcsr >> 13) & 3 {
        case 1: if Float80(f) > x { f = f.nextDown }
        case 2: if Float80(f) < x { f = f.nextUp }
        case 3: if abs(Float80(f)) > abs(x) { f = f > 0 ? f.nextDown : f.nextUp }
        default: break
        }
        return f
    }
    func roundToFloat(_ x: Float80) -> Float { roundByMXCSR(x, to: Float.self) }
    func roundToDouble(_ x: Float80) -> Double { roundByMXCSR(x, to: Double.self) }

    /// DAZ: a denormal source operand reads as a zero of its sign.
    @inline(__always)
    func daz<F: BinaryFloatingPoint>(_ v: F) -> F {
        mxcsr & 0x40 != 0 && v.isSubnormal ? (v.sign == .minus ? -0.0 : 0.0) : v
    }
    @inline(__always) func daz(_ v: SIMD4<Float>) -> SIMD4<Float> { SIMD4(daz(v[0]), daz(v[1]), daz(v[2]), daz(v[3])) }
    @inline(__always) func daz(_ v: SIMD2<Double>) -> SIMD2<Double> { SIMD2(daz(v[0]), daz(v[1])) }

    /// FTZ (with underflow masked): a denormal result becomes a zero of its sign, raising UE and PE.
    @inline(__always)
    func ftz<F: BinaryFloatingPoint>(_ v: F) -> F {
        guard mxcsr & 0x8800 == 0x8800, v.isSubnormal else { return v }
        mxcsr |= 0x30
        return v.sign == .minus ? -0.0 : 0.0
    }

    /// MXCSR flags the host's fenv does not report, for one lane. DE: a denormal source operand,
    /// unless a NaN operand, an invalid operation (a NaN result) or a division by zero takes
    /// precedence, or DAZ. IE: a signaling NaN operand, or any NaN where the instruction signals
    /// on quiet NaNs too (MIN/MAX, COMIS, the ordered CMP predicates).
    @inline(__always)
    func noteLaneFlags<F: BinaryFloatingPoint>(_ x: F, _ y: F, result: F? = nil, unary: Bool = false,
                                                divide: Bool = false, quietInvalid: Bool = false) {
        let xNaN = !unary && x.isNaN
        if (!unary && x.isSignalingNaN) || y.isSignalingNaN || (quietInvalid && (xNaN || y.isNaN)) { mxcsr |= 1 }
        guard mxcsr & 0x40 == 0, (!unary && x.isSubnormal) || y.isSubnormal else { return }
        if xNaN || y.isNaN || result?.isNaN == true || (divide && y == 0) { return }
        mxcsr |= 2
    }

    func floatArithmetic(_ d: UnsafePointer<DecodedInsn>, _ opcode: UInt8, _ prefix: SSEPrefix, _ dst: Int) throws(Fault) {
        var a = xmm128(dst)
        func opF(_ x: Float, _ y: Float) -> Float {
            switch opcode {
            case 0x51: return y.squareRoot()
            case 0x58: return x + y
            case 0x59: return x * y
            case 0x5C: return x - y
            case 0x5D: return x < y ? x : y   // MIN: returns the second operand on equal/NaN
            case 0x5E: return x / y
            default: return x > y ? x : y
            }
        }
        func opD(_ x: Double, _ y: Double) -> Double {
            switch opcode {
            case 0x51: return y.squareRoot()
            case 0x58: return x + y
            case 0x59: return x * y
            case 0x5C: return x - y
            case 0x5D: return x < y ? x : y
            case 0x5E: return x / y
            default: return x > y ? x : y
            }
        }
        let unary = opcode == 0x51, divide = opcode == 0x5E, minMax = opcode == 0x5D || opcode == 0x5F
        // Operands are DAZ-flushed; MIN/MAX return one of them and cannot underflow (no FTZ),
        // arithmetic results are FTZ-flushed.
        @inline(__always) func lane<F: BinaryFloatingPoint>(_ x: F, _ y: F, _ op: (F, F) -> F) -> F {
            let fx = daz(x), fy = daz(y)
            if minMax {
                let pickX = opcode == 0x5D ? fx < fy : fx > fy
                noteLaneFlags(fx, fy, quietInvalid: true)
                return pickX ? fx : fy
            }
            let r = withMXCSRRounding { op(fx, fy) }
            noteLaneFlags(fx, fy, result: r, unary: unary, divide: divide)
            return ftz(r)
        }
        switch prefix {
        case .none:
            let b = asFloats(try sseSource(d)), x = asFloats(a)
            a = v128(SIMD4<Float>(lane(x[0], b[0], opF), lane(x[1], b[1], opF), lane(x[2], b[2], opF), lane(x[3], b[3], opF)))
        case .p66:
            let b = asDoubles(try sseSource(d)), x = asDoubles(a)
            a = v128(SIMD2<Double>(lane(x[0], b[0], opD), lane(x[1], b[1], opD)))
        case .f3:
            let y = Float(bitPattern: try scalarSource32(d))
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: a[0]))
            a[0] = (a[0] & ~0xFFFF_FFFF) | UInt64(lane(x, y, opF).bitPattern)
        case .f2:
            let y = Double(bitPattern: try scalarSource64(d))
            a[0] = lane(Double(bitPattern: a[0]), y, opD).bitPattern
        }
        setXMM128(dst, a)
    }

    func floatCompare(_ d: UnsafePointer<DecodedInsn>, _ prefix: SSEPrefix, _ dst: Int) throws(Fault) {
        let pred = d.pointee.sub & 7
        func cmp(_ x: Double, _ y: Double) -> Bool {
            switch pred {
            case 0: return x == y
            case 1: return x < y
            case 2: return x <= y
            case 3: return x.isNaN || y.isNaN
            case 4: return !(x == y)
            case 5: return !(x < y)
            case 6: return !(x <= y)
            default: return !(x.isNaN || y.isNaN)
            }
        }
        // LT, LE, NLT and NLE signal on quiet NaNs too.
        let ordered = pred == 1 || pred == 2 || pred == 5 || pred == 6
        var a = xmm128(dst)
        switch prefix {
        case .none:
            let x = daz(asFloats(a)), y = daz(asFloats(try sseSource(d)))
            var r = SIMD4<UInt32>()
            for i in 0..<4 {
                r[i] = cmp(Double(x[i]), Double(y[i])) ? ~0 : 0
                noteLaneFlags(x[i], y[i], quietInvalid: ordered)
            }
            a = v128(r)
        case .p66:
            let x = daz(asDoubles(a)), y = daz(asDoubles(try sseSource(d)))
            a = V128(cmp(x[0], y[0]) ? ~0 : 0, cmp(x[1], y[1]) ? ~0 : 0)
            for i in 0..<2 { noteLaneFlags(x[i], y[i], quietInvalid: ordered) }
        case .f3:
            let y = daz(Float(bitPattern: try scalarSource32(d)))
            let x = daz(Float(bitPattern: UInt32(truncatingIfNeeded: a[0])))
            a[0] = (a[0] & ~0xFFFF_FFFF) | (cmp(Double(x), Double(y)) ? 0xFFFF_FFFF : 0)
            noteLaneFlags(x, y, quietInvalid: ordered)
        case .f2:
            let y = daz(Double(bitPattern: try scalarSource64(d)))
            let x = daz(Double(bitPattern: a[0]))
            a[0] = cmp(x, y) ? ~0 : 0
            noteLaneFlags(x, y, quietInvalid: ordered)
        }
        setXMM128(dst, a)
    }

    func shiftByImmediate(_ v: V128, _ opcode: UInt8, _ kind: Int, _ count: UInt64) throws(Fault) -> V128 {
        switch (opcode, kind) {
        case (0x71, 2): return shiftWords(v, count, .logicalRight)
        case (0x71, 4): return shiftWords(v, count, .arithmeticRight)
        case (0x71, 6): return shiftWords(v, count, .left)
        case (0x72, 2): return shiftDwords(v, count, .logicalRight)
        case (0x72, 4): return shiftDwords(v, count, .arithmeticRight)
        case (0x72, 6): return shiftDwords(v, count, .left)
        case (0x73, 2): return shiftQwords(v, count, left: false)
        case (0x73, 6): return shiftQwords(v, count, left: true)
        case (0x73, 3), (0x73, 7):  // PSRLDQ / PSLLDQ: whole-register byte shifts
            let n = Int(min(count, 16))
            let b = asBytes(v)
            var r = SIMD16<UInt8>()
            for i in 0..<16 {
                let j = kind == 3 ? i + n : i - n
                r[i] = j >= 0 && j < 16 ? b[j] : 0
            }
            return v128(r)
        default:
            throw Fault.ud
        }
    }

    enum ShiftKind { case left, logicalRight, arithmeticRight }

    /// PSLL/PSRL/PSRA on every lane of type `L.Scalar`: logical shifts by the lane width or more
    /// give 0, arithmetic ones fill with the sign bit.
    func shiftLanes<L: SIMD>(_ v: V128, as _: L.Type, by count: UInt64, _ k: ShiftKind) -> V128
        where L.Scalar: FixedWidthInteger & UnsignedInteger {
        var w = unsafeBitCast(v, to: L.self)
        let bits = UInt64(L.Scalar.bitWidth)
        for i in w.indices {
            let x = w[i]
            switch k {
            case .left: w[i] = count >= bits ? 0 : x << count
            case .logicalRight: w[i] = count >= bits ? 0 : x >> count
            case .arithmeticRight:
                let c = min(count, bits - 1)
                w[i] = x >> c | (x >> (bits - 1) == 0 ? 0 : ~(L.Scalar.max >> c))
            }
        }
        return unsafeBitCast(w, to: V128.self)
    }
    func shiftWords(_ v: V128, _ count: UInt64, _ k: ShiftKind) -> V128 { shiftLanes(v, as: SIMD8<UInt16>.self, by: count, k) }
    func shiftDwords(_ v: V128, _ count: UInt64, _ k: ShiftKind) -> V128 { shiftLanes(v, as: SIMD4<UInt32>.self, by: count, k) }
    func shiftQwords(_ v: V128, _ count: UInt64, left: Bool) -> V128 {
        shiftLanes(v, as: SIMD2<UInt64>.self, by: count, left ? .left : .logicalRight)
    }

    /// Packed integer operations of the 0F 60-6D, 74-76, D1-FE group on the low `width` bytes of
    /// the operands: 16 for XMM (66 prefix), 8 for MMX (no prefix; the operands' high halves are
    /// ignored and the result's high half is meaningless). Lane-wise operations do not depend on
    /// the width; the unpack-high and pack forms take their halves from it.
    func integerOp(_ opcode: UInt8, _ a: V128, _ b: V128, width: Int) -> V128? {
        let ab = asBytes(a), bb = asBytes(b)
        let aw = asWords(a), bw = asWords(b)
        let ad = asDwords(a), bd = asDwords(b)
        // Lanes per operand half (unpack high) and per operand (pack), in bytes, words, dwords.
        let nb = width, nw = width / 2, nd = width / 4
        switch opcode {
        case 0x60: return bytesFrom { i in i & 1 == 0 ? ab[i / 2] : bb[i / 2] }
        case 0x61: return wordsFrom { i in i & 1 == 0 ? aw[i / 2] : bw[i / 2] }
        case 0x62: return v128(SIMD4<UInt32>(ad[0], bd[0], ad[1], bd[1]))
        case 0x68: return bytesFrom { i in i & 1 == 0 ? ab[(nb / 2 + i / 2) & 15] : bb[(nb / 2 + i / 2) & 15] }
        case 0x69: return wordsFrom { i in i & 1 == 0 ? aw[(nw / 2 + i / 2) & 7] : bw[(nw / 2 + i / 2) & 7] }
        case 0x6A: return dwordsFrom { i in i & 1 == 0 ? ad[(nd / 2 + i / 2) & 3] : bd[(nd / 2 + i / 2) & 3] }
        case 0x6C: return V128(a[0], b[0])
        case 0x6D: return V128(a[1], b[1])
        case 0x63:  // PACKSSWB
            return bytesFrom { i in UInt8(bitPattern: Int8(clamping: Int16(bitPattern: i < nw ? aw[i] : bw[(i - nw) & 7]))) }
        case 0x67:  // PACKUSWB
            return bytesFrom { i in UInt8(clamping: Int16(bitPattern: i < nw ? aw[i] : bw[(i - nw) & 7])) }
        case 0x6B:  // PACKSSDW
            return wordsFrom { i in UInt16(bitPattern: Int16(clamping: Int32(bitPattern: i < nd ? ad[i] : bd[(i - nd) & 3]))) }
        case 0x64: return bytesFrom { i in Int8(bitPattern: ab[i]) > Int8(bitPattern: bb[i]) ? 0xFF : 0 }
        case 0x65: return wordsFrom { i in Int16(bitPattern: aw[i]) > Int16(bitPattern: bw[i]) ? 0xFFFF : 0 }
        case 0x66: return dwordsFrom { i in Int32(bitPattern: ad[i]) > Int32(bitPattern: bd[i]) ? ~0 : 0 }
        case 0x74: return bytesFrom { i in ab[i] == bb[i] ? 0xFF : 0 }
        case 0x75: return wordsFrom { i in aw[i] == bw[i] ? 0xFFFF : 0 }
        case 0x76: return dwordsFrom { i in ad[i] == bd[i] ? ~0 : 0 }
        case 0xD1: return shiftWords(a, b[0], .logicalRight)
        case 0xD2: return shiftDwords(a, b[0], .logicalRight)
        case 0xD3: return shiftQwords(a, b[0], left: false)
        case 0xE1: return shiftWords(a, b[0], .arithmeticRight)
        case 0xE2: return shiftDwords(a, b[0], .arithmeticRight)
        case 0xF1: return shiftWords(a, b[0], .left)
        case 0xF2: return shiftDwords(a, b[0], .left)
        case 0xF3: return shiftQwords(a, b[0], left: true)
        case 0xD4: return a &+ b
        case 0xFB: return a &- b
        case 0xFC: return v128(ab &+ bb)
        case 0xFD: return v128(aw &+ bw)
        case 0xFE: return v128(ad &+ bd)
        case 0xF8: return v128(ab &- bb)
        case 0xF9: return v128(aw &- bw)
        case 0xFA: return v128(ad &- bd)
        case 0xD5: return v128(aw &* bw)
        case 0xE5: return wordsFrom { i in UInt16(truncatingIfNeeded: (Int32(Int16(bitPattern: aw[i])) * Int32(Int16(bitPattern: bw[i]))) >> 16) }
        case 0xE4: return wordsFrom { i in UInt16(truncatingIfNeeded: (UInt32(aw[i]) * UInt32(bw[i])) >> 16) }
        case 0xF4: return V128((a[0] & 0xFFFF_FFFF) &* (b[0] & 0xFFFF_FFFF), (a[1] & 0xFFFF_FFFF) &* (b[1] & 0xFFFF_FFFF))
        case 0xF5:
            return dwordsFrom { i in 
                let p0 = Int32(Int16(bitPattern: aw[2 * i])) &* Int32(Int16(bitPattern: bw[2 * i]))
                let p1 = Int32(Int16(bitPattern: aw[2 * i + 1])) &* Int32(Int16(bitPattern: bw[2 * i + 1]))
                return UInt32(bitPattern: p0 &+ p1)
            }
        case 0xF6:
            var s0 = 0, s1 = 0
            for i in 0..<8 { s0 += abs(Int(ab[i]) - Int(bb[i])); s1 += abs(Int(ab[8 + i]) - Int(bb[8 + i])) }
            return V128(UInt64(s0), UInt64(s1))
        case 0xD8: return bytesFrom { i in ab[i] > bb[i] ? ab[i] - bb[i] : 0 }
        case 0xD9: return wordsFrom { i in aw[i] > bw[i] ? aw[i] - bw[i] : 0 }
        case 0xDC: return bytesFrom { i in UInt8(clamping: Int(ab[i]) + Int(bb[i])) }
        case 0xDD: return wordsFrom { i in UInt16(clamping: Int(aw[i]) + Int(bw[i])) }
        case 0xE8: return bytesFrom { i in UInt8(bitPattern: Int8(clamping: Int(Int8(bitPattern: ab[i])) - Int(Int8(bitPattern: bb[i])))) }
        case 0xE9: return wordsFrom { i in UInt16(bitPattern: Int16(clamping: Int(Int16(bitPattern: aw[i])) - Int(Int16(bitPattern: bw[i])))) }
        case 0xEC: return bytesFrom { i in UInt8(bitPattern: Int8(clamping: Int(Int8(bitPattern: ab[i])) + Int(Int8(bitPattern: bb[i])))) }
        case 0xED: return wordsFrom { i in UInt16(bitPattern: Int16(clamping: Int(Int16(bitPattern: aw[i])) + Int(Int16(bitPattern: bw[i])))) }
        case 0xDA: return v128(pointwiseMin(ab, bb))
        case 0xDE: return v128(pointwiseMax(ab, bb))
        case 0xEA: return wordsFrom { i in Int16(bitPattern: aw[i]) < Int16(bitPattern: bw[i]) ? aw[i] : bw[i] }
        case 0xEE: return wordsFrom { i in Int16(bitPattern: aw[i]) > Int16(bitPattern: bw[i]) ? aw[i] : bw[i] }
        case 0xE0: return bytesFrom { i in UInt8((Int(ab[i]) + Int(bb[i]) + 1) >> 1) }
        case 0xE3: return wordsFrom { i in UInt16((Int(aw[i]) + Int(bw[i]) + 1) >> 1) }
        case 0xDB: return a & b
        case 0xDF: return ~a & b
        case 0xEB: return a | b
        case 0xEF: return a ^ b
        default: return nil
        }
    }

    /// PSHUFLW/PSHUFHW (words base..<base+4) and PSHUFW (base 0 of an MMX value): each of the four
    /// words is chosen by a 2-bit field of `imm`; the other words are kept.
    func shuffleWords(_ v: V128, base: Int, imm: Int) -> V128 {
        let src = asWords(v)
        var w = src
        for i in 0..<4 { w[base + i] = src[base + ((imm >> (2 * i)) & 3)] }
        return v128(w)
    }

    /// PINSRW: word `index` of `v` replaced.
    func insertWord(_ v: V128, _ index: Int, _ value: UInt16) -> V128 {
        var w = asWords(v)
        w[index & 7] = value
        return v128(w)
    }

    /// PMOVMSKB: the sign bits of the low `width` bytes.
    func byteSignMask(_ v: V128, width: Int) -> UInt64 {
        let b = asBytes(v)
        var m: UInt64 = 0
        for i in 0..<width { m |= UInt64(b[i] >> 7) << UInt64(i) }
        return m
    }

    /// MASKMOVQ/MASKMOVDQU: the bytes of `data` whose `mask` byte has its sign bit set go to
    /// [rDI] (DS unless overridden). Both ends are checked first, so a fault stores nothing.
    func maskedStore(_ d: UnsafePointer<DecodedInsn>, data: V128, mask: V128, width: Int) throws(Fault) {
        let bytes = asBytes(data), m = asBytes(mask)
        let selected = (0..<width).filter { m[$0] & 0x80 != 0 }
        guard let first = selected.first, let last = selected.last else { return }
        let base = linear(Int(d.pointee.seg), gpr(Reg.rdi) & addressMask(d))
        _ = try rmwPointer(base &+ UInt64(first), 1)
        _ = try rmwPointer(base &+ UInt64(last), 1)
        for i in selected { try write(base &+ UInt64(i), bytes[i]) }
    }
}
