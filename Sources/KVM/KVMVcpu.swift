import CKVM
import VMCore
import Glibc

/// One KVM vCPU: its fd, the shared `kvm_run` page, and typed register access.
public final class KVMVcpu: @unchecked Sendable {
    public let fd: Int32
    public let id: UInt32
    /// The `kvm_run` structure shared with the kernel; valid until deinit.
    public let run: UnsafeMutablePointer<kvm_run>
    /// The same page as raw bytes, and its size (KVM_GET_VCPU_MMAP_SIZE), for `KVMExit` to decode.
    public let runPage: UnsafeMutableRawPointer
    public let runSize: Int

    init(fd: Int32, id: UInt32, run: UnsafeMutableRawPointer, runSize: Int) {
        self.fd = fd
        self.id = id
        self.runPage = run
        self.run = run.assumingMemoryBound(to: kvm_run.self)
        self.runSize = runSize
    }

    deinit {
        munmap(runPage, runSize)
        close(fd)
    }

    public func getRegs() throws(KVMError) -> kvm_regs {
        var r = kvm_regs()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_REGS(), "KVM_GET_REGS", &r)
        return r
    }

    public func setRegs(_ regs: kvm_regs) throws(KVMError) {
        var r = regs
        _ = try kvmIoctl(fd, CKVM_KVM_SET_REGS(), "KVM_SET_REGS", &r)
    }

    public func getSregs() throws(KVMError) -> kvm_sregs {
        var s = kvm_sregs()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_SREGS(), "KVM_GET_SREGS", &s)
        return s
    }

    public func setSregs(_ sregs: kvm_sregs) throws(KVMError) {
        var s = sregs
        _ = try kvmIoctl(fd, CKVM_KVM_SET_SREGS(), "KVM_SET_SREGS", &s)
    }

    public func getFPU() throws(KVMError) -> kvm_fpu {
        var f = kvm_fpu()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_FPU(), "KVM_GET_FPU", &f)
        return f
    }

    public func setFPU(_ fpu: kvm_fpu) throws(KVMError) {
        var f = fpu
        _ = try kvmIoctl(fd, CKVM_KVM_SET_FPU(), "KVM_SET_FPU", &f)
    }

    public func setCPUID(_ entries: [kvm_cpuid_entry2]) throws(KVMError) {
        try withFlexibleArray(kvm_cpuid2.self, kvm_cpuid_entry2.self, count: entries.count) { (buf, header, dst) throws(KVMError) in
            header.pointee.nent = UInt32(entries.count)
            for (i, e) in entries.enumerated() { dst[i] = e }
            _ = try kvmIoctl(fd, CKVM_KVM_SET_CPUID2(), "KVM_SET_CPUID2", buf)
        }
    }

    /// Sets model-specific registers; throws if KVM accepted fewer than all of them.
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        let n = try withFlexibleArray(kvm_msrs.self, kvm_msr_entry.self, count: msrs.count) { (buf, header, dst) throws(KVMError) in
            header.pointee.nmsrs = UInt32(msrs.count)
            for (i, m) in msrs.enumerated() {
                dst[i].index = m.index
                dst[i].data = m.value
            }
            return Int(try kvmIoctl(fd, CKVM_KVM_SET_MSRS(), "KVM_SET_MSRS", buf))
        }
        if n != msrs.count {
            throw KVMError("KVM_SET_MSRS", errno: EINVAL, detail: "MSR \(hex(msrs[n].index)) was refused")
        }
    }

    /// Reads model-specific registers; nil for one KVM does not return.
    public func getMSRs(_ indices: [UInt32]) throws(KVMError) -> [UInt64?] {
        try withFlexibleArray(kvm_msrs.self, kvm_msr_entry.self, count: indices.count) { (buf, header, entries) throws(KVMError) in
            header.pointee.nmsrs = UInt32(truncatingIfNeeded: indices.count)
            for (i, index) in indices.enumerated() { entries[i].index = index }
            let n = Int(try kvmIoctl(fd, CKVM_KVM_GET_MSRS(), "KVM_GET_MSRS", buf))
            return indices.indices.map { $0 < n ? entries[$0].data : nil }
        }
    }

    public func getVcpuEvents() throws(KVMError) -> kvm_vcpu_events {
        var e = kvm_vcpu_events()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_VCPU_EVENTS(), "KVM_GET_VCPU_EVENTS", &e)
        return e
    }

    public func setVcpuEvents(_ events: kvm_vcpu_events) throws(KVMError) {
        var e = events
        _ = try kvmIoctl(fd, CKVM_KVM_SET_VCPU_EVENTS(), "KVM_SET_VCPU_EVENTS", &e)
    }

    public func getLAPIC() throws(KVMError) -> kvm_lapic_state {
        var s = kvm_lapic_state()
        _ = try kvmIoctl(fd, CKVM_KVM_GET_LAPIC(), "KVM_GET_LAPIC", &s)
        return s
    }

    public func setLAPIC(_ state: kvm_lapic_state) throws(KVMError) {
        var s = state
        _ = try kvmIoctl(fd, CKVM_KVM_SET_LAPIC(), "KVM_SET_LAPIC", &s)
    }

    /// Enters the guest once. Returns false if the call was interrupted by a signal (a kick) or by
    /// `immediate_exit`; the exit reason in `run` is valid only when it returns true.
    public func runOnce() throws(KVMError) -> Bool {
        let r = ioctl(fd, CKVM_KVM_RUN(), CInt(0))
        if r >= 0 { return true }
        let e = errno
        if e == EINTR || e == EAGAIN { return false }
        throw KVMError("KVM_RUN", errno: e)
    }
}
