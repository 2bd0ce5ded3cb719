import Glibc

/// Reading the files a user names (kernel, initrd) with errors a user understands.
public enum HostFile {
    /// The size of a regular file, or a `MachineError` naming what is wrong with it.
    public static func size(of path: String, role: String) throws(MachineError) -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw MachineError.file(role: role, path: path, problem: "cannot be read: " + String(cString: strerror(errno)))
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw MachineError.file(role: role, path: path, problem: "is a directory")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw MachineError.file(role: role, path: path, problem: "is not a regular file")
        }
        return UInt64(clamping: st.st_size)   // a regular file's size is never negative
    }

    /// Reads a whole regular file of at most `limit` bytes.
    public static func read(_ path: String, role: String, limit: UInt64) throws(MachineError) -> [UInt8] {
        let size = try size(of: path, role: role)
        if size == 0 { throw MachineError.file(role: role, path: path, problem: "is empty") }
        if size > limit {
            throw MachineError.file(role: role, path: path,
                                    problem: "is too large (\(size >> 20) MiB, at most \(limit >> 20) MiB fits)")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw MachineError.file(role: role, path: path, problem: "cannot be read: " + String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var done = 0
        let failure: Int32? = bytes.withUnsafeMutableBytes { buf -> Int32? in
            while done < buf.count {
                let n = Glibc.read(fd, buf.baseAddress! + done, buf.count - done)
                if n < 0 { if errno == EINTR { continue }; return errno }
                if n == 0 { break }
                done += n
            }
            return nil
        }
        if let failure {
            throw MachineError.file(role: role, path: path, problem: "cannot be read: " + String(cString: strerror(failure)))
        }
        if done < bytes.count { bytes.removeLast(bytes.count - done) }
        return bytes
    }

    /// Checks disk paths before any is opened: a FIFO would block `open` (read-only opens wait for
    /// a writer), a directory or device node is no disk, and one image given twice would be
    /// refused by its own lock with a misleading "in use by another process". Missing files are
    /// left to the disk's own open, which names the error.
    public static func checkDisks(_ paths: [String]) throws(MachineError) {
        var seen: [(dev: UInt64, ino: UInt64, path: String)] = []
        for path in paths {
            var st = stat()
            guard stat(path, &st) == 0 else { continue }
            let type = st.st_mode & S_IFMT
            if type == S_IFDIR { throw MachineError.file(role: "disk", path: path, problem: "is a directory") }
            guard type == S_IFREG || type == S_IFBLK else {
                throw MachineError.file(role: "disk", path: path, problem: "is not a regular file or block device")
            }
            if let first = seen.first(where: { $0.dev == UInt64(st.st_dev) && $0.ino == UInt64(st.st_ino) }) {
                let same = first.path == path ? "" : " (as '\(first.path)')"
                throw MachineError.file(role: "disk", path: path, problem: "is given more than once\(same)")
            }
            seen.append((UInt64(st.st_dev), UInt64(st.st_ino), path))
        }
    }
}
