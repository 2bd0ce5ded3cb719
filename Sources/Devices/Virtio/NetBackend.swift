#if canImport(Glibc)
import Glibc
#endif

/// Checksum and segmentation offloads in the TAP's terms (the TUN_F_* bits of <linux/if_tun.h>),
/// so a TAP backend passes them through unchanged.
public struct NetOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Frames may carry a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM) for the other side to finish.
    public static let checksum = NetOffloads(rawValue: 0x01)
    /// TCP segmentation offload over IPv4 and IPv6, with ECN, and UDP fragmentation offload.
    public static let tso4 = NetOffloads(rawValue: 0x02)
    public static let tso6 = NetOffloads(rawValue: 0x04)
    public static let tsoECN = NetOffloads(rawValue: 0x08)
    public static let ufo = NetOffloads(rawValue: 0x10)
    public static let all: NetOffloads = [.checksum, .tso4, .tso6, .tsoECN, .ufo]
}

/// A frame the backend received and holds until the device takes it.
public enum NetReceived {
    /// The 12-byte virtio-net header (struct virtio_net_hdr_mrg_rxbuf; a TAP fills its first 10
    /// bytes) and the Ethernet frame. The device may rewrite the header in place.
    case frame(UnsafeMutableRawBufferPointer)
    /// A frame longer than the backend's buffer (`length` bytes with the header, as the host
    /// reported it), already cut: the device drops it.
    case oversized(length: Int)
}

/// The host side of a virtio-net device: a TAP (`TapBackend` in VMM) or a fake in tests. Every call
/// comes from the vCPU thread and none may block: the device must never stall the guest on the host.
public protocol NetBackend: AnyObject {
    /// Offloads the host accepts in frames the guest sends: partial checksums, TSO/UFO frames.
    var transmitOffloads: NetOffloads { get }
    /// Offloads the host can use in the frames it delivers, once `setReceiveOffloads` allows them.
    var receiveOffloads: NetOffloads { get }
    /// Sends one frame gathered from `segments`: the 12-byte header, then the Ethernet frame.
    /// Returns 0, or the errno with which the host refused it (the frame is then dropped).
    func transmit(_ segments: UnsafeBufferPointer<iovec>) -> Int32
    /// The oldest received frame, without taking it, or nil when none waits. The same frame comes
    /// back until `consumeFrame`: a frame the guest has no room for yet stays here (backpressure:
    /// the backend reads nothing more from the host meanwhile).
    func peekFrame() -> NetReceived?
    /// Drops the frame `peekFrame` returned (delivered, or refused).
    func consumeFrame()
    /// What the guest accepts in received frames; the host sends nothing else (TUNSETOFFLOAD).
    func setReceiveOffloads(_ offloads: NetOffloads)
    /// `peekFrame` returned nil, or the device stopped early, and it wants frames: the backend
    /// arranges one call of the device's `backendReadable()` on the vCPU thread once a frame waits.
    func requestReadableNotification()
}
