// A small encoder for the ACPI Machine Language the DSDT is written in (ACPI 6.4, chapter 20):
// names, integers, strings, packages, buffers, scopes, devices and resource templates — the subset
// a static description of swhv's machine needs. No methods: nothing here runs code in the guest.

/// One AML term, already encoded.
public struct AML: Equatable, Sendable {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    // MARK: Opcodes (ACPI 6.4, 20.3)
    static let zeroOp: UInt8 = 0x00, oneOp: UInt8 = 0x01, onesOp: UInt8 = 0xFF
    static let nameOp: UInt8 = 0x08, scopeOp: UInt8 = 0x10, bufferOp: UInt8 = 0x11, packageOp: UInt8 = 0x12
    static let bytePrefix: UInt8 = 0x0A, wordPrefix: UInt8 = 0x0B, dwordPrefix: UInt8 = 0x0C
    static let stringPrefix: UInt8 = 0x0D, qwordPrefix: UInt8 = 0x0E
    static let extOpPrefix: UInt8 = 0x5B, deviceOp: UInt8 = 0x82
    static let rootChar: UInt8 = 0x5C, dualNamePrefix: UInt8 = 0x2E, multiNamePrefix: UInt8 = 0x2F

    /// An integer in the shortest encoding (ZeroOp, OneOp, or a Byte/Word/DWord/QWord constant).
    public static func integer(_ v: UInt64) -> AML {
        switch v {
        case 0: return AML([zeroOp])
        case 1: return AML([oneOp])
        case ...0xFF: return AML([bytePrefix, UInt8(truncatingIfNeeded: v)])
        case ...0xFFFF: return AML([wordPrefix] + le(v, 2))
        case ...0xFFFF_FFFF: return AML([dwordPrefix] + le(v, 4))
        default: return AML([qwordPrefix] + le(v, 8))
        }
    }

    /// A string constant (ASCII, NUL-terminated in the encoding).
    public static func string(_ s: String) -> AML {
        AML([stringPrefix] + Array(s.utf8.filter { $0 != 0 && $0 < 0x80 }) + [0])
    }

    /// `Name(name, value)`.
    public static func name(_ name: String, _ value: AML) -> AML {
        AML([nameOp] + nameString(name) + value.bytes)
    }

    /// `Scope(name) { terms }`.
    public static func scope(_ name: String, _ terms: [AML]) -> AML {
        let body = nameString(name) + terms.flatMap(\.bytes)
        return AML([scopeOp] + pkgLength(body.count) + body)
    }

    /// `Device(name) { terms }`.
    public static func device(_ name: String, _ terms: [AML]) -> AML {
        let body = nameString(name) + terms.flatMap(\.bytes)
        return AML([extOpPrefix, deviceOp] + pkgLength(body.count) + body)
    }

    /// `Package() { elements }` (at most 255 elements: a fixed-size package).
    public static func package(_ elements: [AML]) -> AML {
        precondition(elements.count <= 255, "a package holds at most 255 elements")
        let body = [UInt8(truncatingIfNeeded: elements.count)] + elements.flatMap(\.bytes)
        return AML([packageOp] + pkgLength(body.count) + body)
    }

    /// `Buffer() { bytes }`.
    public static func buffer(_ data: [UInt8]) -> AML {
        let body = integer(UInt64(truncatingIfNeeded: data.count)).bytes + data
        return AML([bufferOp] + pkgLength(body.count) + body)
    }

    /// `EisaId("PNP0A03")`: three compressed letters and four hex digits as a DWord.
    public static func eisaID(_ id: String) -> AML {
        integer(UInt64(eisaIDValue(id)))
    }

    static func eisaIDValue(_ id: String) -> UInt32 {
        let c = Array(id.utf8)
        precondition(c.count == 7, "an EISA id is 3 letters and 4 hex digits")
        func letter(_ b: UInt8) -> UInt32 { UInt32(b &- 0x40) & 0x1F }
        func hex(_ b: UInt8) -> UInt32 {
            switch b {
            case 0x30...0x39: return UInt32(b - 0x30)
            case 0x41...0x46: return UInt32(b - 0x41 + 10)
            default: return UInt32(b &- 0x61 &+ 10) & 0xF
            }
        }
        let v = letter(c[0]) << 26 | letter(c[1]) << 21 | letter(c[2]) << 16
            | hex(c[3]) << 12 | hex(c[4]) << 8 | hex(c[5]) << 4 | hex(c[6])
        return v.byteSwapped   // stored big-endian
    }

    // MARK: Encoding helpers

    /// PkgLength (20.2.4): the length of what follows plus the PkgLength bytes themselves.
    static func pkgLength(_ bodyLength: Int) -> [UInt8] {
        if bodyLength + 1 < 64 { return [UInt8(truncatingIfNeeded: bodyLength + 1)] }
        for extra in 1...3 {
            let total = bodyLength + 1 + extra
            if total < 1 << (4 + 8 * extra) {
                var out = [UInt8(truncatingIfNeeded: extra << 6) | UInt8(total & 0xF)]
                for i in 0..<extra { out.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * i))) }
                return out
            }
        }
        preconditionFailure("AML package longer than 2^28 bytes")
    }

    /// A NameString: `\` for the root, then dot-separated segments of up to 4 characters (padded
    /// with `_`).
    static func nameString(_ path: String) -> [UInt8] {
        var out: [UInt8] = []
        var rest = Substring(path)
        if rest.hasPrefix("\\") { out.append(rootChar); rest = rest.dropFirst() }
        let segs = rest.split(separator: ".").map { seg -> [UInt8] in
            var b = Array(seg.utf8.prefix(4))
            while b.count < 4 { b.append(UInt8(ascii: "_")) }
            return b
        }
        switch segs.count {
        case 0: out.append(0)   // NullName
        case 1: out += segs[0]
        case 2: out += [dualNamePrefix] + segs[0] + segs[1]
        default: out += [multiNamePrefix, UInt8(truncatingIfNeeded: segs.count)] + segs.flatMap { $0 }
        }
        return out
    }

    static func le(_ v: UInt64, _ n: Int) -> [UInt8] {
        (0..<n).map { UInt8(truncatingIfNeeded: v >> UInt64(truncatingIfNeeded: 8 * $0)) }
    }
}

/// Resource descriptors for `_CRS` (ACPI 6.4, 6.4): the ones a PCI host bridge and legacy devices need.
public enum ResourceDescriptor: Equatable, Sendable {
    /// An I/O port range with 16-bit decode: `IO(Decode16, min, max, align, length)`.
    case io(min: UInt16, max: UInt16, alignment: UInt8, length: UInt8)
    /// A fixed-size interrupt list (`IRQNoFlags`): edge-triggered, active-high ISA IRQs.
    case irq(UInt8)
    /// `WordBusNumber(ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, min, max, 0, count)`.
    case busNumbers(min: UInt16, max: UInt16)
    /// `WordIO(ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, min, max, 0, length)`.
    case ioWindow(min: UInt16, max: UInt16)
    /// `DWordMemory(ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0, min, max, 0, length)`.
    case memoryWindow(min: UInt32, max: UInt32)

    var bytes: [UInt8] {
        switch self {
        case let .io(min, max, alignment, length):
            return [0x47, 0x01] + AML.le(UInt64(min), 2) + AML.le(UInt64(max), 2) + [alignment, length]
        case let .irq(n):
            let mask = n < 16 ? UInt16(1) << UInt16(n) : 0
            return [0x22] + AML.le(UInt64(mask), 2)
        case let .busNumbers(min, max):
            // Large item 0x88 (Word Address Space), resource type 2 (bus numbers).
            return ResourceDescriptor.wordAddressSpace(type: 2, generalFlags: 0x0C, typeFlags: 0,
                                                       min: min, max: max)
        case let .ioWindow(min, max):
            // Resource type 1 (I/O), type-specific flags 3: entire range (ISA and non-ISA).
            return ResourceDescriptor.wordAddressSpace(type: 1, generalFlags: 0x0C, typeFlags: 3,
                                                       min: min, max: max)
        case let .memoryWindow(min, max):
            // Large item 0x87 (DWord Address Space), resource type 0 (memory): min/max fixed,
            // positive decode, producer; read-write, non-cacheable.
            let length = UInt64(max) - UInt64(min) + 1
            return [0x87] + AML.le(0x17, 2) + [0, 0x0C, 0x01] + AML.le(0, 4) + AML.le(UInt64(min), 4)
                + AML.le(UInt64(max), 4) + AML.le(0, 4) + AML.le(length, 4)
        }
    }

    private static func wordAddressSpace(type: UInt8, generalFlags: UInt8, typeFlags: UInt8,
                                         min: UInt16, max: UInt16) -> [UInt8] {
        let length = UInt64(max) - UInt64(min) + 1
        return [0x88] + AML.le(0x0D, 2) + [type, generalFlags, typeFlags] + AML.le(0, 2)
            + AML.le(UInt64(min), 2) + AML.le(UInt64(max), 2) + AML.le(0, 2) + AML.le(length, 2)
    }

    /// `ResourceTemplate() { descriptors }`: the descriptors and an end tag, as a buffer.
    public static func template(_ descriptors: [ResourceDescriptor]) -> AML {
        // End tag with checksum 0 ("treated as if the checksum is correct").
        AML.buffer(descriptors.flatMap(\.bytes) + [0x79, 0x00])
    }
}
