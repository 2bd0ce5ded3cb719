import CPUBackend
import VMM
import XCTest

/// Tests/Guests/rtc.asm: the platform's CMOS RTC raises periodic interrupts that reach the guest
/// through the 8259 pair, on the interpreter (its PIC) and on KVM (the in-kernel irqchip, with the
/// vCPU woken from the kernel's HLT when the RTC's deadline passes).
final class RtcGuestTests: XCTestCase {
    func check(_ accelerator: Accelerator) throws {
        let r = try GuestHarness.run("rtc", accelerator: accelerator, timeout: 60, irqchip: true)
        XCTAssertEqual(r.output.text, String(decoding: try GuestHarness.expected("rtc"), as: UTF8.self))
        XCTAssertEqual(try r.stop.get(), try GuestHarness.expectedStop("rtc"),
                       "hostRequest means the watchdog ended a guest still waiting for interrupts")
    }

    func testPeriodicInterruptsReachTheGuestOnTheInterpreter() throws { try check(.interp) }

    func testPeriodicInterruptsReachTheGuestOnKVM() throws {
        try GuestHarness.requireKVM()
        try check(.kvm)
    }
}
