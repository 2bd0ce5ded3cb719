import CPUBackend
import Devices
import VMM
import XCTest

/// The small guests of Tests/Guests, checked byte for byte, on each backend: the same guests and
/// the same expectations, because both backends must behave identically.
/// (Linux XCTest does not discover inherited test methods, hence two explicit classes.)
enum GuestChecks {
    static func check(_ name: String, on accelerator: Accelerator, file: StaticString = #filePath, line: UInt = #line,
                      prepare: ((Machine) throws -> Void)? = nil) throws -> GuestHarness.Run {
        let r = try GuestHarness.run(name, accelerator: accelerator, prepare: prepare)
        XCTAssertEqual(r.output.text, String(decoding: try GuestHarness.expected(name), as: UTF8.self),
                       file: file, line: line)
        XCTAssertEqual(try r.stop.get(), try GuestHarness.expectedStop(name), file: file, line: line)
        return r
    }

    static func protectedMode(on a: Accelerator) throws {
        let r = try check("protected", on: a)
        XCTAssertEqual(r.mmio.writes.first?.value, 0xCAFE_F00D, "the guest's MMIO write reached the device")
        XCTAssertTrue(r.mmio.reads.contains(4), "the guest's MMIO read reached the device")
    }

    /// 10 x 4096 iterations of a 14-instruction integer loop; the checksum was cross-checked on QEMU.
    static func cpuloop(on a: Accelerator) throws {
        _ = try check("cpuloop", on: a) { machine in try machine.memory.write(UInt32(10), at: 0x500) }
    }

    static func userspace(on a: Accelerator) throws {
        _ = try check("userspace", on: a) { machine in
            try machine.memory.write(UInt32(2000), at: 0x500)  // N port writes per phase
        }
    }
}

final class KVMGuestTests: XCTestCase {
    override func setUpWithError() throws { try GuestHarness.requireKVM() }
    func testRealModeGuestPrintsAndResets() throws { _ = try GuestChecks.check("real", on: .kvm) }
    func testProtectedModeGuestDoesMMIOAndHalts() throws { try GuestChecks.protectedMode(on: .kvm) }
    func testLongModeGuestRunsAndTripleFaults() throws { _ = try GuestChecks.check("long", on: .kvm) }
    func testUserspaceGuestExitsFromCPL0AndCPL3() throws { try GuestChecks.userspace(on: .kvm) }
    func testCPULoopChecksum() throws { try GuestChecks.cpuloop(on: .kvm) }
}

final class InterpreterGuestTests: XCTestCase {
    func testRealModeGuestPrintsAndResets() throws { _ = try GuestChecks.check("real", on: .interp) }
    func testProtectedModeGuestDoesMMIOAndHalts() throws { try GuestChecks.protectedMode(on: .interp) }
    func testLongModeGuestRunsAndTripleFaults() throws { _ = try GuestChecks.check("long", on: .interp) }
    func testUserspaceGuestExitsFromCPL0AndCPL3() throws { try GuestChecks.userspace(on: .interp) }
    func testCPULoopChecksum() throws { try GuestChecks.cpuloop(on: .interp) }
}
