#if canImport(Glibc)
import Glibc
#endif

/// Why a snapshot could not be written or read: each one line, naming the file and what is wrong.
/// Readers check everything before anything is applied: a refused snapshot changes nothing.
public enum SnapshotError: Error, Equatable, CustomStringConvertible {
    /// A system call on `path` failed.
    case io(path: String, operation: String, errno: Int32)
    /// The file does not start with the snapshot's magic bytes.
    case notASnapshot(path: String, expected: String)
    /// Written by a swhv with another container format.
    case unsupportedVersion(path: String, found: UInt32, supported: UInt32)
    /// The file ends before its header says it does.
    case truncated(path: String, detail: String)
    /// A checksum, offset or field that cannot be right.
    case corrupted(path: String, detail: String)
    /// The file is larger than any snapshot this swhv writes.
    case tooLarge(path: String, size: UInt64, limit: UInt64)
    /// The state file has no section `tag`.
    case missingSection(String)
    /// A section whose content cannot be used (bad JSON, a newer section version, bad values).
    case badSection(String, detail: String)
    /// The memory file does not belong to this state file, or the machine differs.
    case mismatch(String)
    /// The snapshot's guest RAM is larger than the restore allows.
    case memoryTooLarge(needed: UInt64, allowed: UInt64)
    /// A disk of the snapshot is missing or is not the disk the snapshot was taken with.
    case disk(path: String, problem: String)
    /// A piece of state this build cannot capture or restore yet.
    case unsupported(String)

    public var description: String {
        switch self {
        case .io(let path, let op, let e):
            return "snapshot file '\(path)': \(op) failed: \(String(cString: strerror(e)))"
        case .notASnapshot(let path, let expected):
            return "'\(path)' is not a swhv snapshot \(expected) (wrong magic bytes)"
        case .unsupportedVersion(let path, let found, let supported):
            return "snapshot '\(path)' has format version \(found); this swhv reads version \(supported)"
        case .truncated(let path, let detail): return "snapshot file '\(path)' is truncated: \(detail)"
        case .corrupted(let path, let detail): return "snapshot file '\(path)' is corrupted: \(detail)"
        case .tooLarge(let path, let size, let limit):
            return "snapshot file '\(path)' is too large (\(size) bytes; at most \(limit))"
        case .missingSection(let tag): return "snapshot has no '\(tag)' section"
        case .badSection(let tag, let detail): return "snapshot section '\(tag)': \(detail)"
        case .mismatch(let s): return s
        case .memoryTooLarge(let needed, let allowed):
            return "snapshot needs \(needed >> 20) MiB of guest RAM, more than --memory allows (\(allowed >> 20) MiB)"
        case .disk(let path, let problem): return "snapshot disk '\(path)' \(problem)"
        case .unsupported(let s): return s
        }
    }
}
