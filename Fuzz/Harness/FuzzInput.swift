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

/// The properties one input broke, collected instead of aborting on the first: corpus replay
/// (FuzzRegressionTests) reports them as test failures, the libFuzzer driver aborts on any, so
/// libFuzzer records the input.
public final class FuzzChecks {
    public private(set) var violations: [String] = []
    public init() {}

    public func expect(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
        if !condition() { violations.append(message()) }
    }
}

/// What one input did: the properties it broke (none: it passed) and how far it got, so a replay
/// can tell a corpus that exercises the target from one that no longer reaches it.
public struct FuzzOutcome: Sendable {
    public var violations: [String] = []
    /// Target-specific progress counters: "loaded", "completions", "instructions", "bytesOut", ...
    public var progress: [String: Int] = [:]
    public init() {}
}

/// A harness cannot even set itself up (no temporary directory, no guest RAM): not a finding
/// about the input, so stop at once with the reason.
func fuzzSetupFailure(_ message: String) -> Never {
    let line = "fuzz harness setup failed: \(message)\n"
    _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
    abort()
}
