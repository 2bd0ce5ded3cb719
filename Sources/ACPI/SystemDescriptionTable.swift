// The byte-level pieces every ACPI table shares: the 36-byte system description table header with
// its checksum, generic address structures, and little-endian writers.

/// A table under construction: the common header (ACPI 6.4, 5.2.6) followed by its body. `bytes`
/// fills in the length and the checksum (all bytes sum to zero).
public struct SystemDescriptionTable: Sendable {
    public var signature: String
    public var revision: UInt8
    public var body: [UInt8] = []

    /// OEM fields every swhv table carries.
    public static let oemID = "SWHV  "
    public static let oemTableID = "SWHVMACH"
    public static let oemRevision: UInt32 = 1
    public static let creatorID = "SWHV"
    public static let creatorRevision: UInt32 = 1
    public static let headerSize = 36

    public init(signature: String, revision: UInt8) {
        precondition(signature.utf8.count == 4, "a table signature is four characters")
        self.signature = signature
        self.revision = revision
    }

    public var bytes: [UInt8] {
        var out = [UInt8]()
        out += ascii(signature, 4)
        out += le(UInt64(truncatingIfNeeded: SystemDescriptionTable.headerSize + body.count), 4)
        out.append(revision)
        out.append(0)   // checksum, fixed below
        out += ascii(SystemDescriptionTable.oemID, 6)
        out += ascii(SystemDescriptionTable.oemTableID, 8)
        out += le(UInt64(SystemDescriptionTable.oemRevision), 4)
        out += ascii(SystemDescriptionTable.creatorID, 4)
        out += le(UInt64(SystemDescriptionTable.creatorRevision), 4)
        out += body
        out[9] = checksum(out)
        return out
    }

    // Appenders for the body.
    mutating func u8(_ v: UInt8) { body.append(v) }
    mutating func u16(_ v: UInt16) { body += le(UInt64(v), 2) }
    mutating func u32(_ v: UInt32) { body += le(UInt64(v), 4) }
    mutating func u64(_ v: UInt64) { body += le(v, 8) }
    mutating func gas(_ g: GenericAddress) { body += g.bytes }
}

/// A Generic Address Structure (ACPI 6.4, 5.2.3.2): where a register lives.
public struct GenericAddress: Equatable, Sendable {
    public enum Space: UInt8, Sendable { case systemMemory = 0, systemIO = 1 }
    public var space: Space
    public var bitWidth: UInt8
    public var bitOffset: UInt8 = 0
    /// 1 byte, 2 word, 3 dword, 4 qword access; 0 undefined.
    public var accessSize: UInt8
    public var address: UInt64

    public init(space: Space, bitWidth: UInt8, accessSize: UInt8, address: UInt64) {
        self.space = space; self.bitWidth = bitWidth; self.accessSize = accessSize; self.address = address
    }

    /// An I/O port register of `bytes` bytes.
    public static func port(_ port: UInt16, bytes: UInt8) -> GenericAddress {
        let access: UInt8 = bytes >= 4 ? 3 : (bytes == 2 ? 2 : 1)
        return GenericAddress(space: .systemIO, bitWidth: bytes * 8, accessSize: access, address: UInt64(port))
    }

    /// "Not present": all zeroes.
    public static let none = GenericAddress(space: .systemMemory, bitWidth: 0, accessSize: 0, address: 0)

    var bytes: [UInt8] { [space.rawValue, bitWidth, bitOffset, accessSize] + le(address, 8) }
}

/// The byte that makes `bytes` sum to zero modulo 256, given that the checksum byte itself is 0.
public func checksum<C: Collection>(_ bytes: C) -> UInt8 where C.Element == UInt8 {
    0 &- bytes.reduce(UInt8(0)) { $0 &+ $1 }
}

func le(_ v: UInt64, _ n: Int) -> [UInt8] {
    (0..<n).map { UInt8(truncatingIfNeeded: v >> UInt64(truncatingIfNeeded: 8 * $0)) }
}

/// `s` as `n` ASCII bytes, space-padded (or cut).
func ascii(_ s: String, _ n: Int) -> [UInt8] {
    var b = Array(s.utf8.prefix(n))
    while b.count < n { b.append(0x20) }
    return b
}
