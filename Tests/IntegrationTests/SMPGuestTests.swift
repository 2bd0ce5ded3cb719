import Foundation
import SwhvTestSupport
import XCTest

/// Multiprocessor bare-metal guests through the real `swhv run-image --cpus 4` on each backend:
/// `smp` starts the application processors with INIT/SIPI, checks the APIC ID each one reads from its
/// local APIC and has all four CPUs count with LOCK INC and LOCK XADD at once (a lost update changes
/// the totals); `attack-smp` storms INIT/SIPI at running CPUs, sends IPIs of every kind to APIC IDs
/// nobody has and writes every I/O APIC register with every kind of value — the guest must keep
/// running and swhv must neither crash nor hang.
enum SMPGuests {
    static let cpus = ["--cpus", "4", "--write32", "0x500=4"]
}

final class InterpreterSMPGuestTests: XCTestCase {
    func testAPsStartReportTheirAPICIDsAndCountAtomically() throws {
        // Several runs: the atomic phase races four host threads, and a lost update is a matter of timing.
        for _ in 0..<3 { try AttackRun.check("smp", accel: "interp", extra: { _ in SMPGuests.cpus }, test: self) }
    }

    func testINITSIPIStormsAbsentIPIsAndWildIOAPICWritesLeaveTheGuestRunning() throws {
        try AttackRun.check("attack-smp", accel: "interp", extra: { _ in SMPGuests.cpus }, timeout: 120, test: self)
    }
}

final class KVMSMPGuestTests: XCTestCase {
    override func setUpWithError() throws { try GuestHarness.requireKVM() }

    func testAPsStartThroughTheInKernelLAPICAndReportTheirAPICIDs() throws {
        // Guest kernel code is emulated on kvm-pvm (~3 M instructions/s): generous watchdog.
        try AttackRun.check("smp", accel: "kvm", extra: { _ in SMPGuests.cpus }, timeout: 300, test: self)
    }

    func testINITSIPIStormsAbsentIPIsAndWildIOAPICWritesLeaveTheGuestRunning() throws {
        try AttackRun.check("attack-smp", accel: "kvm", extra: { _ in SMPGuests.cpus }, timeout: 600, test: self)
    }
}
