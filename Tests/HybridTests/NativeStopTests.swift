@testable import Hybrid
import XCTest

/// How exits from native user code are turned back into software execution.
final class NativeStopTests: XCTestCase {
    let traps = (NativeVcpu.syscallTrap, NativeVcpu.compatSyscallTrap)

    func classify(rip: UInt64, vector: UInt8?, rcx: UInt64 = 0x401002, r11: UInt64 = 0x246, cr2: UInt64 = 0,
                  rflags: UInt64 = 0x202, syscallAt: UInt64? = 0x401000) -> NativeStop {
        NativeStop.classifyShutdown(rip: rip, rcx: rcx, r11: r11, cr2: cr2, rflags: rflags, vector: vector,
                                    syscallTraps: traps, syscallBytes: { $0 == syscallAt })
    }

    func testSyscallIsTheFetchFaultAtTheTrapAddress() {
        XCTAssertEqual(classify(rip: traps.0, vector: 14, cr2: traps.0), .syscall(rip: 0x401000, rflags: 0x246))
        XCTAssertEqual(classify(rip: traps.1, vector: 14, cr2: traps.1), .syscall(rip: 0x401000, rflags: 0x246))
        // A jump to the trap address from code that is not after a SYSCALL is an ordinary fault.
        XCTAssertEqual(classify(rip: traps.0, vector: 14, cr2: traps.0, syscallAt: nil), .reexecute)
        XCTAssertEqual(classify(rip: traps.0, vector: 13, cr2: 0), .reexecute)
    }

    func testAKickRightAfterASyscallStillMeansTheSyscall() {
        XCTAssertEqual(NativeStop.completedSyscall(rip: traps.0, rcx: 0x401002, r11: 0x202, syscallTraps: traps,
                                                   syscallBytes: { $0 == 0x401000 }), .syscall(rip: 0x401000, rflags: 0x202))
        XCTAssertNil(NativeStop.completedSyscall(rip: 0x401002, rcx: 0x401002, r11: 0x202, syscallTraps: traps,
                                                 syscallBytes: { _ in true }))
    }

    func testTrapsAreDeliveredFaultsReexecuted() {
        XCTAssertEqual(classify(rip: 0x401001, vector: 3), .trap(vector: 3, singleStep: false))
        XCTAssertEqual(classify(rip: 0x401001, vector: 1, rflags: 0x302), .trap(vector: 1, singleStep: true))
        XCTAssertEqual(classify(rip: 0x401001, vector: 1, rflags: 0x202), .trap(vector: 1, singleStep: false), "ICEBP")
        XCTAssertEqual(classify(rip: 0x401001, vector: 4), .trap(vector: 4, singleStep: false))
        for v: UInt8 in [0, 6, 7, 12, 13, 14, 16, 17, 19] {
            XCTAssertEqual(classify(rip: 0x401000, vector: v, cr2: 0x1000), .reexecute, "vector \(v)")
        }
        XCTAssertEqual(classify(rip: 0x401000, vector: nil), .reexecute)
    }

    func start(_ bytes: [UInt8], at offset: Int, port: UInt16, size: Int, out: Bool, dx: UInt16 = 0) -> Int? {
        // `offset`: where RIP points into `bytes` (the exit's RIP).
        let rip: UInt64 = 0x500000 + UInt64(offset)
        return NativeStop.ioInstructionStart(rip: rip, bytes: bytes, before: offset, port: port, size: size,
                                             isOut: out, dx: dx).map { Int($0 - 0x500000) }
    }

    func testIOInstructionStart() {
        // out 0x80, al (E6 80) reported past the instruction; in al, 0x80 (E4 80) at it.
        XCTAssertEqual(start([0x90, 0xE6, 0x80, 0x90], at: 3, port: 0x80, size: 1, out: true), 1)
        XCTAssertEqual(start([0x90, 0xE4, 0x80, 0x90], at: 1, port: 0x80, size: 1, out: false), 1)
        // out dx, ax (66 EF) with DX = 0x3F8.
        XCTAssertEqual(start([0x90, 0x66, 0xEF, 0x90], at: 3, port: 0x3F8, size: 2, out: true, dx: 0x3F8), 1)
        // out dx, eax (EF), 32-bit: the 66 before it belongs to something else only if sizes differ.
        XCTAssertEqual(start([0x31, 0xC0, 0xEF, 0x90], at: 3, port: 0x3F8, size: 4, out: true, dx: 0x3F8), 2)
        // Two OUTs in a row: the one that ended at RIP, not the next.
        XCTAssertEqual(start([0xE6, 0x80, 0xE6, 0x80], at: 2, port: 0x80, size: 1, out: true), 0)
        // Port mismatch: nothing found.
        XCTAssertNil(start([0x90, 0xE6, 0x81, 0x90], at: 3, port: 0x80, size: 1, out: true))
    }
}
