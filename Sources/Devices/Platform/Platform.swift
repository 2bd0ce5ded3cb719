import ACPI
import VMCore
import VMMemory

/// Who models the PC's interrupt controllers and its PIT.
public enum InterruptChip {
    /// The platform does: the 8259 pair and the 8254 PIT are devices on its port bus, GSIs route
    /// through `PlatformInterrupts`, and MSIs go wherever `setMSITarget` says (the interpreter's local
    /// APIC). The vCPU reads INTR from `Platform.externalInterrupts`.
    case emulated
    /// The hypervisor does, in the kernel (KVM's irqchip: PIC, I/O APIC, local APIC, PIT): every GSI
    /// and MSI goes to `controller`.
    case hypervisor(any InterruptController)
}

/// What a platform is built from: guest RAM, the VM clock, who models the interrupt controllers, and
/// where the guest's requests to the host go.
public struct PlatformConfig {
    public var memory: GuestMemory
    public var clock: VirtualClock
    public var interruptChip: InterruptChip
    /// Where COM1's output goes (the terminal).
    public var console: any SerialOutput
    /// The guest pulsed a reset line (i8042 command 0xFE, port 0xCF9). Called on the vCPU thread.
    public var onReset: () -> Void
    /// The guest entered ACPI S5 (soft off). Called on the vCPU thread.
    public var onPowerOff: () -> Void = {}
    /// vCPUs the ACPI tables describe (local APIC ids 0..<cpuCount).
    public var cpuCount = 1
    /// Describe the machine with ACPI tables (written into guest RAM at `PCLayout.Firmware.acpiTables`)
    /// and add what they name: the ACPI PM registers and, with an emulated chip, an I/O APIC.
    /// Off: a PC with no firmware tables, as before ACPI (the guest finds one CPU and the 8259s).
    public var acpi = false
    /// The guest wrote a boot milestone (port 0x440 or its MMIO twin). Called on the vCPU thread.
    public var onBootMilestone: (BootTimerEvent) -> Void
    /// The clock boot milestones are stamped with (the host's monotonic clock by default).
    public var bootTimerClock: () -> UInt64 = { VirtualClock.hostMonotonicNs() }

    public init(memory: GuestMemory, clock: VirtualClock, interruptChip: InterruptChip, console: any SerialOutput,
                onReset: @escaping () -> Void, onBootMilestone: @escaping (BootTimerEvent) -> Void = { _ in }) {
        self.memory = memory; self.clock = clock; self.interruptChip = interruptChip; self.console = console
        self.onReset = onReset; self.onBootMilestone = onBootMilestone
    }
}

/// The PC platform both backends run: the port and MMIO buses with every device on them, each
/// placed at its `PCLayout` range and wired to its GSI, the devices with timers, and interrupt
/// routing. A backend meets it in three places: `ports`/`mmio` (through the machine's `IOHandler`),
/// `timedDevices` (the backend advances them on the vCPU thread), and, when the platform models the
/// interrupt controllers, `externalInterrupts` plus `setMSITarget` (the interpreter's INTR and local
/// APIC). Only the vCPU thread touches it after it is built.
///
/// Devices: COM1 (16550), the i8042, the POST port, the CMOS RTC, swhv's boot-progress register,
/// the PCI host bridge with its MMIO window, one virtio-pci function per `addVirtio`, and with an
/// emulated chip the 8259 pair and the 8254 PIT (with port 0x61).
public final class Platform {
    public let ports = Bus(name: "port I/O")
    public let mmio = Bus(name: "MMIO")
    public let memory: GuestMemory
    public let clock: VirtualClock
    /// How devices raise GSIs and MSIs: the hypervisor's controller, or `PlatformInterrupts`.
    public let interrupts: any InterruptController
    /// The emulated interrupt routing (nil when the hypervisor models the interrupt controllers).
    public let emulatedInterrupts: PlatformInterrupts?
    /// The emulated PIT (nil when the hypervisor models it).
    public let pit: Pit8254?
    /// The emulated I/O APIC (nil when the hypervisor models it, or without ACPI).
    public var ioapic: IOAPIC? { emulatedInterrupts?.ioapic }
    /// The ACPI PM1a registers (nil without ACPI).
    public let acpiPM: ACPIPowerManagement?
    /// The ACPI tables written into guest RAM (nil without ACPI).
    public let acpiTables: ACPITables?
    public let uart: Uart16550
    public let i8042: I8042
    public let rtc: CmosRtc
    public let bootTimer: BootTimerPort
    public let pci: PciRoot
    /// The virtio-pci functions, in the order they were added (slots 1, 2, ...).
    public private(set) var virtio: [VirtioPciDevice] = []
    /// Devices whose timers the vCPU backend advances: the RTC, the PIT when emulated, and virtio
    /// devices with timers (virtio-rng's rate limiter). Hand it to the backend after the last
    /// `addVirtio`.
    public private(set) var timedDevices: [TimedDevice]

    public init(_ config: PlatformConfig) throws(PlatformError) {
        memory = config.memory
        let clock = config.clock
        self.clock = clock
        let interrupts: any InterruptController
        switch config.interruptChip {
        case .emulated:
            let routing = PlatformInterrupts(ioapic: config.acpi ? IOAPIC() : nil)
            emulatedInterrupts = routing
            interrupts = routing
            pit = Pit8254(clock: clock, irq: IRQLine(controller: routing, gsi: PCLayout.GSI.pit))
        case .hypervisor(let controller):
            emulatedInterrupts = nil
            interrupts = controller
            pit = nil
        }
        self.interrupts = interrupts
        func line(_ gsi: UInt32) -> IRQLine { IRQLine(controller: interrupts, gsi: gsi) }
        uart = Uart16550(irq: line(PCLayout.GSI.com1), output: config.console)
        i8042 = I8042(onReset: config.onReset, keyboardIRQ: line(PCLayout.GSI.keyboard))
        // KVM has no RTC in the kernel: this one serves both backends (Linux reads the wall clock
        // from it, and /dev/rtc0 alarms and update interrupts raise IRQ 8).
        rtc = CmosRtc(clock: clock, irq: line(PCLayout.GSI.rtc))
        let size = memory.size, hole = GuestMemory.mmioHoleStart
        rtc.setMemorySize(belowFourGiB: min(size, hole), aboveFourGiB: size > hole ? size - hole : 0)
        bootTimer = BootTimerPort(now: config.bootTimerClock, onSignal: config.onBootMilestone)
        pci = PciRoot()
        pci.onResetRequest = config.onReset
        timedDevices = [rtc] + (pit.map { [$0] } ?? [])
        acpiPM = config.acpi
            ? ACPIPowerManagement(sci: line(PCLayout.GSI.sci), s5SleepType: PCLayout.Firmware.s5SleepType,
                                  onPowerOff: config.onPowerOff)
            : nil
        acpiTables = config.acpi ? try Platform.writeACPITables(memory: memory, cpuCount: config.cpuCount) : nil
        do {
            try placeLegacyDevices()
            try placeACPIDevices()
            try ports.register(pci, name: "pci-config", at: PCLayout.Port.pciConfig)
            try mmio.register(pci.mmioWindow, name: "pci-mmio", at: pci.window)
        } catch {
            throw .bus(error)
        }
    }

    /// Puts each legacy device at its `PCLayout` range.
    private func placeLegacyDevices() throws(BusError) {
        typealias P = PCLayout.Port
        if let routing = emulatedInterrupts, let pit {
            try ports.register(routing.pic.ports(.master), name: "pic-master", at: P.picMaster)
            try ports.register(routing.pic.ports(.slave), name: "pic-slave", at: P.picSlave)
            try ports.register(routing.pic.ports(.elcr), name: "pic-elcr", at: P.elcr)
            try ports.register(pit, name: "pit", at: P.pit)
            try ports.register(pit.speakerPort, name: "pit-port61", at: P.systemControlB)
        }
        try ports.register(uart, name: "ttyS0", at: P.com1)
        try ports.register(i8042.dataPortDevice, name: "i8042-data", at: P.i8042Data)
        try ports.register(i8042.commandPortDevice, name: "i8042-command", at: P.i8042Command)
        try ports.register(PortSink(), name: "post-code", at: P.postCode)
        try ports.register(rtc, name: "cmos-rtc", at: P.rtc)
        try ports.register(bootTimer, name: "boot-timer", at: P.bootTimer)
        // The same register as MMIO, for guests whose kernel has no /dev/port (Debian's cloud kernel).
        try mmio.register(bootTimer, name: "boot-timer", at: PCLayout.MMIO.bootTimer)
    }

    /// The ACPI PM registers on the port bus and the I/O APIC on the MMIO bus, when present.
    private func placeACPIDevices() throws(BusError) {
        if let acpiPM {
            try ports.register(acpiPM.eventBlock, name: "acpi-pm1a-event", at: PCLayout.Port.acpiPM1aEvent)
            try ports.register(acpiPM.controlBlock, name: "acpi-pm1a-control", at: PCLayout.Port.acpiPM1aControl)
        }
        if let ioapic {
            try mmio.register(ioapic, name: "ioapic", at: PCLayout.MMIO.ioapic)
        }
    }

    /// What the ACPI tables say about this platform: its layout in `PCLayout` terms.
    public static func acpiDescription(cpuCount: Int) -> ACPIMachine {
        typealias G = PCLayout.GSI
        let window = PCLayout.MMIO.pciWindow
        return ACPIMachine(
            cpuCount: cpuCount,
            ioapic: .init(id: 0, address: UInt32(truncatingIfNeeded: PCLayout.MMIO.ioapic.base), gsiBase: 0),
            interruptOverrides: [
                .init(isaIRQ: UInt8(G.pit), gsi: PCLayout.GSI.ioapicPin(G.pit)!),
                .init(isaIRQ: UInt8(G.sci), gsi: G.sci, polarity: .activeHigh, trigger: .level),
            ],
            power: .init(pm1aEvent: UInt16(truncatingIfNeeded: PCLayout.Port.acpiPM1aEvent.base),
                         pm1aControl: UInt16(truncatingIfNeeded: PCLayout.Port.acpiPM1aControl.base),
                         sciInterrupt: UInt16(G.sci), resetPort: PCLayout.Firmware.resetPort,
                         resetValue: PCLayout.Firmware.resetValue, s5SleepType: PCLayout.Firmware.s5SleepType),
            pci: .init(configPort: UInt16(truncatingIfNeeded: PCLayout.Port.pciConfig.base),
                       mmioWindow: UInt32(truncatingIfNeeded: window.base)...UInt32(truncatingIfNeeded: window.last), intxGSI: G.pciIntx))
    }

    /// Builds the ACPI tables and copies them into guest RAM.
    static func writeACPITables(memory: GuestMemory, cpuCount: Int) throws(PlatformError) -> ACPITables {
        let area = PCLayout.Firmware.acpiTables
        let tables: ACPITables
        do { tables = try ACPITableBuilder.build(acpiDescription(cpuCount: cpuCount), base: area.base, capacity: Int(truncatingIfNeeded: area.length)) }
        catch { throw .acpi(error) }
        do { try memory.write(bytes: tables.bytes, at: area.base) } catch { throw .acpiMemory(error) }
        return tables
    }

    /// Adds `device` as a modern virtio-pci function in the next PCI slot (00:01.0, 00:02.0, ...):
    /// BAR 0 in the PCI window, MSI-X through `interrupts`, INTx on the shared PCI line as fallback.
    @discardableResult
    public func addVirtio(_ device: any VirtioDevice) throws(PlatformError) -> PciPlacement {
        do {
            let function = try VirtioPciDevice(device: device, memory: memory, interrupts: interrupts,
                                               intx: IRQLine(controller: interrupts, gsi: PCLayout.GSI.pciIntx))
            let placement = try pci.add(function)
            virtio.append(function)
            if let timed = device as? TimedDevice { timedDevices.append(timed) }
            return placement
        } catch {
            throw .pci(error)
        }
    }

    /// The 8259 pair's INTR output, for a vCPU that models LINT0 itself (nil with a hypervisor chip).
    public var externalInterrupts: ExternalInterrupts? { emulatedInterrupts?.pic }

    /// Where MSIs go when the platform routes interrupts (the interpreter's local APICs).
    public func setMSITarget(_ deliver: @escaping (UInt64, UInt32) -> Void) {
        emulatedInterrupts?.onMSI = deliver
    }

    /// A local APIC retired a vector it accepted as level-triggered (the interpreter's EOI broadcast).
    public func endOfInterrupt(vector: UInt8) {
        emulatedInterrupts?.endOfInterrupt(vector: vector)
    }

    /// Every range on both buses, in address order: ("port I/O" or "MMIO", device name, range).
    public var deviceMap: [(bus: String, name: String, range: BusRange)] {
        [ports, mmio].flatMap { bus in
            bus.entries.map { (bus.name, $0.name, BusRange(base: $0.base, length: $0.length)) }
        }
    }
}
