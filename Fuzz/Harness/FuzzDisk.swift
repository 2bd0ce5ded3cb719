#if canImport(Glibc)
import Glibc
#endif

/// A small disk image on tmpfs (flushes cost nothing there), removed at deinit.
final class FuzzDisk {
    let path: String
    let size: Int

    init(sectors: Int, fill: UInt8) {
        size = sectors * 512
        let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        var template = Array("\(dir)/swhv-fuzz-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if fd < 0 { fuzzSetupFailure("cannot create a disk image in \(dir)") }
        let bytes = [UInt8](repeating: fill, count: size)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if n != size { fuzzSetupFailure("short write creating the disk image") }
        close(fd)
    }

    /// The current length of the file (the device must never change it).
    var currentSize: Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : -1
    }

    /// A cheap checksum of the contents (for images the guest must not be able to change).
    var checksum: UInt64 {
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        var buf = [UInt8](repeating: 0, count: size)
        _ = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in buf { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }

    deinit { unlink(path) }
}
