import CPUBackend
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// 4 KiB paging: permissions, #PF error codes and CR2, A/D bits, INVLPG and CR3 reload semantics.
final class PagingTests: XCTestCase {
    static let pageTable: UInt64 = 0x9000
    static let window: UInt64 = 0x200000   // virtual 2 MiB-4 MiB goes through the 4 KiB table

    enum PTE {
        static let p: UInt64 = 1, rw: UInt64 = 2, us: UInt64 = 4, a: UInt64 = 0x20, d: UInt64 = 0x40
        static let g: UInt64 = 0x100, nx: UInt64 = 1 << 63
    }

    var mem: GuestMemory!
    var cpu: X86Interpreter!

    /// Maps window page `i` to physical 0x300000 + i * 4 KiB with `flags`.
    func map(_ i: UInt64, _ flags: UInt64, phys: UInt64? = nil) throws {
        try mem.write((phys ?? 0x300000 + i * 0x1000) | flags, at: PagingTests.pageTable + i * 8)
    }
    func pte(_ i: UInt64) throws -> UInt64 { try mem.read(UInt64.self, at: PagingTests.pageTable + i * 8) }

    override func setUp() {
        super.setUp()
        mem = try! LongModeGuest.makeMemory()
        try! mem.write(PagingTests.pageTable | 0x7, at: 0x3000 + 8)   // PD[1] -> 4 KiB table
        cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.interceptExceptions = true
    }

    /// Runs one instruction at 0x10000 with the given registers; returns the intercepted exception.
    @discardableResult
    func run(_ code: [UInt8], rbx: UInt64, user: Bool = false, cr0: UInt64? = nil, steps: Int = 1) throws -> (vector: Int, errorCode: UInt32?)? {
        try mem.write(bytes: code + [0xF4], at: 0x10000)
        cpu.invalidateCode(physicalAddress: 0x10000, length: 64)
        var s = LongModeGuest.entryState(rip: 0x10000, rsp: 0x7F000)
        if let cr0 { s.cr0 = cr0 }
        if user {
            s.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: LongModeGuest.userCS, type: 0xB, dpl: 3, db: false, l: true, g: true)
            let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: LongModeGuest.userDS, type: 0x3, dpl: 3, db: true, g: true)
            s.ss = data; s.ds = data; s.es = data
        }
        cpu.setEntryState(s)
        cpu[.rbx] = rbx
        cpu[.rax] = 0x1122_3344
        cpu.interceptedException = nil
        for _ in 0..<steps where cpu.interceptedException == nil { cpu.step(io: RecordingIO()) }
        return cpu.interceptedException
    }

    let load: [UInt8] = [0x48, 0x8B, 0x03]    // mov rax, [rbx]
    let store: [UInt8] = [0x48, 0x89, 0x03]   // mov [rbx], rax
    let jump: [UInt8] = [0xFF, 0xE3]          // jmp rbx

    func testNotPresentReadFaultsWithCR2() throws {
        let e = try run(load, rbx: PagingTests.window + 0x1008)
        XCTAssertEqual(e?.vector, 14)
        XCTAssertEqual(e?.errorCode, 0, "supervisor read of a not-present page")
        XCTAssertEqual(cpu.cr2, PagingTests.window + 0x1008)
        XCTAssertEqual(cpu.instructionPointer, 0x10000, "the faulting instruction did not complete")
    }

    func testWriteToReadOnlyPageHonoursCR0WP() throws {
        try map(2, PTE.p | PTE.us)
        let e = try run(store, rbx: PagingTests.window + 0x2010)
        XCTAssertEqual(e?.vector, 14)
        XCTAssertEqual(e?.errorCode, 3, "protection violation on write")
        // With CR0.WP clear, supervisor writes to read-only pages succeed.
        XCTAssertNil(try run(store, rbx: PagingTests.window + 0x2010, cr0: 0x8000_0033))
        XCTAssertEqual(try mem.read(UInt64.self, at: 0x302010), 0x1122_3344)
    }

    func testExecuteFromNXPageFaultsWithInstructionFetchBit() throws {
        try map(3, PTE.p | PTE.rw | PTE.us | PTE.nx)
        let e = try run(jump, rbx: PagingTests.window + 0x3000, steps: 2)
        XCTAssertEqual(e?.vector, 14)
        XCTAssertEqual(e?.errorCode, 0x11, "present + instruction fetch")
        XCTAssertEqual(cpu.cr2, PagingTests.window + 0x3000)
        XCTAssertEqual(cpu.instructionPointer, PagingTests.window + 0x3000, "fault reported at the target")
    }

    func testUserAccessToSupervisorPageFaults() throws {
        try map(4, PTE.p | PTE.rw)
        let e = try run(load, rbx: PagingTests.window + 0x4000, user: true)
        XCTAssertEqual(e?.vector, 14)
        XCTAssertEqual(e?.errorCode, 5, "present + user")
        try map(4, PTE.p | PTE.rw | PTE.us)
        cpu.invalidateTranslations()
        XCTAssertNil(try run(load, rbx: PagingTests.window + 0x4000, user: true))
    }

    func testReservedBitFaults() throws {
        try map(5, PTE.p | PTE.rw | (1 << 51))
        let e = try run(load, rbx: PagingTests.window + 0x5000)
        XCTAssertEqual(e?.vector, 14)
        XCTAssertEqual(e?.errorCode, 9, "present + reserved bit")
    }

    func testAccessedAndDirtyBits() throws {
        try map(0, PTE.p | PTE.rw | PTE.us)
        XCTAssertNil(try run(load, rbx: PagingTests.window + 8))
        XCTAssertEqual(try pte(0) & (PTE.a | PTE.d), PTE.a, "a read sets A only")
        XCTAssertNil(try run(store, rbx: PagingTests.window + 8))
        XCTAssertEqual(try pte(0) & (PTE.a | PTE.d), PTE.a | PTE.d, "a write sets D")
        XCTAssertEqual(try mem.read(UInt64.self, at: 0x300008), 0x1122_3344)
    }

    func testINVLPGAndCR3ReloadDropStaleTranslations() throws {
        // Two different instructions read the same page; the mapping changes in between.
        try mem.write(UInt64(0xAAAA), at: 0x300000)
        try mem.write(UInt64(0xBBBB), at: 0x310000)
        try map(0, PTE.p | PTE.rw)
        try map(6, PTE.p | PTE.rw | PTE.g, phys: 0x300000)
        let code: [UInt8] = [0x48, 0x8B, 0x03,               // mov rax, [rbx]
                             0x48, 0x89, 0xC1,               // mov rcx, rax
                             0x0F, 0x01, 0x3B,               // invlpg [rbx]
                             0x48, 0x8B, 0x13,               // mov rdx, [rbx]
                             0x90]
        try mem.write(bytes: code, at: 0x10000)
        cpu.setEntryState(LongModeGuest.entryState(rip: 0x10000, rsp: 0x7F000))
        cpu[.rbx] = PagingTests.window
        XCTAssertNil(cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 2))
        try map(0, PTE.p | PTE.rw, phys: 0x310000)   // remap without telling the TLB
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 2)
        XCTAssertEqual(cpu[.rcx], 0xAAAA)
        XCTAssertEqual(cpu[.rdx], 0xBBBB, "INVLPG made the new mapping visible")

        // Global pages survive a CR3 reload when CR4.PGE is set; others do not.
        XCTAssertTrue(cpu.setControlRegister(4, cpu.cr4 | 0x80))
        cpu[.rbx] = PagingTests.window + 0x6000
        try mem.write(bytes: [0x48, 0x8B, 0x03, 0x90], at: 0x10000)
        cpu.invalidateCode(physicalAddress: 0x10000, length: 16)
        cpu.instructionPointer = 0x10000
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 1)
        XCTAssertEqual(cpu[.rax], 0xAAAA)
        XCTAssertEqual(cpu.instructionPointer, 0x10003)
        try map(6, PTE.p | PTE.rw | PTE.g, phys: 0x310000)
        XCTAssertTrue(cpu.setControlRegister(3, cpu.cr3))
        cpu.instructionPointer = 0x10000
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 1)
        XCTAssertEqual(cpu[.rax], 0xAAAA, "the global translation was kept across the CR3 write")
        XCTAssertTrue(cpu.setControlRegister(4, cpu.cr4 & ~0x80))   // clearing PGE flushes everything
        cpu.instructionPointer = 0x10000
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 1)
        XCTAssertEqual(cpu[.rax], 0xBBBB)
    }
}

/// 32-bit paging modes: legacy two-level (4 KiB and PSE 4 MiB pages) and PAE.
final class LegacyPagingTests: XCTestCase {
    /// Runs `mov eax, [ebx]` in 32-bit protected mode with paging per `cr3`/`cr4`.
    func readThroughPaging(mem: GuestMemory, cr3: UInt64, cr4: UInt64, address: UInt64) throws -> (UInt64, X86Interpreter) {
        try mem.write(bytes: [0x8B, 0x03, 0xF4], at: 0x1000)   // identity-mapped by every setup below
        let gdt: [UInt64] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF]
        for (i, d) in gdt.enumerated() { try mem.write(d, at: 0x500 + UInt64(i * 8)) }
        var s = CPUEntryState()
        s.cr0 = 0x8000_0011
        s.cr3 = cr3
        s.cr4 = cr4
        s.rip = 0x1000
        s.rbx = address
        s.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, db: true, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, db: true, g: true)
        s.ds = data; s.es = data; s.ss = data
        s.gdt = DescriptorTable(base: 0x500, limit: 0x17)
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.interceptExceptions = true
        cpu.setEntryState(s)
        _ = cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 1)
        return (cpu[.rax], cpu)
    }

    func testLegacyTwoLevelPaging() throws {
        let mem = try GuestMemory(size: 8 << 20)
        try mem.write(UInt32(0x3000 | 0x3), at: 0x2000)                // PDE 0 -> page table at 0x3000
        try mem.write(UInt32(0x1000 | 0x3), at: 0x3000 + 1 * 4)        // 0x1000 -> 0x1000 (code)
        try mem.write(UInt32(0x300000 | 0x3), at: 0x3000 + 0x80 * 4)   // 0x80000 -> 0x300000
        try mem.write(UInt32(0xCAFE_F00D), at: 0x300010)
        let (v, cpu) = try readThroughPaging(mem: mem, cr3: 0x2000, cr4: 0, address: 0x80010)
        XCTAssertNil(cpu.interceptedException)
        XCTAssertEqual(v, 0xCAFE_F00D)
        XCTAssertNotEqual(try mem.read(UInt32.self, at: 0x3000 + 0x80 * 4) & 0x20, 0, "accessed bit set")
    }

    func testPSELargePage() throws {
        let mem = try GuestMemory(size: 8 << 20)
        try mem.write(UInt32(0x0000_0083), at: 0x2000)        // 4 MiB identity page at 0
        try mem.write(UInt32(0x0040_0083), at: 0x2000 + 4)    // 4-8 MiB identity
        try mem.write(UInt32(0x0000_0083), at: 0x2000 + 8)    // 8-12 MiB -> physical 0
        try mem.write(UInt32(0x1234_5678), at: 0x5008)
        let (v, cpu) = try readThroughPaging(mem: mem, cr3: 0x2000, cr4: 0x10, address: 0x80_5008)
        XCTAssertNil(cpu.interceptedException)
        XCTAssertEqual(v, 0x1234_5678)
    }

    func testPAEPaging() throws {
        let mem = try GuestMemory(size: 8 << 20)
        try mem.write(UInt64(0x5000 | 0x1), at: 0x4000)                // PDPTE 0 -> PD at 0x5000
        try mem.write(UInt64(0x0000_0083), at: 0x5000)                 // 2 MiB identity at 0
        try mem.write(UInt64(0x6000 | 0x3), at: 0x5000 + 8)            // 2-4 MiB via PT at 0x6000
        try mem.write(UInt64(0x300000 | 0x3), at: 0x6000 + 5 * 8)      // 0x205000 -> 0x300000
        try mem.write(UInt32(0x0BAD_BEEF), at: 0x300020)
        let (v, cpu) = try readThroughPaging(mem: mem, cr3: 0x4000, cr4: 0x20, address: 0x205020)
        XCTAssertNil(cpu.interceptedException)
        XCTAssertEqual(v, 0x0BAD_BEEF)
        // An unmapped PAE address faults with CR2.
        let (_, cpu2) = try readThroughPaging(mem: mem, cr3: 0x4000, cr4: 0x20, address: 0x4000_0000)
        XCTAssertEqual(cpu2.interceptedException?.vector, 14)
        XCTAssertEqual(cpu2.cr2, 0x4000_0000)
    }
}
