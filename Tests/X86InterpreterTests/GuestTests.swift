import CPUBackend
import Dispatch
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// Small hand-built guests exercising mode switches, paging, exception and interrupt delivery,
/// self-modifying code and the local APIC timer.
final class GuestTests: XCTestCase {
    func load(_ mem: GuestMemory, _ p: (address: UInt64, code: [UInt8])) throws {
        try mem.write(bytes: p.code, at: p.address)
    }

    /// A long-mode guest at CPL 0 with handlers installed, ready to run `entry`.
    func makeKernelGuest(entry: (address: UInt64, code: [UInt8])) throws -> (GuestMemory, X86Interpreter) {
        let mem = try LongModeGuest.makeMemory()
        for p in [GuestPrograms.pageFaultHandler, GuestPrograms.recordFrame, GuestPrograms.recordFrameWithCode,
                  GuestPrograms.syscallHandler, GuestPrograms.apicTimerHandler, entry] {
            try load(mem, p)
        }
        for v in 0..<32 {
            let withCode = [8, 10, 11, 12, 13, 14, 17].contains(v)
            try LongModeGuest.setGate(mem, vector: v, handler: withCode ? GuestPrograms.recordFrameWithCode.address : GuestPrograms.recordFrame.address)
        }
        try LongModeGuest.setGate(mem, vector: 14, handler: GuestPrograms.pageFaultHandler.address, ist: 1)
        try LongModeGuest.setGate(mem, vector: 0x80, handler: GuestPrograms.syscallHandler.address)
        try LongModeGuest.setGate(mem, vector: 0x40, handler: GuestPrograms.apicTimerHandler.address)
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(LongModeGuest.entryState(rip: entry.address, rsp: 0x7F000))
        return (mem, cpu)
    }

    func runToHalt(_ cpu: X86Interpreter, io: RecordingIO = RecordingIO(), limit: UInt64 = 1_000_000) -> VcpuStop? {
        cpu.run(io: io, control: VMControl(), maxInstructions: limit)
    }

    func testRealModeToProtectedToLongMode() throws {
        let mem = try LongModeGuest.makeMemory()
        let gdt: [UInt64] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0x00AF_9A00_0000_FFFF]
        for (i, d) in gdt.enumerated() { try mem.write(d, at: 0x8000 + UInt64(i * 8)) }
        try mem.write(UInt16(0x1F), at: 0x7E00)
        try mem.write(UInt32(0x8000), at: 0x7E02)
        for p in [GuestPrograms.realToProtected, GuestPrograms.protectedToLong, GuestPrograms.longModeEntry] {
            try load(mem, p)
        }
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(.realMode(cs: 0, ip: 0x7C00))
        let io = RecordingIO()
        XCTAssertEqual(runToHalt(cpu, io: io), .haltedForever)
        XCTAssertEqual(cpu[.rbx], 0x1122_3344_5566_7788, "64-bit push/pop after the switch")
        XCTAssertEqual(cpu[.rdi], 0x1234_5678, "32-bit stack in protected mode")
        XCTAssertEqual(io.portWrites.first?.port, 0xE9)
        XCTAssertEqual(io.portWrites.first?.value, 0x42)
        XCTAssertEqual(cpu.efer & 0x500, 0x500, "LME and LMA set")
        XCTAssertEqual(cpu.segment(.cs).selector, 0x18)
        XCTAssertTrue(cpu.segment(.cs).l)
    }

    func testPageFaultReportsCR2AndErrorCodeOnISTStack() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.pageFault)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.rax], 2, "write to a not-present page, supervisor")
        XCTAssertEqual(cpu[.rbx], 0x4000_0008, "CR2 holds the faulting address")
        XCTAssertEqual(cpu.cr2, 0x4000_0008)
        XCTAssertEqual(cpu[.rcx], LongModeGuest.ist1 - 40, "the handler ran on the IST1 stack")
    }

    func testDivideErrorIsAFaultAtTheDivide() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.divideError)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r14], 1)
        XCTAssertEqual(cpu[.rbx], GuestPrograms.divideError.address + 7, "return RIP points at DIV")
        XCTAssertEqual(cpu[.rcx], UInt64(LongModeGuest.kernelCS))
    }

    func testBreakpointIsATrapAfterInt3() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.breakpoint)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r14], 1)
        XCTAssertEqual(cpu[.rbx], GuestPrograms.breakpoint.address + 2, "return RIP follows INT3")
    }

    func testUD2RaisesInvalidOpcode() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.undefinedOpcode)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r14], 1)
        XCTAssertEqual(cpu[.rbx], GuestPrograms.undefinedOpcode.address + 1)
    }

    func testUserModeSystemCallSwitchesToRSP0AndPrivilegedInstructionFaults() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.toUser)
        try cpu.load(program: GuestPrograms.userCode)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.rdx], 8, "INT 0x80 handler incremented RAX and IRETQ returned to user mode")
        XCTAssertEqual(cpu[.r8], LongModeGuest.rsp0 - 40, "kernel entry used TSS.RSP0")
        XCTAssertEqual(cpu[.r9], 0x70000, "user RSP saved in the frame")
        XCTAssertEqual(cpu[.r10], 0x23, "user SS saved in the frame")
        XCTAssertEqual(cpu[.r12], 0x70000, "user RSP restored")
        // HLT at CPL 3 raises #GP(0), delivered to the kernel handler.
        XCTAssertEqual(cpu[.r14], 2)
        XCTAssertEqual(cpu[.rax], 0, "#GP error code")
        XCTAssertEqual(cpu[.rcx], UInt64(LongModeGuest.userCS), "faulting CS was user code")
        XCTAssertEqual(cpu.cpl, 0)
    }

    func testSelfModifyingCodeTakesEffect() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.selfModifying)
        try cpu.load(program: GuestPrograms.patchedFunction)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.rax] & 0xFF, 0x55, "store into the next instruction in the same block")
        XCTAssertEqual(cpu[.rcx] & 0xFF, 0x66, "store into a function decoded earlier")
    }

    func testLocalAPICTimerWakesHLT() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.apicTimer)
        let control = VMControl()
        let io = RecordingIO()
        let stop = cpu.run(io: io, control: control)
        XCTAssertEqual(stop, .haltedForever)
        XCTAssertEqual(cpu[.r15], 1, "timer interrupt handled once")
        XCTAssertEqual(cpu[.r13], 0x77, "execution resumed after HLT")
        // The handler read the one-shot timer's current count (0x390): zero, so HLT slept until the
        // count ran out, not merely until some interrupt (what the guest sees, not the host's clock).
        XCTAssertEqual(cpu[.rax] & 0xFFFF_FFFF, 0, "the timer had counted down to 0 when its interrupt came")
    }

    func testX87ArithmeticAndStatus() throws {
        let (mem, cpu) = try makeKernelGuest(entry: GuestPrograms.x87Arithmetic)
        try mem.write((2.5 as Double).bitPattern, at: 0x12000)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(try mem.read(UInt32.self, at: 0x12010), 12, "(1 + 2.5)^2 = 12.25 rounds to 12")
        XCTAssertEqual(Double(bitPattern: try mem.read(UInt64.self, at: 0x12018)), (12.0 as Double).squareRoot())
        XCTAssertEqual(cpu[.r8] & 0xFF, 1, "FCOMIP: 1 < pi sets CF")
        XCTAssertEqual((cpu[.rax] >> 11) & 7, 0, "stack empty again: TOP = 0")
        XCTAssertEqual(try mem.read(UInt16.self, at: 0x12020), 0x37F, "FNINIT control word")
    }

    func testFXSAVEStoresRegistersInStackOrder() throws {
        let (mem, cpu) = try makeKernelGuest(entry: GuestPrograms.fxsaveImage)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(try mem.read(UInt16.self, at: 0x12100), 0x37F, "FCW")
        XCTAssertEqual(try mem.read(UInt16.self, at: 0x12102), 6 << 11, "FSW.TOP = 6 after two pushes")
        XCTAssertEqual(try mem.read(UInt8.self, at: 0x12104), 0xC0, "abridged tags: physical 6 and 7 valid")
        XCTAssertEqual(try mem.read(UInt32.self, at: 0x12118), 0x1F80, "MXCSR")
        XCTAssertEqual(try mem.read(UInt64.self, at: 0x12120), 0, "ST0 = 0.0")
        XCTAssertEqual(try mem.read(UInt64.self, at: 0x12130), 0x8000_0000_0000_0000, "ST1 = 1.0 significand")
        XCTAssertEqual(try mem.read(UInt16.self, at: 0x12138), 0x3FFF, "ST1 = 1.0 exponent")
    }

    func testMisalignedMOVAPSRaisesGP() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.misalignedMovaps)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r14], 2, "#GP handler ran")
        XCTAssertEqual(cpu[.rax], 0, "error code 0")
        XCTAssertEqual(cpu[.rbx], GuestPrograms.misalignedMovaps.address + 1, "fault at MOVAPS")
    }

    func testLongRepStosCompletesAcrossYields() throws {
        let (mem, cpu) = try makeKernelGuest(entry: GuestPrograms.longRepStos)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.rcx], 0)
        XCTAssertEqual(cpu[.rdi], 0x200000 + 100_000)
        XCTAssertEqual(try mem.read(UInt8.self, at: 0x200000), 0xAB)
        XCTAssertEqual(try mem.read(UInt8.self, at: 0x200000 + 99_999), 0xAB)
        XCTAssertEqual(try mem.read(UInt8.self, at: 0x200000 + 100_000), 0)
    }

    func testStopRequestFromAnotherThreadInterruptsASpinningGuest() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.spin)
        let control = VMControl()
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { control.requestStop(.poweroff) }
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: control), .poweroff)
        XCTAssertGreaterThan(cpu.instructionsRetired, 0)
    }

    func testSyscallSysretAndSwapgs() throws {
        let (mem, cpu) = try makeKernelGuest(entry: GuestPrograms.syscallSetup)
        try cpu.load(program: GuestPrograms.syscallEntry)
        try cpu.load(program: GuestPrograms.syscallUser)
        try mem.write(UInt64(0xFEED_FACE), at: 0x13000)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r13], 160, "kernel added 100 to the syscall number and SYSRET returned")
        XCTAssertEqual(cpu[.r9], 0xFEED_FACE, "SWAPGS switched to the kernel GS base")
        XCTAssertEqual(cpu[.r12], GuestPrograms.syscallUser.address + 9, "RCX held the return address")
        XCTAssertEqual(cpu[.r8] & 0x200, 0, "SFMASK cleared IF on entry")
        XCTAssertEqual(cpu[.r14], 2, "HLT at CPL 3 raised #GP")
        XCTAssertEqual(cpu[.rcx], UInt64(LongModeGuest.userCS), "the #GP came from user mode")
        XCTAssertEqual(cpu.msr(0xC000_0102), 0x13000, "KERNEL_GS_BASE swapped back")
    }

    func testMMIOGoesToTheHandlerAndLocalAPICIsInternal() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.mmioAccess)
        let io = RecordingIO()
        XCTAssertEqual(runToHalt(cpu, io: io), .haltedForever)
        XCTAssertEqual(cpu[.rax], io.mmioReadValue & 0xFFFF_FFFF, "32-bit MMIO read")
        XCTAssertEqual(io.mmioWrites.first?.address, 0xD000_0010)
        XCTAssertEqual(io.mmioWrites.first?.size, 4)
        XCTAssertEqual(io.mmioWrites.first?.value, 0x55)
        XCTAssertEqual(cpu[.rbx], 0x0005_0014, "APIC version register, not the MMIO handler")
        XCTAssertEqual(io.mmioWrites.count, 1)
        // A read crossing into the next page is split into byte accesses of both pages.
        XCTAssertEqual(cpu[.rcx], 0xF0F0_F0F0_F0F0_F0F0, "eight one-byte reads of the low byte")
    }

    func testFaultWhileDeliveringFaultBecomesDoubleFault() throws {
        let (mem, cpu) = try makeKernelGuest(entry: GuestPrograms.doubleFault)
        // Clear the present bit of the #GP gate.
        let gate = LongModeGuest.idtBase + 13 * 16
        try mem.write(try mem.read(UInt64.self, at: gate) & ~(UInt64(1) << 47), at: gate)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r14], 2, "the #DF handler ran")
        XCTAssertEqual(cpu[.rax], 0, "#DF error code is 0")
        XCTAssertEqual(cpu[.rbx], GuestPrograms.doubleFault.address + 10, "#DF frame points at the faulting MOV")
    }

    func testTripleFaultShutsDown() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.undefinedOpcode)
        var s = LongModeGuest.entryState(rip: GuestPrograms.undefinedOpcode.address, rsp: 0x7F000)
        s.idt = DescriptorTable(base: LongModeGuest.idtBase, limit: 0)
        cpu.setEntryState(s)
        XCTAssertEqual(runToHalt(cpu), .shutdown)
    }

    func testTrapFlagSingleSteps() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.singleStep)
        XCTAssertEqual(runToHalt(cpu), .haltedForever)
        XCTAssertEqual(cpu[.r14], 1, "#DB handler ran")
        XCTAssertEqual(cpu[.rbx], GuestPrograms.singleStep.address + 11, "trap after the NOP following POPF")
        XCTAssertEqual(cpu.flags & 0x100, 0, "TF cleared in the handler")
    }

    func testHostStopRequestEndsRun() throws {
        let (_, cpu) = try makeKernelGuest(entry: GuestPrograms.benchmarkLoop)
        let control = VMControl()
        control.requestStop(.hostRequest)
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: control), .hostRequest)
    }
}

extension X86Interpreter {
    /// Loads a program into guest RAM and drops stale decoded code for it.
    func load(program p: (address: UInt64, code: [UInt8])) throws {
        try guestMemory.write(bytes: p.code, at: p.address)
        invalidateCode(physicalAddress: p.address, length: UInt64(p.code.count))
    }
}

/// CPUID answers: the deliberate feature set and the frequency leaf.
final class CPUIDTests: XCTestCase {
    func cpuid(_ leaf: UInt32) throws -> (UInt32, UInt32, UInt32, UInt32) {
        let mem = try LongModeGuest.makeMemory()
        try mem.write(bytes: [0x0F, 0xA2, 0xF4], at: 0x10000)   // cpuid; hlt
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(LongModeGuest.entryState(rip: 0x10000, rsp: 0x7F000))
        cpu[.rax] = UInt64(leaf)
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 10)
        return (UInt32(cpu[.rax]), UInt32(cpu[.rbx]), UInt32(cpu[.rcx]), UInt32(cpu[.rdx]))
    }

    func testVendorAndFeatures() throws {
        let (maxLeaf, b, c, d) = try cpuid(0)
        XCTAssertGreaterThanOrEqual(maxLeaf, 0x15)
        let vendor = [b, d, c].flatMap { v in (0..<4).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) } }
        XCTAssertEqual(String(decoding: vendor, as: UTF8.self), "GenuineIntel")
        let (_, _, ecx1, edx1) = try cpuid(1)
        // fpu tsc msr pae cx8 apic pge cmov mmx fxsr sse sse2 (MMX: modelled, MMX.swift).
        for bit in [0, 4, 5, 6, 8, 9, 13, 15, 23, 24, 25, 26] { XCTAssertNotEqual(edx1 & (1 << bit), 0, "CPUID.1:EDX bit \(bit)") }
        XCTAssertEqual(ecx1 & (1 << 26), 0, "no XSAVE")
        XCTAssertEqual(ecx1 & (1 << 23), 0, "no POPCNT")
        let (_, _, _, edx81) = try cpuid(0x8000_0001)
        XCTAssertNotEqual(edx81 & (1 << 29), 0, "long mode")
        XCTAssertNotEqual(edx81 & (1 << 11), 0, "SYSCALL")
        XCTAssertNotEqual(edx81 & (1 << 20), 0, "NX")
    }

    func testTSCFrequencyLeaf() throws {
        let (a, b, c, _) = try cpuid(0x15)
        XCTAssertEqual(UInt64(c) * UInt64(b) / UInt64(a), 1_000_000_000, "1 GHz TSC")
    }
}
