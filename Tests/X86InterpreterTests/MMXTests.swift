import CPUBackend
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// What MMX instructions do to the x87 state, and their CR0/#MF checks: the side effects the oracle
/// vectors (unicorn, corrected to the host CPU) cover only for single instructions. Expected values
/// follow SDM vol. 1 table 9-1 and were confirmed on the host CPU.
final class MMXTests: XCTestCase {
    static let code: UInt64 = 0x10000
    static let scratch: UInt64 = 0x12000

    /// A 64-bit CPL0 guest with `code` at 0x10000; RSI points at a zeroed scratch area.
    func makeCPU(_ code: [UInt8]) throws -> (GuestMemory, X86Interpreter) {
        let mem = try LongModeGuest.makeMemory()
        try mem.write(bytes: code, at: MMXTests.code)
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(LongModeGuest.entryState(rip: MMXTests.code, rsp: 0x7F000))
        cpu.interceptExceptions = true
        cpu[.rsi] = MMXTests.scratch
        return (mem, cpu)
    }

    /// Runs `count` instructions (stopping at an exception, which is returned).
    @discardableResult
    func step(_ cpu: X86Interpreter, _ count: Int) -> Int? {
        for _ in 0..<count {
            cpu.interceptedException = nil
            cpu.step(io: RecordingIO())
            if let e = cpu.interceptedException { return e.vector }
        }
        return nil
    }

    static let one: (UInt64, UInt16) = (0x8000_0000_0000_0000, 0x3FFF)
    static let fld1Twice: [UInt8] = [0xDB, 0xE3, 0xD9, 0xE8, 0xD9, 0xE8]   // fninit; fld1; fld1 (R7, R6; TOP 6)

    func testWritingAnMMXRegisterSetsItsExponentAndEntersMMXState() throws {
        let (mem, cpu) = try makeCPU(MMXTests.fld1Twice + [0x48, 0x0F, 0x6E, 0xD8,   // movq mm3, rax
                                                           0x0F, 0xAE, 0x06])        // fxsave [rsi]
        cpu[.rax] = 0x1122_3344_5566_7788
        XCTAssertNil(step(cpu, 5))
        XCTAssertTrue(cpu.x87Register(3) == (0x1122_3344_5566_7788, 0xFFFF), "R3 = mm3 with bits 79:64 all ones")
        XCTAssertTrue(cpu.x87Register(6) == MMXTests.one && cpu.x87Register(7) == MMXTests.one, "other registers kept")
        XCTAssertEqual(cpu.x87StatusWord & 0x3800, 0, "TOP = 0")
        XCTAssertEqual(cpu.x87TagByte, 0xFF, "all registers valid")
        // FXSAVE: with TOP = 0, ST(i) is Ri.
        XCTAssertEqual(try mem.read(UInt64.self, at: MMXTests.scratch + 32 + 3 * 16), 0x1122_3344_5566_7788)
        XCTAssertEqual(try mem.read(UInt16.self, at: MMXTests.scratch + 32 + 3 * 16 + 8), 0xFFFF)
        XCTAssertEqual(try mem.read(UInt16.self, at: MMXTests.scratch + 32 + 6 * 16 + 8), 0x3FFF)
        XCTAssertEqual(try mem.read(UInt8.self, at: MMXTests.scratch + 4), 0xFF, "abridged tag byte")
        XCTAssertEqual(cpu.unimplementedCount, 0)
    }

    func testReadingAnMMXRegisterEntersMMXStateButKeepsTheRegister() throws {
        let (_, cpu) = try makeCPU(MMXTests.fld1Twice + [0x48, 0x0F, 0x7E, 0xF0])   // movq rax, mm6
        XCTAssertNil(step(cpu, 4))
        XCTAssertEqual(cpu[.rax], 0x8000_0000_0000_0000, "mm6 is the significand of R6 (1.0), not of ST(6)")
        XCTAssertTrue(cpu.x87Register(6) == MMXTests.one, "exponent untouched by a read")
        XCTAssertEqual(cpu.x87StatusWord & 0x3800, 0)
        XCTAssertEqual(cpu.x87TagByte, 0xFF)
    }

    func testEMMSEmptiesTheTagsAndClearsTop() throws {
        let (_, cpu) = try makeCPU(MMXTests.fld1Twice + [0x0F, 0x77])   // emms
        XCTAssertNil(step(cpu, 4))
        XCTAssertEqual(cpu.x87TagByte, 0)
        XCTAssertEqual(cpu.x87StatusWord & 0x3800, 0, "TOP = 0 (the host CPU agrees; QEMU keeps TOP)")
        XCTAssertTrue(cpu.x87Register(7) == MMXTests.one, "contents stay")
        XCTAssertEqual(cpu.instructionPointer, MMXTests.code + 8, "EMMS is two bytes: no ModRM")
    }

    func testCR0EmulationIsUDAndTaskSwitchedIsNM() throws {
        let paddb: [UInt8] = [0x0F, 0xFC, 0xCA]
        for (cr0Bits, vector) in [(UInt64(4), 6), (8, 7), (12, 6)] {   // EM, TS, both (EM wins)
            let (_, cpu) = try makeCPU(paddb)
            XCTAssertTrue(cpu.setControlRegister(0, cpu.cr0 | cr0Bits))
            cpu.x87StatusWord = 5 << 11
            XCTAssertEqual(step(cpu, 1), vector, "CR0 bits \(cr0Bits)")
            XCTAssertEqual(cpu.x87StatusWord, 5 << 11, "no transition on a fault")
        }
    }

    func testPendingX87ExceptionRaisesMF() throws {
        // ES set with ZE unmasked: an MMX instruction (EMMS included) and an SSE one with an MMX
        // register operand report it first; CVTPI2PS from memory touches no MMX register and runs.
        let pending: UInt16 = 0x8084 | 3 << 11
        let cases: [([UInt8], Int?)] = [
            ([0x0F, 0xFC, 0xCA], 16),          // paddb mm1, mm2
            ([0x0F, 0x77], 16),                // emms
            ([0xF3, 0x0F, 0xD6, 0xC1], 16),    // movq2dq xmm0, mm1
            ([0x0F, 0x2A, 0xC1], 16),          // cvtpi2ps xmm0, mm1
            ([0x0F, 0x2D, 0xC1], 16),          // cvtps2pi mm0, xmm1
            ([0x0F, 0x2A, 0x06], nil),         // cvtpi2ps xmm0, [rsi]
        ]
        for (code, vector) in cases {
            let (mem, cpu) = try makeCPU(code)
            try mem.write(UInt64(0xFFFF_FFFF_0000_0003), at: MMXTests.scratch)
            cpu.x87ControlWord = 0x37B
            cpu.x87StatusWord = pending
            cpu.x87TagByte = 0x18
            XCTAssertEqual(step(cpu, 1), vector, "\(code)")
            XCTAssertEqual(cpu.x87StatusWord, pending, "x87 state untouched: \(code)")
            XCTAssertEqual(cpu.x87TagByte, 0x18)
            if vector == nil {
                XCTAssertEqual(cpu.xmm(0).0, UInt64((-1.0 as Float).bitPattern) << 32 | UInt64((3.0 as Float).bitPattern))
            }
        }
    }

    func testFaultingMMXLoadChangesNothing() throws {
        let (_, cpu) = try makeCPU([0x0F, 0x6F, 0x03])   // movq mm0, [rbx]
        cpu[.rbx] = 0x4000_0000   // unmapped
        cpu.x87StatusWord = 6 << 11
        cpu.x87TagByte = 0xC0
        XCTAssertEqual(step(cpu, 1), 14)
        XCTAssertEqual(cpu.x87StatusWord, 6 << 11)
        XCTAssertEqual(cpu.x87TagByte, 0xC0)
        XCTAssertTrue(cpu.x87Register(0) == (0, 0))
    }

    func testFSAVEAndFRSTORKeepMMXState() throws {
        let (mem, cpu) = try makeCPU([0x48, 0x0F, 0x6E, 0xD8,   // movq mm3, rax
                                      0xDD, 0x36,               // fnsave [rsi] (then FNINIT)
                                      0xDD, 0x26,               // frstor [rsi]
                                      0x48, 0x0F, 0x7E, 0xDB])  // movq rbx, mm3
        cpu[.rax] = 0x0123_4567_89AB_CDEF
        XCTAssertNil(step(cpu, 2))
        // 32-bit FNSAVE image: tag word at 8, registers (ST order) from 28, 10 bytes each.
        let tags = try mem.read(UInt16.self, at: MMXTests.scratch + 8)
        XCTAssertEqual((tags >> 6) & 3, 2, "R3 (exponent all ones) is tagged special")
        XCTAssertEqual(tags & 3, 1, "R0 (zero) is tagged zero")
        XCTAssertEqual(try mem.read(UInt64.self, at: MMXTests.scratch + 28 + 30), 0x0123_4567_89AB_CDEF)
        XCTAssertEqual(try mem.read(UInt16.self, at: MMXTests.scratch + 28 + 38), 0xFFFF)
        XCTAssertEqual(cpu.x87TagByte, 0, "FNSAVE reinitializes")
        XCTAssertNil(step(cpu, 2))
        XCTAssertEqual(cpu[.rbx], 0x0123_4567_89AB_CDEF, "the bit pattern survives FRSTOR")
        XCTAssertTrue(cpu.x87Register(3) == (0x0123_4567_89AB_CDEF, 0xFFFF))
        XCTAssertEqual(cpu.x87TagByte, 0xFF)
    }

    func testFXSAVEAndFXRSTORKeepMMXState() throws {
        let (_, cpu) = try makeCPU([0x48, 0x0F, 0x6E, 0xE8,   // movq mm5, rax
                                    0x0F, 0xAE, 0x06,         // fxsave [rsi]
                                    0xDB, 0xE3, 0xD9, 0xE8,   // fninit; fld1 (R7 = 1.0, TOP 7)
                                    0x0F, 0xAE, 0x0E])        // fxrstor [rsi]
        cpu[.rax] = 0xFEDC_BA98_7654_3210
        XCTAssertNil(step(cpu, 5))
        XCTAssertTrue(cpu.x87Register(5) == (0xFEDC_BA98_7654_3210, 0xFFFF))
        XCTAssertTrue(cpu.x87Register(7) == (0, 0), "R7 restored from the image")
        XCTAssertEqual(cpu.x87StatusWord & 0x3800, 0)
        XCTAssertEqual(cpu.x87TagByte, 0xFF)
    }

    func testMMXNeedsNoOSFXSRButItsSSEFormsDo() throws {
        for (code, vector) in [([UInt8]([0x0F, 0x70, 0xCA, 0x1B]), Int?.none),   // pshufw mm1, mm2, 0x1b
                               ([0x0F, 0xE0, 0xCA], nil),                        // pavgb mm1, mm2
                               ([0x0F, 0x2A, 0xC1], 6)] {                        // cvtpi2ps xmm0, mm1
            let (_, cpu) = try makeCPU(code)
            XCTAssertTrue(cpu.setControlRegister(4, cpu.cr4 & ~0x200))
            XCTAssertEqual(step(cpu, 1), vector, "\(code)")
        }
    }

    func testUndefinedMMXEncodingsRaiseUD() throws {
        for code: [UInt8] in [[0x0F, 0x73, 0xD9, 0x01],   // psrldq on an MMX register
                              [0xF3, 0x0F, 0xFC, 0xC1],   // F3 + paddb
                              [0x66, 0x0F, 0x77],         // 66 + emms
                              [0x0F, 0xD6, 0xC1],         // 0F D6 without a prefix
                              [0x0F, 0x71, 0x01, 0x01],   // shift by immediate with a memory operand
                              [0x0F, 0xE7, 0xC1],         // movntq to a register
                              [0x0F, 0xD7, 0x01]] {       // pmovmskb from memory
            let (_, cpu) = try makeCPU(code)
            XCTAssertEqual(step(cpu, 1), 6, "\(code)")
            XCTAssertEqual(cpu.x87TagByte, 0)
            XCTAssertEqual(cpu.unimplementedCount, 0, "architecturally undefined, not unmodelled: \(code)")
        }
    }
}
