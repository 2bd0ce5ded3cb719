import CNet
import Devices
import Glibc
import Synchronization

/// Why a TAP device cannot be attached, with what to do about it.
public enum NetError: Error, Equatable, CustomStringConvertible {
    case badName(String)
    case noSuchInterface(String)
    case notATap(String)
    case permissionDenied(String)
    case busy(String)
    case givenTwice(String)
    case tunUnavailable(errno: Int32)
    case failed(tap: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .badName(let n):
            return "'\(n)' is not an interface name (1-15 characters, no '/' or spaces)"
        case .noSuchInterface(let n):
            return "TAP device '\(n)' does not exist (create it first: ip tuntap add dev \(n) mode tap)"
        case .notATap(let n):
            return "'\(n)' is not a single-queue TAP device (a TUN device, a multi-queue TAP or another kind of interface)"
        case .permissionDenied(let n):
            return "swhv may not open TAP device '\(n)': it belongs to another user or group "
                + "(ip tuntap add dev \(n) mode tap user USER), or swhv lacks CAP_NET_ADMIN"
        case .busy(let n):
            return "TAP device '\(n)' is in use by another process"
        case .givenTwice(let n):
            return "TAP device '\(n)' is given twice; each --net needs its own TAP"
        case .tunUnavailable(let e):
            return "cannot open /dev/net/tun: \(String(cString: strerror(e)))"
                + (e == ENOENT || e == ENODEV ? " (load the tun module: modprobe tun)" : "")
                + (e == EACCES ? " (swhv needs read-write access to it; distributions make it 0666)" : "")
        case .failed(let t, let op, let e):
            return "TAP device '\(t)': \(op) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// An existing TAP interface as a virtio-net backend: frames with the 12-byte virtio-net header
/// (IFF_VNET_HDR, TUNSETVNETHDRSZ), offloads passed through (TUNSETOFFLOAD), the descriptor
/// non-blocking. The device calls it on the vCPU thread: `transmit` is one `writev`, `peekFrame` one
/// `read` into a buffer that holds the frame until the guest has room for it. The `NetPoller`
/// thread only watches the descriptor while the device asked (`requestReadableNotification`) and
/// then posts `VirtioNet.backendReadable` to the vCPU thread; it never reads or writes frames.
public final class TapBackend: NetBackend, @unchecked Sendable {
    public let name: String
    /// The interface index, for link-change messages.
    public let interfaceIndex: Int32
    let fd: Int32
    public let transmitOffloads: NetOffloads
    public let receiveOffloads: NetOffloads
    /// The offloads last set with TUNSETOFFLOAD.
    public private(set) var currentReceiveOffloads: NetOffloads = []
    /// One frame: header, the largest frame, and one byte more to recognise a longer one.
    private let buffer = UnsafeMutableRawBufferPointer.allocate(
        byteCount: VirtioNet.headerSize + VirtioNet.maxFrameSize + 1, alignment: 64)
    /// The length of the frame in `buffer`, read but not yet taken by the device.
    private var held: Int?
    /// The last read error other than "no frame" (a TAP that went away), for diagnostics.
    public private(set) var lastReceiveError: Int32 = 0
    /// Set by the device when it wants a frame; the poller watches the descriptor while set and
    /// clears it when it posts.
    let wantsReadable = Atomic<Bool>(false)
    /// Wakes the poller so it starts watching (set by `NetPoller`).
    var wakePoller: (@Sendable () -> Void)?

    static let vnetHeaderFlags = Int16(truncatingIfNeeded: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)

    /// Attaches to the existing TAP `name`. Never creates one: a missing interface is an error.
    public init(name: String) throws(NetError) {
        guard !name.isEmpty, name.utf8.count < Int(IFNAMSIZ), !name.contains("/"),
              !name.contains(where: { $0 == " " || $0 == "\t" || $0 == "\n" }) else { throw .badName(name) }
        self.name = name
        let index = Int32(bitPattern: if_nametoindex(name))
        guard index != 0 else { throw .noSuchInterface(name) }
        interfaceIndex = index
        let fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw .tunUnavailable(errno: errno) }
        func fail(_ e: NetError) -> NetError { close(fd); return e }
        if cnet_tap_attach(fd, name, TapBackend.vnetHeaderFlags) != 0 {
            switch errno {
            case EPERM, EACCES: throw fail(.permissionDenied(name))
            case EBUSY: throw fail(.busy(name))
            case EINVAL: throw fail(.notATap(name))
            case let e: throw fail(.failed(tap: name, operation: "TUNSETIFF", errno: e))
            }
        }
        // TUNSETIFF creates an interface that does not exist: if one vanished and came back (or was
        // created just now by us), it is not the one the user named.
        guard Int32(bitPattern: if_nametoindex(name)) == index else { throw fail(.noSuchInterface(name)) }
        guard cnet_tap_set_vnet_header_size(fd, Int32(VirtioNet.headerSize)) == 0 else {
            throw fail(.failed(tap: name, operation: "TUNSETVNETHDRSZ", errno: errno))
        }
        self.fd = fd
        // What this host's tun driver takes in TUNSETOFFLOAD (it refuses unknown bits with EINVAL).
        // Frames the guest sends may use any of them: the TAP parses the header (kernel >= 4.14).
        var rx: NetOffloads = []
        for candidate in [NetOffloads.all, [.checksum, .tso4, .tso6, .tsoECN], [.checksum, .tso4, .tso6], [.checksum]] {
            if cnet_tap_set_offload(fd, candidate.rawValue) == 0 { rx = candidate; break }
        }
        receiveOffloads = rx
        transmitOffloads = .all
        // Nothing until the guest says what it accepts.
        _ = cnet_tap_set_offload(fd, 0)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    // MARK: NetBackend (vCPU thread)

    public func transmit(_ segments: UnsafeBufferPointer<iovec>) -> Int32 {
        while true {
            let n = writev(fd, segments.baseAddress, Int32(truncatingIfNeeded: segments.count))
            if n >= 0 { return 0 }
            if errno != EINTR { return errno }
        }
    }

    public func peekFrame() -> NetReceived? {
        if held == nil {
            let n = read(fd, buffer.baseAddress, buffer.count)
            guard n > 0 else {
                if n < 0, errno != EAGAIN, errno != EWOULDBLOCK, errno != EINTR { lastReceiveError = errno }
                return nil
            }
            held = n
        }
        guard let n = held else { return nil }
        // A frame that filled the buffer was longer than any the guest may get: the TAP cut it.
        if n >= buffer.count { return .oversized(length: n) }
        return .frame(UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
    }

    public func consumeFrame() { held = nil }

    public func setReceiveOffloads(_ offloads: NetOffloads) {
        let o = offloads.intersection(receiveOffloads)
        if cnet_tap_set_offload(fd, o.rawValue) == 0 { currentReceiveOffloads = o }
    }

    public func requestReadableNotification() {
        if !wantsReadable.exchange(true, ordering: .acquiringAndReleasing) { wakePoller?() }
    }
}
