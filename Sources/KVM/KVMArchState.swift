import CKVM
import CPUBackend
import Glibc

// X86ArchState to and from KVM's vCPU ioctls (regs, sregs, FPU, MSRs, debug registers, events,
// MP state), and the few ioctls those need.

extension KVMVcpu {
    /// The vCPU's complete architectural state. MSRs KVM refuses to read are left out.
    public func archState() throws(KVMError) -> X86ArchState {
        var s = X86ArchState()
        s.apply(regs: try getRegs())
        s.apply(sregs: try getSregs())
        s.apply(xsave: try getXSave())
        s.apply(events: try getVcpuEvents())
        s.apply(debugRegs: try getDebugRegs())
        s.events.halted = try getMPState() == UInt32(truncatingIfNeeded: KVM_MP_STATE_HALTED)
        s.msrs = try getMSRs(X86ArchState.architecturalMSRs).map { MSRValue($0.index, $0.value) }
        return s
    }

    /// Loads a complete architectural state into the vCPU.
    public func setArchState(_ s: X86ArchState) throws(KVMError) {
        do { try s.validate() } catch { throw KVMError("set CPU state", errno: EINVAL, detail: error.description) }
        var sregs = try getSregs()
        s.store(into: &sregs)
        try setSregs(sregs)
        var msrs = s.msrs
        // KVM writes the TSC as "the guest's TSC now"; set it last so the hand-over gap is smallest.
        if let i = msrs.firstIndex(where: { $0.index == 0x10 }) { msrs.append(msrs.remove(at: i)) }
        // One at a time: an MSR this vCPU does not implement (TSC_AUX without RDTSCP, say) is fine
        // when the state holds its reset value there; anything else is an error.
        for m in msrs {
            do { try setMSRs([(m.index, m.value)]) } catch {
                let current = try getMSRs([m.index]).first?.value ?? 0
                guard m.value == current else {
                    throw KVMError("KVM_SET_MSRS", errno: EINVAL, detail:
                        "MSR 0x\(String(m.index, radix: 16)) = 0x\(String(m.value, radix: 16)) was refused")
                }
            }
        }
        var x = try getXSave()
        s.store(into: &x)
        try setXSave(x)
        try setDebugRegs(s.kvmDebugRegs)
        var ev = try getVcpuEvents()
        s.store(into: &ev)
        try setVcpuEvents(ev)
        try setMPState(s.events.halted ? UInt32(truncatingIfNeeded: KVM_MP_STATE_HALTED) : UInt32(truncatingIfNeeded: KVM_MP_STATE_RUNNABLE))
        try setRegs(s.kvmRegs)
    }

    /// Reads MSRs; those KVM does not implement are skipped (KVM_GET_MSRS stops at the first).
    public func getMSRs(_ indices: [UInt32]) throws(KVMError) -> [(index: UInt32, value: UInt64)] {
        var out: [(index: UInt32, value: UInt64)] = []
        var rest = indices[...]
        while !rest.isEmpty {
            let batch = Array(rest)
            let bytes = MemoryLayout<kvm_msrs>.size + batch.count * MemoryLayout<kvm_msr_entry>.stride
            let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
            defer { buf.deallocate() }
            memset(buf, 0, bytes)
            buf.assumingMemoryBound(to: kvm_msrs.self).pointee.nmsrs = UInt32(truncatingIfNeeded: batch.count)
            let entries = (buf + MemoryLayout<kvm_msrs>.size).assumingMemoryBound(to: kvm_msr_entry.self)
            for (i, index) in batch.enumerated() { entries[i].index = index }
            let n = Int(try kvmIoctl(fd, CKVM_KVM_GET_MSRS(), "KVM_GET_MSRS", buf))
            for i in 0..<min(n, batch.count) { out.append((entries[i].index, entries[i].data)) }
            rest = rest.dropFirst(n + 1)   // skip the one KVM refused
        }
        return out
    }

    /// The XSAVE area (4 KiB; its first 512 bytes are the FXSAVE image). Unlike KVM_GET_FPU, which
    /// kvm-pvm answers with MXCSR 0, this carries MXCSR.
    public func getXSave() throws(KVMError) -> kvm_xsave {
        var x = kvm_xsave()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_XSAVE(), "KVM_GET_XSAVE", &x)
        return x
    }

    public func setXSave(_ area: kvm_xsave) throws(KVMError) {
        var x = area
        _ = try kvmIoctl(fd, CKVM_KVM_SET_XSAVE(), "KVM_SET_XSAVE", &x)
    }

    public func getDebugRegs() throws(KVMError) -> kvm_debugregs {
        var d = kvm_debugregs()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_DEBUGREGS(), "KVM_GET_DEBUGREGS", &d)
        return d
    }

    public func setDebugRegs(_ regs: kvm_debugregs) throws(KVMError) {
        var d = regs
        _ = try kvmIoctl(fd, CKVM_KVM_SET_DEBUGREGS(), "KVM_SET_DEBUGREGS", &d)
    }

    public func getMPState() throws(KVMError) -> UInt32 {
        var m = kvm_mp_state()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_MP_STATE(), "KVM_GET_MP_STATE", &m)
        return m.mp_state
    }

    public func setMPState(_ state: UInt32) throws(KVMError) {
        var m = kvm_mp_state(mp_state: state)
        _ = try kvmIoctl(fd, CKVM_KVM_SET_MP_STATE(), "KVM_SET_MP_STATE", &m)
    }

    /// The guest TSC frequency KVM runs this vCPU at, in kHz.
    public func tscKHz() throws(KVMError) -> UInt64 {
        UInt64(truncatingIfNeeded: try kvmIoctl(fd, CKVM_KVM_GET_TSC_KHZ(), "KVM_GET_TSC_KHZ", nil))
    }

    /// Signals unblocked while the vCPU runs in KVM_RUN (KVM_SET_SIGNAL_MASK): a signal blocked in
    /// the thread but unblocked here interrupts the guest, and one arriving before KVM_RUN is not
    /// lost — KVM_RUN returns EINTR at once.
    public func setSignalMask(_ set: sigset_t) throws(KVMError) {
        // struct kvm_signal_mask { __u32 len; __u8 sigset[]; } with the kernel's 8-byte sigset.
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { buf.deallocate() }
        buf.storeBytes(of: UInt32(8), as: UInt32.self)
        var s = set
        withUnsafeBytes(of: &s) { raw in (buf + 4).copyMemory(from: raw.baseAddress!, byteCount: 8) }
        _ = try kvmIoctl(fd, CKVM_KVM_SET_SIGNAL_MASK(), "KVM_SET_SIGNAL_MASK", buf)
    }
}

extension KVMVirtualMachine {
    /// KVM_ENABLE_CAP on the VM.
    public func enableCap(_ cap: Int32, _ args: [UInt64] = []) throws(KVMError) {
        var c = kvm_enable_cap()
        c.cap = UInt32(bitPattern: cap)
        withUnsafeMutableBytes(of: &c.args) { raw in
            for (i, a) in args.prefix(4).enumerated() { raw.storeBytes(of: a, toByteOffset: i * 8, as: UInt64.self) }
        }
        _ = try kvmIoctl(fd, CKVM_KVM_ENABLE_CAP(), "KVM_ENABLE_CAP", &c)
    }

    /// Creates, changes or (with size 0) deletes memory slot `slot`.
    public func setMemoryRegion(slot: UInt32, flags: UInt32, guestAddress: UInt64, size: UInt64,
                                host: UnsafeMutableRawPointer?) throws(KVMError) {
        var region = kvm_userspace_memory_region(slot: slot, flags: flags, guest_phys_addr: guestAddress,
                                                 memory_size: size, userspace_addr: UInt64(UInt(bitPattern: host)))
        _ = try kvmIoctl(fd, CKVM_KVM_SET_USER_MEMORY_REGION(), "KVM_SET_USER_MEMORY_REGION", &region)
    }

    /// Copies slot `slot`'s dirty bitmap (one bit per page) into `bitmap`.
    public func getDirtyLog(slot: UInt32, into bitmap: UnsafeMutableRawPointer) throws(KVMError) {
        var log = kvm_dirty_log()
        log.slot = slot
        log.dirty_bitmap = bitmap
        _ = try kvmIoctl(fd, CKVM_KVM_GET_DIRTY_LOG(), "KVM_GET_DIRTY_LOG", &log)
    }

    /// Clears (and so write-protects again, with manual protection) the pages of slot `slot` whose
    /// bits are set in `bitmap`, which covers `count` pages from `firstPage` (both multiples of 64).
    public func clearDirtyLog(slot: UInt32, firstPage: UInt64, count: UInt32,
                              bitmap: UnsafeMutableRawPointer) throws(KVMError) {
        var c = kvm_clear_dirty_log()
        c.slot = slot
        c.first_page = firstPage
        c.num_pages = count
        c.dirty_bitmap = bitmap
        _ = try kvmIoctl(fd, CKVM_KVM_CLEAR_DIRTY_LOG(), "KVM_CLEAR_DIRTY_LOG", &c)
    }
}

// MARK: Conversions

extension SegmentState {
    public init(_ k: kvm_segment) {
        self.init(selector: k.selector, base: k.base, limit: k.limit, type: k.type, present: k.present != 0,
                  dpl: k.dpl, db: k.db != 0, s: k.s != 0, l: k.l != 0, g: k.g != 0, avl: k.avl != 0,
                  unusable: k.unusable != 0)
    }

    public var kvmSegment: kvm_segment {
        var k = kvm_segment()
        k.base = base; k.limit = limit; k.selector = selector; k.type = type
        k.present = present ? 1 : 0; k.dpl = dpl; k.db = db ? 1 : 0; k.s = s ? 1 : 0; k.l = l ? 1 : 0
        k.g = g ? 1 : 0; k.avl = avl ? 1 : 0; k.unusable = unusable ? 1 : 0
        return k
    }
}

extension X86ArchState {
    public mutating func apply(regs r: kvm_regs) {
        gpr[0] = r.rax; gpr[1] = r.rcx; gpr[2] = r.rdx; gpr[3] = r.rbx
        gpr[4] = r.rsp; gpr[5] = r.rbp; gpr[6] = r.rsi; gpr[7] = r.rdi
        gpr[8] = r.r8; gpr[9] = r.r9; gpr[10] = r.r10; gpr[11] = r.r11
        gpr[12] = r.r12; gpr[13] = r.r13; gpr[14] = r.r14; gpr[15] = r.r15
        rip = r.rip
        rflags = r.rflags
    }

    public var kvmRegs: kvm_regs {
        var r = kvm_regs()
        r.rax = gpr[0]; r.rcx = gpr[1]; r.rdx = gpr[2]; r.rbx = gpr[3]
        r.rsp = gpr[4]; r.rbp = gpr[5]; r.rsi = gpr[6]; r.rdi = gpr[7]
        r.r8 = gpr[8]; r.r9 = gpr[9]; r.r10 = gpr[10]; r.r11 = gpr[11]
        r.r12 = gpr[12]; r.r13 = gpr[13]; r.r14 = gpr[14]; r.r15 = gpr[15]
        r.rip = rip
        r.rflags = rflags
        return r
    }

    public mutating func apply(sregs s: kvm_sregs) {
        es = SegmentState(s.es); cs = SegmentState(s.cs); ss = SegmentState(s.ss)
        ds = SegmentState(s.ds); fs = SegmentState(s.fs); gs = SegmentState(s.gs)
        tr = SegmentState(s.tr); ldtr = SegmentState(s.ldt)
        gdt = DescriptorTableState(base: s.gdt.base, limit: s.gdt.limit)
        idt = DescriptorTableState(base: s.idt.base, limit: s.idt.limit)
        cr0 = s.cr0; cr2 = s.cr2; cr3 = s.cr3; cr4 = s.cr4; cr8 = s.cr8
        efer = s.efer; apicBase = s.apic_base
    }

    /// Writes everything kvm_sregs holds; its interrupt bitmap is left as it was.
    public func store(into s: inout kvm_sregs) {
        s.es = es.kvmSegment; s.cs = cs.kvmSegment; s.ss = ss.kvmSegment
        s.ds = ds.kvmSegment; s.fs = fs.kvmSegment; s.gs = gs.kvmSegment
        s.tr = tr.kvmSegment; s.ldt = ldtr.kvmSegment
        s.gdt.base = gdt.base; s.gdt.limit = gdt.limit
        s.idt.base = idt.base; s.idt.limit = idt.limit
        s.cr0 = cr0; s.cr2 = cr2; s.cr3 = cr3; s.cr4 = cr4; s.cr8 = cr8
        s.efer = efer; s.apic_base = apicBase
    }

    /// The FXSAVE image from an XSAVE area (its legacy region; MXCSR_MASK stays the state's own).
    public mutating func apply(xsave x: kvm_xsave) {
        var x = x
        let mask: UInt32 = fxWord(at: 28)
        withUnsafeBytes(of: &x.region) { src in
            fxsave.withUnsafeMutableBytes { $0.baseAddress!.copyMemory(from: src.baseAddress!, byteCount: 416) }
        }
        setFXWord(mask == 0 ? UInt32(0xFFFF) : mask, at: 28)
    }

    /// Puts the FXSAVE image into an XSAVE area's legacy region and marks x87 and SSE state as
    /// present (XSTATE_BV bits 0 and 1), leaving the area's other components as they are.
    public func store(into x: inout kvm_xsave) {
        withUnsafeMutableBytes(of: &x.region) { dst in
            let mask = dst.loadUnaligned(fromByteOffset: 28, as: UInt32.self)
            fxsave.withUnsafeBytes { dst.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: 416) }
            dst.storeBytes(of: mask, toByteOffset: 28, as: UInt32.self)   // the host's, as KVM expects
            let bv = dst.loadUnaligned(fromByteOffset: 512, as: UInt64.self)
            dst.storeBytes(of: bv | 3, toByteOffset: 512, as: UInt64.self)
        }
    }

    /// kvm_fpu holds the FXSAVE image's fields in its own order: fpr[8][16], fcw, fsw, ftw, pad,
    /// last_opcode, last_ip, last_dp, xmm[16][16], mxcsr.
    /// Writes kvm_fpu's fields into the FXSAVE image in place.
    public mutating func apply(fpu f: kvm_fpu) {
        var f = f
        withUnsafeBytes(of: &f) { k in
            fxsave.withUnsafeMutableBytes { d in
                func copy(_ from: Int, _ to: Int, _ n: Int) {
                    (d.baseAddress! + to).copyMemory(from: k.baseAddress! + from, byteCount: n)
                }
                copy(KVMFPULayout.fcw, 0, 2)
                copy(KVMFPULayout.fsw, 2, 2)
                copy(KVMFPULayout.ftw, 4, 1)
                d[5] = 0
                copy(KVMFPULayout.lastOpcode, 6, 2)
                copy(KVMFPULayout.lastIP, 8, 8)
                copy(KVMFPULayout.lastDP, 16, 8)
                copy(KVMFPULayout.mxcsr, 24, 4)
                d.storeBytes(of: UInt32(0xFFFF), toByteOffset: 28, as: UInt32.self)   // MXCSR_MASK
                copy(KVMFPULayout.fpr, 32, 128)
                copy(KVMFPULayout.xmm, 160, 256)
            }
        }
    }

    public var kvmFPU: kvm_fpu {
        var f = kvm_fpu()
        withUnsafeMutableBytes(of: &f) { k in
            fxsave.withUnsafeBytes { s in
                func copy(_ from: Int, _ to: Int, _ n: Int) {
                    (k.baseAddress! + to).copyMemory(from: s.baseAddress! + from, byteCount: n)
                }
                copy(0, KVMFPULayout.fcw, 2)
                copy(2, KVMFPULayout.fsw, 2)
                copy(4, KVMFPULayout.ftw, 1)
                copy(6, KVMFPULayout.lastOpcode, 2)
                copy(8, KVMFPULayout.lastIP, 8)
                copy(16, KVMFPULayout.lastDP, 8)
                copy(24, KVMFPULayout.mxcsr, 4)
                copy(32, KVMFPULayout.fpr, 128)
                copy(160, KVMFPULayout.xmm, 256)
            }
        }
        return f
    }

    public mutating func apply(events e: kvm_vcpu_events) {
        events.interruptShadow = e.interrupt.shadow != 0
        events.nmiMasked = e.nmi.masked != 0
        events.nmiPending = e.nmi.pending != 0
        if e.exception.injected != 0 || e.exception.pending != 0 {
            events.exception = PendingException(vector: e.exception.nr,
                                                errorCode: e.exception.has_error_code != 0 ? e.exception.error_code : nil)
        } else {
            events.exception = nil
        }
        events.interrupt = e.interrupt.injected != 0 ? e.interrupt.nr : nil
    }

    /// Writes the events this state carries; KVM's other fields (SMM, payloads) are left alone.
    public func store(into e: inout kvm_vcpu_events) {
        e.interrupt.shadow = events.interruptShadow ? UInt8(truncatingIfNeeded: KVM_X86_SHADOW_INT_STI) : 0
        e.nmi.masked = events.nmiMasked ? 1 : 0
        e.nmi.pending = events.nmiPending ? 1 : 0
        e.nmi.injected = 0
        if let x = events.exception {
            e.exception.injected = 1
            e.exception.pending = 0
            e.exception.nr = x.vector
            e.exception.has_error_code = x.errorCode != nil ? 1 : 0
            e.exception.error_code = x.errorCode ?? 0
        } else {
            e.exception.injected = 0
            e.exception.pending = 0
        }
        e.interrupt.injected = events.interrupt != nil ? 1 : 0
        e.interrupt.nr = events.interrupt ?? 0
        e.interrupt.soft = 0
        e.flags = UInt32(bitPattern: KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW)
    }

    public mutating func apply(debugRegs d: kvm_debugregs) {
        dr[0] = d.db.0; dr[1] = d.db.1; dr[2] = d.db.2; dr[3] = d.db.3
        dr6 = d.dr6
        dr7 = d.dr7
    }

    public var kvmDebugRegs: kvm_debugregs {
        var d = kvm_debugregs()
        d.db = (dr[0], dr[1], dr[2], dr[3])
        d.dr6 = dr6
        d.dr7 = dr7
        return d
    }
}

/// Byte offsets of kvm_fpu's fields (linux/kvm.h, x86).
enum KVMFPULayout {
    static let fpr = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.fpr)!
    static let fcw = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.fcw)!
    static let fsw = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.fsw)!
    static let ftw = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.ftwx)!
    static let lastOpcode = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.last_opcode)!
    static let lastIP = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.last_ip)!
    static let lastDP = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.last_dp)!
    static let xmm = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.xmm)!
    static let mxcsr = MemoryLayout<kvm_fpu>.offset(of: \kvm_fpu.mxcsr)!
}
