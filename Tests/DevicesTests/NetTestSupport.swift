import XCTest
import VMMemory
@testable import Devices
#if canImport(Glibc)
import Glibc
#endif

/// A host network in memory: frames the guest sent are recorded, frames "arriving" from the host
/// wait in `incoming` and are handed out the way `TapBackend` does (one at a time, held until the
/// device consumes it, cut at the buffer's size).
final class FakeNetBackend: NetBackend {
    var transmitOffloads: NetOffloads = .all
    var receiveOffloads: NetOffloads = .all
    private(set) var sent: [[UInt8]] = []
    /// Returned by `transmit` instead of sending (an errno), when not 0.
    var transmitError: Int32 = 0
    /// Frames (header + Ethernet) waiting on the host side.
    var incoming: [[UInt8]] = []
    /// An endless host: called for a new frame whenever `incoming` is empty.
    var endless: (() -> [UInt8])?
    /// Frames taken from the host side so far (what a TAP would have read).
    private(set) var framesTaken = 0
    private(set) var offloadsSet: [NetOffloads] = []
    private(set) var readableRequests = 0
    let capacity: Int
    private let buffer: UnsafeMutableRawBufferPointer
    private var held: Int?

    init(capacity: Int = VirtioNet.headerSize + VirtioNet.maxFrameSize + 1) {
        self.capacity = capacity
        buffer = .allocate(byteCount: capacity, alignment: 16)
    }
    deinit { buffer.deallocate() }

    func transmit(_ segments: UnsafeBufferPointer<iovec>) -> Int32 {
        if transmitError != 0 { return transmitError }
        var frame: [UInt8] = []
        for s in segments { frame += UnsafeRawBufferPointer(start: s.iov_base, count: s.iov_len) }
        sent.append(frame)
        return 0
    }

    func peekFrame() -> NetReceived? {
        if held == nil {
            let next: [UInt8]
            if !incoming.isEmpty { next = incoming.removeFirst() } else if let endless { next = endless() } else { return nil }
            framesTaken += 1
            let n = min(next.count, capacity)
            next.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: n) }
            held = next.count >= capacity ? next.count : n
        }
        if held! >= capacity { return .oversized(length: held!) }
        return .frame(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<held!]))
    }

    func consumeFrame() { held = nil }
    func setReceiveOffloads(_ offloads: NetOffloads) { offloadsSet.append(offloads) }
    func requestReadableNotification() { readableRequests += 1 }
}

/// A virtio-net device behind its virtio-pci transport, driven as Linux's virtio_net drives it:
/// MSI-X vectors 0 (configuration), 1 (receive) and 2 (transmit), both queues of `queueSize`.
final class NetRig {
    static let rxDesc: UInt64 = 0x10000, rxAvail: UInt64 = 0x11000, rxUsed: UInt64 = 0x12000
    static let txDesc: UInt64 = 0x20000, txAvail: UInt64 = 0x21000, txUsed: UInt64 = 0x22000
    static let rxBuffers: UInt64 = 0x100000
    static let txBuffers: UInt64 = 0x300000
    static let configVector: UInt32 = 0x40, rxVector: UInt32 = 0x41, txVector: UInt32 = 0x42

    let memory: GuestMemory
    let interrupts = VirtioFakeInterrupts()
    let backend: FakeNetBackend
    let net: VirtioNet
    let transport: VirtioPciDevice
    var rx: VirtioDriverRing!
    var tx: VirtioDriverRing!
    private(set) var accepted: UInt64 = 0

    init(backend: FakeNetBackend = FakeNetBackend(), offloads: VirtioNet.OffloadPolicy = .all,
         mergeable: Bool = true, mac: [UInt8] = [0x52, 0x54, 0, 0xAB, 0xCD, 0xEF], linkUp: Bool = true) throws {
        memory = try GuestMemory(size: 8 << 20)
        self.backend = backend
        net = VirtioNet(configuration: .init(mac: mac, offloads: offloads, mergeableReceiveBuffers: mergeable),
                        backend: backend, linkUp: linkUp)
        transport = try VirtioPciDevice(device: net, memory: memory, interrupts: interrupts)
        transport.config.write(offset: PciConfigRegister.command, size: 2, value: 0x6)
    }

    func common(_ off: UInt64, size: Int) -> UInt64 {
        transport.barRead(0, offset: VirtioPciDevice.commonOffset + off, size: size)
    }
    func setCommon(_ off: UInt64, size: Int, _ v: UInt64) {
        transport.barWrite(0, offset: VirtioPciDevice.commonOffset + off, size: size, value: v)
    }
    var status: UInt8 { UInt8(common(VirtioPciCommonConfig.deviceStatus, size: 1)) }
    var offered: UInt64 {
        let c = VirtioPciCommonConfig.self
        setCommon(c.deviceFeatureSelect, size: 4, 0)
        let lo = common(c.deviceFeature, size: 4)
        setCommon(c.deviceFeatureSelect, size: 4, 1)
        return lo | common(c.deviceFeature, size: 4) << 32
    }
    func config(_ offset: Int, size: Int) -> UInt64 {
        transport.barRead(0, offset: VirtioPciDevice.deviceConfigOffset + UInt64(offset), size: size)
    }

    /// Linux's bring-up with both queues; `accept` picks from the offered features.
    @discardableResult
    func bringUp(queueSize: UInt16 = 256, accept: (UInt64) -> UInt64 = { $0 }) -> Bool {
        let c = VirtioPciCommonConfig.self
        setCommon(c.deviceStatus, size: 1, 0)
        setCommon(c.deviceStatus, size: 1, 1)
        setCommon(c.deviceStatus, size: 1, 3)
        accepted = accept(offered)
        setCommon(c.driverFeatureSelect, size: 4, 0)
        setCommon(c.driverFeature, size: 4, accepted & 0xFFFF_FFFF)
        setCommon(c.driverFeatureSelect, size: 4, 1)
        setCommon(c.driverFeature, size: 4, accepted >> 32)
        setCommon(c.deviceStatus, size: 1, 3 | 8)
        guard status & 8 != 0 else { return false }
        // MSI-X on, three vectors programmed, unmasked.
        let cap = transport.msix.capabilityOffset
        transport.configWrite(offset: cap + 2, size: 2, value: 0xC000)
        for (n, data) in [NetRig.configVector, NetRig.rxVector, NetRig.txVector].enumerated() {
            let e = VirtioPciDevice.msixTableOffset + UInt64(16 * n)
            transport.barWrite(0, offset: e, size: 4, value: 0xFEE0_0000)
            transport.barWrite(0, offset: e + 4, size: 4, value: 0)
            transport.barWrite(0, offset: e + 8, size: 4, value: UInt64(data))
            transport.barWrite(0, offset: e + 12, size: 4, value: 0)
        }
        transport.configWrite(offset: cap + 2, size: 2, value: 0x8000)
        setCommon(c.configMsixVector, size: 2, 0)
        for (q, (d, a, u)) in [(NetRig.rxDesc, NetRig.rxAvail, NetRig.rxUsed), (NetRig.txDesc, NetRig.txAvail, NetRig.txUsed)].enumerated() {
            setCommon(c.queueSelect, size: 2, UInt64(q))
            setCommon(c.queueSize, size: 2, UInt64(queueSize))
            setCommon(c.queueMsixVector, size: 2, UInt64(q + 1))
            for (off, addr) in [(c.queueDesc, d), (c.queueDriver, a), (c.queueDevice, u)] {
                setCommon(off, size: 4, addr & 0xFFFF_FFFF)
                setCommon(off + 4, size: 4, addr >> 32)
            }
            setCommon(c.queueEnable, size: 2, 1)
        }
        rx = VirtioDriverRing(memory: memory, size: queueSize, desc: NetRig.rxDesc, avail: NetRig.rxAvail, used: NetRig.rxUsed)
        tx = VirtioDriverRing(memory: memory, size: queueSize, desc: NetRig.txDesc, avail: NetRig.txAvail, used: NetRig.txUsed)
        setCommon(c.deviceStatus, size: 1, 15)
        return status == 15
    }

    func kick(_ queue: Int) {
        transport.barWrite(0, offset: VirtioPciDevice.notifyOffset + UInt64(queue) * 4, size: 2, value: UInt64(queue))
    }

    func interrupts(_ data: UInt32) -> Int { interrupts.msis.filter { $0.data == data }.count }

    // MARK: Receive side

    /// Posts `count` receive buffers of `size` (at most 4096) bytes each (one descriptor each, as Linux's
    /// mergeable buffers) starting at descriptor `firstHead`; returns their guest addresses.
    @discardableResult
    func postReceiveBuffers(_ count: Int, size: UInt32, firstHead: UInt16 = 0, kick: Bool = true) -> [UInt64] {
        var addresses: [UInt64] = []
        for i in 0..<count {
            let head = (firstHead &+ UInt16(i)) % rx.size
            // One page per descriptor index: buffers of at most 4 KiB never overlap.
            let addr = NetRig.rxBuffers + UInt64(head) * 0x1000
            rx.setDescriptor(head, address: addr, length: size, flags: 2)
            rx.publish(head)
            addresses.append(addr)
        }
        if kick { self.kick(VirtioNet.receiveQueue) }
        return addresses
    }

    /// The frames the guest received since used index `from`, reassembled from merged buffers by
    /// num_buffers as Linux does: (header, Ethernet frame).
    func received(from: UInt16 = 0) -> [(header: [UInt8], frame: [UInt8])] {
        var out: [(header: [UInt8], frame: [UInt8])] = []
        var i = from
        while i != rx.usedIdx {
            let first = rx.usedElement(i)
            let firstAddr: UInt64 = try! memory.read(at: rx.desc + 16 * UInt64(first.id))
            var bytes = try! memory.readBytes(at: firstAddr, count: Int(first.length))
            let buffers = Int(UInt16(bytes[10]) | UInt16(bytes[11]) << 8)
            i &+= 1
            for _ in 1..<max(buffers, 1) where i != rx.usedIdx {
                let e = rx.usedElement(i)
                let a: UInt64 = try! memory.read(at: rx.desc + 16 * UInt64(e.id))
                bytes += try! memory.readBytes(at: a, count: Int(e.length))
                i &+= 1
            }
            out.append((Array(bytes[0..<12]), Array(bytes[12...])))
        }
        return out
    }

    // MARK: Transmit side

    /// Puts `bytes` (header + frame) in the transmit queue split into descriptors of the given
    /// lengths (the rest in a last one), publishes and kicks; returns the head.
    @discardableResult
    func transmit(_ bytes: [UInt8], split: [Int] = [], head: UInt16 = 0, kick: Bool = true) -> UInt16 {
        var pieces: [[UInt8]] = []
        var rest = bytes[...]
        for n in split where n <= rest.count { pieces.append(Array(rest.prefix(n))); rest = rest.dropFirst(n) }
        pieces.append(Array(rest))
        // Room for a 64 KiB frame and its gaps per head; heads 0-63.
        var addr = NetRig.txBuffers + UInt64(head % 64) * 0x11000
        for (k, p) in pieces.enumerated() {
            try! memory.write(bytes: p, at: addr)
            let i = (head &+ UInt16(k)) % tx.size
            let last = k == pieces.count - 1
            tx.setDescriptor(i, address: addr, length: UInt32(p.count), flags: last ? 0 : 1, next: (i &+ 1) % tx.size)
            addr += UInt64(p.count) + 64
        }
        tx.publish(head)
        if kick { self.kick(VirtioNet.transmitQueue) }
        return head
    }
}

enum Frames {
    /// A virtio-net header.
    static func header(flags: UInt8 = 0, gso: UInt8 = 0, hdrLen: UInt16 = 0, gsoSize: UInt16 = 0,
                       csumStart: UInt16 = 0, csumOffset: UInt16 = 0) -> [UInt8] {
        func le(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }
        return [flags, gso] + le(hdrLen) + le(gsoSize) + le(csumStart) + le(csumOffset) + [0xEE, 0xEE]
    }

    /// An Ethernet frame of `length` bytes: destination, source, ethertype, then a counting pattern
    /// seeded by `seed` so frames differ.
    static func ethernet(length: Int, seed: UInt8 = 0) -> [UInt8] {
        var f: [UInt8] = [0x52, 0x54, 0, 0xAB, 0xCD, 0xEF, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00]
        for i in 0..<max(0, length - 14) { f.append(UInt8(truncatingIfNeeded: i &* 7 &+ Int(seed))) }
        return Array(f.prefix(length))
    }
}
