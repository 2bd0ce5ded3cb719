import CPUBackend
import Devices
import SwhvTestSupport
import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// The host side of the `net` target: frames the input makes up, handed out one at a time and held
/// until consumed, as `TapBackend` does, and a record of what the guest sent.
final class FuzzNetBackend: NetBackend {
    var transmitOffloads: NetOffloads = .all
    var receiveOffloads: NetOffloads = .all
    /// Frames waiting "in the host": lengths (the content is a fixed pattern with a made-up header),
    /// or a length past the buffer for a frame the TAP would have cut.
    var incoming: [(header: [UInt8], length: Int)] = []
    var transmitError: Int32 = 0
    let capacity = VirtioNet.headerSize + VirtioNet.maxFrameSize + 1
    private let buffer: UnsafeMutableRawBufferPointer
    private var held: Int?
    private(set) var framesTaken = 0
    private(set) var sentFrames: [[UInt8]] = []
    private(set) var sentLengths: [Int] = []

    init() {
        buffer = .allocate(byteCount: capacity, alignment: 16)
        for i in 0..<capacity { buffer[i] = UInt8(truncatingIfNeeded: i &* 13) }
    }
    deinit { buffer.deallocate() }

    func reset() { incoming = []; held = nil; framesTaken = 0; sentFrames = []; sentLengths = []; transmitError = 0 }

    func transmit(_ segments: UnsafeBufferPointer<iovec>) -> Int32 {
        var total = 0
        var header: [UInt8] = []
        for s in segments {
            total += s.iov_len
            if header.count < VirtioNet.headerSize, let base = s.iov_base {
                let n = min(VirtioNet.headerSize - header.count, s.iov_len)
                header += UnsafeRawBufferPointer(start: base, count: n)
            }
        }
        sentLengths.append(total)
        sentFrames.append(header)
        return transmitError
    }

    func peekFrame() -> NetReceived? {
        if held == nil {
            guard !incoming.isEmpty else { return nil }
            let f = incoming.removeFirst()
            framesTaken += 1
            for (i, b) in f.header.prefix(VirtioNet.headerSize).enumerated() { buffer[i] = b }
            held = f.length
        }
        guard let n = held else { return nil }
        if n >= capacity { return .oversized(length: n) }
        return .frame(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
    }

    func consumeFrame() { held = nil }
    func setReceiveOffloads(_ offloads: NetOffloads) {}
    func requestReadableNotification() {}
}

/// A hostile virtio-net driver and a hostile host at once: the driver negotiates fuzzer-chosen
/// features, writes descriptors for both queues, ring entries, frame headers and raw bytes anywhere
/// in guest RAM and notifies; the host delivers frames of any length with any header, refuses
/// frames, and flips the link. The device must never touch memory outside guest RAM (ASan), trap
/// or loop; per call it may complete at most a ring's worth of chains, take at most its receive
/// budget of host frames and hold at most one; every frame it sends the host is inside the
/// Ethernet limits with a header using only what was negotiated.
public final class NetFuzzer {
    static let ramSize: UInt64 = 1 << 20
    static let rx = (desc: UInt64(0x0000), avail: UInt64(0x1000), used: UInt64(0x2000))
    static let tx = (desc: UInt64(0x4000), avail: UInt64(0x5000), used: UInt64(0x6000))
    static let buffers: UInt64 = 0x8000
    let memory: GuestMemory
    let backend = FuzzNetBackend()

    public init() {
        do { memory = try GuestMemory(size: NetFuzzer.ramSize) } catch { fuzzSetupFailure("guest RAM: \(error)") }
    }

    public func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var input = FuzzInput(data)
        try? memory.fill(0, at: 0, length: NetFuzzer.ramSize)
        backend.reset()
        let flags = input.u8()
        let policy: VirtioNet.OffloadPolicy = [.all, .checksum, .none, .all][Int(flags & 3)]
        let net = VirtioNet(configuration: .init(mac: [0x52, 0x54, 0, 1, 2, 3], offloads: policy,
                                                 mergeableReceiveBuffers: flags & 4 == 0),
                            backend: backend)
        let irq = FuzzInterrupts()
        let dev: VirtioPciDevice
        do { dev = try VirtioPciDevice(device: net, memory: memory, interrupts: irq, intx: IRQLine(controller: irq, gsi: 11)) }
        catch { checks.expect(false, "cannot create the device: \(error)"); return [:] }
        if flags & 0x40 != 0 { dev.configWrite(offset: dev.msix.capabilityOffset + 2, size: 2, value: 0x8000) }
        let sizes: [UInt16] = [256, 64, 8, 1, 2, 0, 3, 512]
        let queueSize = sizes[Int(flags >> 3) & 7]
        let featureMask = input.u32()
        handshake(dev, featureMask: featureMask, queueSize: queueSize)
        let n = max(UInt16(1), min(queueSize, 256))
        var availIdx: [UInt16] = [0, 0]
        var delivered = 0, sent = 0

        func rings(_ q: Int) -> (desc: UInt64, avail: UInt64, used: UInt64) { q == 0 ? NetFuzzer.rx : NetFuzzer.tx }
        while !input.isAtEnd {
            switch input.u8() % 10 {
            case 0:  // raw bytes anywhere in RAM
                let addr = UInt64(input.u16()) << 4
                try? memory.write(bytes: input.take(Int(input.u8())), at: addr)
            case 1:  // one descriptor in either queue's table
                let q = Int(input.u8() & 1)
                let i = UInt64(input.u8()) % UInt64(n)
                let base = rings(q).desc + 16 * i
                let addrSel = input.u8()
                let addr = addrSel & 0x80 != 0 ? input.u64() : NetFuzzer.buffers + UInt64(input.u16()) * 8
                try? memory.write(addr, at: base)
                // Lengths from tiny to far past guest RAM (a chain lying about its size).
                let lengths: [UInt32] = [UInt32(input.u16()), 12, 26, 1526, 4096, 65562, 0x10_0000, input.u32()]
                try? memory.write(lengths[Int(input.u8()) % lengths.count], at: base + 8)
                try? memory.write(input.u16() & 7, at: base + 12)
                try? memory.write(input.u16() % (n &* 2), at: base + 14)
            case 2:  // make a chain available
                let q = Int(input.u8() & 1)
                let head = input.u16() % (n &* 2)
                try? memory.write(head, at: rings(q).avail + 4 + 2 * UInt64(availIdx[q] % n))
                availIdx[q] &+= 1
                try? memory.write(availIdx[q], at: rings(q).avail + 2)
            case 3:  // notify a queue (or one that does not exist)
                let q = Int(input.u8() % 3)
                let before = dev.queues.map(\.nextUsed)
                let taken = backend.framesTaken
                dev.barWrite(0, offset: VirtioPciDevice.notifyOffset + UInt64(q) * 4, size: 2, value: UInt64(q))
                for (i, queue) in dev.queues.enumerated() {
                    let completed = queue.nextUsed &- before[i]
                    checks.expect(completed <= queue.size, "queue \(i): \(completed) chains completed with size \(queue.size)")
                    if i == 0 { delivered += Int(completed) }
                }
                checks.expect(backend.framesTaken - taken <= VirtioNet.receiveBudget + 1,
                              "\(backend.framesTaken - taken) host frames taken in one notification")
            case 4:  // a frame header where descriptors usually point
                let at = NetFuzzer.buffers + UInt64(input.u16()) * 8
                try? memory.write(bytes: Self.header(&input), at: at)
            case 5:  // the host has frames
                for _ in 0..<Int(input.u8() % 4) + 1 {
                    let lengths = [Int(input.u16()), 12, 25, 26, 60, 1526, 9012, 65562, 65563, 200_000]
                    backend.incoming.append((Self.header(&input), lengths[Int(input.u8()) % lengths.count]))
                }
                let before = dev.queues[0].nextUsed
                let taken = backend.framesTaken
                net.backendReadable()
                let completed = dev.queues[0].nextUsed &- before
                checks.expect(completed <= dev.queues[0].size, "receive completed \(completed) chains")
                checks.expect(backend.framesTaken - taken <= VirtioNet.receiveBudget + 1,
                              "\(backend.framesTaken - taken) host frames taken in one call")
                delivered += Int(completed)
            case 6:  // any common- or device-config register
                let region = input.u8() & 1 == 0 ? VirtioPciDevice.commonOffset : VirtioPciDevice.deviceConfigOffset
                let off = UInt64(input.u8() % 0x40)
                let size = input.accessSize()
                let v = input.u64()
                if input.u8() & 1 == 0 { dev.barWrite(0, offset: region + off, size: size, value: v) }
                else { _ = dev.barRead(0, offset: region + off, size: size) }
            case 7:  // the avail index and flags themselves
                let q = Int(input.u8() & 1)
                availIdx[q] = input.u16()
                try? memory.write(availIdx[q], at: rings(q).avail + 2)
                try? memory.write(input.u16(), at: rings(q).avail)
            case 8:  // the host: link, refusals
                net.setLinkUp(input.u8() & 1 == 0)
                backend.transmitError = input.u8() & 1 == 0 ? 0 : EIO
            default:  // reset and start over
                dev.barWrite(0, offset: VirtioPciDevice.commonOffset + VirtioPciCommonConfig.deviceStatus, size: 1, value: 0)
                handshake(dev, featureMask: input.u32(), queueSize: queueSize)
                availIdx = [0, 0]
            }
        }
        // What reached the host: Ethernet-sized frames with headers as negotiated.
        for (len, header) in zip(backend.sentLengths, backend.sentFrames) {
            checks.expect(len >= VirtioNet.headerSize + VirtioNet.minFrameSize && len <= VirtioNet.headerSize + VirtioNet.maxFrameSize,
                          "a \(len)-byte frame went to the host")
            checks.expect(header.count == VirtioNet.headerSize && header[0] & ~1 == 0, "header \(header) went to the host")
            sent += 1
        }
        return ["delivered": delivered, "sent": sent]
    }

    /// A virtio-net header: mostly plausible (flags, GSO type, sizes), sometimes any bytes.
    static func header(_ input: inout FuzzInput) -> [UInt8] {
        if input.u8() & 7 == 0 { return Array(input.take(12)) + [UInt8](repeating: 0, count: 12) }
        let flags: [UInt8] = [0, 1, 2, 3, 4]
        let gso: [UInt8] = [0, 1, 3, 4, 0x81, 5]
        var h = [flags[Int(input.u8()) % flags.count], gso[Int(input.u8()) % gso.count]]
        for _ in 0..<4 { let v = input.u16() % 2000; h += [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
        return h + [0, 0]
    }

    /// Linux's bring-up (`VirtioDriver`) for the receive queue, with fuzzer-chosen features, then
    /// the transmit queue.
    func handshake(_ dev: VirtioPciDevice, featureMask: UInt32, queueSize: UInt16) {
        let driver = VirtioDriver(
            read: { dev.barRead(0, offset: VirtioPciDevice.commonOffset + $0, size: $1) },
            write: { dev.barWrite(0, offset: VirtioPciDevice.commonOffset + $0, size: $1, value: $2) })
        let result = driver.bringUp(accept: { offered in
            // Usually a subset of the offer; a driver asking for the unoffered is refused at FEATURES_OK.
            (offered & (UInt64(featureMask) | VirtioFeature.version1 | VirtioFeature.eventIndex | VirtioFeature.indirectDescriptors))
                | (featureMask & 0x8000_0000 != 0 ? 1 << 22 : 0)
        }, queue: .init(desc: NetFuzzer.rx.desc, avail: NetFuzzer.rx.avail, used: NetFuzzer.rx.used,
                        size: queueSize, msixVector: 1), configVector: 0)
        guard result.featuresAccepted else { return }
        let c = VirtioPciCommonConfig.self
        func w(_ off: UInt64, _ size: Int, _ v: UInt64) { dev.barWrite(0, offset: VirtioPciDevice.commonOffset + off, size: size, value: v) }
        w(c.queueSelect, 2, 1)
        w(c.queueSize, 2, UInt64(queueSize))
        w(c.queueMsixVector, 2, 2)
        for (off, addr) in [(c.queueDesc, NetFuzzer.tx.desc), (c.queueDriver, NetFuzzer.tx.avail), (c.queueDevice, NetFuzzer.tx.used)] {
            w(off, 8, addr)
        }
        w(c.queueEnable, 2, 1)
    }
}
