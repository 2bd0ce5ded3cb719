/// What a device that acts on its own needs from its transport: network frames arriving from the
/// host, a link that goes down, a rate limiter that lets a held request through. Such a device gets
/// its transport through `VirtioDevice.attach(to:)` and keeps it weakly (the transport owns it).
/// All calls happen on the vCPU thread, like the transport's own.
public protocol VirtioTransport: AnyObject {
    /// The device's queues, in the order of `VirtioDevice.queueMaxSizes`.
    var queues: [VirtQueue] { get }
    /// The driver has set DRIVER_OK and the device does not need a reset: only then may a device
    /// use its queues without a notification.
    var isLive: Bool { get }
    /// Interrupts the driver for used buffers on queue `index`.
    func signalQueue(_ index: Int)
    /// Tells the driver the configuration space changed (the link status, say).
    func signalConfigChange()
    /// The device found a queue malformed outside a notification: DEVICE_NEEDS_RESET, as when
    /// `processQueue` throws.
    func deviceFailed(_ error: VirtQueueError)
}

extension VirtioPciDevice: VirtioTransport {
    public var isLive: Bool { status.contains(.driverOK) && !status.contains(.needsReset) }

    public func deviceFailed(_ error: VirtQueueError) {
        for q in queues { q.markBroken() }
        enterNeedsReset(error)
    }
}
