import CPUBackend
import Foundation
import VMMemory
import XCTest
@testable import X86Interpreter

/// The interpreter's local APIC captured with a timer running, an interrupt in service and another
/// pending, restored into a fresh interpreter: both then deliver and time alike.
final class LocalAPICStateTests: XCTestCase {
    func make() throws -> X86Interpreter {
        X86Interpreter(memory: try GuestMemory(size: 1 << 20), clock: VirtualClock())
    }

    func testLocalAPICContinuesIdenticallyAfterARestore() throws {
        let a = try make()
        let t0: UInt64 = 1_000_000
        a.apic.write(offset: 0xF0, value: 0x1FF, now: t0)              // software enable
        a.apic.write(offset: 0x3E0, value: 0x3, now: t0)               // divide by 16
        a.apic.write(offset: 0x320, value: 0x2_00EF, now: t0)          // periodic timer, vector 0xEF
        a.apic.write(offset: 0x380, value: 10_000, now: t0)            // 160 µs period
        a.deliverMSI(address: 0xFEE0_0000, data: 0x41)
        a.deliverMSI(address: 0xFEE0_0000, data: 0x61)
        a.takeMail()   // MSIs reach the APIC through the vCPU's inbox, taken on its own thread
        let inService = try XCTUnwrap(a.apic.pendingVector())
        a.apic.acknowledge(inService)
        let saved = try JSONDecoder().decode(X86Interpreter.LocalAPICState.self,
                                             from: JSONEncoder().encode(a.localAPICState))

        let b = try make()
        try b.restoreLocalAPIC(saved)
        XCTAssertEqual(b.localAPICState, a.localAPICState)
        for now: UInt64 in [t0 + 100_000, t0 + 170_000, t0 + 500_000] {
            XCTAssertEqual(b.apic.advanceTimer(now: now), a.apic.advanceTimer(now: now))
            XCTAssertEqual(b.apic.read(offset: 0x390, size: 4, now: now), a.apic.read(offset: 0x390, size: 4, now: now),
                           "current count at \(now)")
            XCTAssertEqual(b.apic.pendingVector(), a.apic.pendingVector())
            for cpu in [a, b] { cpu.apic.write(offset: 0xB0, value: 0, now: now) }   // EOI
        }
        XCTAssertEqual(b.localAPICState, a.localAPICState)
    }

    func testLocalAPICStateWithShortRegisterFilesIsRefused() throws {
        var saved = try make().localAPICState
        saved.irr = [0]
        XCTAssertThrowsError(try make().restoreLocalAPIC(saved))
    }
}
