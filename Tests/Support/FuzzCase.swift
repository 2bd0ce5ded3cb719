// Differential fuzz cases: an instruction stream with the oracle's state after every instruction,
// replayed step by step on the interpreter. Shared (through SwhvTestSupport) by the
// swhv-cpu-runner executable (driven by scripts/oracle/fuzz.py) and the FuzzRegressionTests corpus.
//
// Text format, one record per line (hex numbers without 0x):
//   C <id> <rflags> <memory seed> <rax> <rcx> ... <r15>     initial state
//   B <fs base> <gs base>                                   optional, after C (default 0 0)
//   V <mxcsr> <compared mxcsr bits> <xmm0> ... <xmm15>      optional, after C (default 1f80, zeros)
//   X <code bytes>                                          loaded at FuzzLayout.code
//                                                           (x87 state: FNINIT, R0-R7 zero)
//   S <rip> <rflags> <compared-flags mask> [r<n>=<value>]... [m<addr>:<size>=<value>]...
//     [x<n>=<128-bit value>]... [mx=<mxcsr>]
//     [fx=<fcw>:<fsw>:<abridged ftw>:<compared fsw bits>:<st0>:...:<st7>] [; comment]
//                                                           (x87 state after an x87 instruction; only
//                                                           valid ST registers are compared)
//                                                           state after each instruction: changed
//                                                           registers and the memory writes it made
//   F <vector> <error code or -> <cr2 or -> [; comment]     optional, after the steps: the next
//                                                           instruction raises this exception and
//                                                           changes nothing
//   E                                                       end of case

import CPUBackend
import VMMemory
import X86Interpreter
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Guest layout of a fuzz case (scripts/oracle/fuzz_gen.py uses the same numbers).
public enum FuzzLayout {
    public static let code: UInt64 = 0x10000, codeSize = 0x10000
    public static let data: UInt64 = 0x10_0000, dataSize = 0x2000
    public static let stackLo: UInt64 = 0x1F_E000, stackTop: UInt64 = 0x20_0000
    public static let ramSize: UInt64 = 2 << 20
    public static let pml4: UInt64 = 0x1000
    /// x87 state is read with FXSAVE [x87Scratch] at x87Stub (then UD2); FNINIT, UD2 at x87Stub + 10.
    public static let x87Scratch: UInt64 = 0x18_0000, x87Stub: UInt64 = 0x1F_0000
    public static let x87StubCode: [UInt8] = [0x0F, 0xAE, 0x04, 0x25, 0x00, 0x00, 0x18, 0x00, 0x0F, 0x0B, 0xDB, 0xE3, 0x0F, 0x0B]

    /// Initial data and stack contents: splitmix64 of (seed + address * golden ratio) per 8-byte word.
    public static func fill(seed: UInt64, base: UInt64, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        for i in 0..<count / 8 {
            var z = seed &+ (base &+ UInt64(i) &* 8) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            for b in 0..<8 { out[i * 8 + b] = UInt8(truncatingIfNeeded: z >> (8 * UInt64(b))) }
        }
        return out
    }
}

public struct FuzzStep {
    public var rip: UInt64 = 0
    public var rflags: UInt64 = 0
    /// RFLAGS bits defined at this point (the oracle's undefined flags are left out).
    public var flagMask: UInt64 = 0
    public var regs: [(index: Int, value: UInt64)] = []
    public var writes: [(address: UInt64, size: Int, value: UInt64)] = []
    public var xmm: [(index: Int, value: (UInt64, UInt64))] = []
    public var mxcsr: UInt32?
    public var x87: FuzzX87?
    /// Disassembly, when the case file carries it.
    public var comment: Substring = ""
}

public struct FuzzCase {
    public var id: Substring = ""
    public var regs = [UInt64](repeating: 0, count: 16)
    public var rflags: UInt64 = 2
    public var memorySeed: UInt64 = 0
    public var fsBase: UInt64 = 0, gsBase: UInt64 = 0
    public var xmm = [(UInt64, UInt64)](repeating: (0, 0), count: 16)
    public var mxcsr: UInt32 = 0x1F80
    /// MXCSR bits compared (the oracle may not model the exception flags).
    public var mxcsrMask: UInt32 = 0xFFFF
    public var code: [UInt8] = []
    public var steps: [FuzzStep] = []
    /// The exception the instruction after the last step must raise.
    public var fault: FuzzFault?
}

/// x87 state as FXSAVE stores it.
public struct FuzzX87: Equatable {
    public var fcw: UInt16 = 0x37F
    public var fsw: UInt16 = 0
    public var ftw: UInt8 = 0
    /// FSW bits compared (undefined condition codes and exception flags are not).
    public var fswMask: UInt16 = 0
    /// ST0...ST7 as 80-bit values: (significand, sign and exponent).
    public var st = [(UInt64, UInt16)](repeating: (0, 0), count: 8)

    public static func == (a: FuzzX87, b: FuzzX87) -> Bool {
        a.fcw == b.fcw && a.fsw == b.fsw && a.ftw == b.ftw && a.fswMask == b.fswMask
            && zip(a.st, b.st).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }

    /// Whether ST(i) holds a value (FXSAVE's abridged tag is per physical register).
    public func valid(_ i: Int) -> Bool { (ftw >> UInt8((Int(fsw >> 11) + i) & 7)) & 1 != 0 }
}

public struct FuzzFault {
    public var vector: Int
    public var errorCode: UInt32?
    public var cr2: UInt64?
    public var comment: Substring = ""
}

public enum FuzzParseError: Error, CustomStringConvertible {
    case badLine(Int, String)
    public var description: String {
        switch self { case .badLine(let n, let why): "line \(n): \(why)" }
    }
}

/// Reads cases from a line stream.
public struct FuzzCaseReader {
    private var current: FuzzCase?
    private var lineNumber = 0

    public init() {}

    private static func hex(_ s: Substring) -> UInt64? { UInt64(s, radix: 16) }

    /// A 128-bit hex number as (low, high) quadwords.
    private static func hex128(_ s: Substring) -> (UInt64, UInt64)? {
        guard !s.isEmpty, s.utf8.count <= 32 else { return nil }
        let split = s.index(s.endIndex, offsetBy: -min(16, s.count))
        guard let lo = UInt64(s[split...], radix: 16) else { return nil }
        if split == s.startIndex { return (lo, 0) }
        guard let hi = UInt64(s[..<split], radix: 16) else { return nil }
        return (lo, hi)
    }

    private static func bytes(_ s: Substring) -> [UInt8]? {
        guard s.utf8.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count / 2)
        var hi: UInt8 = 0
        for (i, c) in s.utf8.enumerated() {
            let v: UInt8
            switch c {
            case 0x30...0x39: v = c - 0x30
            case 0x61...0x66: v = c - 0x61 + 10
            case 0x41...0x46: v = c - 0x41 + 10
            default: return nil
            }
            if i & 1 == 0 { hi = v } else { out.append(hi << 4 | v) }
        }
        return out
    }

    /// Feeds one line; returns a case when its `E` line arrives.
    public mutating func feed(_ line: Substring) throws(FuzzParseError) -> FuzzCase? {
        lineNumber += 1
        var text = line
        var comment: Substring = ""
        if let semi = line.firstIndex(of: ";") {
            text = line[..<semi]
            comment = line[line.index(after: semi)...].drop(while: { $0 == " " })
        }
        let f = text.split(separator: " ")
        guard let tag = f.first else { return nil }
        let n = lineNumber
        let bad = { (why: String) in FuzzParseError.badLine(n, why) }
        switch tag {
        case "C":
            guard f.count == 20, let fl = Self.hex(f[2]), let seed = Self.hex(f[3]) else { throw bad("C needs id, rflags, seed, 16 registers") }
            var c = FuzzCase()
            c.id = f[1]; c.rflags = fl; c.memorySeed = seed
            for i in 0..<16 {
                guard let v = Self.hex(f[4 + i]) else { throw bad("bad register value") }
                c.regs[i] = v
            }
            current = c
        case "B":
            guard current != nil, f.count == 3, let fs = Self.hex(f[1]), let gs = Self.hex(f[2]) else {
                throw bad("B needs the FS and GS bases, inside a case")
            }
            current?.fsBase = fs
            current?.gsBase = gs
        case "V":
            guard current != nil, f.count == 19, let mx = Self.hex(f[1]), let mask = Self.hex(f[2]),
                  mx <= 0xFFFF, mask <= 0xFFFF else {
                throw bad("V needs MXCSR, its compared bits and 16 XMM values, inside a case")
            }
            current?.mxcsr = UInt32(mx)
            current?.mxcsrMask = UInt32(mask)
            for i in 0..<16 {
                guard let v = Self.hex128(f[3 + i]) else { throw bad("bad XMM value") }
                current?.xmm[i] = v
            }
        case "X":
            guard current != nil, f.count <= 2 else { throw bad("X outside a case") }
            guard let code = f.count == 2 ? Self.bytes(f[1]) : [] else { throw bad("bad code bytes") }
            guard code.count <= FuzzLayout.codeSize else { throw bad("code larger than the code region") }
            current?.code = code
        case "S":
            guard current != nil, f.count >= 4, let rip = Self.hex(f[1]), let fl = Self.hex(f[2]),
                  let mask = Self.hex(f[3]) else { throw bad("S needs rip, rflags, mask") }
            var s = FuzzStep(rip: rip, rflags: fl, flagMask: mask)
            s.comment = comment
            for item in f.dropFirst(4) {
                if item.hasPrefix("fx=") {
                    let p = item.dropFirst(3).split(separator: ":", omittingEmptySubsequences: false)
                    guard p.count == 12, let fcw = Self.hex(p[0]), let fsw = Self.hex(p[1]), let ftw = Self.hex(p[2]),
                          let mask = Self.hex(p[3]), fcw <= 0xFFFF, fsw <= 0xFFFF, ftw <= 0xFF, mask <= 0xFFFF else {
                        throw bad("bad x87 item \(item)")
                    }
                    var x = FuzzX87(fcw: UInt16(fcw), fsw: UInt16(fsw), ftw: UInt8(ftw), fswMask: UInt16(mask))
                    for i in 0..<8 {
                        guard let v = Self.hex128(p[4 + i]), v.1 <= 0xFFFF else { throw bad("bad ST value") }
                        x.st[i] = (v.0, UInt16(v.1))
                    }
                    s.x87 = x
                    continue
                }
                if item.first == "x", let eq = item.firstIndex(of: "="),
                   let n = Int(item[item.index(after: item.startIndex)..<eq]), n >= 0, n < 16,
                   let v = Self.hex128(item[item.index(after: eq)...]) {
                    s.xmm.append((n, v))
                    continue
                }
                guard let eq = item.firstIndex(of: "="), let v = Self.hex(item[item.index(after: eq)...]) else {
                    throw bad("bad item \(item)")
                }
                let key = item[..<eq]
                if key.first == "r", let n = Int(key.dropFirst()), n >= 0, n < 16 {
                    s.regs.append((n, v))
                } else if key == "mx", v <= 0xFFFF {
                    s.mxcsr = UInt32(v)
                } else if key.first == "m", let colon = key.firstIndex(of: ":"),
                          let a = Self.hex(key[key.index(after: key.startIndex)..<colon]),
                          let n = Int(key[key.index(after: colon)...]), n >= 1, n <= 8 {
                    s.writes.append((a, n, v))
                } else {
                    throw bad("bad item \(item)")
                }
            }
            current?.steps.append(s)
        case "F":
            guard current != nil, f.count == 4, let v = Self.hex(f[1]), v < 32 else {
                throw bad("F needs a vector, an error code or -, CR2 or -, inside a case")
            }
            var fault = FuzzFault(vector: Int(v), comment: comment)
            if f[2] != "-" {
                guard let e = Self.hex(f[2]), e <= UInt32.max else { throw bad("bad error code") }
                fault.errorCode = UInt32(e)
            }
            if f[3] != "-" {
                guard let a = Self.hex(f[3]) else { throw bad("bad CR2") }
                fault.cr2 = a
            }
            current?.fault = fault
        case "E":
            guard let c = current else { throw bad("E outside a case") }
            current = nil
            return c
        default:
            throw bad("unknown record \(tag)")
        }
        return nil
    }

    /// Parses a whole file.
    public static func parseAll(_ text: String) throws(FuzzParseError) -> [FuzzCase] {
        var r = FuzzCaseReader()
        var out: [FuzzCase] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#") { r.lineNumber += 1; continue }
            if let c = try r.feed(line) { out.append(c) }
        }
        return out
    }
}

/// The first point where the interpreter and the oracle disagree.
public struct FuzzDivergence {
    /// Index into `steps`; `steps.count` for a difference found only at the end (stray writes).
    public var step: Int
    public var rip: UInt64
    public var problems: [String]
}

private final class NullIO: IOHandler {
    func portRead(_ port: UInt16, size: Int) -> UInt32 { 0xFFFF_FFFF }
    func portWrite(_ port: UInt16, size: Int, value: UInt32) {}
    func mmioRead(_ address: UInt64, size: Int) -> UInt64 { ~0 }
    func mmioWrite(_ address: UInt64, size: Int, value: UInt64) {}
}

/// One interpreter on a 2 MiB identity-mapped guest, reused across cases.
public final class FuzzMachine {
    public let memory: GuestMemory
    public let cpu: X86Interpreter
    private let io = NullIO()
    private let control = VMControl()
    /// RAM outside code/data/stack as set up; checked after each case for stray writes.
    private let pristine: [UInt8]
    private var codeExtent = 0
    /// Every block translated to host code before it runs (the whole-stream pass then runs
    /// translated: a stopper after the code ends the block where the case ends).
    public let translated: Bool
    /// One-byte INTO opcodes: #UD in 64-bit mode, wherever a branch lands.
    public static let stopper = [UInt8](repeating: 0xCE, count: 16)

    /// The case's code with the stopper where the case ends: after the last step (the code may hold
    /// more bytes than the steps ran), or after the code when the case ends with a fault.
    public static func withStopper(_ c: FuzzCase) -> [UInt8] {
        var end = c.code.count
        if c.fault == nil, let last = c.steps.last?.rip, last >= FuzzLayout.code {
            end = min(end, Int(last - FuzzLayout.code))
        }
        return Array(c.code[..<end]) + stopper
    }

    public init(translated: Bool = false) throws {
        self.translated = translated
        memory = try GuestMemory(size: FuzzLayout.ramSize)
        // PML4 -> PDPT -> PD with one 2 MiB page (present, writable, user) at 0. Accessed and dirty
        // are preset so that the page walk leaves the tables as they are.
        try memory.write(UInt64(0x2000 | 0x27), at: FuzzLayout.pml4)
        try memory.write(UInt64(0x3000 | 0x27), at: 0x2000)
        try memory.write(UInt64(0xE7), at: 0x3000)
        try memory.write(bytes: FuzzLayout.x87StubCode, at: FuzzLayout.x87Stub)
        pristine = try memory.readBytes(at: 0, count: Int(FuzzLayout.ramSize))
        cpu = X86Interpreter(memory: memory, clock: VirtualClock(), translation: translated ? .always : .off)
        cpu.interceptExceptions = true
    }

    /// Flat 64-bit ring 0 at the code, as `LongModeGuest` but with the reset descriptor tables:
    /// the oracle (scripts/oracle/fuzz_gen.py) sets up none, and exceptions are intercepted.
    public static func entryState() -> CPUEntryState {
        var s = LongModeGuest.entryState(rip: FuzzLayout.code, rsp: 0)
        s.gdt = CPUEntryState().gdt
        s.idt = CPUEntryState().idt
        return s
    }

    private func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
    private func hex128(_ v: (UInt64, UInt64)) -> String {
        let lo = String(v.0, radix: 16)
        return v.1 == 0 ? "0x" + lo : "0x" + String(v.1, radix: 16) + String(repeating: "0", count: 16 - lo.count) + lo
    }
    private var mxcsrMask: UInt32 = 0xFFFF

    public static let regNames = ["rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                           "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]

    /// Expected data and stack contents, kept up to date with the oracle's writes.
    private struct Shadow {
        var data: [UInt8]
        var stack: [UInt8]
        var regs: [UInt64]
        var xmm: [(UInt64, UInt64)]
        var mxcsr: UInt32
        /// The x87 state after the last x87 instruction, once there was one.
        var x87: FuzzX87?

        mutating func apply(_ s: FuzzStep, problems: inout [String]) {
            let L = FuzzLayout.self
            for (i, v) in s.regs { regs[i] = v }
            for (i, v) in s.xmm { xmm[i] = v }
            if let m = s.mxcsr { mxcsr = m }
            if let x = s.x87 { x87 = x }
            for w in s.writes {
                for b in 0..<w.size {
                    let a = w.address &+ UInt64(b)
                    let v = UInt8(truncatingIfNeeded: w.value >> (8 * UInt64(b)))
                    if a >= L.data && a < L.data + UInt64(L.dataSize) { data[Int(a - L.data)] = v }
                    else if a >= L.stackLo && a < L.stackTop { stack[Int(a - L.stackLo)] = v }
                    else { problems.append("oracle wrote outside data and stack at 0x\(String(a, radix: 16))") }
                }
            }
        }
    }

    /// Loads memory and registers for a case; returns the initial expected state.
    private func load(_ c: FuzzCase) throws -> Shadow {
        let L = FuzzLayout.self
        // Everything outside data and stack back to the initial image (a previous case may have
        // diverged with a stray write), then this case's code; drop stale decoded blocks.
        try pristine.withUnsafeBytes { p throws in
            try memory.write(buffer: UnsafeRawBufferPointer(rebasing: p[0..<Int(L.data)]), at: 0)
            try memory.write(buffer: UnsafeRawBufferPointer(rebasing: p[(Int(L.data) + L.dataSize)..<Int(L.stackLo)]),
                             at: L.data + UInt64(L.dataSize))
        }
        let code = translated ? FuzzMachine.withStopper(c) : c.code
        try memory.write(bytes: code, at: L.code)
        cpu.invalidateCode(physicalAddress: L.code, length: UInt64(max(codeExtent, code.count)))
        codeExtent = code.count
        let shadow = Shadow(data: L.fill(seed: c.memorySeed, base: L.data, count: L.dataSize),
                            stack: L.fill(seed: c.memorySeed, base: L.stackLo, count: Int(L.stackTop - L.stackLo)),
                            regs: c.regs, xmm: c.xmm, mxcsr: c.mxcsr, x87: nil)
        try memory.write(bytes: shadow.data, at: L.data)
        try memory.write(bytes: shadow.stack, at: L.stackLo)
        var entry = FuzzMachine.entryState()
        entry.rsp = c.regs[4]
        entry.fs.base = c.fsBase
        entry.gs.base = c.gsBase
        cpu.setEntryState(entry)
        for (i, r) in X86Interpreter.Register.allCases.enumerated() { cpu[r] = c.regs[i] }
        cpu.flags = c.rflags
        for i in 0..<16 { cpu.setXMM(i, c.xmm[i]) }
        cpu.mxcsrRegister = c.mxcsr
        runStub(FuzzLayout.x87Stub + 10)   // FNINIT
        // FNINIT keeps the register contents, which MMX instructions read: every case starts with zeros.
        for i in 0..<8 { cpu.setX87Register(i, (0, 0)) }
        cpu.interceptedException = nil
        mxcsrMask = c.mxcsrMask
        return shadow
    }

    /// Differences between the interpreter and the expected registers, RIP, defined flags and memory.
    private func compare(_ exp: Shadow, rip: UInt64, rflags: UInt64, mask: UInt64, into problems: inout [String]) throws {
        let L = FuzzLayout.self
        for (i, r) in X86Interpreter.Register.allCases.enumerated() where cpu[r] != exp.regs[i] {
            problems.append("\(FuzzMachine.regNames[i]) = \(hex(cpu[r])), expected \(hex(exp.regs[i]))")
        }
        if cpu.instructionPointer != rip {
            problems.append("rip = \(hex(cpu.instructionPointer)), expected \(hex(rip))")
        }
        for i in 0..<16 {
            let v = cpu.xmm(i)
            if v != exp.xmm[i] {
                problems.append("xmm\(i) = \(hex128(v)), expected \(hex128(exp.xmm[i]))")
            }
        }
        if let want = exp.x87 {
            let got = try readX87()
            var diffs: [String] = []
            if got.fcw != want.fcw { diffs.append("fcw \(hex(UInt64(got.fcw))) vs \(hex(UInt64(want.fcw)))") }
            if (got.fsw ^ want.fsw) & want.fswMask != 0 {
                diffs.append("fsw \(hex(UInt64(got.fsw))) vs \(hex(UInt64(want.fsw))) (compared \(hex(UInt64(want.fswMask))))")
            }
            if got.ftw != want.ftw { diffs.append("ftw \(hex(UInt64(got.ftw))) vs \(hex(UInt64(want.ftw)))") }
            for i in 0..<8 where want.valid(i) && (got.st[i].0 != want.st[i].0 || got.st[i].1 != want.st[i].1) {
                diffs.append("st\(i) \(hex(UInt64(got.st[i].1)))_\(String(got.st[i].0, radix: 16)) vs "
                             + "\(hex(UInt64(want.st[i].1)))_\(String(want.st[i].0, radix: 16))")
            }
            if !diffs.isEmpty { problems.append("x87 = " + diffs.joined(separator: ", ") + " (got vs expected)") }
        }
        if (cpu.mxcsrRegister ^ exp.mxcsr) & mxcsrMask != 0 {
            problems.append("mxcsr = \(hex(UInt64(cpu.mxcsrRegister))), expected \(hex(UInt64(exp.mxcsr))) "
                            + "(compared \(hex(UInt64(mxcsrMask))))")
        }
        if (cpu.flags ^ rflags) & mask != 0 {
            problems.append("rflags = \(hex(cpu.flags & mask)), expected \(hex(rflags & mask)) "
                            + "(differing \(hex((cpu.flags ^ rflags) & mask)), compared \(hex(mask)))")
        }
        for (base, exp) in [(L.data, exp.data), (L.stackLo, exp.stack)] {
            let ptr = try memory.checkedPointer(base, length: UInt64(exp.count))
            if exp.withUnsafeBytes({ memcmp(ptr, $0.baseAddress!, exp.count) }) == 0 { continue }
            let got = UnsafeRawBufferPointer(start: ptr, count: exp.count)
            var shown = 0
            for i in 0..<exp.count where got[i] != exp[i] {
                if shown == 6 { problems.append("..."); break }
                problems.append("mem[\(hex(base + UInt64(i)))] = \(hex(UInt64(got[i]))), expected \(hex(UInt64(exp[i])))")
                shown += 1
            }
        }
    }

    /// The expected exception (vector, error code, CR2) after `expected` retired instructions.
    private func faultProblems(_ f: FuzzFault, retired: UInt64, unimplemented: UInt64, expected: UInt64) -> [String] {
        var problems: [String] = []
        if cpu.instructionsRetired != retired &+ expected {
            problems.append("retired \(cpu.instructionsRetired &- retired) instructions, expected \(expected)")
        }
        guard let e = cpu.interceptedException else {
            return problems + ["no exception, expected #\(f.vector)"]
        }
        if e.vector != f.vector {
            var what = "exception #\(e.vector), expected #\(f.vector)"
            if cpu.unimplementedCount != unimplemented {
                what += " (unimplemented opcode \(hex(UInt64(cpu.lastUnimplemented))))"
            }
            problems.append(what)
        } else if let want = f.errorCode, e.errorCode != want {
            problems.append("error code \(e.errorCode.map { hex(UInt64($0)) } ?? "none"), expected \(hex(UInt64(want)))")
        }
        if let want = f.cr2, cpu.cr2 != want {
            problems.append("cr2 = \(hex(cpu.cr2)), expected \(hex(want))")
        }
        return problems
    }

    /// Runs the one-instruction stub at `address` and returns to the case's RIP.
    private func runStub(_ address: UInt64) {
        let rip = cpu.instructionPointer
        cpu.instructionPointer = address
        cpu.step(io: io)
        cpu.instructionPointer = rip
    }

    /// The interpreter's x87 state, through FXSAVE (the scratch page is put back as it was).
    private func readX87() throws -> FuzzX87 {
        runStub(FuzzLayout.x87Stub)
        let img = try memory.readBytes(at: FuzzLayout.x87Scratch, count: 160)
        try memory.fill(0, at: FuzzLayout.x87Scratch, length: 512)
        func u16(_ o: Int) -> UInt16 { UInt16(img[o]) | UInt16(img[o + 1]) << 8 }
        var x = FuzzX87(fcw: u16(0), fsw: u16(2), ftw: img[4])
        for i in 0..<8 {
            var m: UInt64 = 0
            for b in 0..<8 { m |= UInt64(img[32 + 16 * i + b]) << (8 * UInt64(b)) }
            x.st[i] = (m, u16(32 + 16 * i + 8))
        }
        return x
    }

    private func exceptionProblems(retired: UInt64, unimplemented: UInt64, expected: UInt64) -> [String] {
        if let e = cpu.interceptedException {
            var what = "exception #\(e.vector)" + (e.errorCode.map { " error code \(hex(UInt64($0)))" } ?? "")
            if cpu.unimplementedCount != unimplemented {
                what += " (unimplemented opcode \(hex(UInt64(cpu.lastUnimplemented))))"
            }
            return [what]
        }
        if cpu.instructionsRetired != retired &+ expected {
            return ["retired \(cpu.instructionsRetired &- retired) instructions, expected \(expected)"]
        }
        return []
    }

    /// Runs a case; nil when every step matches.
    ///
    /// Two passes: the whole stream in one `run(maxInstructions:)` (decoded blocks executed the way
    /// the VMM runs them, compared at the end), then instruction by instruction with `step`
    /// (compared after each), which also locates a difference the first pass saw.
    public func run(_ c: FuzzCase) throws -> FuzzDivergence? {
        let L = FuzzLayout.self
        var wholeProblems: [String] = []
        let faultRIP = c.steps.last?.rip ?? L.code
        if !c.steps.isEmpty || c.fault != nil {
            var exp = try load(c)
            let retired = cpu.instructionsRetired, unimplemented = cpu.unimplementedCount
            _ = cpu.run(io: io, control: control,
                        maxInstructions: UInt64(c.steps.count + (c.fault == nil && !translated ? 0 : 1)))
            if translated && c.fault == nil, cpu.interceptedException?.vector == 6,
               cpu.instructionPointer == faultRIP, cpu.instructionsRetired == retired &+ UInt64(c.steps.count) {
                cpu.interceptedException = nil   // the stopper: the expected end
            }
            if let f = c.fault {
                wholeProblems = faultProblems(f, retired: retired, unimplemented: unimplemented,
                                              expected: UInt64(c.steps.count))
            } else {
                wholeProblems = exceptionProblems(retired: retired, unimplemented: unimplemented,
                                                  expected: UInt64(c.steps.count))
            }
            for s in c.steps { exp.apply(s, problems: &wholeProblems) }
            let last = c.steps.last
            try compare(exp, rip: faultRIP, rflags: last?.rflags ?? c.rflags, mask: last?.flagMask ?? 0,
                        into: &wholeProblems)
        }

        var exp = try load(c)
        for (k, s) in c.steps.enumerated() {
            let retired = cpu.instructionsRetired, unimplemented = cpu.unimplementedCount
            cpu.step(io: io)
            var problems = exceptionProblems(retired: retired, unimplemented: unimplemented, expected: 1)
            exp.apply(s, problems: &problems)
            try compare(exp, rip: s.rip, rflags: s.rflags, mask: s.flagMask, into: &problems)
            if !problems.isEmpty { return FuzzDivergence(step: k, rip: s.rip, problems: problems) }
        }
        if let f = c.fault {
            let retired = cpu.instructionsRetired, unimplemented = cpu.unimplementedCount
            cpu.step(io: io)
            var problems = faultProblems(f, retired: retired, unimplemented: unimplemented, expected: 0)
            let last = c.steps.last
            try compare(exp, rip: faultRIP, rflags: last?.rflags ?? c.rflags, mask: last?.flagMask ?? 0, into: &problems)
            if !problems.isEmpty { return FuzzDivergence(step: c.steps.count, rip: faultRIP, problems: problems) }
        }
        // Stray writes anywhere else in RAM (page tables, code, unused memory).
        var expectedRAM = pristine
        for (i, b) in (translated ? FuzzMachine.withStopper(c) : c.code).enumerated() { expectedRAM[Int(L.code) + i] = b }
        let ram = try memory.checkedPointer(0, length: L.ramSize)
        for (lo, hi) in [(0, Int(L.data)), (Int(L.data) + L.dataSize, Int(L.stackLo))] {
            let same = expectedRAM.withUnsafeBytes { memcmp(ram + lo, $0.baseAddress! + lo, hi - lo) == 0 }
            if !same {
                let got = UnsafeRawBufferPointer(start: ram, count: Int(L.ramSize))
                let first = (lo..<hi).first { got[$0] != expectedRAM[$0] } ?? lo
                return FuzzDivergence(step: c.steps.count, rip: cpu.instructionPointer,
                                      problems: ["stray write: mem[\(hex(UInt64(first)))] = \(hex(UInt64(got[first]))), "
                                                 + "expected \(hex(UInt64(expectedRAM[first])))"])
            }
        }
        if !wholeProblems.isEmpty {
            return FuzzDivergence(step: c.steps.count, rip: cpu.instructionPointer,
                                  problems: ["whole-stream run differs at the end, step by step matched: "] + wholeProblems)
        }
        return nil
    }
}
