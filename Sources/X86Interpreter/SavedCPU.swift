import VMCore

extension X86Interpreter {
    /// A segment register with its hidden part, as the interpreter caches it.
    public struct SavedSegment: Codable, Equatable, Sendable {
        public var selector: UInt16
        public var base: UInt64
        /// Byte-granular limit.
        public var limit: UInt32
        /// VMX access-rights layout: type, S, DPL, P, AVL, L, D/B, G.
        public var attr: UInt16
    }

    /// Everything the software CPU needs to continue from an instruction boundary, as a value: the
    /// `cpu` section of a snapshot taken on the interpreter. Derived state (the CPU mode, effective
    /// segment bases, TLBs, decoded and translated code) is rebuilt on restore, never saved.
    ///
    /// Interim: issue 13's architectural-state value (shared with KVM) replaces the fields up to
    /// `fxsave` when it lands, so that a snapshot can move between backends; the local APIC stays
    /// beside it.
    public struct SavedCPU: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = SavedCPU.currentVersion
        /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15.
        public var gpr: [UInt64]
        public var rip: UInt64
        public var rflags: UInt64
        /// ES, CS, SS, DS, FS, GS.
        public var segments: [SavedSegment]
        public var ldtr: SavedSegment, tr: SavedSegment
        public var gdtBase: UInt64, gdtLimit: UInt32, idtBase: UInt64, idtLimit: UInt32
        public var cpl: Int
        public var cr0: UInt64, cr2: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64
        /// DR0-DR3, then DR6 and DR7.
        public var dr: [UInt64]
        public var dr6: UInt64, dr7: UInt64
        public var star: UInt64, lstar: UInt64, cstar: UInt64, sfmask: UInt64, kernelGSBase: UInt64
        public var sysenterCS: UInt64, sysenterESP: UInt64, sysenterEIP: UInt64
        public var pat: UInt64, miscEnable: UInt64, tscAux: UInt64, mtrrDefType: UInt64
        /// The guest TSC minus the VM clock (ns): with the VM clock restored, the TSC reads on.
        public var tscOffset: UInt64
        /// MTRR MSRs the guest wrote, by index.
        public var mtrrs: [UInt32: UInt64]
        /// x87, MMX and SSE in the 512-byte FXSAVE layout.
        public var fxsave: [UInt8]
        public var halted: Bool
        public var interruptShadow: Bool
        public var localAPIC: LocalAPICState
    }

    /// The CPU's state between two instructions (call on the vCPU thread while it does not run).
    public var savedCPU: SavedCPU {
        let s = st.pointee
        func seg(_ c: SegmentCache) -> SavedSegment {
            SavedSegment(selector: c.selector, base: c.base, limit: c.limit, attr: c.attr)
        }
        return SavedCPU(
            gpr: (0..<16).map { gpr($0) }, rip: rip, rflags: rflags,
            segments: (0..<6).map { seg(segs[$0]) }, ldtr: seg(s.ldtr), tr: seg(s.tr),
            gdtBase: s.gdtBase, gdtLimit: s.gdtLimit, idtBase: s.idtBase, idtLimit: s.idtLimit, cpl: s.cpl,
            cr0: s.cr0, cr2: s.cr2, cr3: s.cr3, cr4: s.cr4, efer: s.efer,
            dr: [s.dr.0, s.dr.1, s.dr.2, s.dr.3], dr6: s.dr6, dr7: s.dr7,
            star: s.star, lstar: s.lstar, cstar: s.cstar, sfmask: s.sfmask, kernelGSBase: s.kernelGSBase,
            sysenterCS: s.sysenterCS, sysenterESP: s.sysenterESP, sysenterEIP: s.sysenterEIP,
            pat: s.pat, miscEnable: s.miscEnable, tscAux: s.tscAux, mtrrDefType: s.mtrrDefType,
            tscOffset: s.tscOffset, mtrrs: mtrrs,
            fxsave: [UInt8](UnsafeRawBufferPointer(start: fx, count: 512)),
            halted: s.halted, interruptShadow: s.interruptShadow, localAPIC: localAPICState)
    }

    /// Continues from a saved state. Every field is checked before anything changes, so a
    /// refused state leaves the CPU as it was; values the interpreter could never hold (a forged
    /// or damaged snapshot) are refused rather than clipped.
    public func restoreCPU(_ c: SavedCPU) throws(DeviceStateError) {
        let name = "CPU"
        try c.checkVersion(device: name)
        func bad(_ why: String) -> DeviceStateError { .invalid(device: name, reason: why) }
        guard c.gpr.count == 16, c.segments.count == 6, c.dr.count == 4 else {
            throw bad("needs 16 general registers, 6 segment registers and 4 debug address registers")
        }
        guard c.fxsave.count == 512 else { throw bad("the FXSAVE image has \(c.fxsave.count) bytes, not 512") }
        guard (0...3).contains(c.cpl) else { throw bad("CPL \(c.cpl) is not 0-3") }
        guard c.cr4 & ~CR4.allowed == 0 else { throw bad("CR4 0x\(String(c.cr4, radix: 16)) has bits this CPU lacks") }
        guard c.efer & ~EFER.allowed == 0 else { throw bad("EFER 0x\(String(c.efer, radix: 16)) has bits this CPU lacks") }
        guard c.cr0 & CR0.pg == 0 || c.cr0 & CR0.pe != 0 else { throw bad("CR0 enables paging without protection") }
        guard c.mtrrs.keys.allSatisfy({ (0x200...0x20F).contains($0) || [0x250, 0x258, 0x259].contains($0)
                                        || (0x268...0x26F).contains($0) }) else {
            throw bad("an MTRR index is not an MTRR")
        }
        try restoreLocalAPIC(c.localAPIC)

        for i in 0..<16 { setGPR(i, c.gpr[i]) }
        rip = c.rip
        setRFlags(c.rflags)
        func cache(_ s: SavedSegment) -> SegmentCache {
            SegmentCache(selector: s.selector, base: s.base, limit: s.limit, attr: s.attr)
        }
        for i in 0..<6 { segs[i] = cache(c.segments[i]) }
        st.pointee.ldtr = cache(c.ldtr)
        st.pointee.tr = cache(c.tr)
        st.pointee.gdtBase = c.gdtBase; st.pointee.gdtLimit = c.gdtLimit
        st.pointee.idtBase = c.idtBase; st.pointee.idtLimit = c.idtLimit
        st.pointee.cpl = c.cpl
        (st.pointee.cr0, st.pointee.cr2, st.pointee.cr3, st.pointee.cr4, st.pointee.efer) =
            (c.cr0 | CR0.et, c.cr2, c.cr3, c.cr4, c.efer)
        st.pointee.dr = (c.dr[0], c.dr[1], c.dr[2], c.dr[3])
        (st.pointee.dr6, st.pointee.dr7) = (c.dr6, c.dr7)
        (st.pointee.star, st.pointee.lstar, st.pointee.cstar, st.pointee.sfmask) = (c.star, c.lstar, c.cstar, c.sfmask)
        st.pointee.kernelGSBase = c.kernelGSBase
        (st.pointee.sysenterCS, st.pointee.sysenterESP, st.pointee.sysenterEIP) = (c.sysenterCS, c.sysenterESP, c.sysenterEIP)
        (st.pointee.pat, st.pointee.miscEnable, st.pointee.tscAux) = (c.pat, c.miscEnable, c.tscAux)
        st.pointee.mtrrDefType = c.mtrrDefType
        st.pointee.tscOffset = c.tscOffset
        mtrrs = c.mtrrs
        c.fxsave.withUnsafeBytes { fx.copyMemory(from: $0.baseAddress!, byteCount: 512) }
        st.pointee.halted = c.halted
        st.pointee.interruptShadow = c.interruptShadow
        st.pointee.shutdown = false
        st.pointee.pendingFault = false
        st.pointee.deliveringVector = -1
        st.pointee.eventCheck = true
        // updateMode derives CPL 0 in real mode; elsewhere it keeps the saved one.
        updateMode()
        flushTLB(keepGlobal: false)
    }
}
