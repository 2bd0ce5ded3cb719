import CPUBackend
import Devices
import KVM
import LinuxLoader
import Snapshot
import VMMemory

/// Everything that can stop swhv before or while running a guest, each with one clear line.
public enum MachineError: Error, CustomStringConvertible {
    case file(role: String, path: String, problem: String)
    case invalidArgument(String)
    case memory(MemoryError)
    case loader(LoaderError)
    /// Creating or configuring the KVM VM failed.
    case kvm(KVMError)
    /// The KVM vCPU failed while running the guest.
    case kvmRun(KVMRunError)
    case backendUnavailable(String)
    case platform(PlatformError)
    /// A `--net` TAP could not be attached.
    case net(NetError)
    /// The guest stopped in a way that is a failure (triple fault).
    case guestFailure(String)
    /// A snapshot could not be written, read or restored.
    case snapshot(SnapshotError)

    public var description: String {
        switch self {
        case .file(let role, let path, let problem): return "\(role) '\(path)' \(problem)"
        case .invalidArgument(let s): return s
        case .memory(let e): return e.description
        case .loader(let e): return e.description
        case .kvm(let e): return "KVM: \(e.description)"
        case .kvmRun(.ioctl(let e)): return "KVM: \(e.description)"
        case .kvmRun(let e): return e.description
        case .backendUnavailable(let s): return s
        case .platform(let e): return e.description
        case .net(let e): return e.description
        case .guestFailure(let s): return s
        case .snapshot(let e): return e.description
        }
    }
}
