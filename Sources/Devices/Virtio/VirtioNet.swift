import VMCore
import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// virtio-net (virtio 1.2, 5.1): one receive and one transmit queue over a `NetBackend` (a TAP).
///
/// Frames carry the 12-byte virtio-net header both ways and the TAP speaks the same header
/// (IFF_VNET_HDR), so checksum and segmentation offloads pass straight through: a guest sends 64 KiB
/// TCP segments with their checksum left open and receives the host's the same way. Offered: MAC,
/// STATUS (the TAP's link), MRG_RXBUF, CSUM/GUEST_CSUM and TSO4/TSO6/ECN/UFO both ways where the host
/// supports them.
///
/// Everything from the guest and from the host is checked: a frame is at least an Ethernet header
/// and at most `maxFrameSize`, its header uses only negotiated offloads and its checksum offsets lie
/// inside it; anything else is dropped and counted. Receive never loses a frame for lack of guest
/// buffers: the frame waits in the backend, which reads nothing more from the host until the
/// driver adds buffers (backpressure). Transmit completes synchronously.
public final class VirtioNet: VirtioDevice {
    public static let queueSize: UInt16 = 256
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    /// struct virtio_net_hdr_mrg_rxbuf (VERSION_1 always has num_buffers).
    public static let headerSize = 12
    /// The largest Ethernet frame either way: 64 KiB of TSO payload with its headers (the spec's
    /// 65562-byte receive buffer minus the header).
    public static let maxFrameSize = 65550
    /// An Ethernet header: the least a TAP takes.
    public static let minFrameSize = 14
    /// Frames one call moves from the backend before the guest runs again, so a host (or another
    /// VM on the bridge) flooding frames the device drops cannot hold the vCPU.
    public static let receiveBudget = 256

    /// Feature bits (5.1.3).
    public enum Feature {
        public static let csum: UInt64 = 1 << 0
        public static let guestCsum: UInt64 = 1 << 1
        public static let mac: UInt64 = 1 << 5
        public static let guestTSO4: UInt64 = 1 << 7
        public static let guestTSO6: UInt64 = 1 << 8
        public static let guestECN: UInt64 = 1 << 9
        public static let guestUFO: UInt64 = 1 << 10
        public static let hostTSO4: UInt64 = 1 << 11
        public static let hostTSO6: UInt64 = 1 << 12
        public static let hostECN: UInt64 = 1 << 13
        public static let hostUFO: UInt64 = 1 << 14
        public static let mrgRxbuf: UInt64 = 1 << 15
        public static let status: UInt64 = 1 << 16
    }

    /// struct virtio_net_hdr fields (5.1.6).
    public enum Header {
        public static let needsCsum: UInt8 = 1
        public static let dataValid: UInt8 = 2
        public static let gsoNone: UInt8 = 0
        public static let gsoTCPv4: UInt8 = 1
        public static let gsoUDP: UInt8 = 3
        public static let gsoTCPv6: UInt8 = 4
        public static let gsoECN: UInt8 = 0x80
    }

    /// VIRTIO_NET_S_LINK_UP.
    public static let statusLinkUp: UInt16 = 1

    /// Which offloads the device offers (the host's support permitting): `--net ...,offload=`.
    public enum OffloadPolicy: String, Sendable, CaseIterable {
        /// Checksums and segmentation both ways.
        case all
        /// Checksums only: every frame at most the MTU.
        case checksum = "csum"
        /// Neither: the guest computes every checksum and segments everything itself.
        case none
    }

    public struct Configuration: Sendable {
        public var mac: [UInt8]
        public var offloads: OffloadPolicy = .all
        /// Offer VIRTIO_NET_F_MRG_RXBUF (`--net ...,mrg_rxbuf=off` turns it off).
        public var mergeableReceiveBuffers = true
        public init(mac: [UInt8], offloads: OffloadPolicy = .all, mergeableReceiveBuffers: Bool = true) {
            self.mac = mac; self.offloads = offloads; self.mergeableReceiveBuffers = mergeableReceiveBuffers
        }
    }

    /// Counters for diagnostics and tests.
    public struct Statistics: Equatable, Sendable {
        public var receivedFrames = 0, receivedBytes = 0
        public var transmittedFrames = 0, transmittedBytes = 0
        /// Host frames dropped: longer than `maxFrameSize` or than the guest's single buffer, shorter
        /// than an Ethernet header, or with offloads the guest did not negotiate.
        public var receiveDropped = 0
        /// Guest frames dropped: malformed (length, header) or refused by the host.
        public var transmitDropped = 0
        /// The last errno the host refused a frame with (0: none).
        public var lastTransmitError: Int32 = 0
        public init() {}
    }

    public let mac: [UInt8]
    public let backend: any NetBackend
    public let deviceFeatures: UInt64
    public private(set) var negotiatedFeatures: UInt64 = 0
    /// Between DRIVER_OK and reset.
    public private(set) var isActive = false
    /// What the status field says (VIRTIO_NET_S_LINK_UP): the host's link, as last reported.
    public private(set) var linkUp: Bool
    public private(set) var statistics = Statistics()
    private weak var transport: (any VirtioTransport)?

    // Scratch space reused for every frame: no allocation per frame on the hot paths.
    private static let maxTransmitSegments = 2 * Int(queueSize) + 1
    private let iov = UnsafeMutablePointer<iovec>.allocate(capacity: VirtioNet.maxTransmitSegments)
    private let transmitHeader = UnsafeMutableRawPointer.allocate(byteCount: VirtioNet.headerSize, alignment: 8)
    private var receiveChains: [DescriptorChain] = []
    private var receiveUsed: [(headIndex: UInt16, length: UInt32)] = []

    public init(configuration: Configuration, backend: any NetBackend, linkUp: Bool = true) {
        // Callers parse the MAC (`parse(mac:)`); six bytes whatever they pass.
        mac = Array((configuration.mac + [UInt8](repeating: 0, count: 6)).prefix(6))
        self.backend = backend
        self.linkUp = linkUp
        var tx: NetOffloads = [], rx: NetOffloads = []
        switch configuration.offloads {
        case .all: (tx, rx) = (backend.transmitOffloads, backend.receiveOffloads)
        case .checksum: (tx, rx) = (backend.transmitOffloads.intersection(.checksum), backend.receiveOffloads.intersection(.checksum))
        case .none: break
        }
        deviceFeatures = Feature.mac | Feature.status
            | (configuration.mergeableReceiveBuffers ? Feature.mrgRxbuf : 0)
            | VirtioNet.features(transmit: tx, receive: rx)
        receiveChains.reserveCapacity(Int(VirtioNet.queueSize))
        receiveUsed.reserveCapacity(Int(VirtioNet.queueSize))
    }

    deinit {
        iov.deallocate()
        transmitHeader.deallocate()
    }

    /// The offload feature bits for what the host takes (transmit) and gives (receive). Segmentation
    /// needs the checksum offload in the same direction (5.1.3.1).
    static func features(transmit tx: NetOffloads, receive rx: NetOffloads) -> UInt64 {
        var f: UInt64 = 0
        if tx.contains(.checksum) {
            f |= Feature.csum
            if tx.contains(.tso4) { f |= Feature.hostTSO4 }
            if tx.contains(.tso6) { f |= Feature.hostTSO6 }
            if tx.contains(.tsoECN) && !tx.isDisjoint(with: [.tso4, .tso6]) { f |= Feature.hostECN }
            if tx.contains(.ufo) { f |= Feature.hostUFO }
        }
        if rx.contains(.checksum) {
            f |= Feature.guestCsum
            if rx.contains(.tso4) { f |= Feature.guestTSO4 }
            if rx.contains(.tso6) { f |= Feature.guestTSO6 }
            if rx.contains(.tsoECN) && !rx.isDisjoint(with: [.tso4, .tso6]) { f |= Feature.guestECN }
            if rx.contains(.ufo) { f |= Feature.guestUFO }
        }
        return f
    }

    private func negotiated(_ f: UInt64) -> Bool { negotiatedFeatures & f == f }

    /// What the guest accepts in received frames, in TAP terms (a subset of what was offered).
    var receiveOffloadsAccepted: NetOffloads {
        guard negotiated(Feature.guestCsum) else { return [] }
        var o: NetOffloads = .checksum
        if negotiated(Feature.guestTSO4) { o.insert(.tso4) }
        if negotiated(Feature.guestTSO6) { o.insert(.tso6) }
        if negotiated(Feature.guestECN) && !o.isDisjoint(with: [.tso4, .tso6]) { o.insert(.tsoECN) }
        if negotiated(Feature.guestUFO) { o.insert(.ufo) }
        return o
    }

    // MARK: VirtioDevice

    public var deviceType: UInt16 { VirtioDeviceType.network }
    public var queueMaxSizes: [UInt16] { [VirtioNet.queueSize, VirtioNet.queueSize] }

    public func attach(to transport: any VirtioTransport) { self.transport = transport }

    /// struct virtio_net_config: mac[6], status, max_virtqueue_pairs (5.1.4). The rest reads 0.
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, size >= 1, size <= 8 else { return 0 }
        var v: UInt64 = 0
        for i in 0..<size {
            let byte: UInt8
            switch offset + i {
            case 0..<6: byte = mac[offset + i]
            case 6: byte = linkUp ? UInt8(VirtioNet.statusLinkUp) : 0
            case 8: byte = 1    // max_virtqueue_pairs
            default: byte = 0
            }
            v |= UInt64(byte) << (8 * UInt64(truncatingIfNeeded: i))
        }
        return v
    }

    /// Nothing is writable: the MAC changes only through the control queue, which is not offered.
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}

    public func activate(features: UInt64) {
        negotiatedFeatures = features
        isActive = true
        backend.setReceiveOffloads(receiveOffloadsAccepted)
    }

    public func reset() {
        negotiatedFeatures = 0
        isActive = false
    }

    public func processQueue(_ index: Int, queue: VirtQueue) throws(VirtQueueError) -> Bool {
        switch index {
        case VirtioNet.receiveQueue:
            // The driver added receive buffers: deliver what waits.
            return try receive(queue) ? try queue.needsNotification() : false
        case VirtioNet.transmitQueue:
            let notify = try transmit(queue)
            // The host often answers at once (a TCP ACK is on the TAP by the time `writev` returns):
            // take it now instead of after a round through the poller thread.
            backendReadable()
            return notify
        default:
            return false
        }
    }

    // MARK: Host events (vCPU thread, posted by the backend's owner)

    /// The backend has a frame (after `requestReadableNotification`).
    public func backendReadable() {
        guard isActive, let transport, transport.isLive else { return }
        let queue = transport.queues[VirtioNet.receiveQueue]
        do {
            if try receive(queue), try queue.needsNotification() {
                transport.signalQueue(VirtioNet.receiveQueue)
            }
        } catch {
            transport.signalQueue(VirtioNet.receiveQueue)
            transport.deviceFailed(error)
        }
    }

    /// The host's link went up or down: the status field follows, with a configuration interrupt
    /// for a driver that negotiated STATUS.
    public func setLinkUp(_ up: Bool) {
        guard up != linkUp else { return }
        linkUp = up
        if isActive, negotiated(Feature.status), let transport, transport.isLive { transport.signalConfigChange() }
    }

    // MARK: Transmit

    private func transmit(_ queue: VirtQueue) throws(VirtQueueError) -> Bool {
        var added = false
        repeat {
            while let chain = try queue.popAvailable() {
                send(chain, memory: queue.memory)
                // Nothing is written into a transmit buffer.
                try queue.addUsed(headIndex: chain.headIndex, length: 0)
                added = true
            }
        } while try queue.enableNotification()
        return added ? try queue.needsNotification() : false
    }

    private func dropTransmit() { statistics.transmitDropped += 1 }

    /// Sends one chain's readable part (header, frame) to the backend, or drops it. The header goes
    /// from a host copy that was checked, so the guest cannot change it between check and send.
    private func send(_ chain: DescriptorChain, memory: GuestMemory) {
        let headerSize = UInt64(VirtioNet.headerSize)
        let total = chain.readableLength
        guard total >= headerSize + UInt64(VirtioNet.minFrameSize),
              total - headerSize <= UInt64(VirtioNet.maxFrameSize),
              let headerSegments = chain.segments(writable: false, offset: 0, length: headerSize),
              let frameSegments = chain.segments(writable: false, offset: headerSize, length: total - headerSize)
        else { return dropTransmit() }
        var copied = 0
        for s in headerSegments {
            guard let p = memory.hostPointer(s.address, length: s.length) else { return dropTransmit() }
            (transmitHeader + copied).copyMemory(from: p, byteCount: Int(truncatingIfNeeded: s.length))
            copied += Int(truncatingIfNeeded: s.length)
        }
        let frameLength = Int(truncatingIfNeeded: total - headerSize)  // <= maxFrameSize, checked above
        guard transmitHeaderIsValid(frameLength: frameLength) else { return dropTransmit() }
        iov[0] = iovec(iov_base: transmitHeader, iov_len: VirtioNet.headerSize)
        var count = 1
        for s in frameSegments {
            guard count < VirtioNet.maxTransmitSegments,
                  let p = memory.hostPointer(s.address, length: s.length) else { return dropTransmit() }
            iov[count] = iovec(iov_base: p, iov_len: Int(truncatingIfNeeded: s.length))
            count += 1
        }
        let error = backend.transmit(UnsafeBufferPointer(start: iov, count: count))
        if error != 0 {
            statistics.lastTransmitError = error
            return dropTransmit()
        }
        statistics.transmittedFrames += 1
        statistics.transmittedBytes += frameLength
    }

    /// A guest's header may ask only for what was negotiated: a partial checksum with CSUM (inside
    /// the frame), segmentation of a kind the host offered (HOST_TSO4/TSO6/ECN/UFO) with a size.
    private func transmitHeaderIsValid(frameLength: Int) -> Bool {
        let h = UnsafeRawPointer(transmitHeader)
        let flags = h.load(as: UInt8.self)
        let gso = h.load(fromByteOffset: 1, as: UInt8.self)
        let gsoSize = UInt16(littleEndian: h.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        let csumStart = Int(UInt16(littleEndian: h.loadUnaligned(fromByteOffset: 6, as: UInt16.self)))
        let csumOffset = Int(UInt16(littleEndian: h.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        if flags & ~Header.needsCsum != 0 { return false }
        if flags & Header.needsCsum != 0 {
            guard negotiated(Feature.csum), csumStart + csumOffset + 2 <= frameLength else { return false }
        }
        let kind = gso & ~Header.gsoECN
        if gso & Header.gsoECN != 0 && !negotiated(Feature.hostECN) { return false }
        switch kind {
        case Header.gsoNone: return gso == Header.gsoNone
        case Header.gsoTCPv4: guard negotiated(Feature.hostTSO4) else { return false }
        case Header.gsoTCPv6: guard negotiated(Feature.hostTSO6) else { return false }
        case Header.gsoUDP: guard negotiated(Feature.hostUFO) else { return false }
        default: return false
        }
        // Segmentation needs a segment size and a checksum to fill in per segment.
        return gsoSize > 0 && flags & Header.needsCsum != 0
    }

    // MARK: Receive

    private enum Delivery { case delivered, dropped, noBuffers }

    /// Moves waiting frames from the backend into the receive queue until the backend is empty, the
    /// guest is out of buffers (the frame then waits in the backend) or the budget is spent.
    /// Returns whether used buffers were added.
    private func receive(_ queue: VirtQueue) throws(VirtQueueError) -> Bool {
        guard isActive else { return false }
        var added = false
        for _ in 0..<VirtioNet.receiveBudget {
            guard let received = backend.peekFrame() else {
                backend.requestReadableNotification()
                return added
            }
            guard case .frame(let frame) = received, receivedHeaderIsValid(frame) else {
                statistics.receiveDropped += 1
                backend.consumeFrame()
                continue
            }
            switch try deliver(frame, queue) {
            case .delivered:
                added = true
                statistics.receivedFrames += 1
                statistics.receivedBytes += frame.count - VirtioNet.headerSize
                backend.consumeFrame()
            case .dropped:
                statistics.receiveDropped += 1
                backend.consumeFrame()
            case .noBuffers:
                // Wait for the driver's next buffers; the frame stays in the backend meanwhile.
                if try !queue.enableNotificationForMore() { return added }
            }
        }
        // Budget spent: let the guest run; the backend calls again at once if frames still wait.
        backend.requestReadableNotification()
        return added
    }

    /// Checks a host frame against what the guest negotiated and fixes up its header for the guest:
    /// flags cleared without GUEST_CSUM (the TAP may mark frames DATA_VALID regardless), num_buffers
    /// filled in by `deliver`.
    private func receivedHeaderIsValid(_ frame: UnsafeMutableRawBufferPointer) -> Bool {
        guard frame.count >= VirtioNet.headerSize + VirtioNet.minFrameSize,
              frame.count - VirtioNet.headerSize <= VirtioNet.maxFrameSize,
              let h = frame.baseAddress else { return false }
        let frameLength = frame.count - VirtioNet.headerSize
        let flags = h.load(as: UInt8.self)
        let gso = h.load(fromByteOffset: 1, as: UInt8.self)
        let gsoSize = UInt16(littleEndian: h.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        let csumStart = Int(UInt16(littleEndian: h.loadUnaligned(fromByteOffset: 6, as: UInt16.self)))
        let csumOffset = Int(UInt16(littleEndian: h.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        if negotiated(Feature.guestCsum) {
            if flags & ~(Header.needsCsum | Header.dataValid) != 0 { return false }
            if flags & Header.needsCsum != 0 && csumStart + csumOffset + 2 > frameLength { return false }
        } else {
            // A partial checksum would reach a guest that cannot finish it.
            if flags & Header.needsCsum != 0 { return false }
            h.storeBytes(of: UInt8(0), as: UInt8.self)
        }
        if gso & Header.gsoECN != 0 && !negotiated(Feature.guestECN) { return false }
        switch gso & ~Header.gsoECN {
        case Header.gsoNone: return gso == Header.gsoNone
        case Header.gsoTCPv4: guard negotiated(Feature.guestTSO4) else { return false }
        case Header.gsoTCPv6: guard negotiated(Feature.guestTSO6) else { return false }
        case Header.gsoUDP: guard negotiated(Feature.guestUFO) else { return false }
        default: return false
        }
        return gsoSize > 0
    }

    /// Copies one frame into the guest's receive buffers: with MRG_RXBUF over as many chains as it
    /// needs (num_buffers says how many), otherwise into one chain that must hold it. Takes no chain
    /// unless the whole frame fits.
    private func deliver(_ frame: UnsafeMutableRawBufferPointer, _ queue: VirtQueue) throws(VirtQueueError) -> Delivery {
        let length = UInt64(truncatingIfNeeded: frame.count)
        receiveChains.removeAll(keepingCapacity: true)
        if negotiated(Feature.mrgRxbuf) {
            var room: UInt64 = 0
            while room < length {
                guard let chain = try queue.popAvailable() else {
                    queue.returnUnused(receiveChains.count)
                    return .noBuffers
                }
                // Every merged buffer must hold at least a header (5.1.6.3.1): a driver bug.
                guard chain.writableLength >= UInt64(VirtioNet.headerSize) else {
                    throw VirtQueueError.bufferTooSmall(length: chain.writableLength, minimum: UInt64(VirtioNet.headerSize))
                }
                receiveChains.append(chain)
                room += chain.writableLength
            }
        } else {
            guard let chain = try queue.popAvailable() else { return .noBuffers }
            guard chain.writableLength >= length else {
                // Larger than the guest's buffer (longer than negotiated): the frame goes, the buffer stays.
                queue.returnUnused(1)
                return .dropped
            }
            receiveChains.append(chain)
        }
        guard let base = frame.baseAddress else { queue.returnUnused(receiveChains.count); return .dropped }
        // num_buffers: how many chains this frame uses (always 1 without MRG_RXBUF).
        base.storeBytes(of: UInt16(truncatingIfNeeded: receiveChains.count).littleEndian, toByteOffset: 10, as: UInt16.self)
        let memory = queue.memory
        receiveUsed.removeAll(keepingCapacity: true)
        var offset: UInt64 = 0
        // The chains were checked against guest RAM when taken; should that ever fail here, they go
        // back unused (nothing is published before `addUsed`).
        let unusable = { () -> Delivery in queue.returnUnused(self.receiveChains.count); return .dropped }
        for chain in receiveChains {
            let n = min(chain.writableLength, length - offset)
            guard let segments = chain.segments(writable: true, offset: 0, length: n) else { return unusable() }
            var written: UInt64 = 0
            for s in segments {
                guard let p = memory.hostPointer(s.address, length: s.length) else { return unusable() }
                // Within the frame: the segments cover `n` <= length - offset bytes.
                p.copyMemory(from: base + Int(truncatingIfNeeded: offset + written), byteCount: Int(truncatingIfNeeded: s.length))
                memory.noteDMAWrite(s.address, length: s.length)
                written += s.length
            }
            receiveUsed.append((chain.headIndex, UInt32(truncatingIfNeeded: n)))
            offset += n
        }
        try queue.addUsed(receiveUsed)
        return .delivered
    }
}

// MARK: State

extension VirtioNet {
    /// The device's part of what the guest sees: its MAC, the negotiated features, whether it was
    /// running and the link status it last read. A frame waiting in the backend is host state, not
    /// saved (a network may lose a frame).
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var mac: [UInt8]
        public var negotiatedFeatures: UInt64
        public var isActive: Bool
        public var linkUp: Bool
    }

    public func captureDeviceState() -> VirtioDeviceState {
        .net(State(mac: mac, negotiatedFeatures: negotiatedFeatures, isActive: isActive, linkUp: linkUp))
    }

    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard case .net(let s) = state else {
            throw .mismatch(device: "virtio-net", reason: "saved from another device type")
        }
        try s.checkVersion(device: "virtio-net")
        guard s.mac == mac else {
            throw .mismatch(device: "virtio-net", reason: "saved with MAC \(VirtioNet.format(mac: s.mac)), this device has \(VirtioNet.format(mac: mac))")
        }
        // Bits 24-49 are the transport's (VERSION_1, EVENT_IDX, ...), checked by the transport.
        let transportBits: UInt64 = ((1 << 50) - 1) & ~((1 << 24) - 1)
        guard s.negotiatedFeatures & ~(deviceFeatures | transportBits) == 0 else {
            throw .mismatch(device: "virtio-net", reason: "features \(hex(s.negotiatedFeatures)) were not offered")
        }
        negotiatedFeatures = s.negotiatedFeatures
        isActive = s.isActive
        linkUp = s.linkUp
        if isActive { backend.setReceiveOffloads(receiveOffloadsAccepted) }
    }

    /// "52:54:00:12:34:56".
    public static func format(mac: [UInt8]) -> String {
        mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }

    /// Parses "52:54:00:12:34:56" (or with '-'); nil unless it is six hex bytes.
    public static func parse(mac text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).count == 6
            ? text.split(separator: ":", omittingEmptySubsequences: false)
            : text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for p in parts {
            guard p.count == 2, let b = UInt8(p, radix: 16) else { return nil }
            bytes.append(b)
        }
        return bytes
    }
}
