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
/// pread/pwrite straight into guest memory.
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

    // Request types and status values (5.2.6).
    public static let requestIn: UInt32 = 0
    public static let requestOut: UInt32 = 1
    public static let requestFlush: UInt32 = 4
    public static let requestGetID: UInt32 = 8
    public static let statusOK: UInt8 = 0
    public static let statusIOError: UInt8 = 1
    public static let statusUnsupported: UInt8 = 2

    /// struct virtio_blk_outhdr: type, reserved (ioprio), sector.
    static let headerSize: UInt64 = 16

    public let path: String
    public let isReadOnly: Bool
    /// Capacity in 512-byte sectors.
    public let capacity: UInt64
    private let fd: Int32
    private var serialBytes = [UInt8](repeating: 0, count: VirtioBlock.idBytes)
    private var config: [UInt8]
    public private(set) var negotiatedFeatures: UInt64 = 0

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
        self.config = VirtioBlock.makeConfig(capacity: bytes / VirtioBlock.sectorSize)
        self.serial = serial
    }

    deinit { close(fd) }

    /// struct virtio_blk_config up to blk_size and topology (5.2.4).
    private static func makeConfig(capacity: UInt64) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: 0x24)
        func put(_ offset: Int, _ value: UInt64, _ width: Int) {
            for i in 0..<width { c[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        put(0x00, capacity, 8)
        // seg_max: the header and status take two descriptors of the queue.
        put(0x0C, UInt64(queueSize) - 2, 4)
        put(0x14, sectorSize, 4)            // blk_size
        put(0x20, 0, 1)                     // writeback: not configurable
        return c
    }

    // MARK: VirtioDevice

    public var deviceType: UInt16 { VirtioDeviceType.block }

    public var deviceFeatures: UInt64 {
        var f = VirtioBlock.featureSegMax | VirtioBlock.featureBlockSize | VirtioBlock.featureFlush
        if isReadOnly { f |= VirtioBlock.featureReadOnly }
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
            var pos = offset
            for s in segs {
                guard let p = memory.hostPointer(s.address, length: s.length),
                      transfer(p, length: s.length, fileOffset: pos, write: false) else { return ioerr }
                memory.noteDMAWrite(s.address, length: s.length)  // the guest may execute what it read
                pos += s.length
            }
            return (VirtioBlock.statusOK, dataInLength)

        case VirtioBlock.requestOut:
            guard !isReadOnly, dataInLength == 0,
                  let offset = byteOffset(sector: sector, length: dataOutLength),
                  let segs = chain.segments(writable: false, offset: VirtioBlock.headerSize,
                                            length: dataOutLength) else { return ioerr }
            var pos = offset
            for s in segs {
                guard let p = memory.hostPointer(s.address, length: s.length),
                      transfer(p, length: s.length, fileOffset: pos, write: true) else { return ioerr }
                pos += s.length
            }
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

    /// Copies the first `length` bytes of the readable stream out of guest memory.
    private func readStream(_ chain: DescriptorChain, memory: GuestMemory, length: UInt64) -> [UInt8]? {
        guard let segs = chain.segments(writable: false, offset: 0, length: length) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(Int(length))
        for s in segs {
            guard let bytes = try? memory.readBytes(at: s.address, count: Int(s.length)) else { return nil }
            out += bytes
        }
        return out
    }

    /// pread/pwrite of exactly `length` bytes, retrying short transfers and EINTR.
    private func transfer(_ buffer: UnsafeMutableRawPointer, length: UInt64, fileOffset: UInt64,
                          write: Bool) -> Bool {
        var done: UInt64 = 0
        while done < length {
            let chunk = Int(min(length - done, 1 << 30))
            let off = off_t(fileOffset + done)
            let n = write ? pwrite(fd, buffer + Int(done), chunk, off) : pread(fd, buffer + Int(done), chunk, off)
            if n < 0 && errno == EINTR { continue }
            // 0 means the file shrank under us: report an I/O error rather than stale bytes.
            guard n > 0 else { return false }
            done += UInt64(n)
        }
        return true
    }
}
