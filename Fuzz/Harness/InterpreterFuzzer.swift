import CPUBackend
import SwhvTestSupport
import VMMemory
import X86Interpreter

/// Port and MMIO accesses answered with deterministic junk (a hostile platform as much as a
/// hostile guest).
final class FuzzIO: IOHandler {
    var state: UInt64 = 0
    var accesses = 0
    func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 11
    }
    func portRead(_ port: UInt16, size: Int) -> UInt32 { accesses += 1; return UInt32(truncatingIfNeeded: next()) }
    func portWrite(_ port: UInt16, size: Int, value: UInt32) { accesses += 1 }
    func mmioRead(_ address: UInt64, size: Int) -> UInt64 { accesses += 1; return next() }
    func mmioWrite(_ address: UInt64, size: Int, value: UInt64) { accesses += 1 }
}

/// Arbitrary bytes as code at 0x10000 (RAM around it filled with HLT) in a small guest (2 MiB RAM, identity-mapped, a GDT, an IDT
/// whose handlers `iretq`, a TSS), in 64-bit ring 0 or ring 3, 32-bit protected mode or real mode,
/// for a bounded number of instructions. The interpreter must neither trap nor touch host memory
/// outside guest RAM (ASan), whatever the code does to page tables, descriptor tables or itself.
///
/// One interpreter is reused across inputs (it preallocates a large decoded-code pool); guest RAM is
/// restored from a template and all decoded code invalidated before each input.
public final class InterpreterFuzzer {
    static let ramSize: UInt64 = 2 << 20
    static let code: UInt64 = 0x10000
    static let prologue: UInt64 = 0x9000
    static let handler: UInt64 = 0x8000
    static let maxInstructions = 5_000

    let memory: GuestMemory
    let cpu: X86Interpreter
    let template: [UInt8]
    let io = FuzzIO()

    /// `translation`: how the CPU runs code (the interpreter target steps it instruction by
    /// instruction; the translator target runs whole blocks under both policies and compares).
    public init(translation: TranslationPolicy = .off, clock: VirtualClock = VirtualClock()) {
        do { memory = try GuestMemory(size: InterpreterFuzzer.ramSize) } catch { fatalError("guest RAM: \(error)") }
        cpu = X86Interpreter(memory: memory, clock: clock, translation: translation)
        do { try InterpreterFuzzer.buildTemplate(memory) } catch { fatalError("template: \(error)") }
        template = (try? memory.readBytes(at: 0, count: 0x10000)) ?? []   // all tables live below the code
    }

    public func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        guard load(data) else { return ["instructions": 0] }
        let start = cpu.instructionsRetired
        var lastRIP = UInt64.max, sameRIP = 0
        for _ in 0..<InterpreterFuzzer.maxInstructions {
            if cpu.step(io: io) != nil { break }
            if cpu.interceptedException != nil || cpu.isHalted { break }
            // A long REP resumes in slices of thousands of elements with RIP unchanged: a few
            // slices exercise it; thousands only slow the fuzzer down.
            let rip = cpu.instructionPointer
            sameRIP = rip == lastRIP ? sameRIP + 1 : 0
            lastRIP = rip
            if sameRIP >= 8 { break }
        }
        let retired = cpu.instructionsRetired &- start
        checks.expect(retired <= UInt64(InterpreterFuzzer.maxInstructions),
                      "ran \(retired) instructions with a budget of \(InterpreterFuzzer.maxInstructions)")
        return ["instructions": Int(truncatingIfNeeded: retired)]
    }

    /// Runs the input's code block by block (as the VMM does) for at most `budget` instructions,
    /// stopping at HLT or an intercepted exception. Returns false when the input set up nothing.
    func runBlocks(_ data: [UInt8], budget: Int) -> Bool {
        guard load(data) else { return false }
        var left = budget
        var lastRIP = UInt64.max, sameRIP = 0
        while left > 0 {
            let before = cpu.instructionsRetired
            // In chunks, so that a long REP (which retires one instruction per slice of thousands
            // of elements) is cut short as `run` does it above.
            if cpu.run(io: io, maxInstructions: UInt64(min(left, 64))) != nil { break }
            if cpu.interceptedException != nil || cpu.isHalted { break }
            let done = Int(cpu.instructionsRetired &- before)
            if done == 0 { break }
            left -= done
            let rip = cpu.instructionPointer
            sameRIP = rip == lastRIP ? sameRIP + 1 : 0
            lastRIP = rip
            if sameRIP >= 2 { break }
        }
        return true
    }

    /// Fresh guest RAM, the input's code and its entry state; false if the entry state is refused.
    func load(_ data: [UInt8]) -> Bool {
        var input = FuzzInput(data)
        let flags = input.u8()
        io.state = UInt64(input.u32())
        let code = Array(input.rest().prefix(0x8000))
        // Fresh RAM: the template below 64 KiB (tables, handlers), then the code.
        // Raw-buffer copies: the generic `write(bytes:)` goes byte by byte.
        template.withUnsafeBytes { try? memory.write(buffer: $0, at: 0) }
        // HLT (0xF4) everywhere else: blocks end where the fuzzer's code ends, and a stray jump halts.
        // (Stepping one instruction at a time decodes a block per RIP; 48 `add [rax], al` from
        // zeroed RAM made each step cost 48 decodes.)
        try? memory.fill(0xF4, at: UInt64(template.count), length: InterpreterFuzzer.ramSize - UInt64(template.count))
        code.withUnsafeBytes { try? memory.write(buffer: $0, at: InterpreterFuzzer.code) }
        cpu.invalidateCode(physicalAddress: 0, length: InterpreterFuzzer.ramSize)
        cpu.powerOnReset()
        cpu.interceptedException = nil
        let mode = flags & 3
        cpu.interceptExceptions = flags & 4 != 0 || mode == 2
        cpu.setEntryState(entryState(mode: mode, flags: flags))
        return true
    }

    func entryState(mode: UInt8, flags: UInt8) -> CPUEntryState {
        var s = CPUEntryState()
        /// Registers point into RAM so memory operands mostly hit something.
        func pointIntoRAM(_ s: inout CPUEntryState) {
            s.rax = 0x1000; s.rbx = 0x100000; s.rcx = 0x40; s.rdx = 0x3F8
            s.rsi = 0x120000; s.rdi = 0x140000; s.rbp = 0x70000
        }
        pointIntoRAM(&s)
        switch mode {
        case 0, 1:
            // 64-bit: the prologue loads TR and irets to the code at CPL0 or CPL3.
            s = LongModeGuest.entryState(rip: InterpreterFuzzer.prologue, rsp: 0x80000)
            pointIntoRAM(&s)
            if flags & 0x10 != 0 { s.cr4 |= 0x80 }   // PGE
            // The prologue pushes SS, RSP, RFLAGS, CS, RIP from rbx..r: set through registers.
            let user = mode == 1
            s.rax = UInt64(user ? LongModeGuest.userDS : LongModeGuest.kernelDS)
            s.rcx = UInt64(user ? LongModeGuest.userCS : LongModeGuest.kernelCS)
            s.rflags = flags & 8 != 0 ? 0x202 : 0x2
        case 2:
            s.rip = InterpreterFuzzer.code
            s.rsp = 0x80000
            s.cr0 = 0x11
            s.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: LongModeGuest.code32CS, type: 0xB, db: true, g: true)
            let d = Segment(base: 0, limit: 0xFFFF_FFFF, selector: LongModeGuest.kernelDS, type: 0x3,
                            db: true, g: true)
            s.ds = d; s.es = d; s.ss = d; s.fs = d; s.gs = d
            s.gdt = DescriptorTable(base: LongModeGuest.gdtBase, limit: 0x47)
            s.idt = DescriptorTable(base: LongModeGuest.idtBase, limit: 0x7FF)
        default:
            s = .realMode(cs: UInt16(InterpreterFuzzer.code >> 4), ip: 0, sp: 0xFFF0)
            s.ss = .real(0x7000)
            s.rflags = flags & 8 != 0 ? 0x202 : 0x2
        }
        return s
    }

    static func buildTemplate(_ mem: GuestMemory) throws {
        // Real-mode IVT: every vector to 0000:8000.
        for v in 0..<256 { try mem.write(UInt32(handler), at: UInt64(v * 4)) }
        // Page tables, GDT and TSS (above the IVT).
        try LongModeGuest.install(in: mem)
        // IDT: 64-bit interrupt gates, DPL 3, vector 8 (#DF) on IST1, all to the handler.
        for v in 0..<256 { try LongModeGuest.setGate(mem, vector: v, handler: handler, ist: v == 8 ? 1 : 0) }
        // Handler: skip an error code if RSP points at one? Unknowable; just iretq (real mode: dec ax; iret).
        try mem.write(bytes: [0x48, 0xCF], at: handler)
        // Prologue: ltr 0x38; push ss(rax), rsp, rflags, cs(rcx), code; iretq.
        let p: [UInt8] = [
            0x66, 0xBA, 0x38, 0x00,              // mov dx, 0x38
            0x0F, 0x00, 0xDA,                    // ltr dx
            0x50,                                // push rax (SS)
            0x68, 0x00, 0x00, 0x08, 0x00,        // push 0x80000 (RSP)
            0x9C,                                // pushfq
            0x51,                                // push rcx (CS)
            0x68, 0x00, 0x00, 0x01, 0x00,        // push 0x10000 (RIP)
            0x48, 0x31, 0xC0,                    // xor rax, rax
            0x48, 0x31, 0xD2,                    // xor rdx, rdx
            0x48, 0xCF,                          // iretq
        ]
        try mem.write(bytes: p, at: prologue)
    }
}
