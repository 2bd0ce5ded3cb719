import CKVM
import CPUBackend
import Glibc
import KVM
import VMMemory

/// The KVM half of the hybrid backend: a VM over the guest's RAM whose one vCPU only ever runs
/// guest user code (CPL 3). Every way out of user mode comes back as an exit:
/// - exceptions: the IDT limit given to KVM is 0, so any exception becomes a triple fault
///   (KVM_EXIT_SHUTDOWN) with the state of the fault and its vector in the vCPU events;
/// - SYSCALL: LSTAR/CSTAR point at an address the guest never maps (kvm-pvm jumps there at CPL 3
///   even with EFER.SCE clear), whose fetch faults;
/// - CPUID: CPUID faulting (MSR 0x140 MISC_FEATURES_ENABLES bit 0) makes it #GP, so the
///   software CPU answers it exactly as in software;
/// - interrupts: a signal to the vCPU thread ends KVM_RUN with EINTR at an instruction boundary.
/// No in-kernel irqchip: interrupts stay modelled by the software CPU.
final class NativeVcpu {
    let system: KVMSystem
    let vm: KVMVirtualMachine
    let vcpu: KVMVcpu
    let run: UnsafeMutablePointer<kvm_run>
    let memory: GuestMemory

    /// Where SYSCALL from 64-bit and compatibility-mode code lands: inside the kernel half's guard
    /// hole (0xffff800000000000-0xffff87ffffffffff), which Linux leaves unmapped for hypervisors.
    static let syscallTrap: UInt64 = 0xFFFF_8000_0000_0000
    static let compatSyscallTrap: UInt64 = 0xFFFF_8000_0000_1000

    /// A one-page memory slot outside guest RAM whose deletion and re-creation makes KVM drop every
    /// shadow page table (kvm-pvm does not see page tables written through the host mapping).
    static let zapSlotAddress: UInt64 = 0xFFFB_0000
    let zapSlot: UInt32
    let zapPage: UnsafeMutableRawPointer
    /// Guest RAM regions as dirty-logged slots 0..<regions.count.
    let ramSlots: [(slot: UInt32, base: UInt64, pages: Int)]
    /// KVM reports a triple fault it raised but has not turned into an exit yet in the vCPU events
    /// (KVM_CAP_X86_TRIPLE_FAULT_EVENT): see `shutdownPending`.
    let tripleFaultVisible: Bool

    /// The KVM_RUN signal mask (our kick signal unblocked).
    let kickSignal: Int32

    init(memory: GuestMemory, kickSignal: Int32, using existing: KVMSystem? = nil) throws(KVMError) {
        let system: KVMSystem
        if let existing { system = existing } else { system = try KVMSystem() }
        try system.require([(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"),
                            (KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS"),
                            (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2")])
        self.system = system
        self.memory = memory
        self.kickSignal = kickSignal
        vm = try system.createVM()
        try vm.setTSSAddress()
        // Dirty pages start "dirty" (writable): only pages we clear are write-protected, which
        // is how writes to pages holding decoded code are noticed (see CodeWriteTracker).
        let manual = UInt64(truncatingIfNeeded: max(0, system.checkExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)))
        try vm.enableCap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                         [manual & UInt64(truncatingIfNeeded: KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET)])
        // Without it a kick that ends KVM_RUN between an exception's failed delivery and the
        // shutdown exit would lose the exception (the next KVM_RUN would report it for other state).
        tripleFaultVisible = system.checkExtension(KVM_CAP_X86_TRIPLE_FAULT_EVENT) > 0
            && (try? vm.enableCap(KVM_CAP_X86_TRIPLE_FAULT_EVENT, [1])) != nil
        var slots: [(UInt32, UInt64, Int)] = []
        for (i, r) in memory.regions.enumerated() {
            try vm.setMemoryRegion(slot: UInt32(truncatingIfNeeded: i), flags: UInt32(truncatingIfNeeded: KVM_MEM_LOG_DIRTY_PAGES), guestAddress: r.guestBase,
                                   size: r.size, host: r.host)
            slots.append((UInt32(truncatingIfNeeded: i), r.guestBase, Int(r.size >> 12)))
        }
        ramSlots = slots
        zapSlot = UInt32(truncatingIfNeeded: memory.regions.count)
        guard let page = mmap(nil, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              page != MAP_FAILED else { throw KVMError("mmap", errno: errno) }
        zapPage = page
        try vm.setMemoryRegion(slot: zapSlot, flags: 0, guestAddress: NativeVcpu.zapSlotAddress, size: 4096, host: zapPage)

        vcpu = try vm.createVcpu(id: 0)
        run = vcpu.run
        try vcpu.setCPUID(CPUIDPolicy(minimal: true).filter(try system.supportedCPUID(), vcpuID: 0))
        try vcpu.setMSRs([
            (0xC000_0081, 0),                                 // STAR (kvm-pvm keeps CPL 3 anyway)
            (0xC000_0082, NativeVcpu.syscallTrap),            // LSTAR
            (0xC000_0083, NativeVcpu.compatSyscallTrap),      // CSTAR
            (0xC000_0084, 0),                                 // SFMASK: RFLAGS comes back in R11 anyway
            (0x174, 0),                                       // SYSENTER_CS 0: SYSENTER faults
            (0x140, 1),                                       // MISC_FEATURES_ENABLES: CPUID faulting
        ])
        var mask = sigset_t()
        sigemptyset(&mask)
        try vcpu.setSignalMask(mask)   // nothing blocked while in the guest
        // Events, registers and segment state come back through kvm_run on every exit.
        run.pointee.kvm_valid_regs = UInt64(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS)
        // The sync area is filled by the first exit; until then it must hold KVM's real state,
        // because entries only overwrite what the software CPU owns.
        run.pointee.s.regs.regs = try vcpu.getRegs()
        run.pointee.s.regs.sregs = try vcpu.getSregs()
        run.pointee.s.regs.events = try vcpu.getVcpuEvents()
    }

    deinit { munmap(zapPage, 4096) }

    /// Drops every shadow page KVM built from guest page tables: deleting any memory slot zaps
    /// them all (KVM_X86_QUIRK_SLOT_ZAP_ALL, on by default).
    func zapShadowPageTables() throws(KVMError) {
        try vm.setMemoryRegion(slot: zapSlot, flags: 0, guestAddress: NativeVcpu.zapSlotAddress, size: 0, host: zapPage)
        try vm.setMemoryRegion(slot: zapSlot, flags: 0, guestAddress: NativeVcpu.zapSlotAddress, size: 4096, host: zapPage)
    }

    /// After a kick (EINTR): an exception from user code already became a triple fault that KVM
    /// would report as KVM_EXIT_SHUTDOWN on the next KVM_RUN. The state in kvm_run is the fault's.
    var shutdownPending: Bool {
        let e = run.pointee.s.regs.events
        return e.flags & UInt32(truncatingIfNeeded: KVM_VCPUEVENT_VALID_TRIPLE_FAULT) != 0 && e.triple_fault.pending != 0
    }

    /// Enters the guest once. Returns the exit reason, or nil when a signal (a kick or the
    /// interrupt timer) ended the call before or during guest execution.
    @inline(__always)
    func enter() throws(KVMError) -> Int32? {
        let r = ioctl(vcpu.fd, CKVM_KVM_RUN(), CInt(0))
        if r >= 0 { return Int32(bitPattern: run.pointee.exit_reason) }
        let e = errno
        if e == EINTR || e == EAGAIN { return nil }
        throw KVMError("KVM_RUN", errno: e)
    }

    /// Completes an I/O or MMIO exit without running guest code, so the registers KVM reports
    /// afterwards are final (an IN's data in RAX, RIP past the instruction).
    func completePendingExit() throws(KVMError) {
        run.pointee.immediate_exit = 1
        defer { run.pointee.immediate_exit = 0 }
        let r = ioctl(vcpu.fd, CKVM_KVM_RUN(), CInt(0))
        if r < 0 && errno != EINTR && errno != EAGAIN { throw KVMError("KVM_RUN (completion)", errno: errno) }
    }
}
