// System instructions: segment-register moves, far transfers, software interrupts, control and debug
// registers, descriptor tables, MSRs, CPUID, TSC, SYSCALL/SYSRET, port I/O.

extension X86Interpreter {
    /// Guest TSC ticks per VM-clock nanosecond: the advertised TSC runs at 1 GHz (or counts the
    /// host's TSC when shared with a CPU that reads it directly, see HybridSupport.swift).
    var tsc: UInt64 { tscBase &+ st.pointee.tscOffset }
    var tscBase: UInt64 { tscSource?() ?? clock.nowNs }

    func executeSystem(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        switch d.pointee.op {
        case .pushSeg:
            try push(UInt64(segs[Int(d.pointee.sub)].selector), s)
        case .popSeg:
            let seg = Int(d.pointee.sub)
            let oldSP = gpr(Reg.rsp)
            let v = try pop(s)
            do { try loadSegment(seg, UInt16(truncatingIfNeeded: v)) } catch { setGPR(Reg.rsp, oldSP); throw error }
            if seg == Seg.ss { st.pointee.interruptShadow = true }
        case .movEsreg:
            let v = UInt64(segs[Int(d.pointee.reg)].selector)
            if d.pointee.mem { try write(linearAddress(d), UInt16(truncatingIfNeeded: v)) }
            else { setRegSized(d.pointee.rm, s, v) }
        case .movSregE:
            let v = try readESized(d, 1)
            try loadSegment(Int(d.pointee.reg), UInt16(truncatingIfNeeded: v))
            if Int(d.pointee.reg) == Seg.ss { st.pointee.interruptShadow = true }
        case .lxs:
            let la = linearAddress(d)
            let off = try readSized(la, s)
            let sel = try read(linear(Int(d.pointee.seg), (effectiveAddress(d) &+ UInt64(1 << s)) & addressMask(d)), UInt16.self)
            try loadSegment(Int(d.pointee.sub), sel)
            setRegSized(d.pointee.reg, s, off)
        case .pusha:
            let regsNow = (0..<8).map { gpr($0) }
            let oldSP = gpr(Reg.rsp)
            do { for v in regsNow { try push(v, s) } } catch { setGPR(Reg.rsp, oldSP); throw error }
        case .popa:
            var vals = [UInt64](repeating: 0, count: 8)
            for i in 0..<8 { vals[7 - i] = try peek(s, at: UInt64(i << s)) }
            adjustSP(UInt64(8 << s))
            for i in 0..<8 where i != Reg.rsp { setRegSized(UInt8(i * 8), s, vals[i]) }
        case .iret:
            try interruptReturn(osz: s)
            nmiBlocked = false   // the end of an NMI handler unblocks NMIs
        case .retf:
            try farReturn(osz: s, popBytes: d.pointee.imm)
        case .jmpFarImm, .callFarImm:
            try farTransfer(sel: UInt16(truncatingIfNeeded: d.pointee.disp), offset: d.pointee.imm,
                            call: d.pointee.op == .callFarImm, osz: s)
        case .jmpFarE, .callFarE:
            let la = linearAddress(d)
            let off = try readSized(la, s)
            let sel = try read(linear(Int(d.pointee.seg), (effectiveAddress(d) &+ UInt64(1 << s)) & addressMask(d)), UInt16.self)
            try farTransfer(sel: sel, offset: off, call: d.pointee.op == .callFarE, osz: s)
        case .int:
            try deliverCore(vector: Int(d.pointee.imm), kind: .software, errorCode: nil)
        case .int3:
            try deliverCore(vector: 3, kind: .software, errorCode: nil)
        case .into:
            if condition(0) { try deliverCore(vector: 4, kind: .software, errorCode: nil) }
        case .int1:
            try deliverCore(vector: 1, kind: .exception, errorCode: nil)
        case .bound:
            let la = linearAddress(d)
            let idx = signExtend(getRegSized(d.pointee.reg, s), s)
            let lower = signExtend(try readSized(la, s), s)
            let upper = signExtend(try readSized(linear(Int(d.pointee.seg), (effectiveAddress(d) &+ UInt64(1 << s)) & addressMask(d)), s), s)
            if idx < lower || idx > upper { throw Fault(vector: 5) }
        case .arpl:
            guard isProtected else { throw Fault.ud }
            let dst = try readESized(d, 1)
            let src = getRegSized(d.pointee.reg, 1)
            var f = arithFlags() & ~Flag.zf
            if dst & 3 < src & 3 {
                try writeESized(d, 1, (dst & ~3) | (src & 3))
                f |= Flag.zf
            }
            setArithFlags(f)
        case .cpuid:
            cpuid()
        case .rdtsc:
            if st.pointee.cr4 & CR4.tsd != 0 && st.pointee.cpl != 0 { throw Fault.gp(0) }
            let t = tsc
            setGPR(0, t & 0xFFFF_FFFF); setGPR(Reg.rdx, t >> 32)
        case .rdtscp:
            // RDTSCP is not advertised in CPUID.
            throw Fault.ud
        case .rdpmc:
            throw Fault.gp(0)
        case .rdmsr:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            let v = try readMSR(UInt32(truncatingIfNeeded: gpr(Reg.rcx)))
            setGPR(0, v & 0xFFFF_FFFF); setGPR(Reg.rdx, v >> 32)
        case .wrmsr:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            try writeMSR(UInt32(truncatingIfNeeded: gpr(Reg.rcx)), (gpr(Reg.rdx) << 32) | (gpr(0) & 0xFFFF_FFFF))
        case .syscall:
            try syscall()
        case .sysret:
            try sysret(d)
        case .sysenter, .sysexit:
            throw Fault.ud   // SEP is not advertised
        case .swapgs:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            let g = segs[Seg.gs].base
            segs[Seg.gs].base = st.pointee.kernelGSBase
            st.pointee.kernelGSBase = g
            refreshSegBases()
        case .movFromCR:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            let v: UInt64
            switch d.pointee.reg {
            case 0: v = st.pointee.cr0
            case 2: v = st.pointee.cr2
            case 3: v = st.pointee.cr3
            case 4: v = st.pointee.cr4
            case 8: v = UInt64(apic.tpr >> 4)
            default: throw Fault.ud
            }
            setReg64(d.pointee.rm, isLongMode ? v : v & 0xFFFF_FFFF)
        case .movToCR:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            var v = reg64(d.pointee.rm)
            if !isLongMode { v &= 0xFFFF_FFFF }
            try writeCR(Int(d.pointee.reg), v)
        case .movFromDR, .movToDR:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            var n = Int(d.pointee.reg)
            if n == 4 || n == 5 {
                if st.pointee.cr4 & CR4.de != 0 { throw Fault.ud }
                n += 2
            }
            if n > 7 { throw Fault.ud }
            if d.pointee.op == .movFromDR {
                let v: UInt64
                switch n {
                case 0: v = st.pointee.dr.0
                case 1: v = st.pointee.dr.1
                case 2: v = st.pointee.dr.2
                case 3: v = st.pointee.dr.3
                case 6: v = st.pointee.dr6
                default: v = st.pointee.dr7
                }
                setReg64(d.pointee.rm, v)
            } else {
                let v = reg64(d.pointee.rm)
                switch n {
                case 0: st.pointee.dr.0 = v
                case 1: st.pointee.dr.1 = v
                case 2: st.pointee.dr.2 = v
                case 3: st.pointee.dr.3 = v
                case 6:
                    if isLongMode && v >> 32 != 0 { throw Fault.gp(0) }
                    st.pointee.dr6 = (v & 0xE00F) | 0xFFFF_0FF0
                default:
                    if isLongMode && v >> 32 != 0 { throw Fault.gp(0) }
                    st.pointee.dr7 = (v & 0xFFFF_2BFF) | 0x400   // breakpoints are recorded, not armed
                }
            }
        case .lgdt, .lidt:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            let la = linearAddress(d)
            let limit = try read(la, UInt16.self)
            let baseAddr = linear(Int(d.pointee.seg), (effectiveAddress(d) &+ 2) & addressMask(d))
            var base: UInt64 = isLongMode && st.pointee.codeSize == 2 ? try read(baseAddr, UInt64.self) : UInt64(try read(baseAddr, UInt32.self))
            if s == 1 && st.pointee.codeSize != 2 { base &= 0xFF_FFFF }
            if d.pointee.op == .lgdt { st.pointee.gdtBase = base; st.pointee.gdtLimit = UInt32(limit) }
            else { st.pointee.idtBase = base; st.pointee.idtLimit = UInt32(limit) }
        case .sgdt, .sidt:
            let la = linearAddress(d)
            let (base, limit) = d.pointee.op == .sgdt ? (st.pointee.gdtBase, st.pointee.gdtLimit) : (st.pointee.idtBase, st.pointee.idtLimit)
            let baseAddr = linear(Int(d.pointee.seg), (effectiveAddress(d) &+ 2) & addressMask(d))
            try write(la, UInt16(truncatingIfNeeded: limit))
            if st.pointee.codeSize == 2 { try write(baseAddr, base) } else { try write(baseAddr, UInt32(truncatingIfNeeded: base)) }
        case .sldt, .str:
            guard isProtected else { throw Fault.ud }
            let v = UInt64(d.pointee.op == .sldt ? st.pointee.ldtr.selector : st.pointee.tr.selector)
            if d.pointee.mem { try write(linearAddress(d), UInt16(truncatingIfNeeded: v)) } else { setRegSized(d.pointee.rm, s, v) }
        case .lldt, .ltr:
            guard isProtected else { throw Fault.ud }
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            try loadSystemSegment(UInt16(truncatingIfNeeded: try readESized(d, 1)), tr: d.pointee.op == .ltr)
        case .smsw:
            if d.pointee.mem { try write(linearAddress(d), UInt16(truncatingIfNeeded: st.pointee.cr0)) }
            else { setRegSized(d.pointee.rm, s, st.pointee.cr0 & sizeMask(s)) }
        case .lmsw:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            let v = try readESized(d, 1)
            // LMSW can set but never clear PE.
            let newCR0 = (st.pointee.cr0 & ~0xE) | (v & 0xF) | (st.pointee.cr0 & 1)
            try writeCR(0, newCR0)
        case .clts:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            st.pointee.cr0 &= ~CR0.ts
        case .invlpg:
            guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
            flushTLBPage(linearAddress(d))
        case .lar, .lsl, .verr, .verw:
            try descriptorQuery(d)
        case .fwait:
            if st.pointee.cr0 & (CR0.mp | CR0.ts) == (CR0.mp | CR0.ts) { throw Fault.nm }
            try fpuCheckPending()
        case .x87:
            try executeX87(d)
        case .sse:
            try executeSSE(d)
        case .fxsave, .fxrstor, .ldmxcsr, .stmxcsr:
            try executeFXState(d)
        default:
            unimplementedCount &+= 1
            throw Fault.ud
        }
    }

    @inline(__always)
    func addressMask(_ d: UnsafePointer<DecodedInsn>) -> UInt64 {
        d.pointee.asz == 3 ? ~0 : (d.pointee.asz == 2 ? 0xFFFF_FFFF : 0xFFFF)
    }

    // MARK: Control registers

    func writeCR(_ n: Int, _ v: UInt64) throws(Fault) {
        switch n {
        case 0:
            var v = v | CR0.et
            if v >> 32 != 0 { throw Fault.gp(0) }
            if v & CR0.pg != 0 && v & CR0.pe == 0 { throw Fault.gp(0) }
            if v & CR0.nw != 0 && v & CR0.cd == 0 { throw Fault.gp(0) }
            v &= CR0.pe | CR0.mp | CR0.em | CR0.ts | CR0.et | CR0.ne | CR0.wp | CR0.am | CR0.nw | CR0.cd | CR0.pg
            let old = st.pointee.cr0
            if v & CR0.pg != 0 && old & CR0.pg == 0 && st.pointee.efer & EFER.lme != 0 {
                // Entering long mode requires PAE.
                guard st.pointee.cr4 & CR4.pae != 0 else { throw Fault.gp(0) }
                st.pointee.efer |= EFER.lma
            }
            if v & CR0.pg == 0 && old & CR0.pg != 0 && isLongMode {
                if st.pointee.codeSize == 2 { throw Fault.gp(0) }
                st.pointee.efer &= ~EFER.lma
            }
            st.pointee.cr0 = v
            if (old ^ v) & (CR0.pg | CR0.wp | CR0.pe) != 0 { flushTLB(keepGlobal: false) }
            updateMode()
        case 2:
            st.pointee.cr2 = v
        case 3:
            if isLongMode && v >> UInt64(X86Interpreter.physAddrBits) != 0 { throw Fault.gp(0) }
            st.pointee.cr3 = v
            flushTLB(keepGlobal: st.pointee.cr4 & CR4.pge != 0)
        case 4:
            if v & ~CR4.allowed != 0 { throw Fault.gp(0) }
            if isLongMode && v & CR4.pae == 0 { throw Fault.gp(0) }
            let old = st.pointee.cr4
            st.pointee.cr4 = v
            if (old ^ v) & (CR4.pge | CR4.pae | CR4.pse) != 0 { flushTLB(keepGlobal: false) }
        case 8:
            if v & ~0xF != 0 { throw Fault.gp(0) }
            apic.tpr = UInt32(v << 4)
            st.pointee.eventCheck = true
        default:
            throw Fault.ud
        }
    }

    // MARK: System segments

    func loadSystemSegment(_ sel: UInt16, tr: Bool) throws(Fault) {
        if sel & ~3 == 0 {
            if tr { throw Fault.gp(0) }
            st.pointee.ldtr = SegmentCache(selector: 0, base: 0, limit: 0, attr: 0x02)
            return
        }
        guard sel & 4 == 0 else { throw Fault.gp(UInt32(sel & ~3)) }
        let (addr, raw) = try readDescriptor(sel)
        var cache = cacheFrom(raw, selector: sel)
        let type = cache.type
        guard !cache.s, tr ? (type == 1 || type == 9) : type == 2 else { throw Fault.gp(UInt32(sel & ~3)) }
        guard cache.present else { throw Fault.np(UInt32(sel & ~3)) }
        if isLongMode {
            let (_, _) = (addr, raw)
            let hi = try readSys(addr &+ 8, 8)
            cache.base |= (hi & 0xFFFF_FFFF) << 32
        }
        if tr {
            // Mark the TSS busy.
            try writeSys(addr &+ 5, 1, ((raw >> 40) & 0xFF) | 2)
            cache.attr |= 2
            st.pointee.tr = cache
        } else {
            st.pointee.ldtr = cache
        }
    }

    func descriptorQuery(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        guard isProtected else { throw Fault.ud }
        let s = Int(d.pointee.osz)
        let sel = UInt16(truncatingIfNeeded: try readESized(d, 1))
        var ok = false
        var value: UInt64 = 0
        if sel & ~3 != 0, let (_, raw) = try? readDescriptor(sel) {
            let c = cacheFrom(raw, selector: sel)
            let cpl = st.pointee.cpl, rpl = Int(sel & 3)
            let conformingCode = c.isCode && c.type & 4 != 0
            let privOK = conformingCode || (c.dpl >= cpl && c.dpl >= rpl)
            switch d.pointee.op {
            case .lar:
                let validSys: Set<UInt8> = [1, 2, 3, 9, 0xB, 4, 5, 0xC]
                ok = privOK && (c.s || validSys.contains(c.type))
                value = raw >> 32 & 0x00F0_FF00
            case .lsl:
                let validSys: Set<UInt8> = [1, 2, 3, 9, 0xB]
                ok = privOK && (c.s || validSys.contains(c.type))
                value = UInt64(c.limit)
            case .verr:
                ok = privOK && c.s && (!c.isCode || c.type & 2 != 0)
            default:
                ok = privOK && c.s && !c.isCode && c.type & 2 != 0
            }
        }
        setArithFlags((arithFlags() & ~Flag.zf) | (ok ? Flag.zf : 0))
        if ok && (d.pointee.op == .lar || d.pointee.op == .lsl) { setRegSized(d.pointee.reg, s, value) }
    }

    // MARK: SYSCALL / SYSRET

    func syscall() throws(Fault) {
        guard st.pointee.efer & EFER.sce != 0 else { throw Fault.ud }
        let star = st.pointee.star
        let csSel = UInt16(truncatingIfNeeded: star >> 32) & ~3
        setGPR(Reg.rcx, rip)
        setGPR(11, rflags & ~Flag.rf)
        let target = st.pointee.codeSize == 2 ? st.pointee.lstar : st.pointee.cstar
        segs[Seg.cs] = SegmentCache(selector: csSel, base: 0, limit: 0xFFFF_FFFF, attr: 0xA09B)
        segs[Seg.ss] = SegmentCache(selector: csSel &+ 8, base: 0, limit: 0xFFFF_FFFF, attr: 0xC093)
        st.pointee.cpl = 0
        updateMode()
        rip = target
        let newFlags = rflags & ~st.pointee.sfmask & ~Flag.rf
        setRFlags(newFlags)
    }

    func sysret(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        guard st.pointee.efer & EFER.sce != 0 else { throw Fault.ud }
        guard st.pointee.cpl == 0 else { throw Fault.gp(0) }
        let base = UInt16(truncatingIfNeeded: st.pointee.star >> 48)
        let to64 = d.pointee.pfx & Pfx.rexW != 0
        let target = to64 ? gpr(Reg.rcx) : gpr(Reg.rcx) & 0xFFFF_FFFF
        if to64 {
            let t = Int64(bitPattern: target) >> 47
            guard t == 0 || t == -1 else { throw Fault.gp(0) }
            segs[Seg.cs] = SegmentCache(selector: (base &+ 16) | 3, base: 0, limit: 0xFFFF_FFFF, attr: 0xA0FB)
        } else {
            segs[Seg.cs] = SegmentCache(selector: base | 3, base: 0, limit: 0xFFFF_FFFF, attr: 0xC0FB)
        }
        segs[Seg.ss] = SegmentCache(selector: (base &+ 8) | 3, base: 0, limit: 0xFFFF_FFFF, attr: 0xC0F3)
        let oldIF = st.pointee.flagsRest & Flag.if
        setRFlags((gpr(11) & 0x3C_7FD7) | Flag.fixed1)
        if st.pointee.flagsRest & Flag.if != 0 && oldIF == 0 { st.pointee.eventCheck = true }
        st.pointee.cpl = 3
        updateMode()
        rip = target
    }

    // MARK: Port I/O

    func portIO(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let port = d.pointee.op == .inImm || d.pointee.op == .outImm ? UInt16(d.pointee.imm) : UInt16(truncatingIfNeeded: gpr(Reg.rdx))
        let size = 1 << s
        try checkIOPermission(port: port, size: size)
        if d.pointee.op == .inImm || d.pointee.op == .inDX {
            let v = io?.portRead(port, size: size) ?? UInt32.max
            setRegSized(0, s, UInt64(v))
        } else {
            io?.portWrite(port, size: size, value: UInt32(truncatingIfNeeded: gpr(0) & sizeMask(s)))
        }
        ioHappened()
    }

    /// Devices may have raised interrupts or re-armed timers.
    @inline(__always)
    func ioHappened() {
        st.pointee.eventCheck = true
        system.devices.devicesTouched()
    }
}
