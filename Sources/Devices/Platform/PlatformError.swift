import ACPI
import VMCore
import VMMemory

/// Why the platform could not be built, each keeping its cause: these are configuration errors
/// (a disk that cannot be opened, devices that do not fit), never guest-triggered.
public enum PlatformError: Error, Equatable, CustomStringConvertible {
    case bus(BusError)
    case pci(PciError)
    case disk(BlockError)
    /// The same writable image named twice: its lock would refuse the second one anyway.
    case diskGivenTwice(path: String)
    /// The ACPI tables could not be built (too many CPUs for them).
    case acpi(ACPIError)
    /// The ACPI tables did not fit in guest RAM.
    case acpiMemory(MemoryError)

    public var description: String {
        switch self {
        case .bus(let e): return e.description
        case .pci(let e): return e.description
        case .disk(let e): return e.description
        case .diskGivenTwice(let p): return "disk \(p) is given twice; a writable disk can be attached only once"
        case .acpi(let e): return e.description
        case .acpiMemory(let e): return "ACPI tables: \(e)"
        }
    }
}
