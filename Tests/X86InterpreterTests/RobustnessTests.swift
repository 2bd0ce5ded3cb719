import CPUBackend
import Foundation
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// Random bytes executed as kernel code must never crash or wedge the host: every path a guest
/// controls (decoder, descriptor loads, gates, MSRs, control registers) has to fail as an x86
/// exception, a shutdown or a halt.
final class RobustnessTests: XCTestCase {
    func testRandomCodeAtCPL0NeverCrashesTheHost() throws {
        // Deterministic xorshift stream; SWHV_ROBUSTNESS_SEED / _ROUNDS explore further.
        let env = ProcessInfo.processInfo.environment
        var seed: UInt64 = UInt64(env["SWHV_ROBUSTNESS_SEED"] ?? "") ?? 0x5157_4856
        let rounds = Int(env["SWHV_ROBUSTNESS_ROUNDS"] ?? "") ?? 1500
        func next() -> UInt64 {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
            return seed
        }
        let io = RecordingIO()
        var outcomes: [String: Int] = [:]
        for round in 0..<rounds {
            let mem = try LongModeGuest.makeMemory(size: 4 << 20)
            // Every vector goes to a HLT; code is 256 random bytes at 0x10000.
            try mem.write(bytes: [0xF4], at: 0x11000)
            for v in 0..<256 { try LongModeGuest.setGate(mem, vector: v, handler: 0x11000) }
            var code: [UInt8] = []
            for _ in 0..<32 { withUnsafeBytes(of: next()) { code += $0 } }
            // Bias towards interesting prefixes and system opcodes now and then.
            if round % 3 == 0 { code[0] = 0x0F; code[1] = UInt8(truncatingIfNeeded: next() & 0x3F) }
            try mem.write(bytes: code, at: 0x10000)
            let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
            cpu.setEntryState(LongModeGuest.entryState(rip: 0x10000, rsp: 0x7F000))
            var stop: VcpuStop?
            for _ in 0..<2000 {
                stop = cpu.step(io: io)
                if stop != nil || cpu.isHalted { break }
            }
            let key = stop.map { "\($0)" } ?? (cpu.isHalted ? "halted" : "running")
            outcomes[key, default: 0] += 1
        }
        print("random code outcomes:", outcomes.sorted { $0.key < $1.key })
        XCTAssertEqual(outcomes.values.reduce(0, +), rounds)
        XCTAssertGreaterThan(outcomes["halted", default: 0], 0, "most random code faults into the HLT handler")
    }
}
