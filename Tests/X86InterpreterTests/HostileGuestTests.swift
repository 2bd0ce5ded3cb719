import CPUBackend
import Foundation
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// Guest code that tries to hold the vCPU: found by the interpreter fuzz target (docs/security.md).
final class HostileGuestTests: XCTestCase {
    /// `rep lodsb` with RCX = 2^64-1 used to run ~2^64 iterations inside one instruction, deaf to
    /// interrupts, Ctrl-A x and the instruction budget. Now it yields after a slice, still on the
    /// instruction, with the registers showing the progress made, and resumes from there.
    func testRepWithHugeCountYieldsBetweenSlices() throws {
        let mem = try LongModeGuest.makeMemory()
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        try mem.write(bytes: [0xF3, 0xAC, 0xF4], at: 0x10000)   // rep lodsb; hlt
        var s = LongModeGuest.entryState(rip: 0x10000, rsp: 0x80000)
        s.rcx = .max
        s.rsi = 0x20_0000
        cpu.setEntryState(s)
        let io = RecordingIO()
        // A hang watchdog, not a speed claim: the old code ran for hours here.
        let returned = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let c = cpu, i = io
        Thread { c.step(io: i); returned.signal() }.start()
        guard returned.wait(timeout: .now() + 120) == .success else { return XCTFail("step() did not return: REP ran on") }
        XCTAssertEqual(cpu.instructionPointer, 0x10000, "still on the REP")
        let done = UInt64.max - cpu[.rcx]
        XCTAssertGreaterThan(done, 0)
        XCTAssertLessThanOrEqual(done, 16384, "one slice of at most 16384 elements (docs/security.md)")
        XCTAssertEqual(cpu[.rsi], 0x20_0000 + done, "RSI advanced by the elements done")
        cpu.step(io: io)
        XCTAssertEqual(UInt64.max - cpu[.rcx], 2 * done, "the next dispatch resumes the same REP")
    }

    /// A REP that fits in one slice still completes in one step and moves on.
    func testShortRepCompletesInOneStep() throws {
        let mem = try LongModeGuest.makeMemory()
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        try mem.write(bytes: [0xF3, 0xAA, 0xF4], at: 0x10000)   // rep stosb; hlt
        var s = LongModeGuest.entryState(rip: 0x10000, rsp: 0x80000)
        s.rcx = 100
        s.rdi = 0x20_0000
        s.rax = 0x5A
        cpu.setEntryState(s)
        cpu.step(io: RecordingIO())
        XCTAssertEqual(cpu.instructionPointer, 0x10002)
        XCTAssertEqual(cpu[.rcx], 0)
        XCTAssertEqual(try mem.read(UInt8.self, at: 0x20_0063), 0x5A)
    }
}

/// An exception handler that faults again (IRETQ to a bad CS) retires no instruction, ever. The
/// interpreter used to spin in that loop without polling: `step` never returned and a running VM
/// ignored the host's stop request. Found by the interp fuzz target.
final class FaultLoopTests: XCTestCase {
    func makeFaultLoop() throws -> (X86Interpreter, GuestMemory) {
        let mem = try LongModeGuest.makeMemory()
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        for v in 0..<32 { try LongModeGuest.setGate(mem, vector: v, handler: 0x8000, ist: v == 8 ? 1 : 0) }
        try mem.write(bytes: [0x48, 0xCF], at: 0x8000)           // iretq
        // The frame IRETQ pops: RIP, CS (a selector far past the GDT limit), RFLAGS, RSP, SS.
        for (i, q) in [UInt64(0x8000), 0xFFF8, 0x2, 0x70000, 0x18].enumerated() {
            try mem.write(q, at: 0x70000 + UInt64(8 * i))
        }
        var s = LongModeGuest.entryState(rip: 0x8000, rsp: 0x70000)
        s.rflags = 0x2
        cpu.setEntryState(s)
        return (cpu, mem)
    }

    func testStepReturnsFromAFaultLoop() throws {
        let (cpu, _) = try makeFaultLoop()
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let c = cpu
        Thread { for _ in 0..<100 { c.step(io: RecordingIO()) }; done.signal() }.start()
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "step() spun in the fault loop")
    }

    func testHostStopReachesAVMInAFaultLoop() throws {
        let (cpu, _) = try makeFaultLoop()
        let control = VMControl()
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) let c = cpu
        nonisolated(unsafe) var stop: VcpuStop?
        Thread { stop = c.run(io: RecordingIO(), control: control); done.signal() }.start()
        usleep(100_000)
        control.requestStop(.hostRequest)
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success, "the VM ignored the stop request")
        XCTAssertEqual(stop, .hostRequest)
    }
}

/// x87 instructions on NaN and infinity must not trap the host. Found by the interp fuzz target:
/// FPREM1 with a NaN operand converted a NaN quotient to an integer and crashed swhv.
final class X87HostileOperandTests: XCTestCase {
    func testRemainderOfNaNAndInfinityDoesNotTrap() throws {
        for (a, b) in [(Float80.nan, 1.0), (1.0, 0.0), (Float80.infinity, 2.0), (3.0, Float80.nan)] as [(Float80, Float80)] {
            for op: UInt8 in [0xF5, 0xF8] {   // FPREM1, FPREM
                let mem = try LongModeGuest.makeMemory()
                let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
                try mem.write(bytes: b.bitPatternBytes + a.bitPatternBytes, at: 0x20_0000)
                // fld tbyte [0x200000] (b); fld tbyte [0x20000a] (a); fprem(1); hlt
                try mem.write(bytes: [0xDB, 0x2C, 0x25, 0x00, 0x00, 0x20, 0x00,
                                      0xDB, 0x2C, 0x25, 0x0A, 0x00, 0x20, 0x00,
                                      0xD9, op, 0xF4], at: 0x10000)
                cpu.setEntryState(LongModeGuest.entryState(rip: 0x10000, rsp: 0x80000))
                for _ in 0..<4 { cpu.step(io: RecordingIO()) }
                XCTAssertEqual(cpu.instructionPointer, 0x10011, "ran through \(a) rem \(b) (op \(op))")
            }
        }
    }
}

private extension Float80 {
    /// The 10-byte little-endian memory image FLD m80 reads.
    var bitPatternBytes: [UInt8] {
        var v = self
        return withUnsafeBytes(of: &v) { Array($0.prefix(10)) }
    }
}
