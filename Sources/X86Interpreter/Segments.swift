// Protected-mode segmentation: descriptor fetch, segment-register loads with their privilege checks,
// far JMP/CALL/RET and IRET. Call gates and task switches are not modelled (#GP).

extension X86Interpreter {
    var isProtected: Bool { st.pointee.cr0 & CR0.pe != 0 }
    var isLongMode: Bool { st.pointee.efer & EFER.lma != 0 }

    /// Reads the 8-byte descriptor for `sel` from the GDT or LDT. #GP(sel) if outside the table.
    func readDescriptor(_ sel: UInt16, fault: (UInt32) -> Fault = Fault.gp) throws(Fault) -> (UInt64, UInt64) {
        let index = UInt64(sel & ~7)
        let (base, limit): (UInt64, UInt32)
        if sel & 4 != 0 {
            guard st.pointee.ldtr.present else { throw fault(UInt32(sel & ~3)) }
            (base, limit) = (st.pointee.ldtr.base, st.pointee.ldtr.limit)
        } else {
            (base, limit) = (st.pointee.gdtBase, st.pointee.gdtLimit)
        }
        guard index + 7 <= UInt64(limit) else { throw fault(UInt32(sel & ~3)) }
        return (base &+ index, try readSys(base &+ index, 8))
    }

    /// The hidden segment part described by a code/data descriptor.
    func cacheFrom(_ raw: UInt64, selector: UInt16) -> SegmentCache {
        let base = ((raw >> 16) & 0xFF_FFFF) | ((raw >> 56) & 0xFF) << 24
        var limit = UInt32(truncatingIfNeeded: (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16)
        if raw & (1 << 55) != 0 { limit = limit << 12 | 0xFFF }
        let attr = UInt16(truncatingIfNeeded: (raw >> 40) & 0xFF) | UInt16(truncatingIfNeeded: (raw >> 52) & 0xF) << 12
        return SegmentCache(selector: selector, base: base, limit: limit, attr: attr)
    }

    /// Sets the accessed bit of a descriptor if clear (hardware writes it back to the table).
    func markAccessed(_ addr: UInt64, _ raw: UInt64) throws(Fault) {
        if raw & (1 << 40) == 0 { try writeSys(addr &+ 5, 1, ((raw >> 40) & 0xFF) | 1) }
    }

    /// MOV/POP/LxS to a data segment register or SS, with the protected-mode checks.
    func loadSegment(_ seg: Int, _ sel: UInt16) throws(Fault) {
        if !isProtected {
            segs[seg].selector = sel
            segs[seg].base = UInt64(sel) << 4
            if seg == Seg.cs { segs[seg].attr = (segs[seg].attr & ~0x60) | 0x1B }
            finishSegmentLoad(seg)
            return
        }
        let cpl = st.pointee.cpl
        let rpl = Int(sel & 3)
        if sel & ~3 == 0 {
            if seg == Seg.ss {
                // A null SS is allowed only in 64-bit mode below CPL 3, with RPL = CPL.
                guard st.pointee.codeSize == 2 && cpl != 3 && rpl == cpl else { throw Fault.gp(0) }
            }
            segs[seg] = SegmentCache(selector: sel, base: 0, limit: 0, attr: seg == Seg.ss ? UInt16(cpl << 5) | 0x13 : 0)
            finishSegmentLoad(seg)
            return
        }
        let (addr, raw) = try readDescriptor(sel)
        var cache = cacheFrom(raw, selector: sel)
        let dpl = cache.dpl
        if seg == Seg.ss {
            guard rpl == cpl, cache.s, !cache.isCode, cache.type & 2 != 0, dpl == cpl else { throw Fault.gp(UInt32(sel & ~3)) }
            guard cache.present else { throw Fault.ss(UInt32(sel & ~3)) }
        } else {
            // Data, or readable code; privilege applies unless conforming code.
            guard cache.s, !cache.isCode || cache.type & 2 != 0 else { throw Fault.gp(UInt32(sel & ~3)) }
            let conforming = cache.isCode && cache.type & 4 != 0
            if !conforming && (rpl > dpl || cpl > dpl) { throw Fault.gp(UInt32(sel & ~3)) }
            guard cache.present else { throw Fault.np(UInt32(sel & ~3)) }
        }
        try markAccessed(addr, raw)
        cache.attr |= 1
        segs[seg] = cache
        finishSegmentLoad(seg)
    }

    func finishSegmentLoad(_ seg: Int) {
        if seg == Seg.ss {
            st.pointee.stackMask = st.pointee.codeSize == 2 ? ~0 : (segs[Seg.ss].db ? 0xFFFF_FFFF : 0xFFFF)
        }
        if seg == Seg.cs { updateMode() } else { refreshSegBases() }
    }

    /// Loads CS for a far transfer to `sel` (no gates). Returns the new CPL.
    func loadCodeSegment(_ sel: UInt16, forReturn: Bool = false) throws(Fault) -> (SegmentCache, Int, UInt64, UInt64) {
        guard sel & ~3 != 0 else { throw Fault.gp(0) }
        let (addr, raw) = try readDescriptor(sel)
        let cache = cacheFrom(raw, selector: sel)
        let cpl = st.pointee.cpl, rpl = Int(sel & 3), dpl = cache.dpl
        guard cache.isCode else {
            // Call gates, task gates and TSS descriptors: not modelled.
            throw Fault.gp(UInt32(sel & ~3))
        }
        let conforming = cache.type & 4 != 0
        var newCPL = cpl
        if forReturn {
            guard rpl >= cpl else { throw Fault.gp(UInt32(sel & ~3)) }
            if conforming ? dpl > rpl : dpl != rpl { throw Fault.gp(UInt32(sel & ~3)) }
            newCPL = rpl
        } else if conforming {
            guard dpl <= cpl else { throw Fault.gp(UInt32(sel & ~3)) }
        } else {
            guard rpl <= cpl && dpl == cpl else { throw Fault.gp(UInt32(sel & ~3)) }
        }
        guard cache.present else { throw Fault.np(UInt32(sel & ~3)) }
        if isLongMode && cache.l && cache.db { throw Fault.gp(UInt32(sel & ~3)) }
        return (cache, newCPL, addr, raw)
    }

    /// Commits a new CS (and CPL).
    func setCS(_ cache: SegmentCache, cpl: Int) {
        var c = cache
        c.selector = (c.selector & ~3) | UInt16(cpl)
        c.attr |= 1
        segs[Seg.cs] = c
        st.pointee.cpl = cpl
        updateMode()
    }

    /// Far JMP/CALL to sel:offset.
    func farTransfer(sel: UInt16, offset: UInt64, call: Bool, osz: Int) throws(Fault) {
        if !isProtected {
            if call {
                try push(UInt64(segs[Seg.cs].selector), osz)
                try push(rip, osz)
            }
            try loadSegment(Seg.cs, sel)
            rip = offset & (osz == 1 ? 0xFFFF : 0xFFFF_FFFF)
            return
        }
        let (cache, cpl, addr, raw) = try loadCodeSegment(sel)
        let size = cache.l && isLongMode ? 3 : (cache.db ? 2 : 1)
        let target = size == 3 ? offset : offset & (size == 2 ? 0xFFFF_FFFF : 0xFFFF)
        if !cache.l || !isLongMode { guard target <= UInt64(cache.limit) else { throw Fault.gp(0) } }
        if call {
            let oldSP = gpr(Reg.rsp)
            do {
                try push(UInt64(segs[Seg.cs].selector), osz)
                try push(rip, osz)
            } catch {
                setGPR(Reg.rsp, oldSP)
                throw error
            }
        }
        try markAccessed(addr, raw)
        setCS(cache, cpl: cpl)
        rip = target
    }

    /// RETF [imm16].
    func farReturn(osz: Int, popBytes: UInt64) throws(Fault) {
        let size = UInt64(1 << osz)
        let newIP = try peek(osz)
        let sel = UInt16(truncatingIfNeeded: try peek(osz, at: size))
        if !isProtected {
            adjustSP(2 * size + popBytes)
            try loadSegment(Seg.cs, sel)
            rip = newIP & (osz == 1 ? 0xFFFF : 0xFFFF_FFFF)
            return
        }
        let (cache, newCPL, _, _) = try loadCodeSegment(sel, forReturn: true)
        let cpl = st.pointee.cpl
        if newCPL == cpl {
            adjustSP(2 * size + popBytes)
            setCS(cache, cpl: newCPL)
            rip = newIP
            return
        }
        // Return to an outer privilege level: SS:RSP follow on the stack.
        let newSP = try peek(osz, at: 2 * size + popBytes)
        let newSS = UInt16(truncatingIfNeeded: try peek(osz, at: 3 * size + popBytes))
        setCS(cache, cpl: newCPL)
        try loadSegment(Seg.ss, newSS)
        setGPR(Reg.rsp, newSP &+ popBytes)
        rip = newIP
        nullifyDataSegments()
    }

    /// After a return to an outer level, data segments the new CPL may not use become null.
    func nullifyDataSegments() {
        for seg in [Seg.es, Seg.ds, Seg.fs, Seg.gs] {
            let c = segs[seg]
            let conformingCode = c.isCode && c.type & 4 != 0
            if c.selector & ~3 != 0 && !conformingCode && c.dpl < st.pointee.cpl {
                segs[seg] = SegmentCache(selector: 0, base: 0, limit: 0, attr: 0)
            }
        }
        refreshSegBases()
    }

    /// IRET/IRETD/IRETQ.
    func interruptReturn(osz: Int) throws(Fault) {
        let size = UInt64(1 << osz)
        if !isProtected {
            let ip = try peek(osz), cs = try peek(osz, at: size), fl = try peek(osz, at: 2 * size)
            adjustSP(3 * size)
            try loadSegment(Seg.cs, UInt16(truncatingIfNeeded: cs))
            rip = ip & (osz == 1 ? 0xFFFF : 0xFFFF_FFFF)
            let keep: UInt64 = osz == 1 ? ~UInt64(0xFFFF) : (Flag.vm | Flag.vif | Flag.vip)
            setFlagsFromIRET((rflags & keep) | (fl & ~keep))
            return
        }
        if st.pointee.flagsRest & Flag.nt != 0 && !isLongMode { throw Fault.gp(0) }  // task return
        let newIP = try peek(osz)
        let sel = UInt16(truncatingIfNeeded: try peek(osz, at: size))
        let fl = try peek(osz, at: 2 * size)
        let (cache, newCPL, _, _) = try loadCodeSegment(sel, forReturn: true)
        let cpl = st.pointee.cpl
        let popsStack = isLongMode || newCPL != cpl
        var newSP: UInt64 = 0, newSS: UInt16 = 0
        if popsStack {
            newSP = try peek(osz, at: 3 * size)
            newSS = UInt16(truncatingIfNeeded: try peek(osz, at: 4 * size))
        }
        // RFLAGS: IOPL only at CPL 0, IF only when CPL <= IOPL; VM/VIF/VIP are not modelled.
        var changeable: UInt64 = Flag.arith | Flag.tf | Flag.df | Flag.nt | Flag.rf | Flag.ac | Flag.id
        let iopl = Int((st.pointee.flagsRest >> 12) & 3)
        if cpl == 0 { changeable |= Flag.iopl }
        if cpl <= iopl { changeable |= Flag.if }
        if osz == 1 { changeable &= 0xFFFF }
        let newFlags = (rflags & ~changeable) | (fl & changeable)
        let target = cache.l && isLongMode ? newIP : newIP & 0xFFFF_FFFF
        if popsStack {
            // Check the new SS before committing anything.
            if newSS & ~3 == 0 {
                guard isLongMode && cache.l && newCPL != 3 else { throw Fault.gp(0) }
            } else {
                let (_, raw) = try readDescriptor(newSS)
                let ss = cacheFrom(raw, selector: newSS)
                guard Int(newSS & 3) == newCPL, ss.s, !ss.isCode, ss.type & 2 != 0, ss.dpl == newCPL else {
                    throw Fault.gp(UInt32(newSS & ~3))
                }
                guard ss.present else { throw Fault.ss(UInt32(newSS & ~3)) }
            }
            setCS(cache, cpl: newCPL)
            try loadSegment(Seg.ss, newSS)
            setGPR(Reg.rsp, newSP)
        } else {
            adjustSP(3 * size)
            setCS(cache, cpl: newCPL)
        }
        rip = target
        setFlagsFromIRET(newFlags)
        if newCPL > cpl { nullifyDataSegments() }
    }

    func setFlagsFromIRET(_ f: UInt64) {
        let oldIF = st.pointee.flagsRest & Flag.if
        setRFlags(f)
        if st.pointee.flagsRest & Flag.if != 0 && oldIF == 0 { st.pointee.eventCheck = true }
    }
}
