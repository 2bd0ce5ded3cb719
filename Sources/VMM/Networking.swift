import CPUBackend
import Devices

/// A device reference the poller thread can carry to the vCPU thread: it only ever dereferences it
/// inside work posted with `VMControl.post`, which runs on the vCPU thread.
private final class DeviceBox: @unchecked Sendable {
    weak var device: VirtioNet?
    init(_ device: VirtioNet) { self.device = device }
}

extension Machine {
    /// One virtio-net PCI function per `--net`, each over its TAP, and the poller thread that tells
    /// them (through posted work) when a TAP has frames or changes its link. The thread starts
    /// here, before the seccomp filter, which would refuse to create it later.
    static func attachNetworks(_ nets: [NetConfig], platform: Platform, control: VMControl)
        throws(MachineError) -> ([VirtioNet], NetPoller?)
    {
        guard !nets.isEmpty else { return ([], nil) }
        for (i, n) in nets.enumerated() where nets[..<i].contains(where: { $0.tap == n.tap }) {
            throw .net(.givenTwice(n.tap))
        }
        var taps: [TapBackend] = []
        for n in nets {
            do { taps.append(try TapBackend(name: n.tap)) } catch { throw .net(error) }
        }
        var devices: [VirtioNet] = []
        var watches: [NetPoller.Watch] = []
        for (n, tap) in zip(nets, taps) {
            let device = VirtioNet(configuration: .init(mac: n.mac ?? NetConfig.defaultMAC(tap: n.tap),
                                                        offloads: n.offloads,
                                                        mergeableReceiveBuffers: n.mergeableReceiveBuffers),
                                   backend: tap)
            devices.append(device)
            let box = DeviceBox(device)
            watches.append(NetPoller.Watch(
                tap: tap,
                readable: { control.post { box.device?.backendReadable() } },
                link: { up in control.post { box.device?.setLinkUp(up) } }))
        }
        let poller: NetPoller
        do { poller = try NetPoller(watches: watches) } catch { throw .net(error) }
        // The guest sees the link as it is when it boots; changes arrive through the poller.
        for (device, up) in zip(devices, poller.initialLinks()) where up == false { device.setLinkUp(false) }
        for device in devices {
            do { try platform.addVirtio(device) } catch { throw .platform(error) }
        }
        poller.start()
        return (devices, poller)
    }
}
