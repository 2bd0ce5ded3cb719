import CKVM
import CPUBackend
import Glibc
import Synchronization
import VMMemory

/// The KVM CPU backend: a VM with one or more vCPUs running on the hardware (or on kvm-pvm). Each
/// vCPU runs on a host thread of its own (the bootstrap processor on the thread that calls `run`);
/// the application processors wait in the kernel, in KVM's wait-for-SIPI state, until the guest's
/// INIT/SIPI through the in-kernel local APIC starts them.
public final class KVMBackend: VcpuBackend {
    public let name = "kvm"
    public let system: KVMSystem
    public let vm: KVMVirtualMachine
    /// vCPU n has APIC ID n; vCPU 0 is the bootstrap processor.
    public let vcpus: [KVMVcpu]
    public var vcpu: KVMVcpu { vcpus[0] }
    /// The guest RAM mapped into the VM's memory slots: held so the mapping outlives the VM.
    public let memory: GuestMemory
    /// How devices raise interrupts on this VM; nil when created without an in-kernel irqchip.
    public let interrupts: KVMInterruptController?
    /// VM exits handled so far, all vCPUs together.
    public var exitCount: UInt64 { runners.reduce(0) { $0 &+ $1.exits.load(ordering: .relaxed) } }
    /// Devices whose timers run in userspace (the RTC; KVM models the PIT in the kernel), advanced
    /// on the bootstrap vCPU's thread between exits. The machine sets them from its platform before `run`.
    public var timedDevices: [TimedDevice] = []
    /// Taken around device timers and posted work (the machine's I/O handler takes it for every
    /// port and MMIO access), so devices see one vCPU thread at a time.
    public var deviceLock: DeviceLock?
    private let clock: VirtualClock
    private let runners: [Runner]
    /// Wakes the bootstrap vCPU out of the kernel's HLT when a device timer falls due.
    private let timerKicker: DeadlineKicker
    private var nextTimerDeadline: UInt64 = 0
    /// Application processor threads, waiting for `run` (created before the seccomp filter).
    private var threads: [HostThread] = []
    private let start = VcpuStartGate()

    /// Builds a VM over `memory` with `cpuCount` vCPUs. With `irqchip` (needed by Linux, and by any
    /// guest with more than one vCPU: INIT/SIPI go through the in-kernel local APICs) KVM models the
    /// PIC, IOAPIC, LAPIC and PIT in the kernel and HLT never reaches userspace; small single-CPU
    /// test guests run without it so that `hlt` ends the run.
    public init(memory: GuestMemory, irqchip: Bool = true, cpuid: CPUIDPolicy = .forThisHost,
                clock: VirtualClock = VirtualClock(), using existing: KVMSystem? = nil, cpuCount: Int = 1) throws(KVMError) {
        guard cpuCount >= 1, cpuCount == 1 || irqchip else {
            throw KVMError("KVM_CREATE_VCPU", errno: EINVAL, detail: "\(cpuCount) vCPUs need the in-kernel irqchip")
        }
        let system: KVMSystem
        if let existing { system = existing } else { system = try KVMSystem() }
        try system.require([(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
                            (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"),
                            (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
                            (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")])
        if irqchip {
            try system.require([(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (KVM_CAP_PIT2, "KVM_CAP_PIT2"),
                                (KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI"), (KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING")])
        }
        let maxVcpus = Int(max(system.checkExtension(KVM_CAP_MAX_VCPUS), system.checkExtension(KVM_CAP_NR_VCPUS)))
        if maxVcpus > 0 && cpuCount > maxVcpus {
            throw KVMError("KVM_CREATE_VCPU", errno: EINVAL, detail: "this host's KVM allows \(maxVcpus) vCPUs, not \(cpuCount)")
        }
        self.system = system
        vm = try system.createVM()
        try vm.setTSSAddress()
        if system.checkExtension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 { try vm.setIdentityMapAddress() }
        if irqchip {
            try vm.createIRQChip()
            try vm.setGSIRouting(KVMVirtualMachine.pcRouting)
            try vm.createPIT2()
            interrupts = KVMInterruptController(vm: vm)
        } else {
            interrupts = nil
        }
        try vm.mapMemory(memory)
        self.memory = memory
        let supported = try system.supportedCPUID()
        var vcpus: [KVMVcpu] = []
        for id in 0..<UInt32(truncatingIfNeeded: cpuCount) {
            let v = try vm.createVcpu(id: id)
            try v.setCPUID(cpuid.filter(supported, vcpuID: id, cpuCount: cpuCount))
            try KVMBackend.configureMSRs(v)
            try KVMBackend.configureFPU(v)
            if irqchip { try KVMBackend.configureLAPIC(v) }
            vcpus.append(v)
        }
        self.vcpus = vcpus
        self.clock = clock
        let runners = vcpus.map { Runner(vcpu: $0) }
        self.runners = runners
        timerKicker = DeadlineKicker(clock: clock) { runners[0].kickTarget.kick() }
        KVMBackend.installKickHandler()
    }

    deinit {
        start.open(threads.count, io: nil, control: nil, cancel: true)
        for t in threads { t.join() }
    }

    private static func configureMSRs(_ vcpu: KVMVcpu) throws(KVMError) {
        // As Firecracker: a clean syscall/sysenter state, fast string operations enabled, and MTRRs
        // on with write-back as the default type (Linux disables PAT when MTRRs are off, and every
        // mapping, RAM included, would then be uncached as far as the guest's page attributes go).
        try vcpu.setMSRs([
            (0x174, 0), (0x175, 0), (0x176, 0),            // IA32_SYSENTER_CS/ESP/EIP
            (0xC000_0081, 0), (0xC000_0082, 0),            // STAR, LSTAR
            (0xC000_0083, 0), (0xC000_0084, 0),            // CSTAR, SFMASK
            (0xC000_0102, 0),                              // KERNEL_GS_BASE
            (0x10, 0),                                     // IA32_TSC
            (0x1A0, 1),                                    // IA32_MISC_ENABLE: fast strings
            (KVMBackend.mtrrDefTypeMSR, KVMBackend.mtrrDefTypeWriteBack),
        ])
    }

    private static func configureFPU(_ vcpu: KVMVcpu) throws(KVMError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37F   // x87 reset control word
        fpu.mxcsr = 0x1F80 // SSE exceptions masked
        try vcpu.setFPU(fpu)
    }

    /// IA32_MTRR_DEF_TYPE: E (bit 11, MTRRs enabled) and default memory type 6 (write-back).
    static let mtrrDefTypeMSR: UInt32 = 0x2FF
    static let mtrrDefTypeWriteBack: UInt64 = 0x800 | 0x6

    /// LINT0 as ExtINT (the 8259 reaches the CPU through the LAPIC's virtual wire) and LINT1 as NMI,
    /// as a BIOS would leave them (and Firecracker does, on every vCPU): Linux without an MP table
    /// or ACPI relies on this.
    private static func configureLAPIC(_ vcpu: KVMVcpu) throws(KVMError) {
        var lapic = try vcpu.getLAPIC()
        withUnsafeMutableBytes(of: &lapic.regs) { regs in
            func update(_ offset: Int, mode: UInt32) {
                var v = regs.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
                v = (v & ~0x700) | (mode << 8)
                regs.storeBytes(of: v, toByteOffset: offset, as: UInt32.self)
            }
            update(0x350, mode: 7)  // LVT LINT0: ExtINT
            update(0x360, mode: 4)  // LVT LINT1: NMI
        }
        try vcpu.setLAPIC(lapic)
    }

    /// Loads the bootstrap processor's state (the others wait for the guest's start-up IPI).
    public func setEntryState(_ state: CPUEntryState) throws(KVMRunError) {
        do { try applyEntryState(state) } catch { throw .ioctl(error) }
    }

    private func applyEntryState(_ state: CPUEntryState) throws(KVMError) {
        var sregs = try vcpu.getSregs()
        func seg(_ s: Segment) -> kvm_segment {
            var k = kvm_segment()
            k.base = s.base; k.limit = s.limit; k.selector = s.selector; k.type = s.type
            k.present = s.present ? 1 : 0; k.dpl = s.dpl; k.db = s.db ? 1 : 0; k.s = s.s ? 1 : 0
            k.l = s.l ? 1 : 0; k.g = s.g ? 1 : 0; k.avl = 0; k.unusable = s.present ? 0 : 1
            return k
        }
        sregs.cs = seg(state.cs); sregs.ds = seg(state.ds); sregs.es = seg(state.es)
        sregs.fs = seg(state.fs); sregs.gs = seg(state.gs); sregs.ss = seg(state.ss)
        sregs.gdt.base = state.gdt.base; sregs.gdt.limit = state.gdt.limit
        sregs.idt.base = state.idt.base; sregs.idt.limit = state.idt.limit
        sregs.cr0 = state.cr0; sregs.cr3 = state.cr3; sregs.cr4 = state.cr4; sregs.efer = state.efer
        try vcpu.setSregs(sregs)

        var regs = kvm_regs()
        regs.rax = state.rax; regs.rbx = state.rbx; regs.rcx = state.rcx; regs.rdx = state.rdx
        regs.rsi = state.rsi; regs.rdi = state.rdi; regs.rsp = state.rsp; regs.rbp = state.rbp
        regs.rip = state.rip; regs.rflags = state.rflags
        try vcpu.setRegs(regs)
    }

    /// A no-op SIGUSR1 handler: its only job is to make a blocked KVM_RUN return EINTR.
    static func installKickHandler() {
        var sa = sigaction()
        sa.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&sa.sa_mask)
        sa.sa_flags = 0
        sigaction(SIGUSR1, &sa, nil)
    }

    /// Creates the application processors' threads; they wait until `run`. Call before the seccomp
    /// filter (it allows no new threads). Returns false if the host refused a thread.
    @discardableResult
    public func prepareThreads() -> Bool {
        guard threads.isEmpty, runners.count > 1 else { return true }
        for runner in runners.dropFirst() {
            let start = self.start
            guard let t = HostThread({ [unowned self] in
                guard let (io, control) = start.wait() else { return }
                do throws(KVMRunError) {
                    let stop = try runVcpu(runner, io: io, control: control, bootstrap: false)
                    control.requestStop(stop)
                } catch {
                    runner.failure = error
                    control.requestStop(.hostRequest)   // the others stop; `run` reports the error
                }
            }) else { return false }
            threads.append(t)
        }
        return true
    }

    public func run(io: IOHandler, control: VMControl) throws(KVMRunError) -> VcpuStop {
        if runners.count == 1 { return try runVcpu(runners[0], io: io, control: control, bootstrap: true) }
        guard threads.count == runners.count - 1 || prepareThreads() else {
            throw .ioctl(KVMError("pthread_create", errno: errno, detail: "no thread for an application processor"))
        }
        start.open(threads.count, io: io, control: control, cancel: false)
        let result: Result<VcpuStop, KVMRunError>
        do { result = .success(try runVcpu(runners[0], io: io, control: control, bootstrap: true)) }
        catch { result = .failure(error) }
        control.requestStop((try? result.get()) ?? .hostRequest)
        for t in threads { t.join() }
        threads = []
        if case .failure(let e) = result { throw e }
        if let e = runners.lazy.compactMap(\.failure).first { throw e }
        return control.stopRequest ?? (try! result.get())
    }

    /// One vCPU's loop. The bootstrap processor also runs posted work and the device timers.
    private func runVcpu(_ runner: Runner, io: IOHandler, control: VMControl, bootstrap: Bool) throws(KVMRunError)
        -> VcpuStop
    {
        let vcpu = runner.vcpu
        runner.kickTarget.arm(thread: pthread_self())
        let kickTarget = runner.kickTarget
        let kicker = control.addKicker { kickTarget.kick() }
        defer {
            control.removeKicker(kicker)
            kickTarget.disarm()
            if bootstrap { timerKicker.arm(nil) }
        }
        if bootstrap { nextTimerDeadline = 0 }
        while true {
            if let stop = control.stopRequest { return stop }
            if bootstrap {
                if control.hasPostedWork { withDevices { control.runPostedWork() } }
                serviceTimers()
            }
            try checkInterruptDelivery()
            let entered: Bool
            do { entered = try vcpu.runOnce() } catch { throw .ioctl(error) }
            guard entered else {
                vcpu.run.pointee.immediate_exit = 0
                continue
            }
            runner.exits.add(1, ordering: .relaxed)
            let exit = KVMExit(run: vcpu.runPage, pageSize: vcpu.runSize)
            // A port or MMIO write may have re-armed a device timer (a virtio notification lets a
            // rate-limited request wait for its tokens): ask the devices again.
            switch exit {
            case .portIO, .mmio: if bootstrap { nextTimerDeadline = 0 }
            default: break
            }
            if case .internalError(let e) = exit, softInterruptWorkaround, let bytes = e.instructionBytes {
                let stepped: Bool
                do { stepped = try KVMBackend.injectFailedSoftInterrupt(bytes, vcpu: vcpu) } catch { throw .ioctl(error) }
                if stepped { continue }
            }
            do {
                if case .stop(let stop) = try KVMExitHandler.handle(exit, io: io) { return stop }
            } catch .internalError(var e) {
                e.rip = try? vcpu.getRegs().rip
                throw .internalError(e)
            }
        }
    }

    @inline(__always)
    private func withDevices<T>(_ body: () -> T) -> T {
        deviceLock?.lock()
        defer { deviceLock?.unlock() }
        return body()
    }

    /// Advances the timed devices when their deadline has passed (or a port access may have moved it)
    /// and has the kicker wake the vCPU at the next one.
    private func serviceTimers() {
        guard !timedDevices.isEmpty else { return }
        let now = clock.nowNs
        guard now >= nextTimerDeadline else { return }
        var next = UInt64.max
        withDevices {
            for device in timedDevices {
                if let d = device.advance(to: now) { next = min(next, d) }
            }
        }
        nextTimerDeadline = next
        timerKicker.arm(next == .max ? nil : next)
    }

    /// Ends the run when KVM refused an interrupt a device raised (see `KVMInterruptController`).
    private func checkInterruptDelivery() throws(KVMRunError) {
        if let interrupts, let failure = interrupts.firstFailure { throw .interruptDelivery(failure) }
    }

    /// CPU features (by /proc/cpuinfo name) whose instructions kvm-pvm's emulator cannot execute in
    /// guest kernel code; Linux on kvm-pvm is booted with `clearcpuid=` these.
    public static let pvmUnemulatedFeatures = [
        "popcnt", "smap", "smep", "rdrand", "rdseed", "fsgsbase", "invpcid", "pcid", "erms", "fsrm",
        "umip", "pku", "la57", "rdpid", "cx16", "movbe", "bmi1", "bmi2", "clflushopt", "clwb",
        "avx", "avx2", "avx512f", "xsave", "xsaveopt", "xsavec", "xsaves", "sha_ni", "aes", "pclmulqdq",
    ]

    /// kvm-pvm runs guest kernel code through KVM's instruction emulator, which cannot execute
    /// CLAC/STAC, or INT3/INT n/INTO outside real mode (Linux runs an INT3 self-test at boot, and uses INT3 for
    /// text patching). When that is the failure, do what the instruction would: step over it and
    /// inject the vector. Returns false for any other failure.
    public var softInterruptWorkaround = KVMSystem.emulatesSupervisorCode

    private static func injectFailedSoftInterrupt(_ insn: [UInt8], vcpu: KVMVcpu) throws(KVMError) -> Bool {
        guard let op = insn.first else { return false }
        // CLAC/STAC (the guest believes it has SMAP): only RFLAGS.AC changes.
        if insn.count >= 3 && insn[0] == 0x0F && insn[1] == 0x01 && (insn[2] == 0xCA || insn[2] == 0xCB) {
            var regs = try vcpu.getRegs()
            let ac: UInt64 = 1 << 18
            regs.rflags = insn[2] == 0xCA ? regs.rflags & ~ac : regs.rflags | ac
            regs.rip &+= 3
            try vcpu.setRegs(regs)
            return true
        }
        let length: UInt64, vector: UInt8
        switch op {
        case 0xCC: (length, vector) = (1, 3)
        case 0xCE: (length, vector) = (1, 4)
        case 0xCD where insn.count >= 2: (length, vector) = (2, insn[1])
        default: return false
        }
        var regs = try vcpu.getRegs()
        var events = try vcpu.getVcpuEvents()
        regs.rip &+= length
        try vcpu.setRegs(regs)
        events.flags = 0
        if vector < 32 {
            // #BP and #OF are traps: delivered with RIP after the instruction.
            events.exception.injected = 1
            events.exception.nr = vector
            events.exception.has_error_code = 0
        } else {
            events.interrupt.injected = 1
            events.interrupt.nr = vector
            events.interrupt.soft = 0
        }
        try vcpu.setVcpuEvents(events)
        return true
    }
}

/// One vCPU's run-loop state: its kick target, exit count and (for an application processor) the
/// error that ended its loop.
private final class Runner: @unchecked Sendable {
    let vcpu: KVMVcpu
    let kickTarget: KickTarget
    let exits = Atomic<UInt64>(0)
    var failure: KVMRunError?
    init(vcpu: KVMVcpu) {
        self.vcpu = vcpu
        kickTarget = KickTarget(run: vcpu.run)
    }
}

/// Lets another thread interrupt KVM_RUN: `immediate_exit` covers the race where the signal lands
/// just before the vCPU enters the guest. Armed with the vCPU thread for the length of a `run`.
private final class KickTarget: @unchecked Sendable {
    private let run: UnsafeMutablePointer<kvm_run>
    private var thread: pthread_t?
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(run: UnsafeMutablePointer<kvm_run>) {
        self.run = run
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func arm(thread: pthread_t) {
        pthread_mutex_lock(lock)
        self.thread = thread
        pthread_mutex_unlock(lock)
    }

    func disarm() {
        pthread_mutex_lock(lock)
        thread = nil
        pthread_mutex_unlock(lock)
    }

    func kick() {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard let thread else { return }
        run.pointee.immediate_exit = 1
        pthread_kill(thread, SIGUSR1)
    }
}
