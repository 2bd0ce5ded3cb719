import VMCore

/// Interrupt routing when the platform models the interrupt controllers (the interpreter): GSIs 0-15
/// are the ISA IRQ lines of the 8259 pair (a PC without an I/O APIC, so GSI n is IRQ n), and MSIs go
/// to the interpreter's local APIC through `onMSI`. An I/O APIC would be routed here too.
///
/// Not thread-safe by design: like every device it is used only on the vCPU thread (other threads
/// post through `VMControl.post`). The `Sendable` conformance the protocol demands is therefore
/// unchecked; calling it from another thread is a bug in the caller.
public final class PlatformInterrupts: InterruptController, @unchecked Sendable {
    public let pic: Pic8259Pair
    /// Receives MSIs (address, data); the interpreter installs its local APIC here.
    public var onMSI: ((UInt64, UInt32) -> Void)?
    /// MSIs that arrived before `onMSI` was installed, and lines no PIC input exists for
    /// (GSI 2, the cascade, and GSI 16 and up). Counted so a miswired device shows up in diagnostics.
    public private(set) var droppedMSIs = 0
    public private(set) var droppedIRQs = 0

    public init(pic: Pic8259Pair = Pic8259Pair(), onMSI: ((UInt64, UInt32) -> Void)? = nil) {
        self.pic = pic
        self.onMSI = onMSI
    }

    /// An `IRQLine` for `gsi` on this controller.
    public func line(_ gsi: UInt32) -> IRQLine { IRQLine(controller: self, gsi: gsi) }

    public func setIRQ(_ gsi: UInt32, level: Bool) {
        guard gsi < PCLayout.GSI.isaCount, gsi != PCLayout.GSI.cascade else {
            droppedIRQs += 1
            return
        }
        pic.setIRQ(Int(gsi), level: level)
    }

    public func signalMSI(address: UInt64, data: UInt32) {
        guard let onMSI else {
            droppedMSIs += 1
            return
        }
        onMSI(address, data)
    }
}
