import Glibc
import CPUBackend
import VMMemory
import X86Interpreter

/// Differential fuzzing of the binary translator: the interpreter target's sandboxed guest, run
/// twice from the same state on the same input — once with every block translated to host code
/// first, once interpreted — with the clock frozen and the same deterministic device junk, block by
/// block as the VMM runs them. Registers, flags, RIP, CR2, the exception taken, the instruction
/// count and every byte of guest RAM must come out the same.
public final class TranslatorFuzzer {
    let translated = InterpreterFuzzer(translation: .always, clock: VirtualClock(frozenAt: 1_000_000))
    let interpreted = InterpreterFuzzer(translation: .off, clock: VirtualClock(frozenAt: 1_000_000))
    static let budget = 3_000

    public init() {}

    public func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        let t = translated, i = interpreted
        let startT = t.cpu.instructionsRetired, startI = i.cpu.instructionsRetired
        guard t.runBlocks(data, budget: TranslatorFuzzer.budget), i.runBlocks(data, budget: TranslatorFuzzer.budget) else {
            return ["instructions": 0]
        }
        let a = t.cpu, b = i.cpu
        var diffs: [String] = []
        for r in X86Interpreter.Register.allCases where a[r] != b[r] { diffs.append("\(r) \(hex(a[r])) vs \(hex(b[r]))") }
        if a.instructionPointer != b.instructionPointer {
            diffs.append("rip \(hex(a.instructionPointer)) vs \(hex(b.instructionPointer))")
        }
        if a.flags != b.flags { diffs.append("rflags \(hex(a.flags)) vs \(hex(b.flags))") }
        if a.cr2 != b.cr2 { diffs.append("cr2 \(hex(a.cr2)) vs \(hex(b.cr2))") }
        if a.interceptedException?.vector != b.interceptedException?.vector
            || a.interceptedException?.errorCode != b.interceptedException?.errorCode {
            diffs.append("exception \(String(describing: a.interceptedException)) vs \(String(describing: b.interceptedException))")
        }
        if a.instructionsRetired &- startT != b.instructionsRetired &- startI {
            diffs.append("retired \(a.instructionsRetired &- startT) vs \(b.instructionsRetired &- startI)")
        }
        if let p = try? t.memory.checkedPointer(0, length: InterpreterFuzzer.ramSize),
           let q = try? i.memory.checkedPointer(0, length: InterpreterFuzzer.ramSize),
           memcmp(p, q, Int(InterpreterFuzzer.ramSize)) != 0 {
            let bp = p.assumingMemoryBound(to: UInt8.self), bq = q.assumingMemoryBound(to: UInt8.self)
            let at = (0..<Int(InterpreterFuzzer.ramSize)).first { bp[$0] != bq[$0] } ?? 0
            diffs.append("RAM differs first at \(hex(UInt64(at))): \(hex(UInt64(bp[at]))) vs \(hex(UInt64(bq[at])))")
        }
        checks.expect(diffs.isEmpty, "translated vs interpreted: " + diffs.joined(separator: "; "))
        return ["instructions": Int(truncatingIfNeeded: a.instructionsRetired &- startT),
                "translated": Int(truncatingIfNeeded: a.translationStatistics?.instructionsTranslated ?? 0)]
    }

    func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}
