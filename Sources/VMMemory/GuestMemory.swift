import VMCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error touching guest memory. Guest-controlled addresses must never turn into host pointers
/// without passing through these checks.
public enum MemoryError: Error, Equatable, CustomStringConvertible {
    /// `[address, address+length)` is not entirely inside one RAM region.
    case outOfBounds(address: UInt64, length: UInt64)
    /// The requested guest RAM size is unusable.
    case invalidSize(String)
    /// The host refused to map guest RAM.
    case mapFailed(size: UInt64, errno: Int32)

    public var description: String {
        switch self {
        case .outOfBounds(let a, let l):
            return "guest address range \(hex(a))+\(hex(l)) is outside guest RAM"
        case .invalidSize(let s): return s
        case .mapFailed(let size, let e):
            return "cannot map \(size >> 20) MiB of guest RAM: \(String(cString: strerror(e)))"
        }
    }
}

/// One contiguous range of guest-physical RAM backed by host memory.
public struct MemoryRegion: @unchecked Sendable {
    public let guestBase: UInt64
    public let size: UInt64
    /// Host address of `guestBase`. Only for code that registers memory with a hypervisor
    /// (KVM memory slots); everything else goes through the checked accessors.
    public let host: UnsafeMutableRawPointer
    public var guestEnd: UInt64 { guestBase + size }
}

/// Guest RAM: anonymous host mappings laid out like a PC's (RAM below the 32-bit PCI hole, the rest
/// above 4 GiB). Every accessor is bounds-checked with overflow-safe arithmetic.
///
/// Thread-safety: the mapping never moves after creation; concurrent accesses to distinct bytes are
/// as safe as they are on real hardware. The class is shared by the vCPU and device threads.
public final class GuestMemory: @unchecked Sendable {
    /// Start of the 32-bit MMIO hole (PCI, IOAPIC, LAPIC). RAM never occupies [3 GiB, 4 GiB).
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    public static let mmioHoleEnd: UInt64 = 0x1_0000_0000
    /// Smallest and largest RAM we accept. 16 MiB is far below what Linux needs but lets tests run small guests.
    public static let minimumSize: UInt64 = 1 << 20
    public static let maximumSize: UInt64 = 1 << 40
    static let guardSize = 4096
    /// Host alignment of each region's start: a 2 MiB-aligned mapping lets KVM back guest RAM with
    /// the host's transparent huge pages (its memory slots need huge-page-aligned host addresses).
    public static let hostAlignment = 2 << 20

    public let regions: [MemoryRegion]
    /// Total bytes of guest RAM.
    public let size: UInt64
    private let ownsMappings: Bool

    /// Maps `size` bytes of zeroed guest RAM, split around the MMIO hole.
    public init(size: UInt64) throws(MemoryError) {
        guard size >= GuestMemory.minimumSize else {
            throw MemoryError.invalidSize("memory size \(size) bytes is too small (minimum 1 MiB)")
        }
        guard size <= GuestMemory.maximumSize else {
            throw MemoryError.invalidSize("memory size \(size >> 30) GiB is too large (maximum 1 TiB)")
        }
        guard size % 4096 == 0 else {
            throw MemoryError.invalidSize("memory size \(size) is not a multiple of 4 KiB")
        }
        var regions: [MemoryRegion] = []
        for (base, len) in GuestMemory.regionLayout(size: size) {
            guard let length = Int(exactly: len), let host = GuestMemory.mapRegion(length: length) else {
                let e = errno
                for r in regions { GuestMemory.unmapRegion(r) }
                throw MemoryError.mapFailed(size: len, errno: e)
            }
            regions.append(MemoryRegion(guestBase: base, size: len, host: host))
        }
        self.regions = regions
        self.size = size
        self.ownsMappings = true
    }

    /// Where `size` bytes of RAM go in guest-physical space: below the MMIO hole, the rest above 4 GiB.
    public static func regionLayout(size: UInt64) -> [(guestBase: UInt64, size: UInt64)] {
        if size <= GuestMemory.mmioHoleStart { return [(0, size)] }
        return [(0, GuestMemory.mmioHoleStart), (GuestMemory.mmioHoleEnd, size - GuestMemory.mmioHoleStart)]
    }

    deinit {
        if ownsMappings {
            for r in regions { GuestMemory.unmapRegion(r) }
        }
    }

    /// Maps `length` bytes of RAM at a `hostAlignment`-aligned host address with an inaccessible guard
    /// page on each side: it reserves room for the alignment, then returns the slack before and after
    /// to the kernel. MAP_NORESERVE: guest RAM is committed lazily, as the guest touches it. The
    /// guards catch host-side overruns and keep the kernel from merging guest RAM with neighbouring
    /// anonymous mappings (so /proc/PID/smaps shows it alone).
    static func mapRegion(length: Int) -> UnsafeMutableRawPointer? {
        let reserve = length + 2 * guardSize + hostAlignment
        guard let p = mmap(nil, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else { return nil }
        let first = UInt(bitPattern: p) + UInt(truncatingIfNeeded: guardSize)
        let aligned = (first + UInt(truncatingIfNeeded: hostAlignment - 1)) & ~UInt(truncatingIfNeeded: hostAlignment - 1)
        let ram = p + Int(truncatingIfNeeded: aligned - UInt(bitPattern: p))
        guard mprotect(ram, length, PROT_READ | PROT_WRITE) == 0 else {
            let e = errno
            munmap(p, reserve)
            errno = e
            return nil
        }
        let lowSlack = ram - guardSize - p
        if lowSlack > 0 { munmap(p, lowSlack) }
        let end = ram + length + guardSize
        let highSlack = p + reserve - end
        if highSlack > 0 { munmap(end, highSlack) }
        return ram
    }

    static func unmapRegion(_ r: MemoryRegion) {
        munmap(r.host - guardSize, Int(r.size) + 2 * guardSize)
    }

    /// Called after a device writes guest RAM behind the CPU's back (DMA: a virtio-blk read). The
    /// interpreter installs it to drop decoded instructions cached for those pages. Set once while
    /// the machine is built; called on the vCPU thread only.
    public var dmaWriteObserver: ((UInt64, UInt64) -> Void)?

    /// Devices call this after filling guest RAM directly (not through `write`).
    @inline(__always)
    public func noteDMAWrite(_ address: UInt64, length: UInt64) {
        dmaWriteObserver?(address, length)
    }

    /// The end of the highest RAM byte + 1 (guest-physical).
    public var highestAddress: UInt64 { regions.last!.guestEnd }

    /// True if `[address, address+length)` lies inside one RAM region.
    @inline(__always)
    public func contains(_ address: UInt64, length: UInt64 = 1) -> Bool {
        region(for: address, length: length) != nil
    }

    @inline(__always)
    func region(for address: UInt64, length: UInt64) -> MemoryRegion? {
        for r in regions where address >= r.guestBase {
            let off = address - r.guestBase
            if off <= r.size && length <= r.size - off { return r }
        }
        return nil
    }

    /// A host pointer to `[address, address+length)`, or nil if the range is not entirely RAM.
    /// The pointer is valid for the life of this object and only for `length` bytes.
    @inline(__always)
    public func hostPointer(_ address: UInt64, length: UInt64) -> UnsafeMutableRawPointer? {
        // Fast path: the first region holds almost everything.
        let r0 = regions[0]
        if address < r0.size && length <= r0.size - address { return r0.host + Int(address) }
        guard let r = region(for: address, length: length) else { return nil }
        return r.host + Int(address - r.guestBase)
    }

    /// Like `hostPointer`, but throws `MemoryError.outOfBounds`.
    @inline(__always)
    public func checkedPointer(_ address: UInt64, length: UInt64) throws(MemoryError) -> UnsafeMutableRawPointer {
        guard let p = hostPointer(address, length: length) else {
            throw MemoryError.outOfBounds(address: address, length: length)
        }
        return p
    }

    // MARK: Typed little-endian accessors

    @inline(__always)
    public func read<T: FixedWidthInteger>(_ type: T.Type = T.self, at address: UInt64) throws(MemoryError) -> T {
        let p = try checkedPointer(address, length: UInt64(MemoryLayout<T>.size))
        return T(littleEndian: p.loadUnaligned(as: T.self))
    }

    @inline(__always)
    public func write<T: FixedWidthInteger>(_ value: T, at address: UInt64) throws(MemoryError) {
        let p = try checkedPointer(address, length: UInt64(MemoryLayout<T>.size))
        p.storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Copies `bytes` into guest memory at `address`.
    public func write<C: Collection>(bytes: C, at address: UInt64) throws(MemoryError) where C.Element == UInt8 {
        let p = try checkedPointer(address, length: UInt64(bytes.count))
        var i = 0
        for b in bytes { p.storeBytes(of: b, toByteOffset: i, as: UInt8.self); i += 1 }
    }

    /// Copies from a raw buffer into guest memory.
    public func write(buffer: UnsafeRawBufferPointer, at address: UInt64) throws(MemoryError) {
        let p = try checkedPointer(address, length: UInt64(buffer.count))
        if let base = buffer.baseAddress, buffer.count > 0 { p.copyMemory(from: base, byteCount: buffer.count) }
    }

    /// Reads `count` bytes starting at `address`.
    public func readBytes(at address: UInt64, count: Int) throws(MemoryError) -> [UInt8] {
        guard count >= 0 else { throw MemoryError.outOfBounds(address: address, length: UInt64.max) }
        let p = try checkedPointer(address, length: UInt64(count))
        return Array(UnsafeRawBufferPointer(start: p, count: count))
    }

    /// Fills `[address, address+length)` with `value`.
    public func fill(_ value: UInt8, at address: UInt64, length: UInt64) throws(MemoryError) {
        let p = try checkedPointer(address, length: length)
        memset(p, Int32(value), Int(length))
    }
}
