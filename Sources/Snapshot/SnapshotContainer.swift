#if canImport(Glibc)
import Glibc
#endif

/// One named part of a snapshot's state file: machine configuration, memory map, disks, vCPU,
/// devices. Payloads are opaque bytes here (swhv writes JSON); each has its own checksum.
public struct SnapshotSection: Equatable, Sendable {
    /// 1-8 characters of [a-z0-9-].
    public let tag: String
    public let payload: [UInt8]

    public init(tag: String, payload: [UInt8]) {
        precondition(SnapshotContainer.isValidTag(tag), "invalid section tag '\(tag)'")   // a programming error, never input
        self.tag = tag
        self.payload = payload
    }

    init(validatedTag tag: String, payload: [UInt8]) { self.tag = tag; self.payload = payload }
}

/// The snapshot state file (Firecracker's `snapshot_path`): a small versioned, checksummed
/// container of sections. Layout (little-endian; docs/snapshot.md):
///
///     0   magic "SWHVSNAP"
///     8   format version (u32)          = 1
///     12  section count n (u32)         <= 64
///     16  total file length (u64)
///     24  n entries: tag (8 bytes, NUL-padded), offset (u64), length (u64), XXH64 of the payload (u64)
///     24+32n  XXH64 of bytes [0, 24+32n)
///     32+32n  payloads, in table order, back to back, ending at the total length
///
/// The reader accepts exactly this: any other byte count, order, overlap or checksum is refused
/// before a section is handed out.
public struct SnapshotContainer: Equatable, Sendable {
    public static let magic = Array("SWHVSNAP".utf8)
    public static let formatVersion: UInt32 = 1
    /// The state file holds no guest RAM; this bounds what a reader allocates for a hostile file.
    public static let maxFileSize: UInt64 = 64 << 20
    public static let maxSections = 64
    static let entrySize = 32
    static let fixedHeader = 24

    public private(set) var sections: [SnapshotSection] = []

    public init(sections: [SnapshotSection] = []) {
        for s in sections { add(s) }
    }

    public static func isValidTag(_ tag: String) -> Bool {
        let u = Array(tag.utf8)
        return (1...8).contains(u.count)
            && u.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
    }

    /// Adds or replaces the section with this tag.
    public mutating func add(_ section: SnapshotSection) {
        if let i = sections.firstIndex(where: { $0.tag == section.tag }) { sections[i] = section } else { sections.append(section) }
    }

    public func payload(_ tag: String) -> [UInt8]? { sections.first { $0.tag == tag }?.payload }

    public func serialized() -> [UInt8] {
        let headerEnd = SnapshotContainer.fixedHeader + SnapshotContainer.entrySize * sections.count
        let total = headerEnd + 8 + sections.reduce(0) { $0 + $1.payload.count }
        var out: [UInt8] = []
        out.reserveCapacity(total)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        out.append(contentsOf: SnapshotContainer.magic)
        u32(SnapshotContainer.formatVersion)
        u32(UInt32(truncatingIfNeeded: sections.count))
        u64(UInt64(truncatingIfNeeded: total))
        var offset = UInt64(truncatingIfNeeded: headerEnd + 8)
        for s in sections {
            var tag = Array(s.tag.utf8)
            tag += [UInt8](repeating: 0, count: 8 - tag.count)
            out.append(contentsOf: tag)
            u64(offset)
            u64(UInt64(truncatingIfNeeded: s.payload.count))
            u64(XXHash64.hash(s.payload))
            offset += UInt64(truncatingIfNeeded: s.payload.count)
        }
        u64(XXHash64.hash(out))
        for s in sections { out.append(contentsOf: s.payload) }
        return out
    }

    /// Parses and verifies a whole state file. `path` only names the file in errors.
    public static func parse(_ bytes: [UInt8], path: String) throws(SnapshotError) -> SnapshotContainer {
        guard bytes.count >= 8, Array(bytes[0..<8]) == magic else {
            throw .notASnapshot(path: path, expected: "state file")
        }
        guard UInt64(truncatingIfNeeded: bytes.count) <= maxFileSize else {
            throw .tooLarge(path: path, size: UInt64(truncatingIfNeeded: bytes.count), limit: maxFileSize)
        }
        func u32(_ at: Int) -> UInt32 { bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        func u64(_ at: Int) -> UInt64 { bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
        guard bytes.count >= 12 else { throw .truncated(path: path, detail: "no version field") }
        // Magic and version are the one layout every format version keeps.
        let version = u32(8)
        guard version == formatVersion else {
            throw .unsupportedVersion(path: path, found: version, supported: formatVersion)
        }
        guard bytes.count >= fixedHeader else { throw .truncated(path: path, detail: "the header is incomplete") }
        let count = u32(12)
        guard count <= UInt32(truncatingIfNeeded: maxSections) else {
            throw .corrupted(path: path, detail: "section count \(count) is more than \(maxSections)")
        }
        let headerEnd = fixedHeader + entrySize * Int(count)
        guard bytes.count >= headerEnd + 8 else { throw .truncated(path: path, detail: "the section table is incomplete") }
        let stored = u64(headerEnd)
        let actual = bytes.withUnsafeBytes { XXHash64.hash(UnsafeRawBufferPointer(rebasing: $0[0..<headerEnd])) }
        guard stored == actual else { throw .corrupted(path: path, detail: "header checksum mismatch") }
        let total = u64(16)
        if total > UInt64(truncatingIfNeeded: bytes.count) {
            throw .truncated(path: path, detail: "\(bytes.count) of \(total) bytes present")
        }
        guard total == UInt64(truncatingIfNeeded: bytes.count) else {
            throw .corrupted(path: path, detail: "\(UInt64(truncatingIfNeeded: bytes.count) - total) bytes after the end the header records")
        }
        var sections: [SnapshotSection] = []
        var expectedOffset = UInt64(truncatingIfNeeded: headerEnd + 8)
        for k in 0..<Int(count) {
            let e = fixedHeader + entrySize * k
            let rawTag = Array(bytes[e..<e + 8])
            let tagBytes = rawTag.prefix { $0 != 0 }
            let tag = String(decoding: tagBytes, as: UTF8.self)
            guard isValidTag(tag), rawTag.dropFirst(tagBytes.count).allSatisfy({ $0 == 0 }) else {
                throw .corrupted(path: path, detail: "section \(k) has an invalid tag")
            }
            guard !sections.contains(where: { $0.tag == tag }) else {
                throw .corrupted(path: path, detail: "section '\(tag)' appears twice")
            }
            let offset = u64(e + 8), length = u64(e + 16), hash = u64(e + 24)
            guard offset == expectedOffset else {
                throw .corrupted(path: path, detail: "section '\(tag)' is not where the table says")
            }
            let (end, overflow) = offset.addingReportingOverflow(length)
            guard !overflow, end <= total else {
                throw .corrupted(path: path, detail: "section '\(tag)' runs past the end of the file")
            }
            let payload = Array(bytes[Int(truncatingIfNeeded: offset)..<Int(truncatingIfNeeded: end)])   // end <= total == bytes.count
            guard XXHash64.hash(payload) == hash else {
                throw .corrupted(path: path, detail: "section '\(tag)' checksum mismatch")
            }
            sections.append(SnapshotSection(validatedTag: tag, payload: payload))
            expectedOffset = end
        }
        guard expectedOffset == total else {
            throw .corrupted(path: path, detail: "\(total - expectedOffset) bytes belong to no section")
        }
        return SnapshotContainer(validated: sections)
    }

    private init(validated: [SnapshotSection]) { sections = validated }

    /// Reads and verifies a state file: at most `maxFileSize` bytes are read, whatever the file claims.
    public static func read(path: String) throws(SnapshotError) -> SnapshotContainer {
        let bytes = try SnapshotFile.readWhole(path: path, limit: maxFileSize)
        return try parse(bytes, path: path)
    }
}
