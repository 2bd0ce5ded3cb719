import CHostCPU
import CKVM
import CPUBackend
import Glibc
import KVM
import VMMemory
import X86Interpreter

/// What the hybrid backend did, for `--boot-timer`, benchmarks and tests.
public struct HybridStatistics: Sendable, Equatable {
    /// Hand-overs from the software CPU to KVM.
    public var nativeEntries = 0
    /// Wall time spent inside KVM_RUN.
    public var nativeNs: UInt64 = 0
    /// Exits that returned to the software CPU, by cause.
    public var syscalls = 0, faults = 0, traps = 0, interrupts = 0, deniedIO = 0, otherExits = 0
    /// Exits handled without leaving native mode.
    public var portIO = 0, mmio = 0, spuriousKicks = 0
    /// KVM shadow page tables dropped because the guest changed a page table (see PageTableCoherence).
    public var shadowZaps = 0
    /// Host time spent dropping shadow page tables, keeping page tables and code pages coherent
    /// (comparing, scanning, checking code), and moving state in and out of KVM.
    public var zapNs: UInt64 = 0, coherenceNs: UInt64 = 0, handoverNs: UInt64 = 0
    /// Pages of decoded code dropped because native user code wrote them.
    public var codeInvalidations = 0
    /// User code pages decoded to check for model-specific instructions (CodeVerifier).
    public var pagesChecked = 0
    /// Why native execution was switched off for good, if it was.
    public var disabledReason: String?

    public var summary: String {
        func ms(_ ns: UInt64) -> UInt64 { ns / 1_000_000 }
        var s = "hybrid: \(nativeEntries) native runs (\(ms(nativeNs)) ms in KVM_RUN, \(ms(handoverNs)) ms handing over, "
            + "\(ms(coherenceNs)) ms coherence checks, \(ms(zapNs)) ms zapping); back to software on "
            + "\(syscalls) syscalls, \(faults) faults, \(traps) traps, \(interrupts) interrupts, "
            + "\(deniedIO) denied I/O, \(otherExits) other; handled natively: \(portIO) port I/O, \(mmio) MMIO, "
            + "\(spuriousKicks) spurious kicks; \(shadowZaps) shadow-MMU zaps; \(codeInvalidations) code pages invalidated; \(pagesChecked) code pages checked"
        if let r = disabledReason { s += "; native execution disabled: \(r)" }
        return s
    }
}

/// Guest kernel code on the software CPU, guest user code on KVM (the classic split of VMware's
/// original VMM, for hosts whose KVM runs user code natively but emulates the kernel slowly: kvm-pvm).
///
/// The software CPU is the ground truth: it runs everything until the guest returns to user mode
/// and the policy (HybridPolicy) wants native execution. Then the complete user-mode state goes to
/// KVM, KVM_RUN runs until an exit, the state comes back, and the software CPU carries on at the
/// instruction KVM stopped at: it executes the faulting instruction or SYSCALL again, raising the
/// same exception or system call, or delivers the trap or interrupt. Port I/O allowed by IOPL or
/// the TSS bitmap and MMIO are completed without leaving KVM.
public final class HybridBackend: VcpuBackend {
    public let name = "hybrid"
    public let interpreter: X86Interpreter
    let native: NativeVcpu
    let clock: VirtualClock
    let policy: HybridPolicy
    let coherence: PageTableCoherence
    let codeWrites: CodeWriteTracker
    let verifier: CodeVerifier
    public private(set) var statistics = HybridStatistics()

    /// The signal that ends KVM_RUN (SIGUSR1 is the KVM backend's).
    public static let kickSignal = SIGUSR2

    private var kick: KickSignal?
    private weak var kickedControl: VMControl?
    /// Reused for every hand-over (no allocation on the way).
    private var transfer = X86ArchState()
    /// The FXSAVE image KVM holds, to skip KVM_SET_XSAVE when the software CPU did not change it.
    private var kvmFX = [UInt8](repeating: 0, count: 512)
    private var kvmFXKnown = false
    /// KVM's XSAVE area as last read (x87/SSE go through it: KVM_GET_FPU loses MXCSR on kvm-pvm).
    private var xsave = kvm_xsave()
    /// The user-mode episode being measured for the policy (instructions retired at its start).
    private var userEntryInstructions: UInt64 = 0
    /// The shortest recent KVM_RUN: what an exit costs with no guest work, subtracted from native
    /// episodes before the policy sees them.
    private var exitCostNs: Double = 1e9
    private var userSpace: UInt64 = 0
    /// The next exit from user mode ends a native episode's software tail: not a software sample.
    private var ignoreNextUserExit = false
    private var failedNativeRuns = 0
    /// SWHV_HYBRID_TRACE=1: one line per hand-over on stderr (for debugging the backend).
    private let trace = getenv("SWHV_HYBRID_TRACE") != nil

    private func traceLine(_ s: @autoclosure () -> String) {
        guard trace else { return }
        let line = s() + "\n"
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    }

    private func hex(_ v: UInt64) -> String { String(v, radix: 16) }

    public init(interpreter: X86Interpreter, memory: GuestMemory, clock: VirtualClock,
                policy: HybridPolicyConfig = HybridPolicyConfig(), using system: KVMSystem? = nil) throws(KVMError) {
        self.interpreter = interpreter
        self.clock = clock
        self.policy = HybridPolicy(config: policy)
        native = try NativeVcpu(memory: memory, kickSignal: HybridBackend.kickSignal, using: system)
        codeWrites = CodeWriteTracker(vm: native.vm, slots: native.ramSlots)
        coherence = PageTableCoherence(memory: memory)
        verifier = CodeVerifier(memory: memory)
        // Native RDTSC reads the host's counter (kvm-pvm applies no offset or scaling): the software
        // CPU counts the same, so guest time (the TSC clocksource, the vDSO) agrees across switches.
        let hz = try native.vcpu.tscKHz() * 1000
        let offset = (try? native.vcpu.tscOffset()) ?? 0   // KVMPause.swift; nil where KVM lacks the attribute
        interpreter.useHostTSC({ chostcpu_rdtsc() &+ offset }, hz: hz)
        interpreter.trackNewCodePages(true)
        interpreter.setPrivilegeObserver { [unowned self] user in self.privilegeChanged(toUser: user) }
    }

    deinit {
        interpreter.setPrivilegeObserver(nil)
        kick?.release()
    }

    public func setEntryState(_ state: CPUEntryState) throws(KVMError) {
        interpreter.setEntryState(state)
    }

    /// Guest instructions retired on the software CPU (native user code is not counted).
    public var guestInstructionCount: UInt64? { interpreter.instructionsRetired }

    /// The software CPU's translation report and what the hybrid backend did.
    public var statisticsReport: String? {
        [interpreter.statisticsReport, statistics.summary].compactMap { $0 }.joined(separator: "; ")
    }

    // MARK: Run loop

    public func run(io: IOHandler, control: VMControl) throws(KVMError) -> VcpuStop {
        if kick == nil { kick = try? KickSignal(signal: HybridBackend.kickSignal) }
        if kick == nil { disableNative("cannot create the vCPU kick timer") }
        if let k = kick, kickedControl !== control {
            kickedControl = control
            control.addKicker { k.kick() }
        }
        while true {
            if let stop = interpreter.run(io: io, control: control, maxInstructions: .max) { return stop }
            // The software CPU stopped on entering user mode: the policy wants this episode native.
            while canRunNatively() {
                if let stop = try runNative(io: io, control: control) { return stop }
                // Back at an instruction boundary in user mode: execute the instruction KVM stopped
                // at (or deliver the interrupt that stopped it) in software.
                if let stop = interpreter.run(io: io, control: control, maxInstructions: 1) { return stop }
                guard interpreter.cpl == 3, policy.prefersNative(addressSpaceKey(interpreter.cr3)) else { break }
            }
        }
    }

    /// Which address space the policy is about: CR3 alone would let a new process inherit the
    /// history of an exited one whose page-table root page it reuses, so the user half of the
    /// root table (which exec and fork always rebuild) goes into the key too.
    private func addressSpaceKey(_ cr3: UInt64) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ cr3
        guard let p = native.memory.hostPointer(cr3 & PageTableCoherence.addressMask, length: 2048) else { return h }
        let entries = p.assumingMemoryBound(to: UInt64.self)
        for i in 0..<256 {
            let e = entries[i]
            if e & 1 != 0 { h = (h ^ (e & PageTableCoherence.addressMask) ^ UInt64(truncatingIfNeeded: i)) &* 0x0000_0100_0000_01B3 }
        }
        return h
    }

    /// Called by the software CPU on every change into or out of CPL 3.
    private func privilegeChanged(toUser: Bool) -> Bool {
        let now = interpreter.instructionsRetired
        if toUser {
            userEntryInstructions = now
            userSpace = addressSpaceKey(interpreter.cr3)
            return statistics.disabledReason == nil && policy.prefersNative(userSpace)
        }
        if ignoreNextUserExit {
            ignoreNextUserExit = false
        } else {
            policy.recordSoftware(userSpace, instructions: now &- userEntryInstructions)
        }
        if interpreter.takeModelSpecificResultFlag() { policy.markSoftwareOnly(userSpace) }
        return false
    }

    /// User mode in a state KVM can run as the software CPU would: 64-bit paging, no single-step
    /// or hardware breakpoints (the software CPU implements those), no pending interrupt shadow.
    private func canRunNatively() -> Bool {
        statistics.disabledReason == nil && interpreter.cpl == 3 && interpreter.longModeActive
            && interpreter.flags & ((1 << 8) | (1 << 17)) == 0
            && interpreter.debugControl & 0xFF == 0
            && !interpreter.isHalted && !interpreter.interruptShadowActive
    }

    private func disableNative(_ reason: String) {
        if statistics.disabledReason == nil { statistics.disabledReason = reason }
    }

    /// Runs user code natively from the software CPU's state until something needs the software
    /// CPU; the state is back in the software CPU when it returns. A stop request is returned.
    private func runNative(io: IOHandler, control: VMControl) throws(KVMError) -> VcpuStop? {
        if let stop = interpreter.serviceEvents(control: control) { return stop }
        if interpreter.interruptDeliverable { return nil }
        let space = addressSpaceKey(interpreter.cr3)
        let c0 = VirtualClock.hostMonotonicNs()
        let coherent = try makeKVMCoherent(cr3: interpreter.cr3, space: space)
        let c1 = VirtualClock.hostMonotonicNs()
        statistics.coherenceNs &+= c1 &- c0
        guard coherent else { return nil }
        interpreter.exportArchState(into: &transfer, includeMSRs: false)
        traceLine("enter rip=\(hex(transfer.rip)) rsp=\(hex(transfer.gpr[4])) cs=\(hex(UInt64(transfer.cs.selector))) ss=\(hex(UInt64(transfer.ss.selector))) rflags=\(hex(transfer.rflags)) cr3=\(hex(transfer.cr3)) fs=\(hex(transfer.fs.base))/\(transfer.fs.unusable) gs=\(hex(transfer.gs.base))")
        try loadKVM(transfer)
        statistics.handoverNs &+= VirtualClock.hostMonotonicNs() &- c1
        statistics.nativeEntries += 1
        ignoreNextUserExit = true
        var inGuestNs: UInt64 = 0
        var runs = 0
        defer {
            let work = max(0, Double(inGuestNs) - Double(runs) * exitCostNs)
            policy.recordNative(space, workNs: UInt64(work.rounded(.down)))
        }
        var entered = false

        exitLoop: while true {
            // What the software CPU must handle first: host requests, device work, due timers.
            if control.stopRequest != nil || control.hasPostedWork { break }
            let now = clock.nowNs
            if let d = interpreter.nextTimerDeadline {
                if d <= now { break }
                kick?.armTimer(inNs: d - now)
            } else {
                kick?.disarmTimer()
            }
            traceLine("  run deadline=\(interpreter.nextTimerDeadline.map { String(Int64(bitPattern: $0 &- now)) } ?? "none") ns")
            let t0 = VirtualClock.hostMonotonicNs()
            let exit = try native.enter()
            let spent = VirtualClock.hostMonotonicNs() &- t0
            inGuestNs &+= spent
            runs += 1
            statistics.nativeNs &+= spent
            exitCostNs = min(exitCostNs * 1.001, Double(spent))
            entered = true
            traceLine("  exit \(exit.map { String($0) } ?? "EINTR") rip=\(hex(native.run.pointee.s.regs.regs.rip)) cs=\(hex(UInt64(native.run.pointee.s.regs.sregs.cs.selector))) vec=\(native.run.pointee.s.regs.events.exception.nr) pend=\(native.run.pointee.s.regs.events.exception.pending)/\(native.run.pointee.s.regs.events.exception.injected) tf=\(native.shutdownPending) cr2=\(hex(native.run.pointee.s.regs.sregs.cr2)) fs=\(hex(native.run.pointee.s.regs.sregs.fs.base)) rax=\(hex(native.run.pointee.s.regs.regs.rax))")
            guard let reason = exit else {
                // A kick: the timer, posted work or a stop request. Anything else was stale.
                kick?.consumePending()
                if native.shutdownPending {
                    // The kick came after an exception failed to reach a handler: it is that
                    // exception's shutdown, reported now (loadKVM clears KVM's request).
                    statistics.interrupts += 1
                    try leaveNative()
                    afterShutdown()
                    return nil
                }
                if control.stopRequest == nil && !control.hasPostedWork
                    && (interpreter.nextTimerDeadline ?? .max) > clock.nowNs {
                    statistics.spuriousKicks += 1
                    continue
                }
                statistics.interrupts += 1
                try leaveNative()
                deliverPendingTrap()
                return nil
            }
            switch reason {
            case KVM_EXIT_IO:
                if try portIO(io: io) {
                    statistics.portIO += 1
                    if interpreter.interruptDeliverable { try native.completePendingExit(); break exitLoop }
                    continue
                }
                statistics.deniedIO += 1
                try leaveNative()
                return nil
            case KVM_EXIT_MMIO:
                mmio(io: io)
                statistics.mmio += 1
                if interpreter.interruptDeliverable || control.hasPostedWork {
                    try native.completePendingExit()
                    break exitLoop
                }
                continue
            case KVM_EXIT_SHUTDOWN:
                try leaveNative()
                afterShutdown()
                return nil
            case KVM_EXIT_FAIL_ENTRY:
                disableNative("KVM refused the user-mode state (hardware reason 0x"
                              + String(native.run.pointee.fail_entry.hardware_entry_failure_reason, radix: 16) + ")")
                try leaveNative()
                return nil
            default:
                // An exit KVM could not explain (e.g. an internal emulation error): software
                // carries on from the state KVM reports; persistent trouble switches native off.
                statistics.otherExits += 1
                failedNativeRuns += 1
                policy.penalize(space)
                if failedNativeRuns > 1000 { disableNative("too many unexplained KVM exits (last reason \(reason))") }
                try leaveNative()
                return nil
            }
        }
        kick?.disarmTimer()
        if entered {
            try leaveNative()
            deliverPendingTrap()
        }
        return nil
    }

    // MARK: Hand-over

    /// Page tables and code pages before user code runs natively. False if this address space
    /// cannot run natively now.
    private func zap() throws(KVMError) {
        let t0 = VirtualClock.hostMonotonicNs()
        try native.zapShadowPageTables()
        statistics.shadowZaps += 1
        statistics.zapNs &+= VirtualClock.hostMonotonicNs() &- t0
    }

    private func makeKVMCoherent(cr3: UInt64, space: UInt64) throws(KVMError) -> Bool {
        // Code pages whose content changed must be checked again wherever they are mapped.
        let changed = interpreter.takeChangedVerifiedCode()
        if !changed.isEmpty {
            verifier.forget(changed)
            coherence.forgetScans()
        }
        let verify: ((Int32) -> Bool)? = policy.config.mode == .native ? nil : { [verifier] in verifier.isPortable($0) }
        var portable = true
        switch coherence.prepare(cr3: cr3, written: interpreter.writtenPageTables,
                                 nx: interpreter.efer & (1 << 11) != 0, verify: verify) {
        case .unwatchable:
            policy.penalize(space)
            interpreter.clearPageTableWatch()
            try zap()
            return false
        case .zap(let arm):
            try zap()
            interpreter.clearPageTableWatch()
            interpreter.armPageTableWatch(arm)
        case .coherent(let arm):
            interpreter.armPageTableWatch(arm)
        case .unportable(let arm):
            interpreter.armPageTableWatch(arm)
            policy.markSoftwareOnly(space)
            portable = false
        }
        let checked = verifier.takeNewlyChecked()
        if !checked.isEmpty {
            interpreter.markVerifiedCode(checked)
            try codeWrites.protect(checked)
        }
        statistics.pagesChecked = verifier.checkedPages
        try codeWrites.protect(interpreter.takeNewCodePages())
        return portable
    }

    /// The software CPU's user-mode state into the vCPU, through kvm_run's sync area (and the FPU
    /// ioctl when the x87/SSE state changed).
    private func loadKVM(_ s: X86ArchState) throws(KVMError) {
        let run = native.run
        run.pointee.s.regs.regs = s.kvmRegs
        let before = run.pointee.s.regs.sregs
        var sregs = before
        s.store(into: &sregs)
        // Exceptions must not reach a guest handler inside KVM: with an empty IDT every one is a
        // triple fault, reported with the faulting state. CR2, CR8 and the APIC base are not
        // user-visible; keeping KVM's avoids reloading segment state on every entry.
        sregs.idt.limit = 0
        // The software CPU (like QEMU) does not raise #AC: native code must not either.
        sregs.cr0 &= ~(UInt64(1) << 18)
        sregs.cr2 = before.cr2
        sregs.cr8 = before.cr8
        sregs.apic_base = before.apic_base
        var dirty = UInt64(KVM_SYNC_X86_REGS)
        // An event KVM still holds (a trap pending at a kick, a shutdown not yet reported) was
        // delivered in software already.
        let ev = run.pointee.s.regs.events
        if ev.exception.pending != 0 || ev.exception.injected != 0 || ev.interrupt.injected != 0 || ev.nmi.injected != 0
            || ev.nmi.pending != 0 || native.shutdownPending {
            var clean = kvm_vcpu_events()
            clean.flags = UInt32(bitPattern: KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW)
            if native.tripleFaultVisible { clean.flags |= UInt32(truncatingIfNeeded: KVM_VCPUEVENT_VALID_TRIPLE_FAULT) }
            run.pointee.s.regs.events = clean
            dirty |= UInt64(KVM_SYNC_X86_EVENTS)
        }
        if !NativeVcpu.same(sregs, before) {
            run.pointee.s.regs.sregs = sregs
            dirty |= UInt64(KVM_SYNC_X86_SREGS)
        }
        // Or'ed: an earlier load that never reached KVM_RUN may still have sregs to apply.
        run.pointee.kvm_dirty_regs |= dirty
        let fxChanged = !kvmFXKnown || s.fxsave.withUnsafeBytes { a in
            kvmFX.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, 512) != 0 }
        }
        if fxChanged {
            if !kvmFXKnown { xsave = try native.vcpu.getXSave() }
            s.store(into: &xsave)
            try native.vcpu.setXSave(xsave)
            copyFX(from: s.fxsave)
            kvmFXKnown = true
        }
    }

    /// The vCPU's user-mode state back into the software CPU, and native writes to code pages.
    private func leaveNative() throws(KVMError) {
        let t0 = VirtualClock.hostMonotonicNs()
        defer { statistics.handoverNs &+= VirtualClock.hostMonotonicNs() &- t0 }
        kick?.disarmTimer()
        let sync = native.run.pointee.s.regs
        transfer.apply(regs: sync.regs)
        transfer.es = SegmentState(sync.sregs.es); transfer.cs = SegmentState(sync.sregs.cs)
        transfer.ss = SegmentState(sync.sregs.ss); transfer.ds = SegmentState(sync.sregs.ds)
        transfer.fs = SegmentState(sync.sregs.fs); transfer.gs = SegmentState(sync.sregs.gs)
        transfer.events.interruptShadow = sync.events.interrupt.shadow != 0
        xsave = try native.vcpu.getXSave()
        transfer.apply(xsave: xsave)
        copyFX(from: transfer.fxsave)
        kvmFXKnown = true
        interpreter.importUserModeState(transfer)
        // Stopped (by a kick, say) right after a SYSCALL jumped to the trap address: it is that
        // SYSCALL the software CPU must execute.
        if case .syscall(let rip, let rflags)? = NativeStop.completedSyscall(
            rip: sync.regs.rip, rcx: sync.regs.rcx, r11: sync.regs.r11,
            syscallTraps: (NativeVcpu.syscallTrap, NativeVcpu.compatSyscallTrap),
            syscallBytes: { [interpreter] a in interpreter.peekLinear(a, count: 2) == [0x0F, 0x05] }) {
            interpreter.instructionPointer = rip
            interpreter.flags = rflags & ~(1 << 16)
        }
        try codeWrites.collectWrites { page in
            interpreter.invalidateCode(physicalAddress: UInt64(truncatingIfNeeded: page) << 12, length: 4096)
        }
        statistics.codeInvalidations = codeWrites.invalidations
    }

    private func copyFX(from image: [UInt8]) {
        image.withUnsafeBytes { src in
            kvmFX.withUnsafeMutableBytes { $0.copyMemory(from: src) }
        }
    }

    /// A kick can end KVM_RUN after an instruction raised a trap (ICEBP, INT3, single step) but
    /// before KVM tried to deliver it: KVM holds it as a pending exception (or, for an INT3 its
    /// emulator ran, a queued software interrupt), RIP already past the instruction. The software CPU delivers it; KVM forgets it on the next entry (loadKVM).
    private func deliverPendingTrap() {
        let events = native.run.pointee.s.regs.events
        // INT3/INT n that KVM emulated and queued as a software interrupt: RIP is past it too.
        if events.interrupt.injected != 0 && events.interrupt.soft != 0 {
            statistics.traps += 1
            interpreter.deliverTrap(vector: events.interrupt.nr, singleStep: false)
            return
        }
        let e = events.exception
        guard e.pending != 0 || e.injected != 0 else { return }
        switch e.nr {
        case 1, 3, 4:
            statistics.traps += 1
            interpreter.deliverTrap(vector: e.nr, singleStep: e.nr == 1 && interpreter.flags & (1 << 8) != 0)
        default:
            break   // a fault: RIP is at the instruction, which raises it again in software
        }
    }

    /// After a triple-fault exit (the state is already back in the software CPU): set it up so the
    /// software CPU raises what the native CPU could not deliver.
    private func afterShutdown() {
        let sync = native.run.pointee.s.regs
        let regs = sync.regs
        let stop = NativeStop.classifyShutdown(
            rip: regs.rip, rcx: regs.rcx, r11: regs.r11, cr2: sync.sregs.cr2, rflags: regs.rflags,
            vector: sync.events.exception.nr, syscallTraps: (NativeVcpu.syscallTrap, NativeVcpu.compatSyscallTrap),
            syscallBytes: { [interpreter] a in interpreter.peekLinear(a, count: 2) == [0x0F, 0x05] })
        switch stop {
        case .reexecute:
            statistics.faults += 1
        case .syscall:
            statistics.syscalls += 1   // leaveNative already moved back to the SYSCALL
        case .trap(let vector, let singleStep):
            statistics.traps += 1
            interpreter.deliverTrap(vector: vector, singleStep: singleStep)
        }
    }

    // MARK: Device access from native code

    /// A port access from native user code. Performed here when the I/O permission check passes
    /// (true); otherwise the state goes back to the software CPU at the instruction, which raises
    /// #GP (false).
    private func portIO(io: IOHandler) throws(KVMError) -> Bool {
        let run = native.run
        let port = run.pointee.io.port
        let size = Int(run.pointee.io.size)
        let count = Int(run.pointee.io.count)
        let out = run.pointee.io.direction == UInt8(truncatingIfNeeded: KVM_EXIT_IO_OUT)
        if interpreter.ioPermitted(port: port, size: size) {
            let data = UnsafeMutableRawPointer(run) + Int(truncatingIfNeeded: run.pointee.io.data_offset)
            for i in 0..<count {
                let p = data + i * size
                if out {
                    let v: UInt32
                    switch size {
                    case 1: v = UInt32(p.load(as: UInt8.self))
                    case 2: v = UInt32(p.loadUnaligned(as: UInt16.self))
                    default: v = p.loadUnaligned(as: UInt32.self)
                    }
                    io.portWrite(port, size: size, value: v)
                } else {
                    let v = io.portRead(port, size: size)
                    switch size {
                    case 1: p.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
                    case 2: p.storeBytes(of: UInt16(truncatingIfNeeded: v), as: UInt16.self)
                    default: p.storeBytes(of: v, as: UInt32.self)
                    }
                }
            }
            return true
        }
        // Denied. Complete the exit without performing it (KVM would otherwise finish the
        // instruction on the next entry), keeping the registers as they were at the exit.
        let regs = run.pointee.s.regs.regs
        try native.completePendingExit()
        run.pointee.s.regs.regs = regs
        try leaveNative()
        // The instruction may start up to 15 bytes before RIP (kvm-pvm reports OUT past it);
        // the bytes before may sit on an unmapped page, then only this page's are used.
        let dx = UInt16(truncatingIfNeeded: regs.rdx)
        for before in [15, min(15, Int(regs.rip & 0xFFF))] {
            if let bytes = interpreter.peekLinear(regs.rip &- UInt64(truncatingIfNeeded: before), count: before + min(16, 4096 - Int(regs.rip & 0xFFF))),
               let start = NativeStop.ioInstructionStart(rip: regs.rip, bytes: bytes, before: before, port: port,
                                                        size: size, isOut: out, dx: dx) {
                interpreter.instructionPointer = start
                break
            }
        }
        return false
    }

    private func mmio(io: IOHandler) {
        let run = native.run
        let address = run.pointee.mmio.phys_addr
        let len = min(Int(run.pointee.mmio.len), 8)
        let write = run.pointee.mmio.is_write != 0
        withUnsafeMutableBytes(of: &run.pointee.mmio.data) { data in
            if write {
                var v: UInt64 = 0
                for i in 0..<len { v |= UInt64(data[i]) << (8 * UInt64(truncatingIfNeeded: i)) }
                interpreter.physicalWrite(address, size: len, value: v, io: io)
            } else {
                let v = interpreter.physicalRead(address, size: len, io: io)
                for i in 0..<len { data[i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(truncatingIfNeeded: i))) }
            }
        }
    }
}

extension NativeVcpu {
    static func same(_ a: kvm_sregs, _ b: kvm_sregs) -> Bool {
        var a = a, b = b
        return withUnsafeBytes(of: &a) { x in withUnsafeBytes(of: &b) { y in memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
    }
}
