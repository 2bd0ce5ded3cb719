import Glibc

/// A failed KVM operation: which ioctl (or system call) and the errno it returned.
public struct KVMError: Error, Equatable, CustomStringConvertible {
    public let operation: String
    public let errno: Int32
    /// Extra context (e.g. the capability that is missing).
    public let detail: String?

    public init(_ operation: String, errno: Int32, detail: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var s = "\(operation) failed: \(String(cString: strerror(errno)))"
        if let detail { s += " (\(detail))" }
        return s
    }
}

/// Issues an ioctl and converts failure into `KVMError`. EINTR is retried except for KVM_RUN,
/// which reports it to the caller (it is how a vCPU is kicked).
@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: String, _ arg: UnsafeMutableRawPointer?) throws(KVMError) -> Int32 {
    while true {
        let r = arg.map { ioctl(fd, request, $0) } ?? ioctl(fd, request, CInt(0))
        if r >= 0 { return r }
        let e = errno
        if e == EINTR { continue }
        throw KVMError(name, errno: e)
    }
}

@inline(__always)
func kvmIoctl(_ fd: Int32, _ request: UInt, _ name: String, value: UInt) throws(KVMError) -> Int32 {
    while true {
        // Passed as a pointer-sized bit pattern: the kernel reads the argument as an unsigned long,
        // and Swift only offers the non-variadic CInt and pointer overloads of ioctl.
        let r = UnsafeMutableRawPointer(bitPattern: value).map { ioctl(fd, request, $0) } ?? ioctl(fd, request, CInt(0))
        if r >= 0 { return r }
        let e = errno
        if e == EINTR { continue }
        throw KVMError(name, errno: e)
    }
}

/// Runs `body` with a zeroed KVM argument made of a `Header` struct followed by `count` `Entry`s (the
/// flexible-array layout of kvm_cpuid2, kvm_msrs, ...): the whole buffer, the header and the first entry.
func withFlexibleArray<Header, Entry, T>(
    _: Header.Type, _: Entry.Type, count: Int,
    _ body: (UnsafeMutableRawPointer, UnsafeMutablePointer<Header>, UnsafeMutablePointer<Entry>) throws(KVMError) -> T
) throws(KVMError) -> T {
    let bytes = MemoryLayout<Header>.size + count * MemoryLayout<Entry>.stride
    let buf = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
    defer { buf.deallocate() }
    memset(buf, 0, bytes)
    return try body(buf, buf.assumingMemoryBound(to: Header.self),
                    (buf + MemoryLayout<Header>.size).assumingMemoryBound(to: Entry.self))
}
