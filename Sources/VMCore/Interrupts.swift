/// How devices raise interrupts. KVM implements it with its in-kernel irqchip; the interpreter's
/// platform with its own PIC and local APIC (`PlatformInterrupts`). Devices only ever see this.
public protocol InterruptController: AnyObject, Sendable {
    /// Sets the level of an interrupt line (GSI). Edge-triggered users call it with true then false.
    func setIRQ(_ gsi: UInt32, level: Bool)
    /// Delivers a message-signalled interrupt.
    func signalMSI(address: UInt64, data: UInt32)
}

/// One interrupt line of a device: a controller and a GSI number.
public struct IRQLine: Sendable {
    public let controller: any InterruptController
    public let gsi: UInt32
    public init(controller: any InterruptController, gsi: UInt32) {
        self.controller = controller
        self.gsi = gsi
    }
    public func raise() { controller.setIRQ(gsi, level: true) }
    public func lower() { controller.setIRQ(gsi, level: false) }
    /// An edge: raise then lower.
    public func pulse() { raise(); lower() }
}

/// The interrupt request line of the 8259 pair (INTR), as the interpreter's local APIC sees it on LINT0.
public protocol ExternalInterrupts: AnyObject {
    /// True when the PIC asserts INTR (an unmasked request with higher priority than any in service).
    var interruptPending: Bool { get }
    /// The INTA cycle: returns the vector and moves the request from IRR to ISR.
    func acknowledge() -> UInt8
}
