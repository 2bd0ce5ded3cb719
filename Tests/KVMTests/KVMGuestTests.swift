import CPUBackend
import Devices
import VMM
import XCTest

/// The small guests of Tests/Guests on KVM, checked byte for byte.
final class KVMGuestTests: XCTestCase {
    override func setUpWithError() throws { try GuestHarness.requireKVM() }

    func testRealModeGuestPrintsAndResets() throws {
        let r = try GuestHarness.run("real", accelerator: .kvm)
        XCTAssertEqual(r.output.bytes, try GuestHarness.expected("real"), r.output.text)
        XCTAssertEqual(try r.stop.get(), .reset)
    }

    func testProtectedModeGuestDoesMMIOAndHalts() throws {
        let r = try GuestHarness.run("protected", accelerator: .kvm)
        XCTAssertEqual(r.output.bytes, try GuestHarness.expected("protected"), r.output.text)
        XCTAssertEqual(try r.stop.get(), .haltedForever)
        XCTAssertFalse(r.mmio.writes.isEmpty, "the guest's MMIO write reached the device")
        XCTAssertTrue(r.mmio.reads.contains(4), "the guest's MMIO read reached the device")
    }

    func testLongModeGuestRunsAndTripleFaults() throws {
        let r = try GuestHarness.run("long", accelerator: .kvm)
        XCTAssertEqual(r.output.bytes, try GuestHarness.expected("long"), r.output.text)
        XCTAssertEqual(try r.stop.get(), .shutdown)
    }
}
