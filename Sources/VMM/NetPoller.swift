import CNet
import CPUBackend
import Glibc
import Synchronization

/// The one thread that watches the network for the vCPU: the TAPs whose device wants a frame, and
/// the kernel's link-change messages (an rtnetlink socket subscribed to RTMGRP_LINK). It only
/// calls `poll` and reads the eventfd and the netlink socket; frames are read and written by the
/// device on the vCPU thread, and everything the poller learns reaches the devices through the
/// callbacks, which post to the vCPU thread (`VMControl.post`).
final class NetPoller: @unchecked Sendable {
    struct Watch: Sendable {
        let tap: TapBackend
        /// A frame waits and the device asked for it.
        let readable: @Sendable () -> Void
        /// The interface's link went up (administratively up with carrier) or down.
        let link: @Sendable (Bool) -> Void
    }

    private let watches: [Watch]
    private let wakeFD: Int32
    private let monitorFD: Int32
    private let stopping = Atomic<Bool>(false)
    private var thread: pthread_t?
    /// The link each TAP had when last reported, by index in `watches`.
    private var links: [Bool?]

    /// Opens the eventfd and the link monitor; `start` runs the thread. Before seccomp: both are
    /// descriptors the filter cannot create later.
    init(watches: [Watch]) throws(NetError) {
        self.watches = watches
        links = [Bool?](repeating: nil, count: watches.count)
        wakeFD = eventfd(0, Int32(truncatingIfNeeded: EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw .failed(tap: watches.first?.tap.name ?? "", operation: "eventfd", errno: errno) }
        // Without a monitor the link simply stays as first read (a host that forbids netlink).
        monitorFD = cnet_link_monitor_open()
        let wake = wakeFD
        for w in watches {
            w.tap.wakePoller = { var one: UInt64 = 1; _ = write(wake, &one, 8) }
        }
    }

    deinit {
        stop()
        close(wakeFD)
        if monitorFD >= 0 { close(monitorFD) }
    }

    /// The link state of every TAP now, asked of the kernel (RTM_GETLINK) and answered on the
    /// monitor socket; nil where it did not answer within `timeoutMs`. Call before `start`.
    func initialLinks(timeoutMs: UInt32 = 1000) -> [Bool?] {
        guard monitorFD >= 0 else { return links }
        for w in watches { _ = cnet_link_request(monitorFD, w.tap.interfaceIndex) }
        let deadline = VirtualClock.hostMonotonicNs() + UInt64(timeoutMs) * 1_000_000
        while links.contains(where: { $0 == nil }) {
            let now = VirtualClock.hostMonotonicNs()
            guard now < deadline else { break }
            var p = pollfd(fd: monitorFD, events: Int16(truncatingIfNeeded: POLLIN), revents: 0)
            guard poll(&p, 1, Int32(truncatingIfNeeded: (deadline - now) / 1_000_000) + 1) > 0 else { break }
            readLinkMessages(report: false)
        }
        return links
    }

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var t = pthread_t()
        let rc = pthread_create(&t, nil, { ctx in
            let poller = Unmanaged<NetPoller>.fromOpaque(ctx!).takeRetainedValue()
            poller.loop()
            return nil
        }, context)
        if rc == 0 { thread = t } else { Unmanaged<NetPoller>.fromOpaque(context).release() }
    }

    /// Ends the thread and waits for it; no callback runs afterwards.
    func stop() {
        guard let t = thread else { return }
        thread = nil
        stopping.store(true, ordering: .sequentiallyConsistent)
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        if pthread_equal(t, pthread_self()) == 0 { pthread_join(t, nil) }
    }

    private func loop() {
        // TAPs whose descriptor failed (the interface was deleted): never polled again, or poll
        // would report the error at once, forever.
        var dead = [Bool](repeating: false, count: watches.count)
        var fds: [pollfd] = []
        var polled: [Int] = []
        while !stopping.load(ordering: .sequentiallyConsistent) {
            fds.removeAll(keepingCapacity: true)
            polled.removeAll(keepingCapacity: true)
            fds.append(pollfd(fd: wakeFD, events: Int16(truncatingIfNeeded: POLLIN), revents: 0))
            if monitorFD >= 0 { fds.append(pollfd(fd: monitorFD, events: Int16(truncatingIfNeeded: POLLIN), revents: 0)) }
            for (i, w) in watches.enumerated() where !dead[i] && w.tap.wantsReadable.load(ordering: .acquiring) {
                fds.append(pollfd(fd: w.tap.fd, events: Int16(truncatingIfNeeded: POLLIN), revents: 0))
                polled.append(i)
            }
            let n = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t(truncatingIfNeeded: $0.count), -1) }
            if n < 0 { if errno == EINTR { continue }; return }
            if fds[0].revents != 0 {
                var value: UInt64 = 0
                _ = read(wakeFD, &value, 8)
            }
            if monitorFD >= 0, fds[1].revents != 0 { readLinkMessages(report: true) }
            let first = monitorFD >= 0 ? 2 : 1
            for (k, i) in polled.enumerated() {
                let revents = Int32(fds[first + k].revents)
                if revents & Int32(POLLERR | POLLHUP | POLLNVAL) != 0 {
                    dead[i] = true
                    report(link: false, for: i)
                }
                // Level-triggered: the device's flag goes back down before it is told, and it sets
                // it again when it has taken everything.
                if revents & Int32(POLLIN | POLLERR | POLLHUP) != 0,
                   watches[i].tap.wantsReadable.exchange(false, ordering: .acquiringAndReleasing) {
                    watches[i].readable()
                }
            }
        }
    }

    private func report(link up: Bool, for i: Int) {
        guard links[i] != up else { return }
        links[i] = up
        watches[i].link(up)
    }

    /// Reads every queued rtnetlink message; RTM_NEWLINK/RTM_DELLINK for a watched interface sets
    /// its link: up when IFF_UP and IFF_LOWER_UP (administratively up, with carrier).
    private func readLinkMessages(report: Bool) {
        var buf = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buf.withUnsafeMutableBytes { read(monitorFD, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            for (index, up) in NetPoller.parseLinkMessages(buf[0..<n]) {
                for (i, w) in watches.enumerated() where w.tap.interfaceIndex == index {
                    if report { self.report(link: up, for: i) } else { links[i] = up }
                }
            }
        }
    }

    static let rtmNewLink: UInt16 = 16, rtmDelLink: UInt16 = 17
    static let iffUp: UInt32 = 0x1, iffLowerUp: UInt32 = 0x10000

    /// (interface index, link up) for each RTM_NEWLINK/RTM_DELLINK in a netlink datagram. Messages
    /// are nlmsghdr (len, type, flags, seq, pid) + ifinfomsg (family, type, index, flags, change),
    /// 4-byte aligned; anything truncated or malformed ends the walk.
    static func parseLinkMessages(_ bytes: ArraySlice<UInt8>) -> [(Int32, Bool)] {
        var out: [(Int32, Bool)] = []
        let b = Array(bytes)
        func u32(_ o: Int) -> UInt32 {
            UInt32(b[o]) | UInt32(b[o + 1]) << 8 | UInt32(b[o + 2]) << 16 | UInt32(b[o + 3]) << 24
        }
        var offset = 0
        while offset + 16 <= b.count {
            let length = Int(u32(offset))
            let type = UInt16(truncatingIfNeeded: u32(offset + 4))
            guard length >= 16, length <= b.count - offset else { break }
            if (type == rtmNewLink || type == rtmDelLink) && length >= 32 {
                let index = Int32(bitPattern: u32(offset + 20))
                let flags = u32(offset + 24)
                out.append((index, type == rtmNewLink && flags & iffUp != 0 && flags & iffLowerUp != 0))
            }
            offset += (length + 3) & ~3
        }
        return out
    }
}
