import Glibc

/// Reading the files a user names (kernel, initrd) with errors a user understands.
public enum HostFile {
    /// The size of a regular file, or a `MachineError` naming what is wrong with it.
    public static func size(of path: String, role: String) throws(MachineError) -> UInt64 {
        var st = stat()
        guard stat(path, &st) == 0 else {
            throw MachineError.file(role: role, path: path, problem: String(cString: strerror(errno)))
        }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            throw MachineError.file(role: role, path: path, problem: "is a directory")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw MachineError.file(role: role, path: path, problem: "is not a regular file")
        }
        return UInt64(st.st_size)
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
            throw MachineError.file(role: role, path: path, problem: String(cString: strerror(errno)))
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
            throw MachineError.file(role: role, path: path, problem: String(cString: strerror(failure)))
        }
        if done < bytes.count { bytes.removeLast(bytes.count - done) }
        return bytes
    }
}
