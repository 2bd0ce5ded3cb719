import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// The guest-memory part of a snapshot: the memory file (Firecracker's `mem_file_path`) and the
/// `memory` section of the state file that describes and checks it.
///
/// Memory file layout: a 4 KiB header, then guest RAM at offset 4096 in guest-physical order,
/// regions back to back (the 32-bit PCI hole is not stored). Pages of zeroes are not written, so
/// they are holes in a sparse file. A restore maps the file MAP_PRIVATE over guest RAM: pages load
/// when the guest first touches them, and guest writes never reach the file.
///
///     0   magic "SWHVMEM\0"
///     8   version (u32) = 1
///     12  header size (u32) = 4096
///     16  guest RAM bytes (u64)
///     24  snapshot id (16 bytes, also in the state file's memory section)
///     40  XXH64 of bytes [0, 40)
public struct MemorySection: Codable, Equatable, Sendable {
    public static let currentVersion = 1

    public struct Region: Codable, Equatable, Sendable {
        public var guestBase: UInt64
        public var bytes: UInt64
        public init(guestBase: UInt64, bytes: UInt64) { self.guestBase = guestBase; self.bytes = bytes }
        enum CodingKeys: String, CodingKey { case guestBase = "guest_base", bytes }
    }

    public var version = MemorySection.currentVersion
    /// Guest RAM in bytes (the memory file is this plus the header).
    public var bytes: UInt64
    /// Hex of the 16-byte id in the memory file's header.
    public var snapshotID: String
    public var chunkBytes: UInt64
    public var regions: [Region]
    /// XXH64 of each chunk of guest RAM in file order; 0 for a chunk of zeroes (never a real hash:
    /// a chunk that hashes to 0 is recorded as 1).
    public var chunks: [UInt64]
    /// Bytes actually written (pages that are not all zero).
    public var dataBytes: UInt64

    enum CodingKeys: String, CodingKey {
        case version, bytes, snapshotID = "snapshot_id", chunkBytes = "chunk_bytes", regions, chunks
        case dataBytes = "data_bytes"
    }
}

/// Which host pages of an anonymous mapping may hold data: present or swapped out, from
/// /proc/self/pagemap. A page never touched is neither, and reads as zeroes without being
/// faulted in: the snapshot skips it without touching it (an idle 512 MiB guest touches a
/// fraction of its RAM). Valid for anonymous memory only: pages of a file mapping that are not
/// present still hold the file's data.
public final class PageResidency {
    private let fd: Int32

    public init?() {
        fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
    }

    deinit { close(fd) }

    /// One flag per 4 KiB page starting at `host`: true when the page may hold data. Nil if the
    /// kernel would not say (then every page must be read).
    public func mayHoldData(host: UnsafeRawPointer, pages: Int) -> [Bool]? {
        var entries = [UInt64](repeating: 0, count: pages)
        let offset = UInt64(UInt(bitPattern: host) / 4096) * 8
        let want = pages * 8
        let got = entries.withUnsafeMutableBytes { b -> Int in
            (try? SnapshotFile.preadAll(fd, b.baseAddress!, want, offset: offset, path: "/proc/self/pagemap")) ?? -1
        }
        guard got == want else { return nil }
        // Bit 63: present in RAM; bit 62: swapped out.
        return entries.map { $0 & (3 << 62) != 0 }
    }
}

public enum GuestMemorySnapshot {
    public static let magic = Array("SWHVMEM\0".utf8)
    public static let fileVersion: UInt32 = 1
    public static let headerBytes: UInt64 = 4096
    public static let chunkBytes: UInt64 = 2 << 20
    static let pageBytes = 4096

    static func header(bytes: UInt64, snapshotID: [UInt8]) -> [UInt8] {
        var h: [UInt8] = magic
        withUnsafeBytes(of: fileVersion.littleEndian) { h.append(contentsOf: $0) }
        withUnsafeBytes(of: UInt32(truncatingIfNeeded: headerBytes).littleEndian) { h.append(contentsOf: $0) }
        withUnsafeBytes(of: bytes.littleEndian) { h.append(contentsOf: $0) }
        h.append(contentsOf: snapshotID)
        withUnsafeBytes(of: XXHash64.hash(h).littleEndian) { h.append(contentsOf: $0) }
        return h
    }

    @inline(__always)
    static func isZeroPage(_ p: UnsafeRawPointer) -> Bool {
        var i = 0
        while i < pageBytes {
            var acc: UInt64 = 0
            for k in stride(from: 0, to: 64, by: 8) { acc |= p.load(fromByteOffset: i + k, as: UInt64.self) }
            if acc != 0 { return false }
            i += 64
        }
        return true
    }

    /// lseek's SEEK_DATA (Linux): the next offset holding data, skipping holes.
    static let seekData: Int32 = 3

    /// Writes guest RAM into `file` (sparse: pages of zeroes stay holes) and returns its section.
    /// The vCPU must be paused (nothing writes guest RAM meanwhile). `residency` lets untouched
    /// pages of anonymous RAM be skipped unread.
    public static func write(_ memory: GuestMemory, to file: PendingFile, snapshotID: [UInt8],
                             residency: PageResidency?) throws(SnapshotError) -> MemorySection {
        let zeroPage = UnsafeMutableRawPointer.allocate(byteCount: pageBytes, alignment: pageBytes)
        zeroPage.initializeMemory(as: UInt8.self, repeating: 0, count: pageBytes)
        defer { zeroPage.deallocate() }
        try file.setLength(headerBytes + memory.size)
        try file.write(header(bytes: memory.size, snapshotID: snapshotID))
        var chunks: [UInt64] = []
        var dataBytes: UInt64 = 0
        var ramOffset: UInt64 = 0
        for region in memory.regions {
            var at: UInt64 = 0
            while at < region.size {
                let length = min(chunkBytes, region.size - at)
                let pages = Int(truncatingIfNeeded: length) / pageBytes   // a chunk: at most 2 MiB
                let base = UnsafeRawPointer(region.host + Int(truncatingIfNeeded: at))   // inside a region that is mapped
                let resident = residency?.mayHoldData(host: base, pages: pages)
                var stream = XXHash64.Stream()
                var anyData = false
                var runStart = -1
                func flush(_ end: Int) throws(SnapshotError) {
                    guard runStart >= 0 else { return }
                    let off = runStart * pageBytes, len = (end - runStart) * pageBytes
                    try SnapshotFile.pwriteAll(file.fd, base + off, len, offset: headerBytes + ramOffset + UInt64(truncatingIfNeeded: off),
                                               path: file.temporaryPath)
                    dataBytes += UInt64(truncatingIfNeeded: len)
                    runStart = -1
                }
                for p in 0..<pages {
                    let page = base + p * pageBytes
                    let data = (resident?[p] ?? true) && !isZeroPage(page)
                    if data {
                        anyData = true
                        if runStart < 0 { runStart = p }
                        stream.update(page, count: pageBytes)
                    } else {
                        try flush(p)
                        stream.update(zeroPage, count: pageBytes)
                    }
                }
                try flush(pages)
                if anyData {
                    let h = stream.finalize()
                    chunks.append(h == 0 ? 1 : h)
                } else {
                    chunks.append(0)
                }
                at += length
                ramOffset += length
            }
        }
        return MemorySection(bytes: memory.size, snapshotID: SnapshotFile.hex(snapshotID), chunkBytes: chunkBytes,
                             regions: memory.regions.map { .init(guestBase: $0.guestBase, bytes: $0.size) },
                             chunks: chunks, dataBytes: dataBytes)
    }

    /// Opens a memory file for restore and checks that it is the one `section` describes: magic,
    /// version, header checksum, RAM size, snapshot id and file length. With `verifyContents`,
    /// every chunk's checksum too (reads the whole file; holes are cheap). Returns the descriptor
    /// (owned by the caller) to map.
    public static func open(path: String, section: MemorySection, verifyContents: Bool) throws(SnapshotError) -> Int32 {
        guard section.version == MemorySection.currentVersion else {
            throw .badSection("memory", detail: "version \(section.version) is not the one this swhv reads (\(MemorySection.currentVersion))")
        }
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, operation: "open", errno: errno) }
        do {
            try check(fd: fd, path: path, section: section, verifyContents: verifyContents)
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    static func check(fd: Int32, path: String, section: MemorySection, verifyContents: Bool) throws(SnapshotError) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .io(path: path, operation: "stat", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .io(path: path, operation: "open (not a regular file)", errno: EINVAL) }
        var header = [UInt8](repeating: 0, count: 48)
        let n = try header.withUnsafeMutableBytes { b in
            Result { () throws(SnapshotError) in try SnapshotFile.preadAll(fd, b.baseAddress!, 48, offset: 0, path: path) }
        }.get()
        guard n >= 8, Array(header[0..<8]) == magic else { throw .notASnapshot(path: path, expected: "memory file") }
        guard n == 48 else { throw .truncated(path: path, detail: "the header is incomplete") }
        func u32(_ at: Int) -> UInt32 { header.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt32.self)) } }
        func u64(_ at: Int) -> UInt64 { header.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: UInt64.self)) } }
        guard u32(8) == fileVersion else { throw .unsupportedVersion(path: path, found: u32(8), supported: fileVersion) }
        guard XXHash64.hash(Array(header[0..<40])) == u64(40) else {
            throw .corrupted(path: path, detail: "header checksum mismatch")
        }
        guard u32(12) == UInt32(truncatingIfNeeded: headerBytes) else { throw .corrupted(path: path, detail: "unexpected header size \(u32(12))") }
        let id = SnapshotFile.hex(Array(header[24..<40]))
        guard id == section.snapshotID else {
            throw .mismatch("memory file '\(path)' belongs to another snapshot (id \(id), the state file expects \(section.snapshotID))")
        }
        guard u64(16) == section.bytes else {
            throw .mismatch("memory file '\(path)' holds \(u64(16)) bytes of RAM, the state file says \(section.bytes)")
        }
        let expectedLength = headerBytes + section.bytes
        let length = UInt64(clamping: st.st_size)
        if length < expectedLength { throw .truncated(path: path, detail: "\(length) of \(expectedLength) bytes present") }
        guard length == expectedLength else {
            throw .corrupted(path: path, detail: "\(length - expectedLength) bytes after guest RAM")
        }
        let chunkCount = section.bytes / max(section.chunkBytes, 1)
        guard section.chunkBytes > 0, section.chunkBytes <= 64 << 20, section.chunkBytes % 4096 == 0,
              UInt64(truncatingIfNeeded: section.chunks.count) >= chunkCount else {
            throw .badSection("memory", detail: "chunk table does not cover \(section.bytes) bytes")
        }
        guard section.regions.reduce(0, { $0 &+ $1.bytes }) == section.bytes else {
            throw .badSection("memory", detail: "regions do not add up to \(section.bytes) bytes")
        }
        if verifyContents { try verify(fd: fd, path: path, section: section) }
    }

    /// Checks every chunk of guest RAM in the file against the section's checksums.
    static func verify(fd: Int32, path: String, section: MemorySection) throws(SnapshotError) {
        guard let chunkBytes = Int(exactly: section.chunkBytes), chunkBytes > 0, chunkBytes <= 64 << 20 else {
            throw .badSection("memory", detail: "chunk size \(section.chunkBytes) is not 1 byte to 64 MiB")
        }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var index = 0
        // Chunks follow the region layout (a chunk never spans two regions).
        var ramOffset: UInt64 = 0
        for region in section.regions {
            var at: UInt64 = 0
            while at < region.bytes {
                let length = min(section.chunkBytes, region.bytes - at)
                let count = Int(truncatingIfNeeded: length)   // at most chunkBytes, checked above
                let fileOffset = headerBytes + ramOffset
                guard index < section.chunks.count else {
                    throw .badSection("memory", detail: "chunk table does not cover the regions")
                }
                let expected = section.chunks[index]
                if expected == 0 {
                    // A chunk of zeroes: fine if the file has a hole there; read it otherwise.
                    let data = lseek(fd, off_t(Int64(bitPattern: fileOffset)), GuestMemorySnapshot.seekData)
                    if data < 0 || UInt64(truncatingIfNeeded: data) >= fileOffset + length {
                        // No data in the chunk (ENXIO: none up to the end of the file).
                    } else {
                        let n = try SnapshotFile.preadAll(fd, buffer, count, offset: fileOffset, path: path)
                        guard n == count else { throw .truncated(path: path, detail: "guest RAM ends early") }
                        var p = 0
                        while p < count {
                            guard isZeroPage(buffer + p) else {
                                throw .corrupted(path: path, detail: "guest RAM at offset 0x\(String(ramOffset + UInt64(truncatingIfNeeded: p), radix: 16)) should be zero")
                            }
                            p += pageBytes
                        }
                    }
                } else {
                    let n = try SnapshotFile.preadAll(fd, buffer, count, offset: fileOffset, path: path)
                    guard n == count else { throw .truncated(path: path, detail: "guest RAM ends early") }
                    let h = XXHash64.hash(base: buffer, count: count)
                    guard (h == 0 ? 1 : h) == expected else {
                        throw .corrupted(path: path, detail: "guest RAM checksum mismatch in chunk \(index) (offset 0x\(String(ramOffset, radix: 16)))")
                    }
                }
                index += 1
                at += length
                ramOffset += length
            }
        }
    }
}
