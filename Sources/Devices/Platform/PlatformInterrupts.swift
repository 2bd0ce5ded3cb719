import VMCore

/// Interrupt routing when the platform models the interrupt controllers (the interpreter): GSIs 0-15
/// are the ISA IRQ lines of the 8259 pair, and with an I/O APIC (an ACPI machine) every GSI also
/// reaches its pin (`PCLayout.GSI.ioapicPin`: IRQ 0 on pin 2). MSIs and the I/O APIC's messages go
/// to the interpreter's local APICs through `onMSI`.
///
/// Not thread-safe by design: like every device it is used only on the vCPU thread (other threads
/// post through `VMControl.post`). The `Sendable` conformance the protocol demands is therefore
/// unchecked; calling it from another thread is a bug in the caller.
public final class PlatformInterrupts: InterruptController, @unchecked Sendable {
    public let pic: Pic8259Pair
    /// The I/O APIC, when the machine has one (ACPI describes it; without ACPI a guest cannot find it).
    public let ioapic: IOAPIC?
    /// Receives MSIs (address, data); the interpreter installs its local APICs here.
    public var onMSI: ((UInt64, UInt32) -> Void)?
    /// MSIs that arrived before `onMSI` was installed, and lines no PIC input exists for
    /// (GSI 2, the cascade, and GSI 16 and up). Counted so a miswired device shows up in diagnostics.
    public private(set) var droppedMSIs = 0
    public private(set) var droppedIRQs = 0

    public init(pic: Pic8259Pair = Pic8259Pair(), ioapic: IOAPIC? = nil, onMSI: ((UInt64, UInt32) -> Void)? = nil) {
        self.pic = pic
        self.ioapic = ioapic
        self.onMSI = onMSI
        // The I/O APIC's messages take the MSI path to the local APICs.
        ioapic?.deliver = { [unowned self] address, data in self.signalMSI(address: address, data: data) }
    }

    /// An `IRQLine` for `gsi` on this controller.
    public func line(_ gsi: UInt32) -> IRQLine { IRQLine(controller: self, gsi: gsi) }

    public func setIRQ(_ gsi: UInt32, level: Bool) {
        let toPIC = gsi < PCLayout.GSI.isaCount && gsi != PCLayout.GSI.cascade
        let pin = ioapic != nil ? PCLayout.GSI.ioapicPin(gsi) : nil
        guard toPIC || pin != nil else {
            droppedIRQs += 1
            return
        }
        if toPIC { pic.setIRQ(Int(gsi), level: level) }
        if let pin { ioapic?.setPin(Int(pin), level: level) }
    }

    /// A local APIC retired a level-triggered vector: the I/O APIC's EOI broadcast.
    public func endOfInterrupt(vector: UInt8) {
        ioapic?.endOfInterrupt(vector: vector)
    }

    public func signalMSI(address: UInt64, data: UInt32) {
        guard let onMSI else {
            droppedMSIs += 1
            return
        }
        onMSI(address, data)
    }
}
