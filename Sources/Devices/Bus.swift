import VMCore

/// A device register window on a bus. `offset` is relative to the start of the range the device was
/// registered at. Sizes are 1, 2, 4 or 8 bytes; values are little-endian, zero-extended.
/// Devices are only ever called on the vCPU thread (other threads post work through `VMControl`),
/// so they need no locks of their own.
public protocol BusDevice: AnyObject {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// Errors registering devices on a bus.
public enum BusError: Error, Equatable, CustomStringConvertible {
    case overlap(name: String, base: UInt64, length: UInt64, existing: String)
    case emptyRange(name: String)

    public var description: String {
        switch self {
        case .overlap(let n, let b, let l, let e):
            return "device \(n) at \(hex(b))+\(hex(l)) overlaps \(e)"
        case .emptyRange(let n): return "device \(n) has an empty address range"
        }
    }
}

/// An address space (port I/O or MMIO) mapping ranges to devices. Ranges never overlap.
/// Accesses to unclaimed addresses read as all-ones and writes are dropped and counted.
public final class Bus {
    public struct Entry {
        public let base: UInt64
        public let length: UInt64
        public let name: String
        public let device: BusDevice
        var end: UInt64 { base &+ length }
    }

    public let name: String
    /// Sorted by base.
    public private(set) var entries: [Entry] = []
    /// Accesses that hit no device.
    public private(set) var unhandledReads = 0
    public private(set) var unhandledWrites = 0
    /// Called for each unhandled access (address, size, isWrite): the machine logs these at debug level.
    public var onUnhandled: ((UInt64, Int, Bool) -> Void)?

    public init(name: String) { self.name = name }

    /// Registers `device` on `range` (from `PCLayout`).
    public func register(_ device: BusDevice, name: String, at range: BusRange) throws(BusError) {
        try register(device, name: name, base: range.base, length: range.length)
    }

    /// Registers `device` at `[base, base+length)`. Refuses empty ranges, wrap-around and overlaps.
    public func register(_ device: BusDevice, name: String, base: UInt64, length: UInt64) throws(BusError) {
        guard length > 0, base.addingReportingOverflow(length - 1).overflow == false else {
            throw BusError.emptyRange(name: name)
        }
        // Compare inclusive last addresses: a range ending at the top of the address space has an
        // exclusive end that wraps to 0.
        let last = base &+ (length - 1)
        for e in entries where base <= e.base &+ (e.length - 1) && e.base <= last {
            throw BusError.overlap(name: name, base: base, length: length, existing: e.name)
        }
        entries.append(Entry(base: base, length: length, name: name, device: device))
        entries.sort { $0.base < $1.base }
    }

    /// The entry containing `address`, if any (binary search).
    @inline(__always)
    public func find(_ address: UInt64) -> Entry? {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            let e = entries[mid]
            if address < e.base { hi = mid } else if address - e.base >= e.length { lo = mid + 1 } else { return e }
        }
        return nil
    }

    public func read(_ address: UInt64, size: Int) -> UInt64 {
        if let e = find(address) { return e.device.read(offset: address - e.base, size: size) }
        unhandledReads += 1
        onUnhandled?(address, size, false)
        return allOnes(size: size)
    }

    public func write(_ address: UInt64, size: Int, value: UInt64) {
        if let e = find(address) { e.device.write(offset: address - e.base, size: size, value: value); return }
        unhandledWrites += 1
        onUnhandled?(address, size, true)
    }
}
