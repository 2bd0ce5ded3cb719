// Lazy arithmetic flags. ALU instructions record (operation, result, operand) instead of computing
// six flags; the flags are derived only when something reads them (Jcc, SETcc, PUSHF, ADC, ...).
// Most flag readers are a Jcc right after a CMP/SUB/TEST, which has a direct fast path below.

@inline(__always) func sizeMask(_ s: Int) -> UInt64 { s == 3 ? ~0 : (UInt64(1) << UInt64(8 << s)) &- 1 }
@inline(__always) func signBit(_ s: Int) -> UInt64 { UInt64(1) << UInt64((8 << s) - 1) }
/// Sign-extends the low (8 << s) bits of `v`.
@inline(__always) func signExtend(_ v: UInt64, _ s: Int) -> Int64 {
    let sh = UInt64(64 - (8 << s))
    return Int64(bitPattern: v << sh) >> sh
}

/// PF: set when the low byte has an even number of one bits.
@inline(__always) func parityFlag(_ v: UInt64) -> UInt64 {
    let x = (v ^ (v >> 4)) & 0xF
    return ((0x6996 >> x) & 1) ^ 1 == 1 ? Flag.pf : 0
}

extension X86Interpreter {
    /// Records an ALU result for lazy flag evaluation.
    @inline(__always)
    func setCC(_ kind: UInt32, _ size: Int, dst: UInt64, src: UInt64) {
        st.pointee.ccOp = kind << 2 | UInt32(size)
        st.pointee.ccDst = dst
        st.pointee.ccSrc = src
    }

    /// OSZAPC as RFLAGS bits.
    func arithFlags() -> UInt64 {
        let op = st.pointee.ccOp
        if op >> 2 == CC.rol || op >> 2 == CC.ror {
            // A rotate keeps SF ZF AF PF of the state it saved and sets CF and OF from its result.
            let base = X86Interpreter.flags(st.pointee.ccOpPrev, st.pointee.ccDstPrev, st.pointee.ccSrcPrev, st.pointee.ccSrc2Prev)
            let s = Int(op & 3)
            let r = st.pointee.ccDst & sizeMask(s)
            let msb = (r >> UInt64((8 << s) - 1)) & 1
            let cf: UInt64, of: UInt64
            if op >> 2 == CC.rol { cf = r & 1; of = msb ^ cf } else { cf = msb; of = msb ^ ((r >> UInt64(truncatingIfNeeded: (8 << s) - 2)) & 1) }
            return base & ~(Flag.cf | Flag.of) | cf | (of != 0 ? Flag.of : 0)
        }
        return X86Interpreter.flags(op, st.pointee.ccDst, st.pointee.ccSrc, st.pointee.ccSrc2)
    }

    /// OSZAPC of a lazy state other than a rotate's.
    static func flags(_ op: UInt32, _ dst: UInt64, _ src: UInt64, _ src2: UInt64) -> UInt64 {
        if op == CC.eflags { return src & Flag.arith }
        let s = Int(op & 3)
        let mask = sizeMask(s), sign = signBit(s)
        let r = dst & mask
        var f: UInt64 = (r == 0 ? Flag.zf : 0) | (r & sign != 0 ? Flag.sf : 0) | parityFlag(r)
        switch op >> 2 {
        case CC.add:
            let b = src & mask, a = (r &- b) & mask
            if r < b { f |= Flag.cf }
            if (a ^ r) & (b ^ r) & sign != 0 { f |= Flag.of }
            f |= (a ^ b ^ r) & Flag.af
        case CC.adc:
            let b = src & mask, cin = src2 & 1, a = (r &- b &- cin) & mask
            if cin != 0 ? r <= b : r < b { f |= Flag.cf }
            if (a ^ r) & (b ^ r) & sign != 0 { f |= Flag.of }
            f |= (a ^ b ^ r) & Flag.af
        case CC.sub:
            let b = src & mask, a = (r &+ b) & mask
            if a < b { f |= Flag.cf }
            if (a ^ b) & (a ^ r) & sign != 0 { f |= Flag.of }
            f |= (a ^ b ^ r) & Flag.af
        case CC.sbb:
            let b = src & mask, cin = src2 & 1, a = (r &+ b &+ cin) & mask
            if cin != 0 ? a <= b : a < b { f |= Flag.cf }
            if (a ^ b) & (a ^ r) & sign != 0 { f |= Flag.of }
            f |= (a ^ b ^ r) & Flag.af
        case CC.logic:
            break
        case CC.inc:
            f |= src2 & Flag.cf
            if r == sign { f |= Flag.of }
            if r & 0xF == 0 { f |= Flag.af }
        case CC.dec:
            f |= src2 & Flag.cf
            if r == sign &- 1 { f |= Flag.of }
            if r & 0xF == 0xF { f |= Flag.af }
        case CC.shl:
            let c = src2, w = UInt64(8 << s)
            let cf = (src >> (w &- c)) & 1
            f |= cf | ((r >> (w - 1)) ^ cf != 0 ? Flag.of : 0)
        case CC.shr:
            let c = src2
            f |= (src >> (c &- 1)) & 1 | (src & sign != 0 ? Flag.of : 0)
        case CC.sar:
            let c = src2
            f |= UInt64(bitPattern: signExtend(src, s) >> Int64((c &- 1) & 63)) & 1   // a count of 0 never sets CC.sar; the mask keeps a broken invariant from trapping
        default: // CC.szp
            f |= src & (Flag.cf | Flag.of | Flag.af)
        }
        return f
    }

    /// Replaces the arithmetic flags with explicit values.
    @inline(__always)
    func setArithFlags(_ f: UInt64) {
        st.pointee.ccOp = CC.eflags
        st.pointee.ccSrc = f & Flag.arith
    }

    @inline(__always)
    var carryFlag: Bool {
        let op = st.pointee.ccOp
        switch op >> 2 {
        case CC.eflags: return st.pointee.ccSrc & 1 != 0
        case CC.sub:
            let s = Int(op & 3), mask = sizeMask(s)
            let b = st.pointee.ccSrc & mask, a = (st.pointee.ccDst &+ b) & mask
            return a < b
        case CC.logic: return false
        case CC.inc, CC.dec: return st.pointee.ccSrc2 & 1 != 0
        case CC.add:
            let mask = sizeMask(Int(op & 3))
            return st.pointee.ccDst & mask < st.pointee.ccSrc & mask
        case CC.szp: return st.pointee.ccSrc & 1 != 0
        default: return arithFlags() & Flag.cf != 0
        }
    }

    /// Full RFLAGS.
    @inline(__always)
    var rflags: UInt64 { st.pointee.flagsRest | arithFlags() }

    /// Writes all of RFLAGS (callers apply privilege rules first). Keeps reserved bits sane.
    func setRFlags(_ v: UInt64) {
        setArithFlags(v)
        st.pointee.flagsRest = (v & ~Flag.arith & 0x3F_7FD5) | Flag.fixed1
    }

    /// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc).
    @inline(__always)
    func condition(_ cc: UInt8) -> Bool {
        let op = st.pointee.ccOp
        let kind = op >> 2
        if kind == CC.sub {
            // CMP/SUB: compare the original operands directly.
            let s = Int(op & 3), mask = sizeMask(s)
            let r = st.pointee.ccDst & mask, b = st.pointee.ccSrc & mask, a = (r &+ b) & mask
            let v: Bool
            switch cc >> 1 {
            case 1: v = a < b
            case 2: v = r == 0
            case 3: v = a <= b
            case 6: v = signExtend(a, s) < signExtend(b, s)
            case 7: v = signExtend(a, s) <= signExtend(b, s)
            default: return slowCondition(cc)
            }
            return v != (cc & 1 != 0)
        }
        if kind != CC.eflags && kind < CC.rol && cc >> 1 == 2 {
            // ZF comes straight from the result for every lazy kind but a rotate's.
            let r = st.pointee.ccDst & sizeMask(Int(op & 3))
            return (r == 0) != (cc & 1 != 0)
        }
        if kind == CC.logic {
            let s = Int(op & 3)
            let r = st.pointee.ccDst & sizeMask(s)
            let v: Bool
            switch cc >> 1 {
            case 0, 1: v = false
            case 2, 3: v = r == 0
            case 4, 6: v = r & signBit(s) != 0
            case 7: v = r == 0 || r & signBit(s) != 0
            default: return slowCondition(cc)
            }
            return v != (cc & 1 != 0)
        }
        return slowCondition(cc)
    }

    func slowCondition(_ cc: UInt8) -> Bool {
        let f = arithFlags()
        let v: Bool
        switch cc >> 1 {
        case 0: v = f & Flag.of != 0
        case 1: v = f & Flag.cf != 0
        case 2: v = f & Flag.zf != 0
        case 3: v = f & (Flag.cf | Flag.zf) != 0
        case 4: v = f & Flag.sf != 0
        case 5: v = f & Flag.pf != 0
        case 6: v = (f & Flag.sf != 0) != (f & Flag.of != 0)
        default: v = f & Flag.zf != 0 || (f & Flag.sf != 0) != (f & Flag.of != 0)
        }
        return v != (cc & 1 != 0)
    }
}
