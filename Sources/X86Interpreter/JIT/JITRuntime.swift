#if canImport(Glibc)
import Glibc
#endif

// The translator's runtime: the code cache, the entry trampoline, the context translated code sees
// in r12, the helpers it calls, and the per-block bookkeeping the run loop uses to decide what to
// translate and to find translations.

/// When the software CPU translates blocks to host code.
public enum TranslationPolicy: Sendable, Equatable {
    /// Pure interpreter.
    case off
    /// Translate a block once it has run `threshold` times (the default).
    case hot(threshold: Int)
    /// Translate every block the first time it runs (for differential testing).
    case always

    public static let standard = TranslationPolicy.hot(threshold: 16)

    /// Parses `off`, `always`, `on` or a threshold count.
    public init?(_ text: String) {
        switch text {
        case "off": self = .off
        case "on": self = .standard
        case "always": self = .always
        default:
            guard let n = Int(text), n >= 0 else { return nil }
            self = .hot(threshold: n)
        }
    }

    /// The standard policy, unless SWHV_TRANSLATE overrides it (a debugging knob).
    public static var `default`: TranslationPolicy {
        if let v = getenv("SWHV_TRANSLATE"), let p = TranslationPolicy(String(cString: v)) { return p }
        return .standard
    }
}

/// Translation statistics (`--boot-timer` prints them).
public struct TranslationStatistics: Sendable {
    public var blocksTranslated = 0
    public var blocksRejected = 0
    public var cacheFlushes = 0
    public var instructionsTranslated: UInt64 = 0
    public var instructionsInterpreted: UInt64 = 0
    public var codeBytes = 0
    public var links = 0
    /// Returns from translated code to the dispatcher by status (next, retired exit, fault, chain).
    public var exits: [UInt64] = [0, 0, 0, 0]
    /// Exits by reason: helper (or chain/fault), fall-off end, indirect-branch miss, budget, event at a back edge.
    public var exitReasons: [UInt64] = [0, 0, 0, 0, 0, 0, 0, 0]
}

typealias JITEntry = @convention(c) (UnsafeMutableRawPointer, UnsafeRawPointer) -> UInt64
typealias JITExecHelper = @convention(c) (UnsafeMutableRawPointer, UnsafeMutableRawPointer, UInt64) -> UInt64
typealias JITFlagsHelper = @convention(c) (UnsafeMutableRawPointer) -> UInt64

/// Runs one instruction in the interpreter for translated code (see `X86Interpreter.jitExecute`).
private let jitExecHelper: JITExecHelper = { ctx, insn, ripAfter in
    Unmanaged<X86Interpreter>.fromOpaque(ctx.load(fromByteOffset: Int(JITLayout.ctxSelf), as: UnsafeRawPointer.self))
        ._withUnsafeGuaranteedRef { $0.jitExecute(insn.assumingMemoryBound(to: DecodedInsn.self), ripAfter: ripAfter) }
}

/// The guest's arithmetic flags packed for `ADD AL, 0x7F; SAHF`: AH = SF ZF AF PF CF, AL = OF.
private let jitFlagsHelper: JITFlagsHelper = { ctx in
    let f = Unmanaged<X86Interpreter>.fromOpaque(ctx.load(fromByteOffset: Int(JITLayout.ctxSelf), as: UnsafeRawPointer.self))
        ._withUnsafeGuaranteedRef { $0.arithFlags() }
    return (f & 0xD5) << 8 | (f >> 11) & 1
}

final class JIT {
    let cache: CodeCache
    /// The context block translated code sees in r12 (layout: JITLayout.ctx*).
    let ctx: UnsafeMutableRawPointer
    let entry: JITEntry
    let policy: TranslationPolicy
    var stats = TranslationStatistics()

    /// Per block id (as the interpreter's links): code offset (-1 not yet, -2 not translatable),
    /// runs before translation, and the CPL the code was made for.
    let code: UnsafeMutablePointer<Int32>
    let hits: UnsafeMutablePointer<UInt16>
    let cpl: UnsafeMutablePointer<UInt8>
    /// Instructions translated code handed to the interpreter, by op (SWHV_JIT_PROFILE=1 prints them).
    let helperRuns: UnsafeMutablePointer<UInt64>
    static let opSlots = 512

    static let cacheSize = 16 << 20

    /// The indirect-branch table: RIP → translation, for RET and indirect jumps in translated code.
    /// 32-byte entries: linear RIP, code address, physical page, page generation, CPL.
    let ibtc: UnsafeMutableRawPointer
    static let ibtcEntries = 4096

    /// SWHV_PERF_MAP=1: translations are listed in /tmp/perf-PID.map, so `perf report` names them.
    private let perfMap: UnsafeMutablePointer<FILE>? = getenv("SWHV_PERF_MAP") != nil
        ? fopen("/tmp/perf-\(getpid()).map", "w") : nil

    /// SWHV_JIT_DUMP=DIR: each translation's bytes are written to DIR/RIP.bin (for objdump -b binary).
    private let dumpDir: String? = getenv("SWHV_JIT_DUMP").map { String(cString: $0) }

    func notePerf(offset: Int, size: Int, guestRIP: UInt64, cpl: Int) {
        if let dumpDir, let f = fopen("\(dumpDir)/\(String(guestRIP, radix: 16)).bin", "w") {
            fwrite(cache.address(offset), 1, size, f)
            fclose(f)
        }
        guard let perfMap else { return }
        let line = "\(String(UInt(bitPattern: cache.address(offset)), radix: 16)) \(String(size, radix: 16)) "
            + "guest_\(cpl == 3 ? "user" : "kernel")_\(String(guestRIP, radix: 16))\n"
        fputs(line, perfMap)
        fflush(perfMap)
    }

    init(policy: TranslationPolicy, blockCapacity: Int) throws(CodeCache.Failure) {
        self.policy = policy
        cache = try CodeCache(size: JIT.cacheSize)
        ctx = .allocate(byteCount: JITLayout.ctxSize, alignment: 64)
        ctx.initializeMemory(as: UInt8.self, repeating: 0, count: JITLayout.ctxSize)
        ctx.storeBytes(of: unsafeBitCast(jitExecHelper, to: UInt.self), toByteOffset: Int(JITLayout.ctxHelperExec), as: UInt.self)
        ctx.storeBytes(of: unsafeBitCast(jitFlagsHelper, to: UInt.self), toByteOffset: Int(JITLayout.ctxHelperFlags), as: UInt.self)
        code = .allocate(capacity: blockCapacity)
        hits = .allocate(capacity: blockCapacity)
        cpl = .allocate(capacity: blockCapacity)
        ibtc = .allocate(byteCount: JIT.ibtcEntries * 32, alignment: 64)
        ibtc.initializeMemory(as: UInt8.self, repeating: 0xFF, count: JIT.ibtcEntries * 32)
        ctx.storeBytes(of: ibtc, toByteOffset: Int(JITLayout.ctxIBTC), as: UnsafeMutableRawPointer.self)
        helperRuns = .allocate(capacity: 2 * JIT.opSlots + 1024)
        helperRuns.initialize(repeating: 0, count: 2 * JIT.opSlots + 1024)
        // The entry trampoline: saves the callee-saved registers, loads the fixed ones
        // (r12 context, r15 guest registers, r14 CPU state, r13 TLB, rbx entry RIP) and calls the
        // block; translated code returns to it with a status in eax.
        var a = Assembler()
        for r in [HReg.rbx, .rbp, .r12, .r13, .r14, .r15] { a.push(r) }
        a.mov(.r12, .rdi)
        a.load(8, .r15, .m(HMem(.r12, JITLayout.ctxRegs)))
        a.load(8, .r14, .m(HMem(.r12, JITLayout.ctxState)))
        a.load(8, .r13, .m(HMem(.r12, JITLayout.ctxTLB)))
        a.load(8, .rbx, .m(HMem(.r15, JITLayout.regsRip)))
        a.call(.r(.rsi))
        for r in [HReg.r15, .r14, .r13, .r12, .rbp, .rbx] { a.pop(r) }
        a.ret()
        _ = a.finish()
        let at = cache.add(a.bytes)!
        cache.reserveCurrent()
        entry = unsafeBitCast(cache.address(at), to: JITEntry.self)
    }

    deinit {
        ctx.deallocate()
        code.deallocate(); hits.deallocate(); cpl.deallocate(); helperRuns.deallocate(); ibtc.deallocate()
    }

    var threshold: Int {
        switch policy {
        case .off: return Int.max
        case .always: return 0
        case .hot(let t): return t
        }
    }

    /// A new block id exists (decodeBlock).
    @inline(__always)
    func newBlock(_ id: Int32) {
        code[Int(id)] = -1
        hits[Int(id)] = 0
    }

    func flush() {
        cache.flush()
        // Every entry points at code that is gone (an RIP of all ones never matches).
        ibtc.initializeMemory(as: UInt8.self, repeating: 0xFF, count: JIT.ibtcEntries * 32)
        stats.cacheFlushes += 1
    }

    /// Runs the translation at `offset` with a budget of `limit` instructions; returns how many
    /// retired.
    @inline(__always)
    func run(_ offset: Int32, limit: Int) -> (retired: Int, status: UInt64) {
        ctx.storeBytes(of: Int64(limit), toByteOffset: Int(JITLayout.ctxBudget), as: Int64.self)
        let status = entry(ctx, cache.address(Int(offset)))
        return (limit - Int(ctx.load(fromByteOffset: Int(JITLayout.ctxBudget), as: Int64.self)), status)
    }

    /// Records that `la` (at `cpl`) runs the translation at `offset`, of physical page `page`.
    @inline(__always)
    func noteIndirectTarget(_ la: UInt64, cpl: Int, page: Int32, gen: UInt32, offset: Int32) {
        let e = ibtc + Int(truncatingIfNeeded: ((la >> 12) ^ la) & UInt64(truncatingIfNeeded: JIT.ibtcEntries - 1)) * 32
        e.storeBytes(of: la, as: UInt64.self)
        e.storeBytes(of: UInt(bitPattern: cache.address(Int(offset))), toByteOffset: 8, as: UInt.self)
        e.storeBytes(of: UInt32(bitPattern: page), toByteOffset: 16, as: UInt32.self)
        e.storeBytes(of: gen, toByteOffset: 20, as: UInt32.self)
        e.storeBytes(of: UInt32(truncatingIfNeeded: cpl), toByteOffset: 24, as: UInt32.self)
    }

    var exitSite: UnsafeRawPointer {
        ctx.load(fromByteOffset: Int(JITLayout.ctxExitSite), as: UnsafeRawPointer.self)
    }

    /// Patches the link site at `site` to jump to the translation at `offset` (of physical page
    /// `page`, whose code generation is `gen`).
    func link(_ site: UnsafeRawPointer, page: Int32, gen: UInt32, to offset: Int32) {
        let at = site - cache.executable
        guard at >= 0 && at + LinkSite.crossEnd <= cache.used else { return }
        if site.load(fromByteOffset: 7, as: UInt8.self) == LinkSite.samePageTag {
            cache.patch32(at: at + LinkSite.samePageJump, Int32(offset) - Int32(truncatingIfNeeded: at + LinkSite.samePageEnd))
        } else {
            cache.patch32(at: at + LinkSite.pageImm, page)
            cache.patch32(at: at + LinkSite.pageDisp, page &* 4)
            cache.patch32(at: at + LinkSite.genImm, Int32(bitPattern: gen))
            cache.patch32(at: at + LinkSite.crossJump, Int32(offset) - Int32(truncatingIfNeeded: at + LinkSite.crossEnd))
        }
        stats.links += 1
    }
}

extension X86Interpreter {
    /// What the translator did so far (nil when it is off).
    public var translationStatistics: TranslationStatistics? { jit?.stats }

    /// One line for `--boot-timer`: how much ran translated; with SWHV_JIT_PROFILE=1 also the ops
    /// translated code most often handed back to the interpreter.
    public var translationReport: String? {
        guard let jit else { return translatorUnavailable.map { "translator unavailable: \($0)" } }
        let s = jit.stats
        let total = max(s.instructionsTranslated + s.instructionsInterpreted, 1)
        var line = "translated \(s.instructionsTranslated) instructions (\(s.instructionsTranslated * 100 / total)%), "
            + "interpreted \(s.instructionsInterpreted); \(s.blocksTranslated) blocks translated, "
            + "\(s.cacheFlushes) cache flushes, code cache \(jit.cache.used >> 10) KiB, \(s.links) links, "
            + "exits \(s.exits) by reason \(s.exitReasons.prefix(5))"
        if getenv("SWHV_JIT_PROFILE") != nil {
            var ops: [(UInt64, Int)] = []
            for i in 0..<JIT.opSlots where jit.helperRuns[i] > 0 { ops.append((jit.helperRuns[i], i)) }
            ops.sort { $0.0 > $1.0 }
            line += "\n  helper runs by op: " + ops.prefix(40).map { "\(Op(rawValue: UInt16(truncatingIfNeeded: $0.1)).map { "\($0)" } ?? "?") \($0.0)" }
                .joined(separator: ", ")
            var sse: [(UInt64, Int)] = []
            for i in 0..<1024 where jit.helperRuns[2 * JIT.opSlots + i] > 0 { sse.append((jit.helperRuns[2 * JIT.opSlots + i], i)) }
            sse.sort { $0.0 > $1.0 }
            line += "\n  SSE helper runs by prefix/opcode: " + sse.prefix(30).map {
                "\(["", "66 ", "F3 ", "F2 "][$0.1 >> 8])0F \(String($0.1 & 0xFF, radix: 16)) \($0.0)" }.joined(separator: ", ")
            ops = []
            for i in 0..<JIT.opSlots where jit.helperRuns[JIT.opSlots + i] > 0 { ops.append((jit.helperRuns[JIT.opSlots + i], i)) }
            ops.sort { $0.0 > $1.0 }
            line += "\n  helper exits by op: " + ops.prefix(30).map { "\(Op(rawValue: UInt16(truncatingIfNeeded: $0.1)).map { "\($0)" } ?? "?") \($0.0)" }
                .joined(separator: ", ")
        }
        return line
    }

    /// Runs one decoded instruction for translated code, exactly as the block loop would, and says
    /// whether translated code may go on (JITStatus).
    func jitExecute(_ p: UnsafeMutablePointer<DecodedInsn>, ripAfter: UInt64) -> UInt64 {
        let start = ripAfter &- UInt64(p.pointee.len)
        rip = ripAfter
        let op = p.pointee.op.rawValue
        let runs = jit.unsafelyUnwrapped.helperRuns
        runs[Int(op) & (JIT.opSlots - 1)] &+= 1
        if op == Op.sse.rawValue {
            // SSE by opcode and prefix (none, 66, F3, F2), for the profile.
            let pfx = p.pointee.pfx
            let k = pfx & Pfx.rep != 0 ? 2 : (pfx & Pfx.repne != 0 ? 3 : (pfx & Pfx.opsize != 0 ? 1 : 0))
            runs[2 * JIT.opSlots + k << 8 | Int(p.pointee.imm >> 8 & 0xFF)] &+= 1
        }
        do {
            if op >= Op.mov64RR.rawValue { try executeSpecialised(p) } else { try execute(p) }
        } catch {
            rip = start
            recordFault(error, p)
            return UInt64(JITStatus.exitFault)
        }
        if st.pointee.codeModified {
            st.pointee.codeModified = false
            return UInt64(JITStatus.exitRetired)
        }
        if rip != ripAfter || st.pointee.halted || st.pointee.shutdown || st.pointee.testStop
            || st.pointee.interruptShadow || st.pointee.flagsRest & Flag.tf != 0 {
            jit.unsafelyUnwrapped.helperRuns[JIT.opSlots + Int(op) & (JIT.opSlots - 1)] &+= 1
            return UInt64(JITStatus.exitRetired)
        }
        return UInt64(JITStatus.next)
    }

    /// Runs `block` translated if it has (or now gets) a translation for this CPL and the budget
    /// covers it; nil when the interpreter must run it. `chainFrom`: the link site of the direct
    /// exit that led here, patched to jump straight to this translation next time; on return, the
    /// site this run left through (if it can be linked).
    @inline(__always)
    func runTranslated(_ jit: JIT, _ block: BlockRef, limit: Int, chainFrom: inout UnsafeRawPointer?) -> Int? {
        guard block.id >= 0, limit >= block.count else { return nil }
        let id = Int(block.id)
        var off = jit.code[id]
        if off < 0 {
            if off == -2 { return nil }
            if Int(jit.hits[id]) < jit.threshold {
                jit.hits[id] &+= 1
                return nil
            }
            off = translateBlock(block)
            if off < 0 { return nil }
        }
        if jit.cpl[id] != UInt8(truncatingIfNeeded: st.pointee.cpl) { return nil }
        let gen = pageGen[Int(block.page)]
        if let site = chainFrom {
            jit.link(site, page: block.page, gen: gen, to: off)
        }
        jit.noteIndirectTarget(rip, cpl: st.pointee.cpl, page: block.page, gen: gen, offset: off)
        let (done, status) = jit.run(off, limit: limit)
        jit.stats.exits[Int(status & 3)] &+= 1
        jit.stats.exitReasons[Int(status >> 8 & 7)] &+= 1
        chainFrom = status == UInt64(JITStatus.exitChain) ? jit.exitSite : nil
        jit.stats.instructionsTranslated &+= UInt64(done)
        return done
    }

    /// Translates `block`; returns its code offset or -2.
    func translateBlock(_ block: BlockRef) -> Int32 {
        guard let jit else { return -2 }
        let id = Int(block.id)
        guard st.pointee.codeSize == 2 else { jit.code[id] = -2; return -2 }
        let la = (segBase[Seg.cs] &+ rip) & st.pointee.linearMask
        var t = BlockTranslator(insns: block.insns, count: block.count, entryOffset: Int(la & 0xFFF), cpl: st.pointee.cpl)
        guard let bytes = t.translate() else {
            jit.code[id] = -2
            jit.stats.blocksRejected += 1
            return -2
        }
        var at = jit.cache.add(bytes)
        if at == nil {
            // Full: drop every translation and decoded block, then place this one again.
            flushCodeCache()
            return -2
        }
        jit.code[id] = Int32(at!)
        jit.notePerf(offset: at!, size: bytes.count, guestRIP: la, cpl: st.pointee.cpl)
        jit.cpl[id] = UInt8(truncatingIfNeeded: st.pointee.cpl)
        jit.stats.blocksTranslated += 1
        jit.stats.codeBytes = jit.cache.used
        at = nil
        return jit.code[id]
    }
}
