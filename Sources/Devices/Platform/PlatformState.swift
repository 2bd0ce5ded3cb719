import VMCore

/// The device-specific part of a virtio device's saved state, one case per device type: a new
/// virtio device adds its case here (and implements `captureDeviceState`/`restoreDeviceState`).
public enum VirtioDeviceState: Codable, Equatable, Sendable {
    /// Nothing beyond what the transport saves.
    case none
    case block(VirtioBlock.State)
    case net(VirtioNet.State)
}

/// Everything guest-visible in the platform's devices, as one versioned value (snapshots save it
/// next to guest RAM and the vCPU state). Restored into a platform built from the same
/// configuration: the same interrupt chip, the same disks in the same order.
public struct PlatformState: DeviceState {
    public static let currentVersion: UInt32 = 1
    public var version = PlatformState.currentVersion
    public var uart: Uart16550.State
    public var i8042: I8042.State
    public var rtc: CmosRtc.State
    /// Present when the platform models the interrupt controllers and the PIT (the interpreter);
    /// with KVM's irqchip those live in the kernel and are saved from there.
    public var pic: Pic8259Pair.State?
    public var pit: Pit8254.State?
    /// Present when the platform models the I/O APIC (the interpreter on an ACPI machine).
    public var ioapic: IOAPIC.State?
    /// Present on an ACPI machine.
    public var acpiPM: ACPIPowerManagement.State?
    public var pci: PciRoot.State
    /// The virtio-pci functions, in slot order.
    public var virtio: [VirtioPciDevice.State]
}

extension Platform {
    public func captureState() -> PlatformState {
        PlatformState(uart: uart.captureState(), i8042: i8042.captureState(), rtc: rtc.captureState(),
                      pic: emulatedInterrupts?.pic.captureState(), pit: pit?.captureState(),
                      ioapic: ioapic?.captureState(), acpiPM: acpiPM?.captureState(),
                      pci: pci.captureState(), virtio: virtio.map { $0.captureState() })
    }

    /// Restores every device. The state is checked device by device as it goes; a platform whose
    /// restore failed must not run (build a fresh one).
    public func restoreState(_ s: PlatformState) throws(DeviceStateError) {
        try s.checkVersion(device: "platform")
        guard (s.pic != nil) == (emulatedInterrupts != nil), (s.pit != nil) == (pit != nil) else {
            throw .mismatch(device: "platform", reason: "saved with the interrupt controllers "
                            + (s.pic != nil ? "emulated" : "in the hypervisor") + ", restored into the other kind")
        }
        guard (s.ioapic != nil) == (ioapic != nil), (s.acpiPM != nil) == (acpiPM != nil) else {
            throw .mismatch(device: "platform", reason: "saved " + (s.acpiPM != nil ? "with" : "without")
                            + " ACPI, restored into a machine " + (acpiPM != nil ? "with" : "without") + " it")
        }
        guard s.virtio.count == virtio.count else {
            throw .mismatch(device: "platform", reason: "\(s.virtio.count) virtio devices saved, \(virtio.count) present")
        }
        try uart.restoreState(s.uart)
        try i8042.restoreState(s.i8042)
        try rtc.restoreState(s.rtc)
        if let pic = emulatedInterrupts?.pic, let saved = s.pic { try pic.restoreState(saved) }
        if let pit, let saved = s.pit { try pit.restoreState(saved) }
        if let ioapic, let saved = s.ioapic { try ioapic.restoreState(saved) }
        if let acpiPM, let saved = s.acpiPM { try acpiPM.restoreState(saved) }
        try pci.restoreState(s.pci)
        for (device, saved) in zip(virtio, s.virtio) { try device.restoreState(saved) }
    }
}
