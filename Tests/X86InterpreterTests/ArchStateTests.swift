import CPUBackend
import Foundation
import VMMemory
import SwhvTestSupport
import X86Interpreter
import XCTest

/// The interpreter's side of X86ArchState (exact hand-over between CPUs, snapshots) and the hooks
/// the hybrid backend uses (HybridSupport.swift).
final class ArchStateTests: XCTestCase {
    static let code: UInt64 = 0x10000

    /// 1000 rounds of integer, SSE and stack work, then x87, an MSR write and HLT (IF clear).
    static let program: [UInt8] = {
        var p: [UInt8] = [
            0x48, 0xC7, 0xC1, 0xE8, 0x03, 0x00, 0x00,   // mov rcx, 1000
            0x48, 0xC7, 0xC0, 0x45, 0x23, 0x01, 0x00,   // mov rax, 0x12345
            0x66, 0x48, 0x0F, 0x6E, 0xC8,               // movq xmm1, rax
        ]
        let loop: [UInt8] = [
            0x48, 0x69, 0xC0, 0x37, 0x9E, 0x00, 0x00,   // imul rax, rax, 0x9e37
            0x48, 0x01, 0xC8,                           // add rax, rcx
            0x66, 0x48, 0x0F, 0x6E, 0xC0,               // movq xmm0, rax
            0x66, 0x0F, 0xD4, 0xC8,                     // paddq xmm1, xmm0
            0x50, 0x5A,                                 // push rax; pop rdx
            0x48, 0xFF, 0xC9,                           // dec rcx
        ]
        p += loop + [0x75, UInt8(bitPattern: Int8(-(loop.count + 2)))]   // jnz loop
        p += [0xD9, 0xE8, 0xD9, 0xEB, 0xDE, 0xC1]      // fld1; fldpi; faddp
        p += [0xB9, 0x81, 0x00, 0x00, 0xC0,             // mov ecx, STAR
              0xB8, 0x11, 0x00, 0x00, 0x00,             // mov eax, 0x11
              0xBA, 0x10, 0x00, 0x23, 0x00,             // mov edx, 0x230010
              0x0F, 0x30,                               // wrmsr
              0xF4]                                     // hlt
        return p
    }()

    func makeCPU(_ mem: GuestMemory) throws -> X86Interpreter {
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.useHostTSC({ 1_000_000 }, hz: 2_000_000_000)   // a TSC that stands still: comparable states
        try cpu.setEntryState(LongModeGuest.entryState(rip: ArchStateTests.code, rsp: 0x7F000))
        return cpu
    }

    func makeMemory() throws -> GuestMemory {
        let mem = try LongModeGuest.makeMemory()
        try mem.write(bytes: ArchStateTests.program, at: ArchStateTests.code)
        return mem
    }

    func runToHalt(_ cpu: X86Interpreter) {
        let stop = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 1_000_000)
        XCTAssertEqual(stop, .haltedForever)
    }

    func testExportImportExportIsIdentity() throws {
        let mem = try makeMemory()
        let a = try makeCPU(mem)
        runToHalt(a)
        XCTAssertTrue(a.isHalted)
        var s = a.exportArchState()
        s.events.halted = false   // a fresh CPU is not halted: compare everything else
        let b = try makeCPU(mem)
        try b.importArchState(s)
        XCTAssertEqual(b.exportArchState(), s)
        XCTAssertEqual(s.msr(0xC000_0081), 0x0023_0010_0000_0011, "STAR as WRMSR set it")
        XCTAssertEqual(s.fsw >> 11 & 7, 7, "two x87 pushes, one pop: TOP = 7")
    }

    func testHandOverMidRunEndsWhereAStraightRunEnds() throws {
        let straight = try makeCPU(try makeMemory())
        runToHalt(straight)

        let mem = try makeMemory()
        let first = try makeCPU(mem)
        XCTAssertNil(first.run(io: RecordingIO(), control: VMControl(), maxInstructions: 2501))
        let mid = first.exportArchState()
        XCTAssertNotEqual(mid.gpr[1], 0, "stopped inside the loop")
        let second = try makeCPU(mem)
        try second.importArchState(mid)
        runToHalt(second)

        XCTAssertEqual(second.exportArchState(), straight.exportArchState())
        XCTAssertEqual(second[.rax], straight[.rax])
        XCTAssertEqual(second.xmm(1).0, straight.xmm(1).0)
    }

    func testCodableRoundTrip() throws {
        let cpu = try makeCPU(try makeMemory())
        runToHalt(cpu)
        let s = cpu.exportArchState()
        let data = try JSONEncoder().encode(s)
        let back = try JSONDecoder().decode(X86ArchState.self, from: data)
        XCTAssertEqual(back, s)
    }

    func testFXSaveImageIsInSTOrder() throws {
        let cpu = try makeCPU(try makeMemory())
        runToHalt(cpu)
        let s = cpu.exportArchState()
        // ST(0) = 1 + pi as an 80-bit value at image offset 32.
        let significand: UInt64 = s.fxWord(at: 32)
        let exponent: UInt16 = s.fxWord(at: 40)
        let value = Float80(sign: .plus, exponentBitPattern: UInt(exponent & 0x7FFF), significandBitPattern: significand & ~(1 << 63))
        XCTAssertEqual(Double(value), 1 + Double.pi, accuracy: 1e-12)
    }

    func testImportRefusesWhatTheInterpreterCannotRun() throws {
        let cpu = try makeCPU(try makeMemory())
        var s = cpu.exportArchState()
        s.cr4 |= 1 << 18   // OSXSAVE
        XCTAssertThrowsError(try cpu.importArchState(s)) { e in
            guard case .rejected = e as? ArchStateError else { return XCTFail("\(e)") }
        }
        var t = cpu.exportArchState()
        t.gpr.removeLast()
        XCTAssertThrowsError(try cpu.importArchState(t)) { e in
            XCTAssertEqual(e as? ArchStateError, .malformed("gpr has 15 registers, not 16"))
        }
        var u = cpu.exportArchState()
        u.version = 99
        XCTAssertThrowsError(try cpu.importArchState(u)) { XCTAssertEqual($0 as? ArchStateError, .version(99)) }
    }

    // MARK: Hybrid hooks

    func testPrivilegeObserverStopsAtTheReturnToUserMode() throws {
        let mem = try LongModeGuest.makeMemory()
        // iretq to CPL3 at 0x11000 (`nop; syscall`), with LSTAR at 0x12000 (`hlt`).
        let frame: [UInt64] = [0x11000, UInt64(LongModeGuest.userCS) | 3, 0x202, 0x7E000, UInt64(LongModeGuest.userDS) | 3]
        for (i, v) in frame.enumerated() { try mem.write(v, at: 0x7F000 + UInt64(i * 8)) }
        try mem.write(bytes: [0x48, 0xCF], at: ArchStateTests.code)         // iretq
        try mem.write(bytes: [0x90, 0x0F, 0x05], at: 0x11000)               // nop; syscall
        try mem.write(bytes: [0xF4], at: 0x12000)                            // hlt
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        try cpu.setEntryState(LongModeGuest.entryState(rip: ArchStateTests.code, rsp: 0x7F000))
        XCTAssertTrue(cpu.setMSR(0xC000_0082, 0x12000))
        XCTAssertTrue(cpu.setMSR(0xC000_0081, UInt64(0x0018_0010) << 32))
        XCTAssertTrue(cpu.setMSR(0xC000_0084, 0x200))   // SFMASK: IF off in the handler, so HLT ends the run
        var calls: [Bool] = []
        cpu.setPrivilegeObserver { user in calls.append(user); return user }
        XCTAssertNil(cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 100))
        XCTAssertEqual(calls, [true])
        XCTAssertEqual(cpu.cpl, 3)
        XCTAssertEqual(cpu.instructionPointer, 0x11000, "stopped right after the IRETQ")
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 100), .haltedForever)
        XCTAssertEqual(calls, [true, false], "SYSCALL left user mode")
    }

    func testWatchedPageTableWritesAreReportedOnce() throws {
        let mem = try makeMemory()
        let cpu = try makeCPU(mem)
        // The program stores to the stack page 0x7E000 (push); watch it as if it held a table.
        cpu.armPageTableWatch([0x7E])
        runToHalt(cpu)
        XCTAssertEqual(cpu.writtenPageTables, [0x7E], "1000 pushes, one report")
        cpu.armPageTableWatch([Int32]())
        XCTAssertEqual(cpu.writtenPageTables, [])
    }

    func testHostTSCAndItsCPUIDRatio() throws {
        let mem = try LongModeGuest.makeMemory()
        try mem.write(bytes: [0x0F, 0x31, 0xF4], at: ArchStateTests.code)   // rdtsc; hlt
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.useHostTSC({ 0x1234_5678_9ABC }, hz: 2_445_430_000)
        try cpu.setEntryState(LongModeGuest.entryState(rip: ArchStateTests.code, rsp: 0x7F000))
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 10)
        XCTAssertEqual(cpu[.rdx] << 32 | cpu[.rax], 0x1234_5678_9ABC)
        // Leaf 15H: crystal (ECX) 1 GHz, TSC = crystal * EBX / EAX, and Linux multiplies the
        // crystal's kHz by EBX in 32 bits.
        try mem.write(bytes: [0x0F, 0xA2, 0xF4], at: ArchStateTests.code)  // cpuid; hlt
        cpu.invalidateCode(physicalAddress: ArchStateTests.code, length: 16)
        try cpu.setEntryState(LongModeGuest.entryState(rip: ArchStateTests.code, rsp: 0x7F000))
        cpu[.rax] = 0x15
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 10)
        let (den, num, crystal) = (cpu[.rax], cpu[.rbx], cpu[.rcx])
        XCTAssertEqual(crystal, 1_000_000_000)
        XCTAssertLessThan(1_000_000 * num, 1 << 32)
        let khz = Double(crystal / 1000 * num / den)
        XCTAssertEqual(khz, 2_445_430, accuracy: 2_445_430 * 2e-6, "within 2 ppm")
    }

    func testModelSpecificInstructionScan() {
        func scan(_ bytes: [UInt8]) -> Bool {
            var page = [UInt8](repeating: 0x90, count: 4096)
            page.replaceSubrange(100..<100 + bytes.count, with: bytes)
            return page.withUnsafeBytes { X86Interpreter.containsModelSpecificInstruction($0) }
        }
        XCTAssertFalse(scan([]), "nops")
        XCTAssertTrue(scan([0x0F, 0x53, 0xC1]), "rcpps xmm0, xmm1")
        XCTAssertTrue(scan([0xF3, 0x0F, 0x52, 0xC1]), "rsqrtss")
        XCTAssertFalse(scan([0x66, 0x0F, 0x52, 0xC1]), "66 0F 52 is not an estimate (#UD)")
        XCTAssertTrue(scan([0xD9, 0xFE]), "fsin")
        XCTAssertTrue(scan([0xD9, 0xF1]), "fyl2x")
        XCTAssertFalse(scan([0xD9, 0xFA]), "fsqrt is exact")
        // The same bytes inside an immediate are not an instruction.
        XCTAssertFalse(scan([0x48, 0xB8, 0x0F, 0x53, 0xD9, 0xFE, 0x00, 0x00, 0x00, 0x00]), "mov rax, imm64")
    }
}
