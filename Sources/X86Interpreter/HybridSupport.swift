import CPUBackend

// What another CPU needs from the software CPU to share a guest with it (the hybrid backend runs
// guest user code on KVM and everything else here): the architectural state as a value, a stop
// when the guest changes privilege level, the I/O-permission check, physical accesses for MMIO a
// native CPU could not complete, a host-derived TSC, and a watch on guest page-table pages.
// The hooks cost one predictable branch in `updateMode` and in code-page bookkeeping when unused.

/// Bits of `codePages` (per physical page, `SharedCode`): bit 0 decoded code is cached for the page,
/// bit 1 the page is a watched guest page table, bit 2 another CPU verified its code. Any makes guest
/// writes to the page take the slow path; a write clears them all (`SharedCode.invalidate`).
enum PageMark {
    static let code: UInt8 = 1
    static let watchedTable: UInt8 = 2
    /// Checked by another CPU as code it may run (see `markVerifiedCode`).
    static let verifiedCode: UInt8 = 4
}

/// The hybrid hooks' state, one per interpreter.
struct HybridHooks {
    /// Set while an observer is installed; `updateMode` checks only this.
    var active = false
    /// Whether the CPU was at CPL 3 at the last mode update.
    var wasUser = false
    /// Called on every change into (true) or out of (false) CPL 3; returning true stops the run
    /// loop after the current instruction.
    var privilegeObserver: ((Bool) -> Bool)?
    /// Watched page-table pages written since the watch was last armed (each listed once).
    var writtenTables: [Int32] = []
    /// Pages that newly hold decoded code, for an observer that must know which pages another
    /// CPU may not write behind our back.
    var newCodePages: [Int32] = []
    var trackNewCodePages = false
    /// User code executed an instruction whose result differs between CPU models (see
    /// `noteModelSpecificResult`) since the flag was last taken.
    var sawModelSpecificResult = false
    /// Pages marked `verifiedCode` whose content changed since (each listed once).
    var changedVerifiedCode: [Int32] = []
}

extension X86Interpreter {
    // MARK: Architectural state

    /// The complete architectural state (see `X86ArchState`).
    public func exportArchState() -> X86ArchState {
        var s = X86ArchState()
        exportArchState(into: &s, includeMSRs: true)
        return s
    }

    /// Fills `s` in place (no allocation when `s` is reused). Without `includeMSRs` the MSR list is
    /// left as it is: for a caller that knows MSRs have not changed.
    public func exportArchState(into s: inout X86ArchState, includeMSRs: Bool) {
        s.version = X86ArchState.formatVersion
        for i in 0..<16 { s.gpr[i] = gpr(i) }
        s.rip = rip
        s.rflags = rflags
        for i in 0..<6 { s[segment: i] = segs[i].state }
        s.ldtr = st.pointee.ldtr.state
        s.tr = st.pointee.tr.state
        s.gdt = DescriptorTableState(base: st.pointee.gdtBase, limit: UInt16(truncatingIfNeeded: st.pointee.gdtLimit))
        s.idt = DescriptorTableState(base: st.pointee.idtBase, limit: UInt16(truncatingIfNeeded: st.pointee.idtLimit))
        s.cr0 = st.pointee.cr0
        s.cr2 = st.pointee.cr2
        s.cr3 = st.pointee.cr3
        s.cr4 = st.pointee.cr4
        s.cr8 = UInt64(apic.tpr >> 4)
        s.efer = st.pointee.efer
        s.apicBase = apic.baseMSR
        s.dr[0] = st.pointee.dr.0; s.dr[1] = st.pointee.dr.1; s.dr[2] = st.pointee.dr.2; s.dr[3] = st.pointee.dr.3
        s.dr6 = st.pointee.dr6
        s.dr7 = st.pointee.dr7
        s.events.interruptShadow = st.pointee.interruptShadow
        s.events.halted = st.pointee.halted
        s.events.nmiMasked = false
        s.events.nmiPending = false
        s.events.exception = nil
        s.events.interrupt = nil
        exportFXSave(into: &s.fxsave)
        if includeMSRs {
            s.msrs.removeAll(keepingCapacity: true)
            for index in X86ArchState.architecturalMSRs {
                if index == 0xC000_0103 { s.msrs.append(MSRValue(index, st.pointee.tscAux)); continue }
                if let v = try? readMSR(index) { s.msrs.append(MSRValue(index, v)) }
            }
        }
    }

    /// Loads a complete architectural state. Throws if it holds something this CPU cannot run
    /// (a control-register or EFER bit it does not implement, a malformed value).
    public func importArchState(_ s: X86ArchState) throws(ArchStateError) {
        try importArchState(s, includeMSRs: true)
    }

    public func importArchState(_ s: X86ArchState, includeMSRs: Bool) throws(ArchStateError) {
        try s.validate()
        if s.cr4 & ~CR4.allowed != 0 {
            throw .rejected("CR4 bits 0x\(String(s.cr4 & ~CR4.allowed, radix: 16)) are not implemented by the interpreter")
        }
        if s.efer & ~EFER.allowed != 0 {
            throw .rejected("EFER bits 0x\(String(s.efer & ~EFER.allowed, radix: 16)) are not implemented by the interpreter")
        }
        if s.cr8 > 15 { throw .rejected("CR8 0x\(String(s.cr8, radix: 16)) is above 15") }
        for i in 0..<16 { setGPR(i, s.gpr[i]) }
        rip = s.rip
        setRFlags(s.rflags)
        for i in 0..<6 { segs[i] = SegmentCache(s[segment: i]) }
        st.pointee.ldtr = SegmentCache(s.ldtr)
        st.pointee.tr = SegmentCache(s.tr)
        st.pointee.gdtBase = s.gdt.base; st.pointee.gdtLimit = UInt32(s.gdt.limit)
        st.pointee.idtBase = s.idt.base; st.pointee.idtLimit = UInt32(s.idt.limit)
        st.pointee.cr0 = s.cr0 | CR0.et
        st.pointee.cr2 = s.cr2
        st.pointee.cr3 = s.cr3
        st.pointee.cr4 = s.cr4
        st.pointee.efer = s.efer
        apic.tpr = UInt32(truncatingIfNeeded: s.cr8) << 4
        st.pointee.dr = (s.dr[0], s.dr[1], s.dr[2], s.dr[3])
        st.pointee.dr6 = s.dr6
        st.pointee.dr7 = s.dr7
        st.pointee.interruptShadow = s.events.interruptShadow
        st.pointee.halted = s.events.halted
        importFXSave(s.fxsave)
        if includeMSRs {
            if s.apicBase != apic.baseMSR {
                do { try writeMSR(MSR.apicBase, s.apicBase) } catch {
                    throw .rejected("APIC base 0x\(String(s.apicBase, radix: 16))")
                }
            }
            for m in s.msrs {
                if m.index == 0xC000_0103 { st.pointee.tscAux = m.value & 0xFFFF_FFFF; continue }
                guard X86ArchState.architecturalMSRs.contains(m.index) else {
                    throw .rejected("MSR 0x\(String(m.index, radix: 16)) is not part of the architectural state")
                }
                do { try writeMSR(m.index, m.value) } catch {
                    throw .rejected("MSR 0x\(String(m.index, radix: 16)) = 0x\(String(m.value, radix: 16))")
                }
            }
        }
        // CPL is CS.RPL in protected mode (SS.DPL would also do; they agree in any sane state).
        st.pointee.cpl = s.cr0 & CR0.pe != 0 ? Int(s.cs.selector & 3) : 0
        if s.rflags & Flag.vm != 0 { st.pointee.cpl = 3 }
        st.pointee.shutdown = false
        st.pointee.eventCheck = true
        updateMode()
        finishSegmentLoad(Seg.ss)
        flushTLB(keepGlobal: false)
    }

    /// Loads what user-mode code can change (general registers, RIP, RFLAGS, segment registers,
    /// x87/SSE state, the interrupt shadow) after another CPU ran user code from a state this CPU
    /// exported. Control registers, descriptor tables, debug registers and MSRs stay as they are:
    /// CPL 3 code cannot change them. RFLAGS.RF is cleared (it is an artefact of the other CPU's
    /// attempt to deliver the exception that ended its run; this CPU delivers that exception itself).
    public func importUserModeState(_ s: X86ArchState) {
        for i in 0..<16 { setGPR(i, s.gpr[i]) }
        rip = s.rip
        setRFlags(s.rflags & ~Flag.rf)
        for i in 0..<6 { segs[i] = SegmentCache(s[segment: i]) }
        importFXSave(s.fxsave)
        st.pointee.interruptShadow = s.events.interruptShadow
        st.pointee.cpl = Int(s.cs.selector & 3)
        st.pointee.eventCheck = true
        updateMode()
        finishSegmentLoad(Seg.ss)
    }

    /// Delivers a trap another CPU took after completing an instruction (RIP is past it): INT3 and
    /// INTO as software interrupts, INT1 and single-step as debug exceptions.
    public func deliverTrap(vector: UInt8, singleStep: Bool) {
        if singleStep { st.pointee.dr6 |= 0x4000 }
        deliverEvent(vector: Int(vector), kind: vector == 1 ? .exception : .software)
    }

    /// Reads `count` bytes at linear address `la` with the current privilege's permissions, without
    /// side effects a guest could see (a fault is not raised and CR2 is kept). Nil if unmapped.
    public func peekLinear(_ la: UInt64, count: Int) -> [UInt8]? {
        let savedCR2 = st.pointee.cr2
        defer { st.pointee.cr2 = savedCR2 }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        var i = 0
        while i < count {
            let a = (la &+ UInt64(truncatingIfNeeded: i)) & st.pointee.linearMask
            guard let pa = try? translate(a, .read, user: st.pointee.cpl == 3) else { return nil }
            let n = min(count - i, 4096 - Int(a & 0xFFF))
            guard let q = memory.hostPointer(pa, length: UInt64(truncatingIfNeeded: n)) else { return nil }
            out.append(contentsOf: UnsafeRawBufferPointer(start: q, count: n))
            i += n
        }
        return out
    }

    /// Long mode is active (EFER.LMA).
    public var longModeActive: Bool { isLongMode }
    /// DR7 (breakpoint enables).
    public var debugControl: UInt64 { st.pointee.dr7 }
    /// Interrupts are inhibited until after the next instruction.
    public var interruptShadowActive: Bool { st.pointee.interruptShadow }

    /// The FXSAVE64 image: registers rotate from physical order (ours) to ST(i) order (the image's).
    func exportFXSave(into image: inout [UInt8]) {
        let top = Int((fsw >> 11) & 7)
        image.withUnsafeMutableBytes { dst in
            dst.copyMemory(from: UnsafeRawBufferPointer(start: fx, count: 512))
            for i in 0..<8 {
                (dst.baseAddress! + FX.st0 + 16 * i).copyMemory(from: fx + FX.st0 + 16 * ((top + i) & 7), byteCount: 16)
            }
            // MXCSR_MASK as FXSAVE reports it.
            dst.storeBytes(of: FX.mxcsrMaskValue, toByteOffset: FX.mxcsrMask, as: UInt32.self)
        }
    }

    func importFXSave(_ image: [UInt8]) {
        image.withUnsafeBytes { src in
            let top = Int((src.loadUnaligned(fromByteOffset: FX.fsw, as: UInt16.self) >> 11) & 7)
            fx.copyMemory(from: src.baseAddress!, byteCount: 512)
            for i in 0..<8 {
                (fx + FX.st0 + 16 * ((top + i) & 7)).copyMemory(from: src.baseAddress! + FX.st0 + 16 * i, byteCount: 16)
            }
            fx.storeBytes(of: FX.mxcsrMaskValue, toByteOffset: FX.mxcsrMask, as: UInt32.self)
        }
    }

    // MARK: Privilege changes

    /// Installs (or removes, with nil) the observer called when the CPU enters or leaves CPL 3.
    /// Returning true from it stops `run(io:control:maxInstructions:)` after the instruction that
    /// changed the level (returns nil, as when the budget runs out).
    public func setPrivilegeObserver(_ observer: ((_ enteringUser: Bool) -> Bool)?) {
        hybrid.privilegeObserver = observer
        hybrid.active = observer != nil
        hybrid.wasUser = st.pointee.cpl == 3
    }

    /// Called at the end of `updateMode` while an observer is installed.
    @inline(never)
    func privilegeChanged() {
        let user = st.pointee.cpl == 3
        guard user != hybrid.wasUser else { return }
        hybrid.wasUser = user
        if let o = hybrid.privilegeObserver, o(user) { st.pointee.testStop = true }
    }

    /// Called by instructions whose exact result is implementation-specific (the SSE reciprocal
    /// estimates, x87 transcendentals): this CPU gives QEMU's bits, a hardware CPU its own. A CPU
    /// sharing the guest keeps such user code in software to stay deterministic.
    @inline(__always)
    func noteModelSpecificResult() {
        if st.pointee.cpl == 3 { hybrid.sawModelSpecificResult = true }
    }

    /// Whether user code executed a model-specific-result instruction since the last call.
    public func takeModelSpecificResultFlag() -> Bool {
        defer { hybrid.sawModelSpecificResult = false }
        return hybrid.sawModelSpecificResult
    }

    // MARK: Interrupts and timers between backends

    /// Polls host requests, posted work and timers as the run loop does between blocks. Returns a
    /// stop reason if the host asked the VM to stop.
    public func serviceEvents(control: VMControl) -> VcpuStop? {
        poll(control)
    }

    /// True when an external interrupt would be delivered before the next instruction.
    public var interruptDeliverable: Bool {
        // MSIs arrive by the APIC bus's inbox (from any thread).
        if inbox.hasMail.load(ordering: .relaxed) { takeMail() }
        guard st.pointee.flagsRest & Flag.if != 0, !st.pointee.interruptShadow else { return false }
        if apic.pendingVector() != nil { return true }
        if apic.acceptsExtINT, let ext = system.devices.externalInterrupts,
           system.devices.withLock({ ext.interruptPending }) { return true }
        return false
    }

    /// The earliest timer deadline of the interpreter's devices and LAPIC (VM clock ns), if any.
    public var nextTimerDeadline: UInt64? { nextDeadline }

    // MARK: I/O on behalf of another CPU

    /// Whether the current privilege level, IOPL and TSS I/O bitmap allow a port access (IN/OUT
    /// from user mode on a CPU that does not check them itself).
    public func ioPermitted(port: UInt16, size: Int) -> Bool {
        do { try checkIOPermission(port: port, size: size); return true } catch { return false }
    }

    /// A physical read as the CPU would make it: RAM, the local APIC, or the machine's MMIO.
    public func physicalRead(_ address: UInt64, size: Int, io: IOHandler) -> UInt64 {
        self.io = io
        defer { self.io = nil }
        return physRead(address, size)
    }

    public func physicalWrite(_ address: UInt64, size: Int, value: UInt64, io: IOHandler) {
        self.io = io
        defer { self.io = nil }
        physWrite(address, size, value)
    }

    // MARK: Time stamp counter

    /// Makes RDTSC and the TSC MSR count `source()` (plus the guest's offset) instead of the VM
    /// clock's nanoseconds, advertising `hz` in CPUID leaf 0x15: for sharing the guest with a CPU
    /// whose RDTSC reads the host's counter.
    public func useHostTSC(_ source: @escaping () -> UInt64, hz: UInt64) {
        tscSource = source
        tscHzOverride = hz
    }

    /// CPUID.15H's TSC/crystal ratio (numerator, denominator) for a TSC of `hz` with the 1 GHz
    /// crystal that also clocks the local APIC timer. Linux multiplies the crystal's kHz by the
    /// numerator in 32 bits, so the numerator stays below 2^32 / 10^6: the best fraction under
    /// that bound (continued fractions; about 1 ppm for a few-GHz TSC).
    static func tscCrystalRatio(hz: UInt64) -> (UInt32, UInt32) {
        let limit: UInt64 = 4294
        let target = Double(hz) / Double(X86Interpreter.tscHz)
        var best: (UInt64, UInt64) = (max(1, min(limit, UInt64(target.rounded()))), 1)
        // Convergents h/k of the continued fraction of hz / 1e9.
        var (h0, h1): (UInt64, UInt64) = (0, 1)
        var (k0, k1): (UInt64, UInt64) = (1, 0)
        var (n, d) = (hz, UInt64(X86Interpreter.tscHz))
        while d != 0 {
            let q = n / d
            let (h2, k2) = (q &* h1 &+ h0, q &* k1 &+ k0)
            if h2 > limit || k2 > limit || h2 == 0 || k2 == 0 { break }
            best = (h2, k2)
            (h0, h1, k0, k1) = (h1, h2, k1, k2)
            (n, d) = (d, n % d)
        }
        return (UInt32(truncatingIfNeeded: best.0), UInt32(truncatingIfNeeded: best.1))
    }

    // MARK: Page-table and code-page watch

    /// Guest-physical pages (as page numbers) of watched page tables written since their watch
    /// was armed; `armPageTableWatch` clears it.
    public var writtenPageTables: [Int32] {
        takeClearedWatches()
        return hybrid.writtenTables
    }

    /// Marks pages as watched page tables: the next guest write to each (through this CPU or by
    /// DMA) is recorded in `writtenPageTables`, after which the page is unwatched until armed again.
    public func armPageTableWatch<S: Sequence>(_ pages: S) where S.Element == Int32 {
        takeClearedWatches()
        hybrid.writtenTables.removeAll(keepingCapacity: true)
        system.code.watch(pages, mark: PageMark.watchedTable)
    }

    /// Stops watching every page.
    public func clearPageTableWatch() {
        system.code.unwatch(mark: PageMark.watchedTable)
        takeClearedWatches()
        hybrid.writtenTables.removeAll(keepingCapacity: true)
    }

    /// Moves the watch marks writes cleared (on this CPU or by DMA on a device thread, recorded by
    /// `SharedCode`) into the lists the hybrid backend reads.
    func takeClearedWatches() {
        for (page, marks) in system.code.takeClearedWatches() {
            if marks & PageMark.watchedTable != 0 { hybrid.writtenTables.append(page) }
            if marks & PageMark.verifiedCode != 0 { hybrid.changedVerifiedCode.append(page) }
        }
    }

    /// Marks pages whose code another CPU checked: the next write to each through this CPU or by
    /// DMA is recorded (see `takeChangedVerifiedCode`) and clears the mark.
    public func markVerifiedCode(_ pages: [Int32]) {
        system.code.watch(pages, mark: PageMark.verifiedCode)
    }

    /// Verified pages written since they were marked.
    public func takeChangedVerifiedCode() -> [Int32] {
        takeClearedWatches()
        defer { hybrid.changedVerifiedCode.removeAll(keepingCapacity: true) }
        return hybrid.changedVerifiedCode
    }

    /// Whether 64-bit code in `bytes` (a page) contains an instruction whose result depends on the
    /// CPU model (SSE reciprocal estimates, x87 transcendentals), decoding linearly from its start:
    /// x86 decoding falls back into step within a few instructions when a page starts inside one.
    public static func containsModelSpecificInstruction(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard let raw = bytes.baseAddress else { return false }
        let base = raw.assumingMemoryBound(to: UInt8.self)
        var off = 0
        while off < bytes.count {
            var dec = Decoder(bytes: base + off, available: bytes.count - off, codeSize: 2)
            guard let d = try? dec.decode() else { off += 1; continue }
            if isModelSpecific(d) { return true }
            off += max(Int(d.len), 1)
        }
        return false
    }

    static func isModelSpecific(_ d: DecodedInsn) -> Bool {
        switch d.op {
        case .x87:
            let modrm = UInt8(truncatingIfNeeded: d.imm)
            return (d.imm >> 8) & 0xFF == 0xD9 && !d.mem && modrm >= 0xF0 && (0xCA0F >> (modrm & 15)) & 1 != 0
        case .sse:
            let op = UInt8(truncatingIfNeeded: d.imm >> 8)
            return (op == 0x52 || op == 0x53) && d.pfx & (Pfx.opsize | Pfx.repne) == 0
        default:
            return false
        }
    }

    /// Called when a page first gets decoded code.
    @inline(__always)
    func noteCodePageDecoded(_ page: Int) {
        if hybrid.trackNewCodePages { hybrid.newCodePages.append(Int32(truncatingIfNeeded: page)) }
    }

    /// Starts (or stops) recording pages that newly hold decoded code; see `takeNewCodePages`.
    public func trackNewCodePages(_ on: Bool) {
        hybrid.trackNewCodePages = on
        hybrid.newCodePages.removeAll()
    }

    /// Pages that got decoded code since the last call, and whether each still has it.
    public func takeNewCodePages() -> [Int32] {
        let pages = hybrid.newCodePages
        hybrid.newCodePages.removeAll(keepingCapacity: true)
        return pages
    }

    /// Whether decoded code is cached for guest-physical page `page`.
    public func hasDecodedCode(page: Int) -> Bool {
        page >= 0 && page < physPages && codePages[page] & PageMark.code != 0
    }

    /// The guest-physical page count the code and watch marks cover.
    public var physicalPageCount: Int { physPages }
}

extension SegmentCache {
    init(_ s: SegmentState) {
        let present = s.present && !s.unusable
        self.init(selector: s.selector, base: s.base, limit: s.limit,
                  attr: UInt16(s.type & 0xF) | (s.s ? 0x10 : 0) | UInt16(s.dpl & 3) << 5 | (present ? 0x80 : 0)
                      | (s.avl ? 0x1000 : 0) | (s.l ? 0x2000 : 0) | (s.db ? 0x4000 : 0) | (s.g ? 0x8000 : 0))
    }

    var state: SegmentState {
        SegmentState(selector: selector, base: base, limit: limit, type: type, present: present, dpl: UInt8(truncatingIfNeeded: dpl),
                     db: db, s: s, l: l, g: attr & 0x8000 != 0, avl: attr & 0x1000 != 0, unusable: !present)
    }
}
