import CHost

// LOCK-prefixed read-modify-writes (and XCHG with memory, always locked) when several vCPUs run on
// host threads: the guest relies on them being atomic against every other CPU's accesses. On a RAM
// operand inside one page they are one host compare-and-swap loop on guest memory; the host's own
// LOCK CMPXCHG makes them atomic against the other vCPUs' plain loads and stores too, which the
// interpreter (and translated code) perform as ordinary host moves. With one vCPU the plain
// read-then-write paths are exact and no atomics are used.

extension X86Interpreter {
    /// Whether `d` must be executed atomically (a LOCK prefix on a memory operand, with other vCPUs).
    @inline(__always)
    func locked(_ d: UnsafePointer<DecodedInsn>) -> Bool {
        atomicMemory && d.pointee.mem && d.pointee.pfx & Pfx.lock != 0
    }

    /// Atomically replaces the operand of size index `s` at `la` by `f(old)` and returns the old value.
    /// `f` may run more than once (another vCPU wrote in between); whatever flags its last run set
    /// stand. MMIO and page-crossing operands cannot be one host atomic: they are serialised against
    /// each other by the split lock (as a bus lock would be), not against plain accesses.
    @discardableResult
    func lockedRMW(_ la: UInt64, _ s: Int, _ f: (UInt64) -> UInt64) throws(Fault) -> UInt64 {
        let mask = sizeMask(s)
        if let p = try rmwPointer(la, 1 << s) {
            var old = X86Interpreter.load(p, s)
            // A retry must see the flags the instruction started with (ADC/SBB read CF).
            let flagsBefore = st.pointee
            while true {
                let seen = X86Interpreter.compareAndSwap(p, s, expected: old, desired: f(old) & mask)
                if seen == old { break }
                old = seen
                restoreLazyFlags(flagsBefore)
            }
            // A code page: rmwPointer invalidated before the store; a vCPU that decoded in between
            // is invalidated now.
            recheckCodeWrite(la, 1 << s)
            return old
        }
        system.code.splitLock.lock()
        defer { system.code.splitLock.unlock() }
        let old = try readSized(la, s)
        try writeSized(la, s, f(old) & mask)
        return old
    }

    @inline(__always)
    func restoreLazyFlags(_ b: CPUState) {
        st.pointee.ccOp = b.ccOp; st.pointee.ccDst = b.ccDst; st.pointee.ccSrc = b.ccSrc; st.pointee.ccSrc2 = b.ccSrc2
        st.pointee.ccOpPrev = b.ccOpPrev; st.pointee.ccDstPrev = b.ccDstPrev
        st.pointee.ccSrcPrev = b.ccSrcPrev; st.pointee.ccSrc2Prev = b.ccSrc2Prev
        st.pointee.flagsRest = b.flagsRest
    }

    /// After a locked store through `rmwPointer`: a page that held code was invalidated before the
    /// store (rmwSlow), and a vCPU that decoded it in between must be invalidated now. A page with a
    /// writable TLB entry never holds code; otherwise the slow path just filled the entry.
    @inline(__always)
    func recheckCodeWrite(_ la: UInt64, _ size: Int) {
        let e = tlbSlot(la)
        let vpage = la & ~0xFFF
        guard e.pointee.wtag != vpage, e.pointee.rtag == vpage else { return }
        noteCodeWrite((e.pointee.phys & ~0xFFF) | (la & 0xFFF), size)
    }

    @inline(__always)
    static func load(_ p: UnsafeMutableRawPointer, _ s: Int) -> UInt64 {
        switch s {
        case 0: return UInt64(p.load(as: UInt8.self))
        case 1: return UInt64(p.loadUnaligned(as: UInt16.self))
        case 2: return UInt64(p.loadUnaligned(as: UInt32.self))
        default: return p.loadUnaligned(as: UInt64.self)
        }
    }

    /// Host LOCK CMPXCHG of size index `s`: returns the value found.
    @inline(__always)
    static func compareAndSwap(_ p: UnsafeMutableRawPointer, _ s: Int, expected: UInt64, desired: UInt64) -> UInt64 {
        switch s {
        case 0: return UInt64(chost_cas8(p, UInt8(truncatingIfNeeded: expected), UInt8(truncatingIfNeeded: desired)))
        case 1: return UInt64(chost_cas16(p, UInt16(truncatingIfNeeded: expected), UInt16(truncatingIfNeeded: desired)))
        case 2: return UInt64(chost_cas32(p, UInt32(truncatingIfNeeded: expected), UInt32(truncatingIfNeeded: desired)))
        default: return chost_cas64(p, expected, desired)
        }
    }

    // MARK: The locked forms

    /// LOCK CMPXCHG: one compare-and-swap; on failure the accumulator takes the value found.
    func lockedCmpxchg(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let la = linearAddress(d)
        let acc = getRegSized(0, s)
        let src = getRegSized(d.pointee.reg, s)
        let found: UInt64
        if let p = try rmwPointer(la, 1 << s) {
            found = X86Interpreter.compareAndSwap(p, s, expected: acc, desired: src)
            if found == acc { recheckCodeWrite(la, 1 << s) }
        } else {
            system.code.splitLock.lock()
            defer { system.code.splitLock.unlock() }
            found = try readSized(la, s)
            try writeSized(la, s, found == acc ? src : found)
        }
        if found != acc { setRegSized(0, s, found) }
        setCC(CC.sub, s, dst: (acc &- found) & sizeMask(s), src: found)
    }

    /// LOCK CMPXCHG8B.
    func lockedCmpxchg8b(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let la = linearAddress(d)
        let cmp = (gpr(Reg.rdx) & 0xFFFF_FFFF) << 32 | (gpr(0) & 0xFFFF_FFFF)
        let new = (gpr(Reg.rcx) & 0xFFFF_FFFF) << 32 | (gpr(Reg.rbx) & 0xFFFF_FFFF)
        let found: UInt64
        if let p = try rmwPointer(la, 8) {
            found = chost_cas64(p, cmp, new)
            if found == cmp { recheckCodeWrite(la, 8) }
        } else {
            system.code.splitLock.lock()
            defer { system.code.splitLock.unlock() }
            found = try read(la, UInt64.self)
            try write(la, found == cmp ? new : found)
        }
        var f = arithFlags() & ~Flag.zf
        if found == cmp {
            f |= Flag.zf
        } else {
            setGPR(0, found & 0xFFFF_FFFF)
            setGPR(Reg.rdx, found >> 32)
        }
        setArithFlags(f)
    }
}
