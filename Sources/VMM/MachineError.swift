import CPUBackend
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
    case kvm(KVMError)
    case backendUnavailable(String)
    case vcpu(VcpuError)
    case device(String)
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
        case .backendUnavailable(let s): return s
        case .vcpu(let e): return e.description
        case .device(let s): return s
        case .guestFailure(let s): return s
        case .snapshot(let e): return e.description
        }
    }
}
