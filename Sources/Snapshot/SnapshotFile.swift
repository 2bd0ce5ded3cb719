#if canImport(Glibc)
import Glibc
#endif

/// File plumbing for snapshots: bounded reads, full writes, and files that appear at their final
/// path only once complete (written under a temporary name, synced, then renamed), so a failed
/// snapshot leaves whatever was at the path before untouched.
public enum SnapshotFile {
    /// Reads a regular file of at most `limit` bytes.
    public static func readWhole(path: String, limit: UInt64) throws(SnapshotError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(path: path, operation: "stat", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .io(path: path, operation: "open (not a regular file)", errno: EINVAL) }
        let size = UInt64(clamping: st.st_size)
        guard size <= limit, let count = Int(exactly: size) else { throw .tooLarge(path: path, size: size, limit: limit) }
        var bytes = [UInt8](repeating: 0, count: count)
        let n = try bytes.withUnsafeMutableBytes { b in
            Result { () throws(SnapshotError) in
                b.count == 0 ? 0 : try preadAll(fd, b.baseAddress!, b.count, offset: 0, path: path)
            }
        }.get()
        if n < bytes.count { bytes.removeLast(bytes.count - n) }
        return bytes
    }

    /// Reads up to `count` bytes at `offset`, retrying short reads; returns fewer only at end of file.
    public static func preadAll(_ fd: Int32, _ buf: UnsafeMutableRawPointer, _ count: Int, offset: UInt64,
                                path: String) throws(SnapshotError) -> Int {
        var done = 0
        while done < count {
            let n = pread(fd, buf + done, count - done, off_t(Int64(bitPattern: offset + UInt64(truncatingIfNeeded: done))))
            if n < 0 { if errno == EINTR { continue }; throw .io(path: path, operation: "read", errno: errno) }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Writes all `count` bytes at `offset`.
    public static func pwriteAll(_ fd: Int32, _ buf: UnsafeRawPointer, _ count: Int, offset: UInt64,
                                 path: String) throws(SnapshotError) {
        var done = 0
        while done < count {
            let n = pwrite(fd, buf + done, count - done, off_t(Int64(bitPattern: offset + UInt64(truncatingIfNeeded: done))))
            if n < 0 { if errno == EINTR { continue }; throw .io(path: path, operation: "write", errno: errno) }
            if n == 0 { throw .io(path: path, operation: "write", errno: EIO) }
            done += n
        }
    }

    /// Sixteen random bytes: ties a state file to its memory file.
    public static func newSnapshotID() -> [UInt8] {
        var id = [UInt8](repeating: 0, count: 16)
        var got = 0
        let fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            got = id.withUnsafeMutableBytes { b in (try? preadAll(fd, b.baseAddress!, 16, offset: 0, path: "/dev/urandom")) ?? 0 }
            close(fd)
        }
        if got < 16 {
            // No entropy source: the clock still tells two snapshots apart.
            var ts = timespec()
            clock_gettime(CLOCK_REALTIME, &ts)
            withUnsafeBytes(of: ts) { for (i, b) in $0.prefix(16).enumerated() { id[i] ^= b } }
        }
        return id
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// A file written under a temporary name beside its final path and renamed into place by
/// `commit()`. Dropped without a commit, the temporary file is removed.
public final class PendingFile {
    public let path: String
    public let temporaryPath: String
    public let fd: Int32
    private var committed = false

    public init(path: String) throws(SnapshotError) {
        self.path = path
        var template = Array((path + ".tmp-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw .io(path: path, operation: "create", errno: errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.fd = fd
        temporaryPath = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o600)   // guest RAM and CPU state are as private as the guest's disk
    }

    public func write(_ bytes: [UInt8], at offset: UInt64 = 0) throws(SnapshotError) {
        try bytes.withUnsafeBytes { b in
            Result { () throws(SnapshotError) in
                guard let base = b.baseAddress else { return }
                try SnapshotFile.pwriteAll(fd, base, b.count, offset: offset, path: temporaryPath)
            }
        }.get()
    }

    /// Sets the length (a sparse file when it grows: unwritten ranges are holes).
    public func setLength(_ length: UInt64) throws(SnapshotError) {
        guard ftruncate(fd, off_t(Int64(bitPattern: length))) == 0 else {
            throw .io(path: temporaryPath, operation: "truncate", errno: errno)
        }
    }

    /// Makes the contents durable and moves the file to its final path.
    public func commit() throws(SnapshotError) {
        guard fsync(fd) == 0 else { throw .io(path: temporaryPath, operation: "fsync", errno: errno) }
        guard rename(temporaryPath, path) == 0 else { throw .io(path: path, operation: "rename", errno: errno) }
        committed = true
    }

    deinit {
        close(fd)
        if !committed { unlink(temporaryPath) }
    }
}
