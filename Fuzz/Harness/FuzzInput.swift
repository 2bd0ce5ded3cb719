#if canImport(Glibc)
import Glibc
#endif

/// Reads a fuzzer's byte string as a stream of little-endian numbers. Past the end every read
/// returns 0, so any input is a valid command sequence and the fuzzer never wastes effort on framing.
public struct FuzzInput {
    public let bytes: [UInt8]
    public private(set) var position = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public init(_ buffer: UnsafeRawBufferPointer) { self.bytes = Array(buffer) }

    public var isAtEnd: Bool { position >= bytes.count }
    public var remaining: Int { max(bytes.count - position, 0) }

    public mutating func u8() -> UInt8 {
        guard position < bytes.count else { return 0 }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func u16() -> UInt16 { UInt16(u8()) | UInt16(u8()) << 8 }
    public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }

    /// Up to `count` bytes (fewer at the end of the input).
    public mutating func take(_ count: Int) -> ArraySlice<UInt8> {
        let n = min(max(count, 0), remaining)
        defer { position += n }
        return bytes[position..<position + n]
    }

    /// Everything not read yet.
    public mutating func rest() -> ArraySlice<UInt8> { take(remaining) }

    /// An access size as buses see them: mostly the legal 1/2/4/8, sometimes 0, 3 or 16.
    public mutating func accessSize() -> Int {
        let sizes = [1, 2, 4, 8, 1, 2, 4, 0, 3, 16]
        return sizes[Int(u8()) % sizes.count]
    }
}

/// A property the harness checks failed: stop with a message (libFuzzer records the input as a
/// crash; XCTest replays see the process die, which is the point).
public func fuzzCheck(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    if !condition() {
        let line = "fuzz check failed: \(message())\n"
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        abort()
    }
}
