import CHost
#if canImport(Glibc)
import Glibc
#endif

/// Where translated code lives: one memfd mapped twice, writable for the emitter and executable
/// for the CPU, never both at one address (W^X). Both mappings are made when the interpreter is
/// created, before the seccomp filter goes on; afterwards swhv cannot make new executable memory.
/// Code is bump-allocated and the whole cache is dropped at once when full.
final class CodeCache {
    let size: Int
    let writable: UnsafeMutableRawPointer
    let executable: UnsafeRawPointer
    private(set) var used = 0
    /// Bytes at the start reserved for the entry/exit trampolines, which survive flushes.
    private var reserved = 0

    enum Failure: Error, CustomStringConvertible {
        case memfd(Int32), truncate(Int32), map(Int32)
        var description: String {
            switch self {
            case .memfd(let e): return "code cache: memfd_create failed (errno \(e))"
            case .truncate(let e): return "code cache: ftruncate failed (errno \(e))"
            case .map(let e): return "code cache: mmap failed (errno \(e))"
            }
        }
    }

    init(size: Int) throws(Failure) {
        self.size = size
        let fd = chost_memfd_create("swhv-code")
        guard fd >= 0 else { throw .memfd(errno) }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw .truncate(errno) }
        guard let w = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), w != MAP_FAILED else {
            throw .map(errno)
        }
        guard let x = mmap(nil, size, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0), x != MAP_FAILED else {
            munmap(w, size)
            throw .map(errno)
        }
        writable = w
        executable = UnsafeRawPointer(x)
    }

    deinit {
        munmap(writable, size)
        munmap(UnsafeMutableRawPointer(mutating: executable), size)
    }

    /// Copies `code` into the cache; returns its offset, or nil when the cache is full.
    func add(_ code: [UInt8]) -> Int? {
        // 16-byte alignment keeps block entries on fetch boundaries.
        let start = (used + 15) & ~15
        guard start + code.count <= size else { return nil }
        code.withUnsafeBytes { (writable + start).copyMemory(from: $0.baseAddress!, byteCount: code.count) }
        used = start + code.count
        return start
    }

    /// Keeps everything added so far across `flush` (the shared trampolines).
    func reserveCurrent() { reserved = used }

    /// Drops every translation (not the trampolines).
    func flush() { used = reserved }

    /// Patches 4 bytes at `offset` (a jump displacement): chaining links translations after the fact.
    func patch32(at offset: Int, _ value: Int32) {
        (writable + offset).storeBytes(of: value.littleEndian, as: Int32.self)
    }

    func address(_ offset: Int) -> UnsafeRawPointer { executable + offset }
}
