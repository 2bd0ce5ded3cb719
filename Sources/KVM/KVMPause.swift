import CKVM
import Glibc

/// What the guest's clocks read when the VM was paused: kvmclock, the guest TSC, the local APIC
/// (its timer's remaining count).
public struct KVMPausedClocks: Sendable {
    let clock: UInt64
    let tsc: UInt64
    let lapic: kvm_lapic_state?
}

/// Pausing a KVM guest without its time jumping: KVM keeps kvmclock and the TSC running in host
/// time while no vCPU runs, so a resume alone would show the guest the whole pause at once (its
/// clock leaps, timers fire late). `freezeGuestTime` records both; `resumeGuestTime` moves the TSC
/// offset back by the pause (KVM_VCPU_TSC_OFFSET where the kernel has it, else a write of the saved
/// TSC) and sets kvmclock back to its saved value (KVM_SET_CLOCK), as migration does. vCPU thread only.
extension KVMBackend {
    /// Completes an I/O or MMIO exit KVM is still emulating: until the next KVM_RUN, the vCPU's
    /// registers do not yet reflect an IN or MMIO read. KVM_RUN with `immediate_exit` set finishes
    /// that and returns at once (the KVM API's advice before saving state).
    public func completePendingIO() throws(KVMError) {
        let run = vcpu.run
        let saved = run.pointee.immediate_exit
        run.pointee.immediate_exit = 1
        defer { run.pointee.immediate_exit = saved }
        _ = try vcpu.runOnce()
    }

    public func freezeGuestTime() throws(KVMError) -> KVMPausedClocks {
        try completePendingIO()
        var clock = kvm_clock_data()
        _ = try kvmIoctl(vm.fd, CKVM_KVM_GET_CLOCK(), "KVM_GET_CLOCK", &clock)
        let tsc = try vcpu.getMSR(0x10)
        let lapic = interrupts != nil ? try vcpu.getLAPIC() : nil
        return KVMPausedClocks(clock: clock.clock, tsc: tsc, lapic: lapic)
    }

    public func resumeGuestTime(_ paused: KVMPausedClocks) throws(KVMError) {
        let now = try vcpu.getMSR(0x10)
        if let offset = try vcpu.tscOffset() {
            // The guest TSC ran on by (now - paused.tsc) while paused: take that back.
            try vcpu.setTSCOffset(offset &- (now &- paused.tsc))
        } else {
            try vcpu.setMSRs([(0x10, paused.tsc)])
        }
        var clock = kvm_clock_data()
        clock.clock = paused.clock
        _ = try kvmIoctl(vm.fd, CKVM_KVM_SET_CLOCK(), "KVM_SET_CLOCK", &clock)
        // Reloading the LAPIC restarts its timer from the count it had left (KVM_SET_LAPIC uses
        // the saved current count), instead of firing for the time spent paused.
        if let lapic = paused.lapic { try vcpu.setLAPIC(lapic) }
    }
}

extension KVMVcpu {
    /// Reads one MSR; throws if KVM does not return it.
    public func getMSR(_ index: UInt32) throws(KVMError) -> UInt64 {
        let bytes = MemoryLayout<kvm_msrs>.size + MemoryLayout<kvm_msr_entry>.stride
        let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        defer { buf.deallocate() }
        memset(buf, 0, bytes)
        buf.assumingMemoryBound(to: kvm_msrs.self).pointee.nmsrs = 1
        let entry = (buf + MemoryLayout<kvm_msrs>.size).assumingMemoryBound(to: kvm_msr_entry.self)
        entry.pointee.index = index
        let n = try kvmIoctl(fd, CKVM_KVM_GET_MSRS(), "KVM_GET_MSRS", buf)
        guard n == 1 else {
            throw KVMError("KVM_GET_MSRS", errno: EINVAL, detail: "MSR 0x\(String(index, radix: 16)) was not returned")
        }
        return entry.pointee.data
    }

    /// The TSC offset (KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET, Linux 5.16+); nil where the kernel
    /// lacks the attribute.
    public func tscOffset() throws(KVMError) -> UInt64? {
        var value: UInt64 = 0
        let found: Bool = withUnsafeMutablePointer(to: &value) { p in
            var attr = kvm_device_attr()
            attr.group = UInt32(truncatingIfNeeded: KVM_VCPU_TSC_CTRL)
            attr.attr = UInt64(truncatingIfNeeded: KVM_VCPU_TSC_OFFSET)
            attr.addr = UInt64(UInt(bitPattern: p))
            guard ioctl(fd, CKVM_KVM_HAS_DEVICE_ATTR(), &attr) == 0 else { return false }
            return ioctl(fd, CKVM_KVM_GET_DEVICE_ATTR(), &attr) == 0
        }
        return found ? value : nil
    }

    /// Whether this host really offsets the guest TSC: kvm-pvm accepts the attribute but keeps the
    /// guest on the host's TSC (no hardware TSC offsetting), so a paused guest's TSC runs on there.
    /// Probes by moving the offset and putting it back; call before the vCPU runs.
    public func canOffsetTSC() -> Bool {
        guard let original = try? tscOffset() else { return false }
        let probe = original &+ 1_000_000
        guard (try? setTSCOffset(probe)) != nil else { return false }
        let seen = try? tscOffset()
        try? setTSCOffset(original)
        return seen == probe
    }

    public func setTSCOffset(_ offset: UInt64) throws(KVMError) {
        var value = offset
        try withUnsafeMutablePointer(to: &value) { (p) throws(KVMError) in
            var attr = kvm_device_attr()
            attr.group = UInt32(truncatingIfNeeded: KVM_VCPU_TSC_CTRL)
            attr.attr = UInt64(truncatingIfNeeded: KVM_VCPU_TSC_OFFSET)
            attr.addr = UInt64(UInt(bitPattern: p))
            _ = try kvmIoctl(fd, CKVM_KVM_SET_DEVICE_ATTR(), "KVM_SET_DEVICE_ATTR(TSC_OFFSET)", &attr)
        }
    }
}
