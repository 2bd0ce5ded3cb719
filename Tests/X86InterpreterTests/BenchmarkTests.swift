import CPUBackend
import Foundation
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// Throughput of the interpreter on a CPU-bound loop (ALU, loads/stores, call/ret, branches).
/// Prints MIPS; set SWHV_BENCH_INSTRUCTIONS for a longer run (use a release build:
/// `swift test -c release --filter BenchmarkTests`).
final class BenchmarkTests: XCTestCase {
    func testLoopThroughput() throws {
        let mem = try LongModeGuest.makeMemory()
        try mem.write(bytes: GuestPrograms.benchmarkLoop.code, at: GuestPrograms.benchmarkLoop.address)
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(LongModeGuest.entryState(rip: GuestPrograms.benchmarkLoop.address, rsp: 0x7F000))
        let n = UInt64(ProcessInfo.processInfo.environment["SWHV_BENCH_INSTRUCTIONS"] ?? "") ?? 2_000_000
        let start = VirtualClock.hostMonotonicNs()
        let stop = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: n)
        let ns = VirtualClock.hostMonotonicNs() - start
        XCTAssertNil(stop, "the loop runs for 220 M instructions; the budget ends first")
        XCTAssertEqual(cpu.instructionsRetired, n)
        // Each iteration is 13 or 14 instructions (the INC is conditional); 2 set-up instructions.
        let iterations = 20_000_000 - cpu[.rcx]
        XCTAssertGreaterThanOrEqual(iterations, (n - 2) / 14)
        XCTAssertLessThanOrEqual(iterations, (n - 2) / 13 + 1)
        let mips = Double(n) / (Double(ns) / 1e9) / 1e6
        print(String(format: "interpreter: %.1f MIPS (%llu instructions in %.3f s, %.1f instructions per block)", mips, n,
                     Double(ns) / 1e9, Double(cpu.instructionsRetired) / Double(max(cpu.blocksEntered, 1))))
    }
}
