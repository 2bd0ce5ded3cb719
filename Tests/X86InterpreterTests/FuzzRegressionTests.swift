import Foundation
import X86Interpreter
import XCTest
import SwhvTestSupport

/// Replays the committed differential-fuzz corpus (FuzzCorpus/*.txt, written by
/// scripts/oracle/fuzz.py: unicorn's state after every instruction, host-CPU checked) on the
/// interpreter. random.txt is a fixed-seed sample of random streams (integer, SSE, faults), x87.txt
/// the same for x87, mmx.txt for MMX (unicorn corrected to hardware, see fuzz_gen.py); regressions.txt holds cases that once diverged, each cut after the
/// instruction that was wrong (some with the host CPU's values where unicorn is wrong).
final class FuzzRegressionTests: XCTestCase {
    static var corpusDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("FuzzCorpus")
    }

    func loadCorpus(_ name: String) throws -> [FuzzCase] {
        let url = FuzzRegressionTests.corpusDirectory.appendingPathComponent(name)
        return try FuzzCaseReader.parseAll(String(contentsOf: url, encoding: .utf8))
    }

    /// Runs cases and returns one line per diverging case, naming the instruction.
    func divergences(_ cases: [FuzzCase], machine: FuzzMachine) throws -> [String] {
        var out: [String] = []
        for c in cases {
            guard let d = try machine.run(c) else { continue }
            let insn = d.step < c.steps.count ? String(c.steps[d.step].comment) : "after the last step"
            out.append("case \(c.id) step \(d.step) [\(insn)]: " + d.problems.joined(separator: "; "))
        }
        return out
    }

    func testRandomCorpus() throws {
        let cases = try loadCorpus("random.txt")
        XCTAssertGreaterThanOrEqual(cases.count, 200)
        XCTAssertGreaterThanOrEqual(cases.reduce(0) { $0 + $1.steps.count }, 5000)
        let failures = try divergences(cases, machine: FuzzMachine())
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(cases.count) cases diverge:\n" + failures.prefix(20).joined(separator: "\n"))
    }

    func testX87Corpus() throws {
        let cases = try loadCorpus("x87.txt")
        XCTAssertGreaterThanOrEqual(cases.count, 50)
        XCTAssertTrue(cases.contains { $0.steps.contains { $0.x87 != nil } }, "no x87 state in the x87 corpus")
        let failures = try divergences(cases, machine: FuzzMachine())
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(cases.count) cases diverge:\n" + failures.prefix(20).joined(separator: "\n"))
    }

    func testMMXCorpus() throws {
        let cases = try loadCorpus("mmx.txt")
        XCTAssertGreaterThanOrEqual(cases.count, 50)
        // After an MMX instruction every register is valid, so all eight are compared.
        XCTAssertTrue(cases.contains { $0.steps.contains { $0.x87?.ftw == 0xFF } }, "no MMX state in the MMX corpus")
        let failures = try divergences(cases, machine: FuzzMachine())
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(cases.count) cases diverge:\n" + failures.prefix(20).joined(separator: "\n"))
    }

    func testRegressionCorpus() throws {
        let cases = try loadCorpus("regressions.txt")
        XCTAssertFalse(cases.isEmpty)
        let failures = try divergences(cases, machine: FuzzMachine())
        XCTAssertEqual(failures.count, 0, "\(failures.count) of \(cases.count) cases diverge:\n" + failures.prefix(20).joined(separator: "\n"))
    }

    /// The harness itself: a wrong expectation must be reported at its step, with the register.
    func testHarnessReportsAWrongRegister() throws {
        var c = try XCTUnwrap(loadCorpus("random.txt").first { $0.steps.count > 10 })
        let machine = try FuzzMachine()
        XCTAssertNil(try machine.run(c))
        c.steps[5].regs.append((index: 11, value: 0xDEAD_BEEF_0000_0001))
        let d = try XCTUnwrap(machine.run(c))
        XCTAssertEqual(d.step, 5)
        XCTAssertTrue(d.problems.contains { $0.hasPrefix("r11 = ") && $0.hasSuffix("expected 0xdeadbeef00000001") }, "\(d.problems)")
    }

    /// A wrong memory expectation and a wrong defined flag are reported; an undefined flag is not.
    func testHarnessComparesMemoryAndDefinedFlagsOnly() throws {
        var c = try XCTUnwrap(loadCorpus("random.txt").first { $0.steps.count > 10 })
        let machine = try FuzzMachine()
        // A step where CF is defined (compared) and one where AF is.
        let k = try XCTUnwrap((2..<c.steps.count).first { c.steps[$0].flagMask & 0x11 == 0x11 })
        var masked = c
        masked.steps[k].rflags ^= 0x10                  // AF, taken out of the mask
        masked.steps[k].flagMask &= ~UInt64(0x10)
        XCTAssertNil(try machine.run(masked), "a flag left out of the mask must not be compared")
        c.steps[k].rflags ^= 0x1                         // CF, compared
        var d = try XCTUnwrap(machine.run(c))
        XCTAssertEqual(d.step, k)
        XCTAssertTrue(d.problems.contains { $0.hasPrefix("rflags = ") }, "\(d.problems)")
        c.steps[k].rflags ^= 0x1
        // Expect a write of the complement of what the first step finds at the end of the data area.
        let address = FuzzLayout.data + UInt64(FuzzLayout.dataSize) - 1
        let initial = FuzzLayout.fill(seed: c.memorySeed, base: FuzzLayout.data, count: FuzzLayout.dataSize).last!
        c.steps[0].writes.append((address: address, size: 1, value: UInt64(~initial)))
        d = try XCTUnwrap(machine.run(c))
        XCTAssertEqual(d.step, 0)
        XCTAssertTrue(d.problems.contains { $0 == "mem[0x101fff] = 0x\(String(initial, radix: 16)), expected 0x\(String(~initial, radix: 16))" },
                      "\(d.problems)")
    }

    func testReaderRejectsMalformedInput() {
        XCTAssertThrowsError(try FuzzCaseReader.parseAll("C 1 2 3\nE\n"))
        XCTAssertThrowsError(try FuzzCaseReader.parseAll("S 10000 2 cd5\n"))
        let header = "C x 2 0 " + Array(repeating: "0", count: 16).joined(separator: " ") + "\n"
        XCTAssertThrowsError(try FuzzCaseReader.parseAll(header + "X 0g\nE\n"))
        XCTAssertThrowsError(try FuzzCaseReader.parseAll(header + "S 10001 2 cd5 r16=1\nE\n"))
        XCTAssertThrowsError(try FuzzCaseReader.parseAll(header + "S 10001 2 cd5 m100000:9=1\nE\n"))
        XCTAssertEqual(try FuzzCaseReader.parseAll(header + "X 90\nS 10001 2 cd5 ; nop\nE\n").first?.steps.first?.comment, "nop")
    }
}
