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
            let leaves = try withFlexibleArray(kvm_cpuid2.self, kvm_cpuid_entry2.self, count: count) {
                (buf, header, entries) throws(KVMError) -> [kvm_cpuid_entry2]? in
                header.pointee.nent = UInt32(count)
                if ioctl(fd, CKVM_KVM_GET_SUPPORTED_CPUID(), buf) < 0 {
                    if errno == E2BIG && count < 4096 { return nil }
                    throw KVMError("KVM_GET_SUPPORTED_CPUID", errno: errno)
                }
                return Array(UnsafeBufferPointer(start: entries, count: min(Int(header.pointee.nent), count)))
            }
            if let leaves { return leaves }
            count *= 2
        }
    }

    /// Creates an empty VM.
    public func createVM() throws(KVMError) -> KVMVirtualMachine {
        let vmfd = try kvmIoctl(fd, CKVM_KVM_CREATE_VM(), "KVM_CREATE_VM", value: 0)
        return KVMVirtualMachine(fd: vmfd, system: self)
    }

    /// True when this host's KVM cannot run guest kernel code on hardware (kvm-pvm: guest user code
    /// runs natively, guest kernel code in the host's emulator, orders of magnitude slower).
    public static var emulatesSupervisorCode: Bool { !KVMHostKind.thisHost.runsGuestKernelsNatively }
}
