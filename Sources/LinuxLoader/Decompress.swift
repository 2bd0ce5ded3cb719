import CCompress
import VMCore
#if canImport(Glibc)
import Glibc
#endif

/// How a bzImage's payload (the compressed vmlinux) is compressed: the kernel's CONFIG_KERNEL_* choice.
public enum PayloadCompression: String, Equatable, Sendable, CaseIterable, CustomStringConvertible {
    case gzip, bzip2, lzma, xz, lzo, lz4, zstd

    public var description: String { rawValue }

    /// Recognises a payload by its magic bytes (the same ones the kernel's decompressor stubs check).
    public static func detect(_ p: ArraySlice<UInt8>) -> PayloadCompression? {
        func starts(_ m: [UInt8]) -> Bool { p.count >= m.count && p.prefix(m.count).elementsEqual(m) }
        if starts([0x1F, 0x8B]) { return .gzip }
        if starts([0x42, 0x5A, 0x68]) { return .bzip2 }                    // "BZh"
        if starts([0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00]) { return .xz }
        if starts([0x5D, 0x00, 0x00]) { return .lzma }
        if starts([0x89, 0x4C, 0x5A, 0x4F]) { return .lzo }                // "\x89LZO"
        if starts([0x02, 0x21, 0x4C, 0x18]) { return .lz4 }                // legacy frame
        if starts([0x28, 0xB5, 0x2F, 0xFD]) { return .zstd }
        return nil
    }
}

/// Where a bzImage's compressed vmlinux is, and how big it unpacks.
public struct BzImagePayload: Equatable, Sendable {
    public var compression: PayloadCompression
    /// Byte range of the payload in the bzImage file.
    public var range: Range<Int>
    /// The uncompressed size the kernel's build appended (last 4 bytes of the payload).
    public var uncompressedSize: Int
}

extension LinuxLoader {
    /// Largest vmlinux we agree to unpack: far above any real kernel, low enough that a lying size
    /// field cannot make the host allocate absurd amounts.
    public static let maxVmlinuxSize = 1 << 30

    /// Finds and identifies the compressed vmlinux inside a bzImage.
    public static func payload(ofBzImage bytes: [UInt8]) throws(LoaderError) -> BzImagePayload {
        let h = try KernelImage.validatedHeader(bytes)
        let pmStart = h.setupBytes
        let (end, o) = UInt64(h.payloadOffset).addingReportingOverflow(UInt64(h.payloadLength))
        guard h.payloadLength >= 8, !o, end <= h.protectedModeBytes else {
            throw .decompression("payload_offset \(hex(UInt64(h.payloadOffset))) + payload_length "
                                 + "\(h.payloadLength) is not inside the \(h.protectedModeBytes)-byte kernel")
        }
        let range = pmStart + Int(h.payloadOffset)..<pmStart + Int(end)
        guard let c = PayloadCompression.detect(bytes[range]) else {
            let magic = bytes[range].prefix(4).map { hexDigits($0, width: 2) }.joined(separator: " ")
            throw .decompression("unknown payload compression (first bytes \(magic))")
        }
        // Every kernel build appends the uncompressed size as le32 (for gzip it is the trailer's ISIZE).
        let size = Int(readLE(bytes, range.upperBound - 4, as: UInt32.self))
        guard size > 0, size <= maxVmlinuxSize else {
            throw .decompression("payload claims \(mib(UInt64(size))) MiB uncompressed")
        }
        return BzImagePayload(compression: c, range: range, uncompressedSize: size)
    }

    /// Decompresses a bzImage's payload on the host and returns the vmlinux ELF inside it, so a
    /// VMM can skip the in-guest decompressor (slow when guest kernel code is emulated).
    /// Supports gzip, xz and lzma (zlib/liblzma) and lz4 and zstd (liblz4.so.1/libzstd.so.1, loaded at run time).
    public static func extractVmlinux(bzImage: [UInt8]) throws(LoaderError) -> [UInt8] {
        let p = try payload(ofBzImage: bzImage)
        // Every format but gzip carries the size trailer outside its own stream: leave it out.
        let input = p.compression == .gzip ? bzImage[p.range] : bzImage[p.range.dropLast(4)]
        var out = [UInt8](repeating: 0, count: p.uncompressedSize)
        let produced: Int
        switch p.compression {
        case .gzip: produced = try inflateGzip(input, into: &out)
        case .xz, .lzma: produced = try unxz(input, alone: p.compression == .lzma, into: &out)
        case .lz4: produced = try unlz4Legacy(input, into: &out)
        case .zstd: produced = try unzstd(input, into: &out)
        case .bzip2, .lzo:
            throw .decompression("\(p.compression) payloads are not supported on the host; boot the bzImage as it is")
        }
        guard produced == p.uncompressedSize else {
            throw .decompression("\(p.compression) payload unpacked to \(produced) bytes, header says \(p.uncompressedSize)")
        }
        guard out.count >= 4, out[0] == 0x7F, out[1] == 0x45, out[2] == 0x4C, out[3] == 0x46 else {
            throw .decompression("the unpacked payload is not an ELF file")
        }
        return out
    }

    // MARK: Decoders. Each returns the bytes produced and fails on corrupt or oversized input.

    static func inflateGzip(_ input: ArraySlice<UInt8>, into out: inout [UInt8]) throws(LoaderError) -> Int {
        let cap = out.count
        let result: Result<Int, LoaderError> = input.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { outp in
                var s = z_stream()
                // 16 + MAX_WBITS: expect a gzip header and trailer.
                guard inflateInit2_(&s, 16 + 15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
                    return .failure(.decompression("zlib initialisation failed"))
                }
                defer { inflateEnd(&s) }
                s.next_in = UnsafeMutablePointer(mutating: inp.baseAddress)
                s.avail_in = UInt32(inp.count)
                s.next_out = outp.baseAddress
                s.avail_out = UInt32(cap)
                let rc = inflate(&s, Z_FINISH)
                guard rc == Z_STREAM_END else {
                    let msg = s.msg.map { String(cString: $0) } ?? "error \(rc)"
                    return .failure(.decompression(rc == Z_BUF_ERROR ? "gzip payload is truncated or larger than declared"
                                                                    : "gzip payload is corrupt: \(msg)"))
                }
                return .success(Int(s.total_out))
            }
        }
        return try result.get()
    }

    static func unxz(_ input: ArraySlice<UInt8>, alone: Bool, into out: inout [UInt8]) throws(LoaderError) -> Int {
        let cap = out.count
        let name = alone ? "lzma" : "xz"
        let result: Result<Int, LoaderError> = input.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { outp in
                var s = lzma_stream()  // all-zero is LZMA_STREAM_INIT
                let initRC = alone ? lzma_alone_decoder(&s, UInt64.max) : lzma_stream_decoder(&s, UInt64.max, 0)
                guard initRC == LZMA_OK else { return .failure(.decompression("liblzma initialisation failed")) }
                defer { lzma_end(&s) }
                s.next_in = inp.baseAddress
                s.avail_in = inp.count
                s.next_out = outp.baseAddress
                s.avail_out = cap
                let rc = lzma_code(&s, LZMA_FINISH)
                guard rc == LZMA_STREAM_END else {
                    return .failure(.decompression(rc == LZMA_BUF_ERROR ? "\(name) payload is truncated or larger than declared"
                                                                       : "\(name) payload is corrupt (liblzma error \(rc.rawValue))"))
                }
                return .success(Int(s.total_out))
            }
        }
        return try result.get()
    }

    /// LZ4 legacy frame ("lz4 -l"): magic, then blocks of le32 compressed size + data, each
    /// unpacking to at most 8 MiB. The magic may repeat (concatenated frames).
    static func unlz4Legacy(_ input: ArraySlice<UInt8>, into out: inout [UInt8]) throws(LoaderError) -> Int {
        typealias Decompress = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32, Int32) -> Int32
        let lib = try DynamicLibrary("liblz4.so.1", what: "lz4", package: "liblz4-1")
        defer { lib.close() }
        let decompress: Decompress = try lib.symbol("LZ4_decompress_safe")
        let legacyMagic: UInt32 = 0x184C_2102
        let blockMax = 8 << 20
        let bytes = Array(input)
        var pos = 4, produced = 0
        let cap = out.count
        while pos < bytes.count {
            guard bytes.count - pos >= 4 else { throw .decompression("lz4 payload ends inside a block header") }
            let size = Int(readLE(bytes, pos, as: UInt32.self))
            pos += 4
            if size == Int(legacyMagic) { continue }
            // LZ4_compressBound(8 MiB) is a little over 8 MiB.
            guard size > 0, size <= blockMax + blockMax / 255 + 16, size <= bytes.count - pos else {
                throw .decompression("lz4 block at payload offset \(pos - 4) has bad length \(size)")
            }
            let room = min(blockMax, cap - produced)
            let n = bytes.withUnsafeBytes { src in
                out.withUnsafeMutableBytes { dst in
                    decompress(src.baseAddress! + pos, dst.baseAddress! + produced, Int32(size), Int32(room))
                }
            }
            guard n >= 0 else {
                throw .decompression("lz4 block at payload offset \(pos - 4) is corrupt or larger than declared")
            }
            produced += Int(n)
            pos += size
        }
        return produced
    }

    static func unzstd(_ input: ArraySlice<UInt8>, into out: inout [UInt8]) throws(LoaderError) -> Int {
        typealias FrameSize = @convention(c) (UnsafeRawPointer?, Int) -> Int
        typealias Decompress = @convention(c) (UnsafeMutableRawPointer?, Int, UnsafeRawPointer?, Int) -> Int
        typealias IsError = @convention(c) (Int) -> UInt32
        typealias ErrorName = @convention(c) (Int) -> UnsafePointer<CChar>?
        let lib = try DynamicLibrary("libzstd.so.1", what: "zstd", package: "libzstd1")
        defer { lib.close() }
        let frameSize: FrameSize = try lib.symbol("ZSTD_findFrameCompressedSize")
        let decompress: Decompress = try lib.symbol("ZSTD_decompress")
        let isError: IsError = try lib.symbol("ZSTD_isError")
        let errorName: ErrorName = try lib.symbol("ZSTD_getErrorName")
        func message(_ code: Int) -> String { errorName(code).map { String(cString: $0) } ?? "error" }
        let cap = out.count
        let rc: Int = input.withUnsafeBytes { src in
            let frame = frameSize(src.baseAddress, src.count)
            if isError(frame) != 0 { return frame }
            return out.withUnsafeMutableBytes { dst in decompress(dst.baseAddress, cap, src.baseAddress, frame) }
        }
        guard isError(rc) == 0 else { throw .decompression("zstd payload: \(message(rc))") }
        return rc
    }
}

/// A shared library opened with dlopen, for decoders whose -dev headers Debian's base image lacks.
struct DynamicLibrary {
    let handle: UnsafeMutableRawPointer
    let name: String

    init(_ soname: String, what: String, package: String) throws(LoaderError) {
        guard let h = dlopen(soname, RTLD_NOW | RTLD_LOCAL) else {
            throw .decompression("\(what) payload needs \(soname) (Debian package \(package)), which cannot be loaded")
        }
        handle = h
        name = soname
    }

    func symbol<T>(_ s: String) throws(LoaderError) -> T {
        guard let p = dlsym(handle, s) else { throw .decompression("\(name) has no \(s)") }
        return unsafeBitCast(p, to: T.self)
    }

    func close() { dlclose(handle) }
}
