import CKVM
import Glibc

/// The KVM subsystem (`/dev/kvm`): API version, capabilities, supported CPUID, VM creation.
public final class KVMSystem {
    public static let expectedAPIVersion: Int32 = 12
    public let fd: Int32

    /// Opens `/dev/kvm` (or `path`) and checks the API version.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw KVMError("open \(path)", errno: errno) }
        self.fd = fd
        let version = try kvmIoctl(fd, CKVM_KVM_GET_API_VERSION(), "KVM_GET_API_VERSION", nil)
        guard version == KVMSystem.expectedAPIVersion else {
            close(fd)
            throw KVMError("KVM_GET_API_VERSION", errno: ENOTSUP,
                           detail: "API version \(version), swhv needs \(KVMSystem.expectedAPIVersion)")
        }
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION: 0 if unsupported, otherwise a capability-specific positive value.
    public func checkExtension(_ cap: Int32) -> Int32 {
        let r = try? kvmIoctl(fd, CKVM_KVM_CHECK_EXTENSION(), "KVM_CHECK_EXTENSION", value: UInt(bitPattern: Int(cap)))
        return max(r ?? 0, 0)
    }

    /// Throws if any of `caps` is missing, naming it.
    public func require(_ caps: [(Int32, String)]) throws(KVMError) {
        for (cap, name) in caps where checkExtension(cap) <= 0 {
            throw KVMError("KVM_CHECK_EXTENSION", errno: ENOTSUP, detail: "\(name) is not supported by this host")
        }
    }

    /// Size of the per-vCPU `kvm_run` mapping.
    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try kvmIoctl(fd, CKVM_KVM_GET_VCPU_MMAP_SIZE(), "KVM_GET_VCPU_MMAP_SIZE", nil))
    }

    /// KVM_GET_SUPPORTED_CPUID: every leaf the host and KVM can offer a guest.
    public func supportedCPUID() throws(KVMError) -> [kvm_cpuid_entry2] {
        var count = 128
        while true {
            let bytes = MemoryLayout<kvm_cpuid2>.size + count * MemoryLayout<kvm_cpuid_entry2>.stride
            let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
            defer { buf.deallocate() }
            memset(buf, 0, bytes)
            buf.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(count)
            let r = ioctl(fd, CKVM_KVM_GET_SUPPORTED_CPUID(), buf)
            if r < 0 {
                if errno == E2BIG && count < 4096 { count *= 2; continue }
                throw KVMError("KVM_GET_SUPPORTED_CPUID", errno: errno)
            }
            let n = Int(buf.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent)
            let entries = (buf + MemoryLayout<kvm_cpuid2>.size).assumingMemoryBound(to: kvm_cpuid_entry2.self)
            return Array(UnsafeBufferPointer(start: entries, count: n))
        }
    }

    /// Creates an empty VM.
    public func createVM() throws(KVMError) -> KVMVirtualMachine {
        let vmfd = try kvmIoctl(fd, CKVM_KVM_CREATE_VM(), "KVM_CREATE_VM", value: 0)
        return KVMVirtualMachine(fd: vmfd, system: self)
    }

    /// True when this host's KVM is kvm-pvm (nested, no VMX/SVM): guest user code runs natively but
    /// guest kernel code is emulated by the host, orders of magnitude slower than hardware.
    public static var emulatesSupervisorCode: Bool {
        if access("/sys/module/kvm_pvm", F_OK) == 0 { return true }
        return false
    }
}
