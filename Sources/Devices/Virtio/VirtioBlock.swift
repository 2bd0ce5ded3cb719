import VMCore
import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// Errors opening a disk image. Messages name the file and say what to do.
public enum BlockError: Error, Equatable, CustomStringConvertible {
    case cannotOpen(path: String, errno: Int32)
    case inUse(path: String)
    case notADisk(path: String)
    case sizeNotSectorMultiple(path: String, size: UInt64)
    case empty(path: String)

    public var description: String {
        switch self {
        case .cannotOpen(let p, let e): return "cannot open disk \(p): \(String(cString: strerror(e)))"
        case .inUse(let p): return "disk \(p) is in use by another process"
        case .notADisk(let p): return "disk \(p) is not a regular file or block device"
        case .sizeNotSectorMultiple(let p, let s):
            return "disk \(p) is \(s) bytes, not a multiple of 512; pad it (truncate -s %512 \(p))"
        case .empty(let p): return "disk \(p) is empty"
        }
    }
}

/// virtio-blk (virtio 1.2, 5.2) backed by a host file or block device, with synchronous
/// preadv/pwritev straight into guest memory (one system call per request, whatever the number of
/// descriptors), DISCARD as a punched hole and WRITE_ZEROES as a punched hole or zeroed range.
/// docs/architecture.md has the measurements behind completing requests on the vCPU thread.
///
/// Request processing (`handle(_:memory:)`) is separate from queue handling (`processQueue`) so the
/// machine can later move the I/O to another thread without touching the request logic.
public final class VirtioBlock: VirtioDevice {
    public static let sectorSize: UInt64 = 512
    public static let queueSize: UInt16 = 256
    public static let idBytes = 20

    // Feature bits (5.2.3).
    public static let featureSegMax: UInt64 = 1 << 2
    public static let featureReadOnly: UInt64 = 1 << 5
    public static let featureBlockSize: UInt64 = 1 << 6
    public static let featureFlush: UInt64 = 1 << 9
    public static let featureDiscard: UInt64 = 1 << 13
    public static let featureWriteZeroes: UInt64 = 1 << 14

    // Request types and status values (5.2.6).
    public static let requestIn: UInt32 = 0
    public static let requestOut: UInt32 = 1
    public static let requestFlush: UInt32 = 4
    public static let requestGetID: UInt32 = 8
    public static let requestDiscard: UInt32 = 11
    public static let requestWriteZeroes: UInt32 = 13
    public static let statusOK: UInt8 = 0
    public static let statusIOError: UInt8 = 1
    public static let statusUnsupported: UInt8 = 2

    /// struct virtio_blk_outhdr: type, reserved (ioprio), sector.
    static let headerSize: UInt64 = 16

    // DISCARD / WRITE_ZEROES limits (config space, 5.2.4). They bound what one request can cost
    // on the vCPU thread, measured on ext4: punching a hole in 64 MiB of written data 12-16 ms
    // (256 MiB: 45-73 ms); zeroing 32 MiB with FALLOC_FL_ZERO_RANGE ~2 ms, and with the
    // last-resort fallback that writes zeroes 2-20 ms.
    public static let maxDiscardSectors: UInt32 = 1 << 17          // 64 MiB
    public static let maxDiscardSegments: UInt32 = 16
    /// 4 KiB, the host file systems' block: smaller holes only zero part of a block.
    public static let discardSectorAlignment: UInt32 = 8
    public static let maxWriteZeroesSectors: UInt32 = 1 << 16      // 32 MiB
    public static let maxWriteZeroesSegments: UInt32 = 1
    /// struct virtio_blk_discard_write_zeroes: le64 sector, le32 num_sectors, le32 flags.
    static let rangeSize: UInt64 = 16
    /// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP; every other flag bit is reserved.
    public static let rangeFlagUnmap: UInt32 = 1

    // fallocate(2) modes (linux/falloc.h). Swift's Glibc module leaves out the _GNU_SOURCE parts
    // of fcntl.h: fallocate itself and these constants.
    static let fallocKeepSize: Int32 = 0x01
    static let fallocPunchHole: Int32 = 0x02
    static let fallocZeroRange: Int32 = 0x10
    typealias Fallocate = @convention(c) (Int32, Int32, off_t, off_t) -> Int32

    public let path: String
    public let isReadOnly: Bool
    /// Capacity in 512-byte sectors.
    public let capacity: UInt64
    private let fd: Int32
    private var serialBytes = [UInt8](repeating: 0, count: VirtioBlock.idBytes)
    private var config: [UInt8]
    public private(set) var negotiatedFeatures: UInt64 = 0
    /// Zeroes for the write-zeroes fallback, allocated the first time it is needed.
    private var zeroBuffer: UnsafeMutableRawBufferPointer?
    /// libc's fallocate, looked up when the disk is opened (nil: every mode is unsupported).
    private let fallocateFunction: Fallocate?

    /// Requests completed with an error status, for diagnostics.
    public private(set) var failedRequests = 0

    /// The disk serial reported by VIRTIO_BLK_T_GET_ID (UTF-8, truncated to 20 bytes).
    public var serial: String {
        get { String(decoding: serialBytes.prefix { $0 != 0 }, as: UTF8.self) }
        set {
            let b = Array(newValue.utf8.prefix(VirtioBlock.idBytes))
            serialBytes = b + [UInt8](repeating: 0, count: VirtioBlock.idBytes - b.count)
        }
    }

    /// Opens `path`. Read-only disks are opened O_RDONLY and take a shared lock; writable ones take
    /// an exclusive lock, so two VMs never write one image.
    public init(path: String, readOnly: Bool = false, serial: String = "") throws(BlockError) {
        let fd = open(path, (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC)
        guard fd >= 0 else { throw BlockError.cannotOpen(path: path, errno: errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = errno; close(fd); throw BlockError.cannotOpen(path: path, errno: e)
        }
        let type = st.st_mode & S_IFMT
        guard type == S_IFREG || type == S_IFBLK else { close(fd); throw BlockError.notADisk(path: path) }
        if flock(fd, (readOnly ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0 {
            let e = errno
            // Filesystems without flock support still work, just unprotected.
            if e == EWOULDBLOCK { close(fd); throw BlockError.inUse(path: path) }
        }
        // lseek works for block devices too, where st_size is 0.
        let end = lseek(fd, 0, SEEK_END)
        guard end >= 0 else { let e = errno; close(fd); throw BlockError.cannotOpen(path: path, errno: e) }
        let bytes = UInt64(end)
        guard bytes > 0 else { close(fd); throw BlockError.empty(path: path) }
        guard bytes % VirtioBlock.sectorSize == 0 else {
            close(fd); throw BlockError.sizeNotSectorMultiple(path: path, size: bytes)
        }
        self.fd = fd
        self.path = path
        self.isReadOnly = readOnly
        self.capacity = bytes / VirtioBlock.sectorSize
        self.config = VirtioBlock.makeConfig(capacity: bytes / VirtioBlock.sectorSize, readOnly: readOnly)
        self.fallocateFunction = dlsym(nil, "fallocate").map { unsafeBitCast($0, to: Fallocate.self) }
        self.serial = serial
    }

    deinit {
        close(fd)
        zeroBuffer?.deallocate()
    }

    /// struct virtio_blk_config up to write_zeroes_may_unmap (5.2.4). The discard and write-zeroes
    /// fields stay 0 on a read-only disk, which does not offer those features.
    private static func makeConfig(capacity: UInt64, readOnly: Bool) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: 0x3C)
        func put(_ offset: Int, _ value: UInt64, _ width: Int) {
            for i in 0..<width { c[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        put(0x00, capacity, 8)
        // seg_max: the header and status take two descriptors of the queue.
        put(0x0C, UInt64(queueSize) - 2, 4)
        put(0x14, sectorSize, 4)            // blk_size
        put(0x20, 0, 1)                     // writeback: not configurable
        if !readOnly {
            put(0x24, UInt64(maxDiscardSectors), 4)
            put(0x28, UInt64(maxDiscardSegments), 4)
            put(0x2C, UInt64(discardSectorAlignment), 4)
            put(0x30, UInt64(maxWriteZeroesSectors), 4)
            put(0x34, UInt64(maxWriteZeroesSegments), 4)
            put(0x38, 1, 1)                 // write_zeroes_may_unmap: UNMAP punches a hole
        }
        return c
    }

    // MARK: VirtioDevice

    public var deviceType: UInt16 { VirtioDeviceType.block }

    public var deviceFeatures: UInt64 {
        var f = VirtioBlock.featureSegMax | VirtioBlock.featureBlockSize | VirtioBlock.featureFlush
        if isReadOnly { f |= VirtioBlock.featureReadOnly }
        else { f |= VirtioBlock.featureDiscard | VirtioBlock.featureWriteZeroes }
        return f
    }

    public var queueMaxSizes: [UInt16] { [VirtioBlock.queueSize] }

    public func readConfig(offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, size >= 1, size <= 8 else { return 0 }
        var v: UInt64 = 0
        for i in 0..<size where offset + i < config.count { v |= UInt64(config[offset + i]) << (8 * UInt64(i)) }
        return v
    }

    /// The block config space has nothing writable without VIRTIO_BLK_F_CONFIG_WCE.
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(features: UInt64) { negotiatedFeatures = features }

    public func reset() { negotiatedFeatures = 0 }

    public func processQueue(_ index: Int, queue: VirtQueue) throws(VirtQueueError) -> Bool {
        var added = false
        repeat {
            while let chain = try queue.popAvailable() {
                let written = handle(chain, memory: queue.memory)
                try queue.addUsed(headIndex: chain.headIndex, length: written)
                added = true
            }
        } while try queue.enableNotification()
        return added ? try queue.needsNotification() : false
    }

    // MARK: Requests

    /// Executes one request and writes its status byte. Returns the number of bytes written into
    /// the chain's device-writable part (the used length). Never throws: every malformed request
    /// ends in a status (IOERR or UNSUPP), or with nothing written when there is no status byte.
    public func handle(_ chain: DescriptorChain, memory: GuestMemory) -> UInt32 {
        // The status is the last device-writable byte; without one the driver gets nothing back.
        guard chain.writableLength >= 1 else { failedRequests += 1; return 0 }
        let statusOffset = chain.writableLength - 1
        let (status, dataWritten) = execute(chain, memory: memory, dataInLength: statusOffset)
        if status != VirtioBlock.statusOK { failedRequests += 1 }
        guard let seg = chain.segments(writable: true, offset: statusOffset, length: 1)?.first,
              (try? memory.write(status, at: seg.address)) != nil else { return 0 }
        memory.noteDMAWrite(seg.address, length: 1)  // like every device write: it may land on code
        return UInt32(clamping: dataWritten + 1)
    }

    /// Returns the status and how many data bytes went into the writable part.
    private func execute(_ chain: DescriptorChain, memory: GuestMemory,
                         dataInLength: UInt64) -> (UInt8, UInt64) {
        let ioerr = (VirtioBlock.statusIOError, UInt64(0))
        // The header is device-readable; one in a writable buffer leaves this stream too short.
        guard let header = readStream(chain, memory: memory, length: VirtioBlock.headerSize) else { return ioerr }
        let type = UInt32(header[0]) | UInt32(header[1]) << 8 | UInt32(header[2]) << 16 | UInt32(header[3]) << 24
        var sector: UInt64 = 0
        for i in 0..<8 { sector |= UInt64(header[8 + i]) << (8 * UInt64(i)) }
        let dataOutLength = chain.readableLength - VirtioBlock.headerSize

        switch type {
        case VirtioBlock.requestIn:
            // Data buffers the device should fill but the driver marked readable: wrong direction.
            guard dataOutLength == 0, let offset = byteOffset(sector: sector, length: dataInLength),
                  let segs = chain.segments(writable: true, offset: 0, length: dataInLength) else { return ioerr }
            let ok = transfer(segs, memory: memory, fileOffset: offset, write: false)
            // The guest may execute what it read (even part of a failed read landed in its RAM).
            for s in segs { memory.noteDMAWrite(s.address, length: s.length) }
            return ok ? (VirtioBlock.statusOK, dataInLength) : ioerr

        case VirtioBlock.requestOut:
            guard !isReadOnly, dataInLength == 0,
                  let offset = byteOffset(sector: sector, length: dataOutLength),
                  let segs = chain.segments(writable: false, offset: VirtioBlock.headerSize,
                                            length: dataOutLength),
                  transfer(segs, memory: memory, fileOffset: offset, write: true) else { return ioerr }
            return (VirtioBlock.statusOK, 0)

        case VirtioBlock.requestFlush:
            // Data must be on stable storage before the driver sees the completion.
            if !isReadOnly && fdatasync(fd) != 0 { return ioerr }
            return (VirtioBlock.statusOK, 0)

        case VirtioBlock.requestGetID:
            let n = min(UInt64(VirtioBlock.idBytes), dataInLength)
            guard let segs = chain.segments(writable: true, offset: 0, length: n) else { return ioerr }
            var i = 0
            for s in segs {
                guard (try? memory.write(bytes: serialBytes[i..<(i + Int(s.length))], at: s.address)) != nil else {
                    return ioerr
                }
                memory.noteDMAWrite(s.address, length: s.length)
                i += Int(s.length)
            }
            return (VirtioBlock.statusOK, n)

        case VirtioBlock.requestDiscard, VirtioBlock.requestWriteZeroes:
            let status = discardOrWriteZeroes(chain, memory: memory, discard: type == VirtioBlock.requestDiscard,
                                              payloadLength: dataOutLength, dataInLength: dataInLength)
            return (status, 0)

        default:
            return (VirtioBlock.statusUnsupported, 0)
        }
    }

    /// The file offset of `sector`, if `[sector, sector + length/512)` is a whole-sector range
    /// inside the disk.
    private func byteOffset(sector: UInt64, length: UInt64) -> UInt64? {
        guard length % VirtioBlock.sectorSize == 0 else { return nil }
        let (end, overflow) = sector.addingReportingOverflow(length / VirtioBlock.sectorSize)
        guard !overflow, end <= capacity else { return nil }
        return sector * VirtioBlock.sectorSize
    }

    /// Copies `length` bytes of the readable stream, from `offset`, out of guest memory.
    private func readStream(_ chain: DescriptorChain, memory: GuestMemory, offset: UInt64 = 0,
                            length: UInt64) -> [UInt8]? {
        guard let segs = chain.segments(writable: false, offset: offset, length: length) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(Int(length))
        for s in segs {
            guard let bytes = try? memory.readBytes(at: s.address, count: Int(s.length)) else { return nil }
            out += bytes
        }
        return out
    }

    /// preadv/pwritev of the guest buffers `segs` at `fileOffset`, retrying short transfers and
    /// EINTR. One system call per request instead of one per descriptor: Linux sends a 1 MiB
    /// O_DIRECT request as 256 page-sized descriptors.
    private func transfer(_ segs: [(address: UInt64, length: UInt64)], memory: GuestMemory,
                          fileOffset: UInt64, write: Bool) -> Bool {
        var iov: [iovec] = []
        iov.reserveCapacity(segs.count)
        for s in segs where s.length > 0 {
            // Segments are at most one descriptor (< 4 GiB), so the length fits in Int.
            guard let p = memory.hostPointer(s.address, length: s.length) else { return false }
            iov.append(iovec(iov_base: p, iov_len: Int(s.length)))
        }
        var first = 0
        var pos = fileOffset
        return iov.withUnsafeMutableBufferPointer { v -> Bool in
            guard let base = v.baseAddress else { return true }
            while first < v.count {
                let count = Int32(min(v.count - first, 1024))
                let n = write ? pwritev(fd, base + first, count, off_t(pos))
                              : preadv(fd, base + first, count, off_t(pos))
                if n < 0 && errno == EINTR { continue }
                // 0 means the file shrank under us: report an I/O error rather than stale bytes.
                guard n > 0 else { return false }
                pos += UInt64(n)
                // Step over what was transferred (whole buffers, then part of one).
                var done = n
                while first < v.count && done >= v[first].iov_len { done -= v[first].iov_len; first += 1 }
                if done > 0 {
                    v[first].iov_base = v[first].iov_base.map { $0 + done }
                    v[first].iov_len -= done
                }
            }
            return true
        }
    }

    // MARK: Discard and write zeroes

    /// One struct virtio_blk_discard_write_zeroes, checked to lie inside the disk.
    private struct SectorRange {
        let byteOffset: UInt64
        let byteLength: UInt64
        let unmap: Bool
    }

    /// VIRTIO_BLK_T_DISCARD / VIRTIO_BLK_T_WRITE_ZEROES (5.2.6): the payload is an array of
    /// ranges. Every range is checked before any is applied, so a bad request changes nothing.
    private func discardOrWriteZeroes(_ chain: DescriptorChain, memory: GuestMemory, discard: Bool,
                                      payloadLength: UInt64, dataInLength: UInt64) -> UInt8 {
        let ioerr = VirtioBlock.statusIOError
        // Not offered on a read-only disk: refused like a write.
        guard !isReadOnly else { return ioerr }
        let feature = discard ? VirtioBlock.featureDiscard : VirtioBlock.featureWriteZeroes
        guard negotiatedFeatures & feature != 0 else { return VirtioBlock.statusUnsupported }
        let maxSegments = UInt64(discard ? VirtioBlock.maxDiscardSegments : VirtioBlock.maxWriteZeroesSegments)
        let maxSectors = discard ? VirtioBlock.maxDiscardSectors : VirtioBlock.maxWriteZeroesSectors
        // Ranges are device-readable; only the status byte is writable. The count is checked
        // before the payload is copied.
        guard dataInLength == 0, payloadLength > 0, payloadLength % VirtioBlock.rangeSize == 0,
              payloadLength / VirtioBlock.rangeSize <= maxSegments,
              let payload = readStream(chain, memory: memory, offset: VirtioBlock.headerSize,
                                       length: payloadLength) else { return ioerr }

        func le(_ at: Int, _ width: Int) -> UInt64 {
            var v: UInt64 = 0
            for i in 0..<width { v |= UInt64(payload[at + i]) << (8 * UInt64(i)) }
            return v
        }
        var ranges: [SectorRange] = []
        // Flags first: an unknown flag (or UNMAP on a discard) is UNSUPP whatever the ranges say.
        for at in stride(from: 0, to: payload.count, by: Int(VirtioBlock.rangeSize)) {
            let flags = UInt32(le(at + 12, 4))
            guard flags & ~VirtioBlock.rangeFlagUnmap == 0, !(discard && flags != 0) else {
                return VirtioBlock.statusUnsupported
            }
        }
        for at in stride(from: 0, to: payload.count, by: Int(VirtioBlock.rangeSize)) {
            let sector = le(at, 8)
            let count = UInt32(le(at + 8, 4))
            let (end, overflow) = sector.addingReportingOverflow(UInt64(count))
            guard count <= maxSectors, !overflow, end <= capacity else { return ioerr }
            // sector <= capacity, and capacity * 512 is the disk's size in bytes: no overflow.
            ranges.append(SectorRange(byteOffset: sector * VirtioBlock.sectorSize,
                                      byteLength: UInt64(count) * VirtioBlock.sectorSize,
                                      unmap: UInt32(le(at + 12, 4)) & VirtioBlock.rangeFlagUnmap != 0))
        }
        for r in ranges where r.byteLength > 0 {
            let ok = discard ? discardRange(r) : zeroRange(r)
            guard ok else { return ioerr }
        }
        return VirtioBlock.statusOK
    }

    /// fallocate(2), retrying EINTR. Returns 0 or the errno.
    private func fallocateRange(_ mode: Int32, _ r: SectorRange) -> Int32 {
        guard let fallocate = fallocateFunction else { return ENOSYS }
        while true {
            if fallocate(fd, mode, off_t(r.byteOffset), off_t(r.byteLength)) == 0 { return 0 }
            let e = errno
            if e != EINTR { return e }
        }
    }

    /// The file system (or block device) cannot do this fallocate mode.
    private static func unsupported(_ e: Int32) -> Bool { e == EOPNOTSUPP || e == ENOSYS || e == EINVAL }

    /// Discard is a hint: a punched hole frees the host's blocks (and reads back zeroes); where
    /// the host refuses, nothing happens and the request still succeeds.
    private func discardRange(_ r: SectorRange) -> Bool {
        let e = fallocateRange(VirtioBlock.fallocPunchHole | VirtioBlock.fallocKeepSize, r)
        return e == 0 || VirtioBlock.unsupported(e)
    }

    /// After write-zeroes the range must read zeroes. With UNMAP (write_zeroes_may_unmap is 1) a
    /// punched hole does it and frees the blocks; without, FALLOC_FL_ZERO_RANGE keeps them
    /// allocated. Where the host refuses both, zeroes are written.
    private func zeroRange(_ r: SectorRange) -> Bool {
        if r.unmap {
            let e = fallocateRange(VirtioBlock.fallocPunchHole | VirtioBlock.fallocKeepSize, r)
            if e == 0 { return true }
            guard VirtioBlock.unsupported(e) else { return false }
        }
        let e = fallocateRange(VirtioBlock.fallocZeroRange | VirtioBlock.fallocKeepSize, r)
        if e == 0 { return true }
        guard VirtioBlock.unsupported(e) else { return false }
        return writeZeroes(r)
    }

    private func writeZeroes(_ r: SectorRange) -> Bool {
        let chunk = 1 << 20
        let zeroes: UnsafeMutableRawBufferPointer
        if let z = zeroBuffer { zeroes = z } else {
            zeroes = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
            zeroes.initializeMemory(as: UInt8.self, repeating: 0)
            zeroBuffer = zeroes
        }
        guard let base = zeroes.baseAddress else { return false }
        var pos = r.byteOffset
        let end = r.byteOffset + r.byteLength
        while pos < end {
            let n = pwrite(fd, base, Int(min(end - pos, UInt64(chunk))), off_t(pos))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            pos += UInt64(n)
        }
        return true
    }
}

// MARK: State

extension VirtioBlock {
    /// The negotiated features, and the disk's shape, which a restore checks against this disk.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var capacity: UInt64
        public var readOnly: Bool
        public var negotiatedFeatures: UInt64
    }

    public func captureDeviceState() -> VirtioDeviceState {
        .block(State(capacity: capacity, readOnly: isReadOnly, negotiatedFeatures: negotiatedFeatures))
    }

    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .block(let s) = state else {
            throw .mismatch(device: "virtio-blk \(path)", reason: "saved from another device type")
        }
        try s.checkVersion(device: "virtio-blk")
        guard s.capacity == capacity, s.readOnly == isReadOnly else {
            throw .mismatch(device: "virtio-blk \(path)", reason: "saved with \(s.capacity) sectors"
                            + (s.readOnly ? ", read-only" : "") + "; this disk has \(capacity)" + (isReadOnly ? ", read-only" : ""))
        }
        negotiatedFeatures = s.negotiatedFeatures
    }
}
