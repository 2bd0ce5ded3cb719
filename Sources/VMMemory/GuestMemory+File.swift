#if canImport(Glibc)
import Glibc
#endif

extension GuestMemory {
    /// Replaces guest RAM with a private mapping of `fd`, regions back to back from `offset` (a
    /// snapshot's memory file). Pages are read from the file when first touched; writes stay in
    /// this process (copy on write) and never reach the file. Host addresses do not change, so a
    /// backend that already registered them (KVM memory slots) keeps working. Call before the
    /// guest runs.
    public func mapPrivately(fileDescriptor fd: Int32, offset: UInt64) throws(MemoryError) {
        var fileOffset = offset
        for r in regions {
            let p = mmap(r.host, Int(truncatingIfNeeded: r.size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE,
                         fd, off_t(Int64(bitPattern: fileOffset)))
            guard let p, p != MAP_FAILED, p == r.host else { throw .mapFailed(size: r.size, errno: errno) }
            fileOffset += r.size
        }
    }
}
