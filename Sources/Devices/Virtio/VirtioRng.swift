import VMCore
import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// virtio-rng (virtio 1.2, 5.4): the guest's entropy requests are filled from the host's
/// `getrandom`, so its CRNG is ready as soon as the driver loads instead of waiting for timer
/// jitter (swhv's interpreter offers no RDRAND).
///
/// Rate-limited by a token bucket on the VM clock: `bytesPerSecond` (1 MiB/s) with bursts of up to
/// `burstBytes` (64 KiB). A request is served with what the bucket holds (at least one byte, as the
/// spec requires); when it is empty the request stays in the ring and the device, a timed device,
/// serves it once `resumeBytes` have accumulated. Linux asks for 32-64 bytes at a time and stops
/// once its CRNG is seeded (then one reseed a minute), so the limit never slows a normal guest; it
/// caps what a guest reading /dev/hwrng in a loop costs the host (and the vCPU thread).
public final class VirtioRng: VirtioDevice, TimedDevice {
    public static let queueSize: UInt16 = 64
    public static let bytesPerSecond: UInt64 = 1 << 20
    public static let burstBytes: UInt64 = 64 << 10
    /// A held request waits for this much, so a guest draining the bucket wakes the device at most
    /// about a thousand times a second.
    public static let resumeBytes: UInt64 = 1 << 10

    /// Fills a buffer with random bytes; false if the host could not.
    public typealias EntropySource = (UnsafeMutableRawBufferPointer) -> Bool

    private let source: EntropySource
    /// The VM clock (ns); a parameter so tests can move time themselves.
    private let now: () -> UInt64
    private weak var transport: (any VirtioTransport)?
    /// Bytes the bucket holds, as of `refilledAt` (VM-clock ns).
    public private(set) var tokens: UInt64 = VirtioRng.burstBytes
    private var refilledAt: UInt64
    /// A request waits for tokens: `advance` serves it.
    public private(set) var isWaiting = false
    /// Bytes handed to the guest, for diagnostics and tests.
    public private(set) var bytesServed: UInt64 = 0

    public init(now: @escaping () -> UInt64, source: @escaping EntropySource = VirtioRng.hostRandom) {
        self.now = now
        self.source = source
        refilledAt = now()
    }

    public convenience init(clock: VirtualClock, source: @escaping EntropySource = VirtioRng.hostRandom) {
        self.init(now: { clock.nowNs }, source: source)
    }

    /// getrandom(2) (looked up at run time: Swift's Glibc module does not declare it), which never
    /// blocks once the host's pool is initialised, as it is long before a VM starts.
    public static func hostRandom(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        typealias GetRandom = @convention(c) (UnsafeMutableRawPointer?, Int, UInt32) -> Int
        guard let sym = dlsym(nil, "getrandom") else { return false }
        let getrandom = unsafeBitCast(sym, to: GetRandom.self)
        var done = 0
        while done < buffer.count {
            let n = getrandom(buffer.baseAddress.map { $0 + done }, buffer.count - done, 0)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            done += n
        }
        return true
    }

    // MARK: VirtioDevice

    public var deviceType: UInt16 { VirtioDeviceType.entropy }
    public var deviceFeatures: UInt64 { 0 }
    public var queueMaxSizes: [UInt16] { [VirtioRng.queueSize] }
    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}
    public func activate(features: UInt64) {}
    public func reset() { isWaiting = false }
    public func attach(to transport: any VirtioTransport) { self.transport = transport }

    public func processQueue(_ index: Int, queue: VirtQueue) throws(VirtQueueError) -> Bool {
        guard index == 0 else { return false }
        refill(now: now())
        var added = false
        repeat {
            while tokens > 0, let chain = try queue.popAvailable() {
                let n = fill(chain, memory: queue.memory)
                try queue.addUsed(headIndex: chain.headIndex, length: UInt32(truncatingIfNeeded: n))
                added = true
            }
            if tokens == 0 {
                // The rest waits in the ring for `advance`.
                isWaiting = try queue.pendingCount() > 0
                break
            }
        } while try queue.enableNotification()
        return added ? try queue.needsNotification() : false
    }

    /// Fills the chain's writable part with up to `tokens` random bytes; returns how many.
    private func fill(_ chain: DescriptorChain, memory: GuestMemory) -> UInt64 {
        let n = min(chain.writableLength, tokens)
        guard n > 0, let segments = chain.segments(writable: true, offset: 0, length: n) else { return 0 }
        var done: UInt64 = 0
        for s in segments {
            guard let p = memory.hostPointer(s.address, length: s.length),
                  source(UnsafeMutableRawBufferPointer(start: p, count: Int(truncatingIfNeeded: s.length))) else { break }
            memory.noteDMAWrite(s.address, length: s.length)
            done += s.length
        }
        tokens -= done
        bytesServed += done
        return done
    }

    private func refill(now: UInt64) {
        guard now > refilledAt else { return }
        // Saturates at the burst, so a long idle period cannot overflow the product.
        let elapsed = min(now - refilledAt, VirtioRng.burstBytes * 1_000_000_000 / VirtioRng.bytesPerSecond)
        let earned = elapsed * VirtioRng.bytesPerSecond / 1_000_000_000
        guard earned > 0 else { return }
        tokens = min(VirtioRng.burstBytes, tokens + earned)
        // Keep the remainder of a partial byte for next time.
        refilledAt = tokens == VirtioRng.burstBytes ? now : refilledAt + earned * 1_000_000_000 / VirtioRng.bytesPerSecond
    }

    // MARK: TimedDevice

    /// When a request is waiting: serves it once `resumeBytes` have accumulated.
    public func advance(to now: UInt64) -> UInt64? {
        guard isWaiting else { return nil }
        refill(now: now)
        if tokens >= min(VirtioRng.resumeBytes, VirtioRng.burstBytes) {
            isWaiting = false
            if let transport, transport.isLive {
                let queue = transport.queues[0]
                do {
                    if try processQueue(0, queue: queue) { transport.signalQueue(0) }
                } catch {
                    transport.signalQueue(0)
                    transport.deviceFailed(error)
                }
            }
            if !isWaiting { return nil }
        }
        let missing = VirtioRng.resumeBytes - min(tokens, VirtioRng.resumeBytes)
        return refilledAt + (missing * 1_000_000_000 + VirtioRng.bytesPerSecond - 1) / VirtioRng.bytesPerSecond
    }
}

// MARK: State

extension VirtioRng {
    /// Nothing beyond the transport's: a request waiting for tokens is still in the ring (saved with
    /// guest RAM), and a restored device looks at the ring on its first tick.
    public func restoreDeviceState(_ state: VirtioDeviceState) throws(DeviceStateError) {
        guard state == .none else { throw .mismatch(device: "virtio-rng", reason: "saved from another device type") }
        isWaiting = true
    }
}
