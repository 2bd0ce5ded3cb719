#if canImport(Glibc)
import Glibc
#endif

/// What a snapshot records about each disk so a restore reattaches the same one, unchanged:
/// the guest's page cache and filesystem state in the snapshot are only valid against the exact
/// bytes the disk held when the snapshot was taken.
///
/// Checked on restore: the path opens, the size is the same, and it is the same file (device and
/// inode) not modified since (mtime, nanoseconds). A copy, a replaced file or one written after
/// the snapshot (by the guest after a resume, or anyone else) is refused. The XXH64 of the first
/// 64 KiB (the partition table or filesystem superblock) is recorded too; it names what changed.
public struct DiskIdentity: Codable, Equatable, Sendable {
    public var path: String
    public var readOnly: Bool
    public var serial: String
    public var bytes: UInt64
    public var device: UInt64
    public var inode: UInt64
    public var mtimeNs: UInt64
    public var headerHash: UInt64

    public static let headerBytes = 64 << 10

    enum CodingKeys: String, CodingKey {
        case path, readOnly = "read_only", serial, bytes, device, inode, mtimeNs = "mtime_ns"
        case headerHash = "header_hash"
    }

    public init(path: String, readOnly: Bool, serial: String, bytes: UInt64, device: UInt64, inode: UInt64,
                mtimeNs: UInt64, headerHash: UInt64) {
        self.path = path; self.readOnly = readOnly; self.serial = serial; self.bytes = bytes
        self.device = device; self.inode = inode; self.mtimeNs = mtimeNs; self.headerHash = headerHash
    }

    /// The identity of the disk at `path` now. Block devices report their size through lseek.
    public static func current(path: String, readOnly: Bool, serial: String) throws(SnapshotError) -> DiskIdentity {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            let e = errno
            throw .disk(path: path, problem: e == ENOENT ? "is missing" : "cannot be opened: \(String(cString: strerror(e)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .disk(path: path, problem: "cannot be examined: \(String(cString: strerror(errno)))") }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFBLK else { throw .disk(path: path, problem: "is not a regular file or block device") }
        let size = type == S_IFBLK ? UInt64(clamping: lseek(fd, 0, SEEK_END)) : UInt64(clamping: st.st_size)
        var head = [UInt8](repeating: 0, count: headerBytes)
        let n = head.withUnsafeMutableBytes { b in
            (try? SnapshotFile.preadAll(fd, b.baseAddress!, b.count, offset: 0, path: path)) ?? 0
        }
        let mtime = UInt64(bitPattern: Int64(st.st_mtim.tv_sec)) &* 1_000_000_000 &+ UInt64(bitPattern: Int64(st.st_mtim.tv_nsec))
        return DiskIdentity(path: path, readOnly: readOnly, serial: serial, bytes: size, device: UInt64(st.st_dev),
                            inode: UInt64(st.st_ino), mtimeNs: mtime, headerHash: XXHash64.hash(Array(head[0..<n])))
    }

    /// Refuses a disk that is not, byte for byte as far as we can tell, the one recorded.
    public func checkUnchanged() throws(SnapshotError) {
        let now = try DiskIdentity.current(path: path, readOnly: readOnly, serial: serial)
        if now.bytes != bytes {
            throw .disk(path: path, problem: "changed size since the snapshot (\(bytes) bytes then, \(now.bytes) now)")
        }
        if now.device != device || now.inode != inode {
            throw .disk(path: path, problem: "is another file than the one the snapshot was taken with (replaced or copied)")
        }
        if now.headerHash != headerHash {
            throw .disk(path: path, problem: "was modified since the snapshot (its first 64 KiB differ)")
        }
        if now.mtimeNs != mtimeNs {
            throw .disk(path: path, problem: "was modified since the snapshot (its modification time changed)")
        }
    }
}
