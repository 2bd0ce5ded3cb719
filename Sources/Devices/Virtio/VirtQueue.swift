import VMCore
import VMMemory
import Synchronization

/// Why a virtqueue stopped. Each is a driver bug (or a hostile guest); the device reacts by
/// setting DEVICE_NEEDS_RESET and no longer touching the queue until the driver resets it.
public enum VirtQueueError: Error, Equatable, CustomStringConvertible {
    case invalidSize(UInt16, max: UInt16)
    case misalignedRing(String, address: UInt64)
    case ringOutsideMemory(String, address: UInt64, length: UInt64)
    /// The driver claims more new buffers than the ring holds.
    case availIndexJump(availIndex: UInt16, nextAvail: UInt16, size: UInt16)
    case descriptorIndexOutOfRange(index: UInt16, tableSize: UInt32)
    case descriptorOutsideMemory(address: UInt64, length: UInt32)
    /// A chain revisits descriptors (a loop) or exceeds the queue size.
    case chainTooLong(limit: UInt32)
    case indirectNotNegotiated
    case nestedIndirect
    case indirectWithNext
    case badIndirectTableLength(UInt32)
    /// A device-readable descriptor after a device-writable one (virtio 1.2, 2.7.4.2).
    case readableAfterWritable
    /// A device-writable buffer overlapping this queue's own rings.
    case writableOverlapsRing(address: UInt64, length: UInt32)
    /// A buffer smaller than the device type requires (virtio-net: a merged receive buffer that
    /// cannot hold the header).
    case bufferTooSmall(length: UInt64, minimum: UInt64)

    public var description: String {
        switch self {
        case .invalidSize(let s, let m): return "queue size \(s) is not a power of two in 1...\(m)"
        case .misalignedRing(let n, let a): return "\(n) at \(hex(a)) is misaligned"
        case .ringOutsideMemory(let n, let a, let l): return "\(n) at \(hex(a))+\(hex(l)) is outside guest RAM"
        case .availIndexJump(let a, let n, let s):
            return "available index jumped from \(n) to \(a) (more than the queue size \(s))"
        case .descriptorIndexOutOfRange(let i, let t): return "descriptor index \(i) is outside a table of \(t)"
        case .descriptorOutsideMemory(let a, let l):
            return "descriptor buffer \(hex(a))+\(hex(l)) is outside guest RAM"
        case .chainTooLong(let l): return "descriptor chain is longer than \(l) (a loop?)"
        case .indirectNotNegotiated: return "indirect descriptor used without VIRTIO_F_INDIRECT_DESC"
        case .nestedIndirect: return "indirect descriptor inside an indirect table"
        case .indirectWithNext: return "indirect descriptor with the NEXT flag"
        case .badIndirectTableLength(let l): return "indirect table length \(l) is not a multiple of 16 in range"
        case .readableAfterWritable: return "device-readable descriptor after a device-writable one"
        case .writableOverlapsRing(let a, let l):
            return "device-writable buffer \(hex(a))+\(hex(l)) overlaps the queue's rings"
        case .bufferTooSmall(let l, let m): return "buffer of \(l) bytes is smaller than the \(m) the device requires"
        }
    }
}

/// One buffer of a descriptor chain, already checked to lie inside guest RAM.
public struct Descriptor: Equatable, Sendable {
    public let address: UInt64
    public let length: UInt32
    /// Device-writable (VIRTQ_DESC_F_WRITE); otherwise device-readable.
    public let isWriteOnly: Bool
    public init(address: UInt64, length: UInt32, isWriteOnly: Bool) {
        self.address = address; self.length = length; self.isWriteOnly = isWriteOnly
    }
}

/// A validated descriptor chain: device-readable buffers first, then device-writable ones.
/// Devices treat each half as one byte stream, so they never depend on how the driver split it.
public struct DescriptorChain: Sendable {
    /// The head's index in the descriptor table: what goes back into the used ring.
    public let headIndex: UInt16
    public let descriptors: [Descriptor]
    /// Total bytes in the readable and in the writable descriptors.
    public let readableLength: UInt64
    public let writableLength: UInt64

    public init(headIndex: UInt16, descriptors: [Descriptor]) {
        self.headIndex = headIndex
        self.descriptors = descriptors
        var r: UInt64 = 0, w: UInt64 = 0
        for d in descriptors { if d.isWriteOnly { w += UInt64(d.length) } else { r += UInt64(d.length) } }
        readableLength = r
        writableLength = w
    }

    /// The guest-physical pieces covering `[offset, offset+length)` of the readable (or writable)
    /// stream, or nil if that range is not inside the stream.
    public func segments(writable: Bool, offset: UInt64, length: UInt64) -> [(address: UInt64, length: UInt64)]? {
        let total = writable ? writableLength : readableLength
        guard offset <= total, length <= total - offset else { return nil }
        var result: [(address: UInt64, length: UInt64)] = []
        var skip = offset, remaining = length
        for d in descriptors where d.isWriteOnly == writable && remaining > 0 {
            let len = UInt64(d.length)
            if skip >= len { skip -= len; continue }
            let n = min(len - skip, remaining)
            if n > 0 { result.append((d.address + skip, n)) }
            remaining -= n
            skip = 0
        }
        return result
    }
}

/// A split virtqueue (virtio 1.2, 2.7) over guest memory, as seen by the device.
///
/// The driver owns the descriptor table and the available ring; the device owns the used ring.
/// Everything read from guest memory is untrusted: indices are bounded, every buffer is checked
/// against guest RAM, chains are walked with a budget so loops end, and an available index that
/// runs ahead by more than the queue size stops the queue with an error instead of being believed.
public final class VirtQueue {
    static let descNext: UInt16 = 1
    static let descWrite: UInt16 = 2
    static let descIndirect: UInt16 = 4
    /// VIRTQ_AVAIL_F_NO_INTERRUPT.
    static let availNoInterrupt: UInt16 = 1

    public let memory: GuestMemory
    /// The largest size the device offers (a power of two).
    public let maxSize: UInt16
    /// Driver-chosen size; only meaningful until `enable()`.
    public var size: UInt16
    /// Guest-physical addresses of the descriptor table, available ("driver") ring and used ("device") ring.
    public var descriptorTable: UInt64 = 0
    public var availRing: UInt64 = 0
    public var usedRing: UInt64 = 0
    /// Negotiated VIRTIO_F_EVENT_IDX / VIRTIO_F_INDIRECT_DESC.
    public var eventIndexEnabled = false
    public var indirectEnabled = false

    public private(set) var isReady = false
    /// Set after an error: the queue is left alone until reset.
    public private(set) var isBroken = false
    /// Free-running indices (mod 2^16) of the next available entry to consume and the next used slot.
    public private(set) var nextAvail: UInt16 = 0
    public private(set) var nextUsed: UInt16 = 0
    /// The used index at the last interrupt decision (event-index suppression).
    private var signalledUsed: UInt16?
    /// Ring byte ranges, computed at enable; device-writable buffers must not touch them.
    private var ringRanges: [(UInt64, UInt64)] = []

    /// `maxSize` is rounded down to a power of two in 1...32768.
    public init(memory: GuestMemory, maxSize: UInt16) {
        var m: UInt16 = 1
        while m < 0x8000 && m << 1 <= maxSize { m <<= 1 }
        self.memory = memory
        self.maxSize = m
        self.size = m
    }

    /// Back to the state after device reset.
    public func reset() {
        size = maxSize
        descriptorTable = 0; availRing = 0; usedRing = 0
        eventIndexEnabled = false; indirectEnabled = false
        isReady = false; isBroken = false
        nextAvail = 0; nextUsed = 0
        signalledUsed = nil
        ringRanges = []
    }

    /// The driver enabled the queue: checks size, alignment and that all three areas are guest RAM.
    public func enable() throws(VirtQueueError) {
        guard size > 0, size <= maxSize, size & (size - 1) == 0 else {
            throw VirtQueueError.invalidSize(size, max: maxSize)
        }
        let n = UInt64(size)
        let areas: [(String, UInt64, UInt64, UInt64)] = [
            ("descriptor table", descriptorTable, 16 * n, 16),
            ("available ring", availRing, 6 + 2 * n, 2),
            ("used ring", usedRing, 6 + 8 * n, 4),
        ]
        for (name, addr, len, align) in areas {
            guard addr % align == 0 else { throw VirtQueueError.misalignedRing(name, address: addr) }
            guard memory.contains(addr, length: len) else {
                throw VirtQueueError.ringOutsideMemory(name, address: addr, length: len)
            }
        }
        ringRanges = areas.map { ($0.1, $0.1 + $0.2) }
        isReady = true
        isBroken = false
    }

    /// Marks the queue unusable after an error the device detected outside the queue.
    public func markBroken() { isBroken = true }

    // MARK: Guest memory helpers (all bounds-checked)

    @inline(__always)
    private func load16(_ address: UInt64) throws(VirtQueueError) -> UInt16 {
        guard let p = memory.hostPointer(address, length: 2) else {
            throw VirtQueueError.ringOutsideMemory("ring", address: address, length: 2)
        }
        return UInt16(littleEndian: p.loadUnaligned(as: UInt16.self))
    }

    @inline(__always)
    private func store16(_ address: UInt64, _ value: UInt16) throws(VirtQueueError) {
        guard let p = memory.hostPointer(address, length: 2) else {
            throw VirtQueueError.ringOutsideMemory("ring", address: address, length: 2)
        }
        p.storeBytes(of: value.littleEndian, as: UInt16.self)
        memory.noteDMAWrite(address, length: 2)  // the guest may (oddly) run code there: keep it coherent
    }

    @inline(__always)
    private func store32(_ address: UInt64, _ value: UInt32) throws(VirtQueueError) {
        guard let p = memory.hostPointer(address, length: 4) else {
            throw VirtQueueError.ringOutsideMemory("ring", address: address, length: 4)
        }
        p.storeBytes(of: value.littleEndian, as: UInt32.self)
        memory.noteDMAWrite(address, length: 4)
    }

    /// Runs `body`, marking the queue broken if it throws.
    @inline(__always)
    private func guarded<T>(_ body: () throws(VirtQueueError) -> T) throws(VirtQueueError) -> T {
        do { return try body() } catch { isBroken = true; throw error }
    }

    // MARK: Device operations

    /// Number of chains the driver has made available and the device has not consumed yet.
    public func pendingCount() throws(VirtQueueError) -> UInt16 {
        guard isReady, !isBroken else { return 0 }
        return try guarded { () throws(VirtQueueError) -> UInt16 in
            let availIndex = try load16(availRing + 2)
            let pending = availIndex &- nextAvail
            guard pending <= size else {
                throw VirtQueueError.availIndexJump(availIndex: availIndex, nextAvail: nextAvail, size: size)
            }
            return pending
        }
    }

    /// Takes the next available descriptor chain, or nil when there is none (or the queue is not
    /// usable). Throws, and breaks the queue, on a malformed ring or chain.
    public func popAvailable() throws(VirtQueueError) -> DescriptorChain? {
        guard try pendingCount() > 0 else { return nil }
        return try guarded { () throws(VirtQueueError) -> DescriptorChain in
            // The ring entries were written before the index: read them only after it.
            atomicMemoryFence(ordering: .acquiring)
            let slot = UInt64(nextAvail & (size - 1))
            let head = try load16(availRing + 4 + 2 * slot)
            let chain = try walkChain(head: head)
            nextAvail &+= 1
            return chain
        }
    }

    /// Reads and validates one chain. The walk budget is the table size, so a loop ends in an error.
    private func walkChain(head: UInt16) throws(VirtQueueError) -> DescriptorChain {
        var descriptors: [Descriptor] = []
        var table = descriptorTable
        var tableSize = UInt32(size)
        var index = UInt32(head)
        var budget = tableSize
        var inIndirect = false
        var seenWritable = false
        guard index < tableSize else {
            throw VirtQueueError.descriptorIndexOutOfRange(index: head, tableSize: tableSize)
        }
        while true {
            guard budget > 0 else { throw VirtQueueError.chainTooLong(limit: tableSize) }
            budget -= 1
            let entry = table + 16 * UInt64(index)
            guard let p = memory.hostPointer(entry, length: 16) else {
                throw VirtQueueError.descriptorOutsideMemory(address: entry, length: 16)
            }
            let address = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
            let length = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let flags = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 12, as: UInt16.self))
            let next = UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 14, as: UInt16.self))

            if flags & VirtQueue.descIndirect != 0 {
                guard indirectEnabled else { throw VirtQueueError.indirectNotNegotiated }
                guard !inIndirect else { throw VirtQueueError.nestedIndirect }
                guard flags & VirtQueue.descNext == 0 else { throw VirtQueueError.indirectWithNext }
                // A chain may be no longer than the queue (2.7.5.3.1); the bound also caps the walk.
                guard length > 0, length % 16 == 0, length / 16 <= UInt32(maxSize) else {
                    throw VirtQueueError.badIndirectTableLength(length)
                }
                guard memory.contains(address, length: UInt64(length)) else {
                    throw VirtQueueError.descriptorOutsideMemory(address: address, length: length)
                }
                table = address
                tableSize = length / 16
                budget = tableSize
                index = 0
                inIndirect = true
                continue
            }

            guard memory.contains(address, length: UInt64(length)) else {
                throw VirtQueueError.descriptorOutsideMemory(address: address, length: length)
            }
            let writable = flags & VirtQueue.descWrite != 0
            if writable {
                let end = address + UInt64(length)
                for (lo, hi) in ringRanges where length > 0 && address < hi && lo < end {
                    throw VirtQueueError.writableOverlapsRing(address: address, length: length)
                }
                seenWritable = true
            } else if seenWritable {
                throw VirtQueueError.readableAfterWritable
            }
            descriptors.append(Descriptor(address: address, length: length, isWriteOnly: writable))

            guard flags & VirtQueue.descNext != 0 else { break }
            guard UInt32(next) < tableSize else {
                throw VirtQueueError.descriptorIndexOutOfRange(index: next, tableSize: tableSize)
            }
            index = UInt32(next)
        }
        return DescriptorChain(headIndex: head, descriptors: descriptors)
    }

    /// Returns a chain to the driver: `length` is the number of bytes the device wrote into it.
    public func addUsed(headIndex: UInt16, length: UInt32) throws(VirtQueueError) {
        guard isReady, !isBroken else { return }
        try guarded { () throws(VirtQueueError) in
            let slot = UInt64(nextUsed & (size - 1))
            let element = usedRing + 4 + 8 * slot
            try store32(element, UInt32(headIndex))
            try store32(element + 4, length)
            // The element must be visible before the index that publishes it.
            atomicMemoryFence(ordering: .releasing)
            nextUsed &+= 1
            try store16(usedRing + 2, nextUsed)
        }
    }

    /// Returns several chains at once (a network frame spread over merged receive buffers): all
    /// elements are written before the used index moves, so the driver never sees only part of them.
    public func addUsed(_ elements: some Collection<(headIndex: UInt16, length: UInt32)>) throws(VirtQueueError) {
        guard isReady, !isBroken, !elements.isEmpty else { return }
        try guarded { () throws(VirtQueueError) in
            var index = nextUsed
            for e in elements {
                let element = usedRing + 4 + 8 * UInt64(index & (size - 1))
                try store32(element, UInt32(e.headIndex))
                try store32(element + 4, e.length)
                index &+= 1
            }
            atomicMemoryFence(ordering: .releasing)
            nextUsed = index
            try store16(usedRing + 2, nextUsed)
        }
    }

    /// After the device found the ring empty: asks the driver to notify for the next buffer
    /// (avail_event with EVENT_IDX) and reports whether buffers arrived meanwhile, in which case
    /// the device must keep processing instead of waiting for a notification that may never come.
    public func enableNotification() throws(VirtQueueError) -> Bool {
        guard isReady, !isBroken else { return false }
        if eventIndexEnabled {
            try guarded { () throws(VirtQueueError) in
                try store16(usedRing + 4 + 8 * UInt64(size), nextAvail)
            }
            atomicMemoryFence(ordering: .sequentiallyConsistent)
        }
        return try pendingCount() > 0
    }

    /// Gives back the last `count` chains taken with `popAvailable` and not used: the device found
    /// them too few for what it has to deliver (a network frame spanning several buffers) and will
    /// take them again later, re-reading and re-checking them.
    public func returnUnused(_ count: Int) {
        guard count > 0, count <= Int(size) else { return }
        nextAvail &-= UInt16(truncatingIfNeeded: count)
    }

    /// After the device found the available chains too few for what it has to deliver: asks the
    /// driver to notify when it makes more available (avail_event = the driver's current index,
    /// with EVENT_IDX), and reports whether it already did, in which case the device must try
    /// again instead of waiting for a notification that may never come.
    public func enableNotificationForMore() throws(VirtQueueError) -> Bool {
        guard isReady, !isBroken else { return false }
        return try guarded { () throws(VirtQueueError) -> Bool in
            let seen = try load16(availRing + 2)
            if eventIndexEnabled {
                try store16(usedRing + 4 + 8 * UInt64(size), seen)
                atomicMemoryFence(ordering: .sequentiallyConsistent)
            }
            return try load16(availRing + 2) != seen
        }
    }

    /// Whether the driver wants an interrupt for the used buffers added since the last call
    /// (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with EVENT_IDX).
    public func needsNotification() throws(VirtQueueError) -> Bool {
        guard isReady, !isBroken else { return false }
        // The used index must be visible before reading the driver's suppression state.
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        return try guarded { () throws(VirtQueueError) -> Bool in
            if !eventIndexEnabled {
                return try load16(availRing) & VirtQueue.availNoInterrupt == 0
            }
            let usedEvent = try load16(availRing + 4 + 2 * UInt64(size))
            let new = nextUsed
            let old = signalledUsed
            signalledUsed = new
            guard let old else { return true }
            // vring_need_event: did the used index pass used_event since the last decision?
            return new &- usedEvent &- 1 < new &- old
        }
    }
}

// MARK: State

extension VirtQueue {
    /// The driver's configuration of the queue and the device's position in it. The rings
    /// themselves (and requests the driver made available but the device has not consumed) are in
    /// guest RAM, which is saved with it.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var size: UInt16
        public var descriptorTable: UInt64, availRing: UInt64, usedRing: UInt64
        public var eventIndexEnabled: Bool, indirectEnabled: Bool
        public var isReady: Bool, isBroken: Bool
        public var nextAvail: UInt16, nextUsed: UInt16
        public var signalledUsed: UInt16?
    }

    public func captureState() -> State {
        State(size: size, descriptorTable: descriptorTable, availRing: availRing, usedRing: usedRing,
              eventIndexEnabled: eventIndexEnabled, indirectEnabled: indirectEnabled, isReady: isReady,
              isBroken: isBroken, nextAvail: nextAvail, nextUsed: nextUsed, signalledUsed: signalledUsed)
    }

    /// A ready queue is checked as `enable` checks it (size, alignment, rings in guest RAM); a queue
    /// not yet enabled holds whatever the driver wrote, as it did.
    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "virtqueue")
        reset()
        (size, descriptorTable, availRing, usedRing) = (s.size, s.descriptorTable, s.availRing, s.usedRing)
        (eventIndexEnabled, indirectEnabled) = (s.eventIndexEnabled, s.indirectEnabled)
        if s.isReady {
            do { try enable() } catch {
                reset()
                throw .invalid(device: "virtqueue", reason: error.description)
            }
        }
        (isBroken, nextAvail, nextUsed, signalledUsed) = (s.isBroken, s.nextAvail, s.nextUsed, s.signalledUsed)
    }
}
