import CKVM
import CPUBackend
import Glibc
import Synchronization
import VMMemory

/// A KVM virtual machine: memory slots, in-kernel irqchip and PIT, interrupt injection, vCPUs.
public final class KVMVirtualMachine: @unchecked Sendable {
    public let fd: Int32
    let system: KVMSystem

    /// Where KVM may place its TSS (3 pages) and identity-map page: the pages `PCLayout` keeps free
    /// for them inside the 32-bit MMIO hole.
    public static let tssAddress: UInt64 = PCLayout.MMIO.kvmTSS.base
    public static let identityMapAddress: UInt64 = PCLayout.MMIO.kvmIdentityMap.base

    init(fd: Int32, system: KVMSystem) {
        self.fd = fd
        self.system = system
    }

    deinit { close(fd) }

    public func setTSSAddress(_ address: UInt64 = KVMVirtualMachine.tssAddress) throws(KVMError) {
        _ = try kvmIoctl(fd, CKVM_KVM_SET_TSS_ADDR(), "KVM_SET_TSS_ADDR", value: UInt(address))
    }

    public func setIdentityMapAddress(_ address: UInt64 = KVMVirtualMachine.identityMapAddress) throws(KVMError) {
        var a = address
        _ = try kvmIoctl(fd, CKVM_KVM_SET_IDENTITY_MAP_ADDR(), "KVM_SET_IDENTITY_MAP_ADDR", &a)
    }

    /// In-kernel 8259 pair, IOAPIC and per-vCPU local APICs.
    public func createIRQChip() throws(KVMError) {
        _ = try kvmIoctl(fd, CKVM_KVM_CREATE_IRQCHIP(), "KVM_CREATE_IRQCHIP", nil)
    }

    /// In-kernel 8254 PIT (with a dummy speaker port so port 0x61 reads work).
    public func createPIT2() throws(KVMError) {
        var cfg = kvm_pit_config()
        cfg.flags = UInt32(bitPattern: KVM_PIT_SPEAKER_DUMMY)
        _ = try kvmIoctl(fd, CKVM_KVM_CREATE_PIT2(), "KVM_CREATE_PIT2", &cfg)
    }

    /// Maps every region of `memory` into the guest, one slot each.
    public func mapMemory(_ memory: GuestMemory) throws(KVMError) {
        for (slot, r) in memory.regions.enumerated() {
            var region = kvm_userspace_memory_region(
                slot: UInt32(slot), flags: 0, guest_phys_addr: r.guestBase, memory_size: r.size,
                userspace_addr: UInt64(UInt(bitPattern: r.host)))
            _ = try kvmIoctl(fd, CKVM_KVM_SET_USER_MEMORY_REGION(), "KVM_SET_USER_MEMORY_REGION", &region)
        }
    }

    /// Sets the level of an in-kernel irqchip input (GSI).
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var l = kvm_irq_level()
        l.irq = gsi
        l.level = level ? 1 : 0
        _ = try kvmIoctl(fd, CKVM_KVM_IRQ_LINE(), "KVM_IRQ_LINE", &l)
    }

    /// Injects a message-signalled interrupt.
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) {
        var m = kvm_msi()
        m.address_lo = UInt32(truncatingIfNeeded: address)
        m.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        m.data = data
        _ = try kvmIoctl(fd, CKVM_KVM_SIGNAL_MSI(), "KVM_SIGNAL_MSI", &m)
    }

    /// One route of the in-kernel irqchip: a GSI to an input pin of the master or slave 8259 or of
    /// the I/O APIC.
    public struct IRQRoute: Equatable, Sendable {
        public enum Chip: UInt32, Sendable { case picMaster = 0, picSlave = 1, ioapic = 2 }
        public var gsi: UInt32
        public var chip: Chip
        public var pin: UInt32
        public init(gsi: UInt32, chip: Chip, pin: UInt32) { self.gsi = gsi; self.chip = chip; self.pin = pin }
    }

    /// The PC's routing in `PCLayout` terms: GSI n (n < 16, n != 2) to 8259 input n, and every GSI
    /// with an I/O APIC pin to that pin (ISA IRQ 0, the PIT, to pin 2, as the MADT's override says;
    /// KVM's default routing would send it to pin 0, where Linux does not look for the timer).
    public static var pcRouting: [IRQRoute] {
        var routes: [IRQRoute] = []
        for gsi in 0..<PCLayout.GSI.ioapicPins {
            if gsi < PCLayout.GSI.isaCount && gsi != PCLayout.GSI.cascade {
                routes.append(IRQRoute(gsi: gsi, chip: gsi < 8 ? .picMaster : .picSlave, pin: gsi & 7))
            }
            if let pin = PCLayout.GSI.ioapicPin(gsi) { routes.append(IRQRoute(gsi: gsi, chip: .ioapic, pin: pin)) }
        }
        return routes
    }

    /// Replaces the irqchip's GSI routing table (KVM_SET_GSI_ROUTING).
    public func setGSIRouting(_ routes: [IRQRoute]) throws(KVMError) {
        try withFlexibleArray(kvm_irq_routing.self, kvm_irq_routing_entry.self, count: routes.count) {
            (buf, header, entries) throws(KVMError) in
            header.pointee.nr = UInt32(truncatingIfNeeded: routes.count)
            for (i, r) in routes.enumerated() {
                entries[i].gsi = r.gsi
                entries[i].type = UInt32(truncatingIfNeeded: KVM_IRQ_ROUTING_IRQCHIP)
                entries[i].u.irqchip.irqchip = r.chip.rawValue
                entries[i].u.irqchip.pin = r.pin
            }
            _ = try kvmIoctl(fd, CKVM_KVM_SET_GSI_ROUTING(), "KVM_SET_GSI_ROUTING", buf)
        }
    }

    /// Creates vCPU `id` with its `kvm_run` mapping.
    public func createVcpu(id: UInt32) throws(KVMError) -> KVMVcpu {
        let vcpufd = try kvmIoctl(fd, CKVM_KVM_CREATE_VCPU(), "KVM_CREATE_VCPU", value: UInt(id))
        let size = try system.vcpuMmapSize()
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpufd, 0), p != MAP_FAILED else {
            let e = errno
            close(vcpufd)
            throw KVMError("mmap kvm_run", errno: e)
        }
        return KVMVcpu(fd: vcpufd, id: id, run: p, runSize: size)
    }
}

/// Devices' interrupts through KVM's in-kernel irqchip.
///
/// Devices cannot act on a refused interrupt, but the guest would wait for it forever (a disk
/// request that never completes). So the first failure is kept, and the vCPU run loop ends the VM
/// with it (`KVMRunError.interruptDelivery`) before entering the guest again.
public final class KVMInterruptController: InterruptController {
    let vm: KVMVirtualMachine
    private let failed = Atomic<Bool>(false)
    private let failure = Mutex<KVMError?>(nil)

    public init(vm: KVMVirtualMachine) { self.vm = vm }

    /// The first KVM_IRQ_LINE or KVM_SIGNAL_MSI that failed, if any.
    public var firstFailure: KVMError? {
        guard failed.load(ordering: .relaxed) else { return nil }
        return failure.withLock { $0 }
    }

    public func setIRQ(_ gsi: UInt32, level: Bool) {
        do { try vm.setIRQLine(gsi, level: level) } catch { record(error) }
    }

    /// KVM_SIGNAL_MSI returns 0 when the guest blocked the message (a masked or absent destination):
    /// that is the guest's choice, not a failure.
    public func signalMSI(address: UInt64, data: UInt32) {
        do { try vm.signalMSI(address: address, data: data) } catch { record(error) }
    }

    private func record(_ error: KVMError) {
        failure.withLock { if $0 == nil { $0 = error } }
        failed.store(true, ordering: .releasing)
    }
}
