// RCPPS/RCPSS (0F 53) and RSQRTPS/RSQRTSS (0F 52): the SSE reciprocal estimates.
//
// Hardware returns an implementation-specific approximation (relative error ≤ 1.5·2⁻¹²; Intel and
// AMD differ). Here the estimate is the IEEE quotient 1/x (and 1/sqrt(x), the square root rounded
// first), as QEMU computes it: within the architectural error bound, and the same bits a guest gets
// under QEMU TCG. What the SDM fixes exactly is kept: no MXCSR exception flags, a denormal operand
// counts as a zero of its sign (→ ±∞), and a tiny result is flushed to a zero of its sign.
// gcc -ffast-math vectorises float division and sqrtf with these plus a Newton-Raphson step.

extension X86Interpreter {
    func reciprocalEstimate(_ d: UnsafePointer<DecodedInsn>, _ opcode: UInt8, _ prefix: SSEPrefix, _ dst: Int) throws(Fault) {
        noteModelSpecificResult()
        let squareRoot = opcode == 0x52
        func estimate(_ raw: Float) -> Float {
            let x = raw.isSubnormal ? (raw.sign == .minus ? -0.0 : 0.0) : raw
            if squareRoot && x < 0 { return Float(bitPattern: 0xFFC0_0000) }   // the default NaN
            if x.isNaN { return Float(bitPattern: x.bitPattern | 0x0040_0000) }   // quieted operand
            let r = squareRoot ? 1 / x.squareRoot() : 1 / x
            return r.isSubnormal ? (r.sign == .minus ? -0.0 : 0.0) : r
        }
        let flags = mxcsr
        defer { mxcsr = flags }   // the estimates raise no SIMD floating-point exceptions
        var a = xmm128(dst)
        switch prefix {
        case .none:
            let s = asFloats(try sseSource(d))
            a = v128(withMXCSRRounding { SIMD4<Float>(estimate(s[0]), estimate(s[1]), estimate(s[2]), estimate(s[3])) })
        case .f3:
            let s = Float(bitPattern: d.pointee.mem ? try read(linearAddress(d), UInt32.self)
                                                     : UInt32(truncatingIfNeeded: xmm128(Int(d.pointee.rm) >> 3)[0]))
            a[0] = (a[0] & ~0xFFFF_FFFF) | UInt64(withMXCSRRounding { estimate(s) }.bitPattern)
        default:
            throw Fault.ud   // no PD/SD forms
        }
        setXMM128(dst, a)
    }
}
