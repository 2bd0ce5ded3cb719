import CKVM
import CPUBackend
import Glibc
import VMMemory

/// What the guest is told about the CPU. KVM offers the host's features; some of them hurt here.
public struct CPUIDPolicy: Sendable {
    /// Hide XSAVE/AVX/AVX-512 so the guest uses FXSAVE: XSAVE in the guest can wedge kvm-pvm and
    /// big vector state slows every context switch. On by default.
    public var hideXSAVE = true
    /// Offer only the baseline x86-64 features Linux needs (fpu pse tsc msr pae cx8 apic pge cmov
    /// pat mmx fxsr sse sse2; syscall nx lm). kvm-pvm emulates guest kernel code with KVM's
    /// instruction emulator, which cannot run e.g. `lock cmpxchg16b` or `xrstor`: a kernel that sees
    /// CX16 or XSAVE dies with KVM_EXIT_INTERNAL_ERROR there.
    public var minimal = false
    public init(hideXSAVE: Bool = true, minimal: Bool = false) {
        self.hideXSAVE = hideXSAVE
        self.minimal = minimal
    }

    /// The policy for this host: minimal on kvm-pvm, host features less XSAVE elsewhere.
    public static var forThisHost: CPUIDPolicy { CPUIDPolicy(minimal: KVMSystem.emulatesSupervisorCode) }

    static let minimalLeaf1EDX: UInt32 = [0, 3, 4, 5, 6, 8, 9, 13, 15, 16, 23, 24, 25, 26].reduce(0) { $0 | (1 << $1) }
    static let minimalExtEDX: UInt32 = (1 << 11) | (1 << 20) | (1 << 29)  // syscall, nx, lm

    /// Applies the policy to KVM's supported CPUID for vCPU `id`.
    public func filter(_ entries: [kvm_cpuid_entry2], vcpuID: UInt32) -> [kvm_cpuid_entry2] {
        var out: [kvm_cpuid_entry2] = []
        for var e in entries {
            if minimal {
                switch e.function {
                case 1:
                    e.edx &= CPUIDPolicy.minimalLeaf1EDX
                    e.ecx = 1 << 31  // only "running under a hypervisor"
                    e.ebx = (e.ebx & 0x00FF_FFFF) | (vcpuID << 24)
                case 7:
                    e.eax = 0; e.ebx = 0; e.ecx = 0; e.edx = 0
                case 0xD:
                    continue
                case 0x8000_0001:
                    e.edx &= CPUIDPolicy.minimalExtEDX
                    e.ecx &= 1  // LAHF/SAHF in long mode
                default:
                    break
                }
                out.append(e)
                continue
            }
            switch e.function {
            case 1:
                // Initial APIC ID in EBX[31:24]; the hypervisor-present bit in ECX[31].
                e.ebx = (e.ebx & 0x00FF_FFFF) | (vcpuID << 24)
                e.ecx |= 1 << 31
                if hideXSAVE {
                    // FMA(12), XSAVE(26), OSXSAVE(27), AVX(28), F16C(29) all depend on XSAVE.
                    e.ecx &= ~((1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29))
                }
            case 7 where hideXSAVE:
                if e.index == 0 {
                    // AVX2, AVX-512 family, and AVX-only extensions (VAES, VPCLMULQDQ) need XSAVE state.
                    let ebxMask: UInt32 = (1 << 5) | (1 << 16) | (1 << 17) | (1 << 21) | (1 << 26)
                        | (1 << 27) | (1 << 28) | (1 << 30) | (1 << 31)
                    let ecxMask: UInt32 = (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11)
                        | (1 << 12) | (1 << 14)
                    let edxMask: UInt32 = (1 << 2) | (1 << 3) | (1 << 8) | (1 << 22) | (1 << 23)
                        | (1 << 24) | (1 << 25)
                    e.ebx &= ~ebxMask
                    e.ecx &= ~ecxMask
                    e.edx &= ~edxMask
                } else if e.index == 1 {
                    e.eax &= ~((1 << 4) | (1 << 5))  // AVX-VNNI, AVX512_BF16
                }
            case 0xD where hideXSAVE:
                continue  // XSAVE state enumeration: gone with XSAVE.
            default:
                break
            }
            out.append(e)
        }
        return out
    }
}

/// The KVM CPU backend: a VM with one vCPU running on the hardware (or on kvm-pvm).
public final class KVMBackend: VcpuBackend {
    public let name = "kvm"
    public let system: KVMSystem
    public let vm: KVMVirtualMachine
    public let vcpu: KVMVcpu
    /// How devices raise interrupts on this VM; nil when created without an in-kernel irqchip.
    public let interrupts: KVMInterruptController?
    public private(set) var exitCount: UInt64 = 0

    /// Builds a VM over `memory` with one vCPU. With `irqchip` (needed by Linux) KVM models the PIC,
    /// IOAPIC, LAPIC and PIT in the kernel and HLT never reaches userspace; small test guests run
    /// without it so that `hlt` ends the run.
    public init(memory: GuestMemory, irqchip: Bool = true, cpuid: CPUIDPolicy = .forThisHost,
                using existing: KVMSystem? = nil) throws(KVMError) {
        let system: KVMSystem
        if let existing { system = existing } else { system = try KVMSystem() }
        try system.require([(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
                            (KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"),
                            (KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"),
                            (KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")])
        if irqchip {
            try system.require([(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"), (KVM_CAP_PIT2, "KVM_CAP_PIT2"),
                                (KVM_CAP_SIGNAL_MSI, "KVM_CAP_SIGNAL_MSI")])
        }
        self.system = system
        vm = try system.createVM()
        try vm.setTSSAddress()
        if system.checkExtension(KVM_CAP_SET_IDENTITY_MAP_ADDR) > 0 { try vm.setIdentityMapAddress() }
        if irqchip {
            try vm.createIRQChip()
            try vm.createPIT2()
            interrupts = KVMInterruptController(vm: vm)
        } else {
            interrupts = nil
        }
        try vm.mapMemory(memory)
        vcpu = try vm.createVcpu(id: 0)
        try vcpu.setCPUID(cpuid.filter(try system.supportedCPUID(), vcpuID: 0))
        try configureMSRs()
        try configureFPU()
        if irqchip { try configureLAPIC() }
        KVMBackend.installKickHandler()
    }

    private func configureMSRs() throws(KVMError) {
        // As Firecracker: a clean syscall/sysenter state and fast string operations enabled.
        try vcpu.setMSRs([
            (0x174, 0), (0x175, 0), (0x176, 0),            // IA32_SYSENTER_CS/ESP/EIP
            (0xC000_0081, 0), (0xC000_0082, 0),            // STAR, LSTAR
            (0xC000_0083, 0), (0xC000_0084, 0),            // CSTAR, SFMASK
            (0xC000_0102, 0),                              // KERNEL_GS_BASE
            (0x10, 0),                                     // IA32_TSC
            (0x1A0, 1),                                    // IA32_MISC_ENABLE: fast strings
        ])
    }

    private func configureFPU() throws(KVMError) {
        var fpu = kvm_fpu()
        fpu.fcw = 0x37F   // x87 reset control word
        fpu.mxcsr = 0x1F80 // SSE exceptions masked
        try vcpu.setFPU(fpu)
    }

    /// LINT0 as ExtINT (the 8259 reaches the CPU through the LAPIC's virtual wire) and LINT1 as NMI,
    /// as a BIOS would leave them: Linux without an MP table or ACPI relies on this.
    private func configureLAPIC() throws(KVMError) {
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

    public func setEntryState(_ state: CPUEntryState) throws {
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

    public func run(io: IOHandler, control: VMControl) throws -> VcpuStop {
        let run = vcpu.run
        let thread = pthread_self()
        let box = KickTarget(run: run, thread: thread)
        control.addKicker { box.kick() }
        defer { box.disarm() }

        while true {
            if let stop = control.stopRequest { return stop }
            if control.hasPostedWork { control.runPostedWork() }
            guard try vcpu.runOnce() else {
                run.pointee.immediate_exit = 0
                continue
            }
            exitCount &+= 1
            switch Int32(bitPattern: run.pointee.exit_reason) {
            case KVM_EXIT_IO:
                handlePortIO(run, io: io)
            case KVM_EXIT_MMIO:
                handleMMIO(run, io: io)
            case KVM_EXIT_INTR:
                run.pointee.immediate_exit = 0
            case KVM_EXIT_HLT:
                // Only without an in-kernel irqchip: nothing can ever wake the vCPU.
                return .haltedForever
            case KVM_EXIT_SHUTDOWN:
                return .shutdown
            case KVM_EXIT_SYSTEM_EVENT:
                switch run.pointee.system_event.type {
                case UInt32(bitPattern: KVM_SYSTEM_EVENT_RESET): return .reset
                case UInt32(bitPattern: KVM_SYSTEM_EVENT_SHUTDOWN): return .poweroff
                default: return .shutdown
                }
            case KVM_EXIT_FAIL_ENTRY:
                throw VcpuError.failEntry(reason: run.pointee.fail_entry.hardware_entry_failure_reason)
            case KVM_EXIT_INTERNAL_ERROR:
                if softInterruptWorkaround, try injectFailedSoftInterrupt(run) { continue }
                throw VcpuError.internalError(suberror: run.pointee.internal.suberror, detail: internalErrorDetail(run))
            default:
                throw VcpuError.unhandled("unhandled KVM exit reason \(run.pointee.exit_reason)")
            }
        }
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

    private func injectFailedSoftInterrupt(_ run: UnsafeMutablePointer<kvm_run>) throws -> Bool {
        guard let insn = emulationFailureBytes(run), let op = insn.first else { return false }
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

    /// The instruction KVM's emulator failed on, when the exit carries its bytes
    /// (kvm_run.emulation_failure: flags (u64), then insn_size (u8) and up to 15 bytes).
    private func emulationFailureBytes(_ run: UnsafeMutablePointer<kvm_run>) -> [UInt8]? {
        guard run.pointee.internal.suberror == UInt32(bitPattern: KVM_INTERNAL_ERROR_EMULATION),
              run.pointee.internal.ndata >= 3 else { return nil }
        return withUnsafeBytes(of: run.pointee.internal.data) { raw -> [UInt8]? in
            let flags = raw.load(fromByteOffset: 0, as: UInt64.self)
            guard flags & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 else { return nil }
            let size = min(Int(raw[8]), 15)
            return (0..<size).map { raw[9 + $0] }
        }
    }

    /// Guest RIP and the words KVM attached to an internal error (for emulation failures they
    /// include the instruction bytes), so a user can report something actionable.
    private func internalErrorDetail(_ run: UnsafeMutablePointer<kvm_run>) -> String {
        var parts: [String] = []
        if let regs = try? vcpu.getRegs() { parts.append("rip 0x\(String(regs.rip, radix: 16))") }
        if let bytes = emulationFailureBytes(run), !bytes.isEmpty {
            parts.append("instruction bytes " + bytes.map { String(format2: $0) }.joined(separator: " "))
            return parts.joined(separator: ", ")
        }
        let n = min(Int(run.pointee.internal.ndata), 16)
        if n > 0 {
            let words = withUnsafeBytes(of: run.pointee.internal.data) { raw in
                (0..<n).map { "0x" + String(raw.load(fromByteOffset: $0 * 8, as: UInt64.self), radix: 16) }
            }
            parts.append("data " + words.joined(separator: " "))
        }
        return parts.joined(separator: ", ")
    }

    @inline(__always)
    private func handlePortIO(_ run: UnsafeMutablePointer<kvm_run>, io: IOHandler) {
        let port = run.pointee.io.port
        let size = Int(run.pointee.io.size)
        let count = Int(run.pointee.io.count)
        let data = UnsafeMutableRawPointer(run) + Int(run.pointee.io.data_offset)
        let out = run.pointee.io.direction == UInt8(truncatingIfNeeded: KVM_EXIT_IO_OUT)
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
    }

    @inline(__always)
    private func handleMMIO(_ run: UnsafeMutablePointer<kvm_run>, io: IOHandler) {
        let addr = run.pointee.mmio.phys_addr
        let len = min(Int(run.pointee.mmio.len), 8)
        withUnsafeMutableBytes(of: &run.pointee.mmio.data) { data in
            if run.pointee.mmio.is_write != 0 {
                var v: UInt64 = 0
                for i in 0..<len { v |= UInt64(data[i]) << (8 * UInt64(i)) }
                io.mmioWrite(addr, size: len, value: v)
            } else {
                let v = io.mmioRead(addr, size: len)
                for i in 0..<len { data[i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
            }
        }
    }
}

/// Lets another thread interrupt KVM_RUN: `immediate_exit` covers the race where the signal lands
/// just before the vCPU enters the guest.
private final class KickTarget: @unchecked Sendable {
    private let run: UnsafeMutablePointer<kvm_run>
    private let thread: pthread_t
    private var armed = true
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(run: UnsafeMutablePointer<kvm_run>, thread: pthread_t) {
        self.run = run
        self.thread = thread
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    func kick() {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        guard armed else { return }
        run.pointee.immediate_exit = 1
        pthread_kill(thread, SIGUSR1)
    }

    func disarm() {
        pthread_mutex_lock(lock)
        armed = false
        pthread_mutex_unlock(lock)
    }
}

extension String {
    /// Two lowercase hex digits.
    init(format2 b: UInt8) {
        let h = String(b, radix: 16)
        self = h.count == 1 ? "0" + h : h
    }
}
