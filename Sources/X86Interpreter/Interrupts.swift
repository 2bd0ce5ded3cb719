// Exception and interrupt delivery: real-mode IVT, protected-mode and long-mode IDT gates with stack
// switches (TSS RSP0/ESP0, IST), error codes, #DF on nested faults, triple fault → shutdown.

enum EventKind {
    /// A CPU exception (fault or trap); no gate DPL check.
    case exception
    /// An external interrupt (APIC, PIC).
    case external
    /// INT n / INT3 / INTO: the gate's DPL must allow the current CPL.
    case software
}

extension X86Interpreter {
    static func hasErrorCode(_ v: Int) -> Bool {
        v == 8 || (v >= 10 && v <= 14) || v == 17
    }

    /// 0 benign, 1 contributory, 2 page fault (SDM table 6-5).
    static func faultClass(_ v: Int) -> Int {
        switch v {
        case 0, 10, 11, 12, 13: return 1
        case 14: return 2
        default: return 0
        }
    }

    /// Delivers an exception raised by an instruction, escalating to #DF / shutdown as needed.
    func deliverFault(_ f: Fault) {
        deliverEvent(vector: Int(f.vector), kind: .exception, errorCode: f.hasCode ? f.code : nil)
    }

    /// Delivers an event; faults during delivery are handled here.
    func deliverEvent(vector: Int, kind: EventKind, errorCode: UInt32? = nil) {
        if interceptExceptions && kind == .exception {
            interceptedException = (vector, errorCode)
            st.pointee.testStop = true
            return
        }
        var v = vector, k = kind, code = errorCode
        var first = kind == .exception ? vector : -1
        while true {
            do {
                try deliverCore(vector: v, kind: k, errorCode: code)
                return
            } catch {
                let nv = Int(error.vector)
                if v == 8 {
                    // A fault while delivering #DF: triple fault.
                    st.pointee.shutdown = true
                    return
                }
                let prev = first >= 0 ? first : v
                let c1 = X86Interpreter.faultClass(prev), c2 = X86Interpreter.faultClass(nv)
                if (c1 == 1 && c2 == 1) || (c1 == 2 && c2 != 0) {
                    v = 8; k = .exception; code = 0
                } else {
                    v = nv; k = .exception; code = error.hasCode ? error.code : nil
                }
                first = v
            }
        }
    }

    /// Pushes the frame and transfers control through the IDT/IVT. Throws faults hit on the way.
    func deliverCore(vector: Int, kind: EventKind, errorCode: UInt32?) throws(Fault) {
        st.pointee.halted = false
        let ext: UInt32 = kind == .software ? 0 : 1
        if !isProtected {
            try deliverReal(vector)
            return
        }
        if isLongMode {
            try deliverLong(vector, kind: kind, errorCode: errorCode, ext: ext)
        } else {
            try deliverProtected(vector, kind: kind, errorCode: errorCode, ext: ext)
        }
    }

    func deliverReal(_ vector: Int) throws(Fault) {
        let off = UInt64(vector * 4)
        guard off + 3 <= UInt64(st.pointee.idtLimit) else { throw Fault.gp(UInt32(vector * 8 + 2)) }
        let entry = try readSys(st.pointee.idtBase &+ off, 4)
        try push(rflags & 0xFFFF, 1)
        try push(UInt64(segs[Seg.cs].selector), 1)
        try push(rip & 0xFFFF, 1)
        st.pointee.flagsRest &= ~(Flag.if | Flag.tf | Flag.ac | Flag.rf)
        try loadSegment(Seg.cs, UInt16(truncatingIfNeeded: entry >> 16))
        rip = entry & 0xFFFF
    }

    func deliverLong(_ vector: Int, kind: EventKind, errorCode: UInt32?, ext: UInt32) throws(Fault) {
        let gateCode = UInt32(vector * 8 + 2) | ext
        let off = UInt64(vector * 16)
        guard off + 15 <= UInt64(st.pointee.idtLimit) else { throw Fault.gp(gateCode) }
        let lo = try readSys(st.pointee.idtBase &+ off, 8)
        let hi = try readSys(st.pointee.idtBase &+ off &+ 8, 8)
        let type = (lo >> 40) & 0xF
        guard type == 0xE || type == 0xF else { throw Fault.gp(gateCode) }
        let dpl = Int((lo >> 45) & 3)
        let cpl = st.pointee.cpl
        if kind == .software && dpl < cpl { throw Fault.gp(gateCode) }
        guard lo & (1 << 47) != 0 else { throw Fault.np(gateCode) }
        let sel = UInt16(truncatingIfNeeded: lo >> 16)
        let target = (lo & 0xFFFF) | ((lo >> 48) & 0xFFFF) << 16 | (hi & 0xFFFF_FFFF) << 32
        let ist = Int((lo >> 32) & 7)

        guard sel & ~3 != 0 else { throw Fault.gp(ext) }
        let (addr, raw) = try readDescriptor(sel) { c in Fault.gp(c | ext) }
        let cs = cacheFrom(raw, selector: sel)
        guard cs.isCode, cs.dpl <= cpl else { throw Fault.gp(UInt32(sel & ~3) | ext) }
        guard cs.present else { throw Fault.np(UInt32(sel & ~3) | ext) }
        guard cs.l && !cs.db else { throw Fault.gp(UInt32(sel & ~3) | ext) }
        let newCPL = cs.type & 4 != 0 ? cpl : cs.dpl

        var rsp = gpr(Reg.rsp)
        let oldSS = UInt64(segs[Seg.ss].selector), oldRSP = rsp
        if ist != 0 {
            rsp = try readTSS64(0x24 + UInt64(ist - 1) * 8)
        } else if newCPL < cpl {
            rsp = try readTSS64(4 + UInt64(newCPL) * 8)
        }
        rsp &= ~0xF
        // Build the frame with supervisor accesses (the handler runs at newCPL).
        var frame: [UInt64] = [oldSS, oldRSP, rflags, UInt64(segs[Seg.cs].selector), rip]
        if let errorCode { frame.append(UInt64(errorCode)) }
        let canonical = { (a: UInt64) -> Bool in let t = Int64(bitPattern: a) >> 47; return t == 0 || t == -1 }
        guard canonical(rsp &- UInt64(frame.count * 8)) && canonical(rsp &- 8) else { throw Fault.ss(0) }
        let saved = st.pointee.tlbHalf
        if newCPL < 3 { st.pointee.tlbHalf = 0 }
        defer { st.pointee.tlbHalf = saved }
        for v in frame {
            rsp &-= 8
            try writeSlow(rsp, 8, v, user: newCPL == 3)
        }
        try markAccessed(addr, raw)
        // Commit.
        st.pointee.tlbHalf = newCPL == 3 ? TLBSize.entries : 0
        if newCPL < cpl {
            segs[Seg.ss] = SegmentCache(selector: UInt16(newCPL), base: 0, limit: 0, attr: UInt16(newCPL << 5) | 0x13)
        }
        setCS(cs, cpl: newCPL)
        setGPR(Reg.rsp, rsp)
        rip = target
        var fl = st.pointee.flagsRest & ~(Flag.tf | Flag.nt | Flag.rf | Flag.vm)
        if type == 0xE { fl &= ~Flag.if }
        st.pointee.flagsRest = fl
    }

    func readTSS64(_ off: UInt64) throws(Fault) -> UInt64 {
        let tr = st.pointee.tr
        guard off + 7 <= UInt64(tr.limit) else { throw Fault.ts(UInt32(tr.selector & ~3)) }
        return try readSys(tr.base &+ off, 8)
    }

    func deliverProtected(_ vector: Int, kind: EventKind, errorCode: UInt32?, ext: UInt32) throws(Fault) {
        let gateCode = UInt32(vector * 8 + 2) | ext
        let off = UInt64(vector * 8)
        guard off + 7 <= UInt64(st.pointee.idtLimit) else { throw Fault.gp(gateCode) }
        let g = try readSys(st.pointee.idtBase &+ off, 8)
        let type = (g >> 40) & 0xF
        guard type == 0xE || type == 0xF || type == 0x6 || type == 0x7 else { throw Fault.gp(gateCode) }
        let gate32 = type & 8 != 0
        let dpl = Int((g >> 45) & 3)
        let cpl = st.pointee.cpl
        if kind == .software && dpl < cpl { throw Fault.gp(gateCode) }
        guard g & (1 << 47) != 0 else { throw Fault.np(gateCode) }
        let sel = UInt16(truncatingIfNeeded: g >> 16)
        var target = (g & 0xFFFF) | ((g >> 48) & 0xFFFF) << 16
        if !gate32 { target &= 0xFFFF }
        guard sel & ~3 != 0 else { throw Fault.gp(ext) }
        let (addr, raw) = try readDescriptor(sel) { c in Fault.gp(c | ext) }
        let cs = cacheFrom(raw, selector: sel)
        guard cs.isCode, cs.dpl <= cpl else { throw Fault.gp(UInt32(sel & ~3) | ext) }
        guard cs.present else { throw Fault.np(UInt32(sel & ~3) | ext) }
        let newCPL = cs.type & 4 != 0 ? cpl : cs.dpl
        let size = gate32 ? 2 : 1
        let bytes = UInt64(1 << size)

        var frame: [UInt64] = []
        var newSSCache: SegmentCache? = nil
        var sp = gpr(Reg.rsp)
        var ssBase = segs[Seg.ss].base
        var spMask = st.pointee.stackMask
        if newCPL < cpl {
            // Inner stack from the 32-bit TSS.
            let tr = st.pointee.tr
            let o = UInt64(4 + newCPL * 8)
            guard o + 5 <= UInt64(tr.limit) else { throw Fault.ts(UInt32(tr.selector & ~3)) }
            let newESP = try readSys(tr.base &+ o, 4)
            let newSS = UInt16(truncatingIfNeeded: try readSys(tr.base &+ o &+ 4, 2))
            guard newSS & ~3 != 0 else { throw Fault.ts(UInt32(newSS & ~3) | ext) }
            let (_, sraw) = try readDescriptor(newSS) { c in Fault.ts(c | ext) }
            let ss = cacheFrom(sraw, selector: newSS)
            guard Int(newSS & 3) == newCPL, ss.dpl == newCPL, ss.s, !ss.isCode, ss.type & 2 != 0 else {
                throw Fault.ts(UInt32(newSS & ~3) | ext)
            }
            guard ss.present else { throw Fault.ss(UInt32(newSS & ~3) | ext) }
            frame = [UInt64(segs[Seg.ss].selector), sp & st.pointee.stackMask]
            newSSCache = ss
            sp = newESP
            ssBase = ss.base
            spMask = ss.db ? 0xFFFF_FFFF : 0xFFFF
        }
        frame += [rflags, UInt64(segs[Seg.cs].selector), rip & 0xFFFF_FFFF]
        if let errorCode { frame.append(UInt64(errorCode)) }
        let saved = st.pointee.tlbHalf
        if newCPL < 3 { st.pointee.tlbHalf = 0 }
        defer { st.pointee.tlbHalf = saved }
        for v in frame {
            sp = (sp &- bytes) & spMask
            try writeSlow((ssBase &+ sp) & 0xFFFF_FFFF, Int(bytes), v, user: newCPL == 3)
        }
        try markAccessed(addr, raw)
        st.pointee.tlbHalf = newCPL == 3 ? TLBSize.entries : 0
        if var ss = newSSCache {
            ss.attr |= 1
            segs[Seg.ss] = ss
        }
        setCS(cs, cpl: newCPL)
        finishSegmentLoad(Seg.ss)
        setGPR(Reg.rsp, (gpr(Reg.rsp) & ~spMask) | sp)
        rip = target
        var fl = st.pointee.flagsRest & ~(Flag.tf | Flag.nt | Flag.rf | Flag.vm)
        if type & 1 == 0 { fl &= ~Flag.if }
        st.pointee.flagsRest = fl
    }
}
