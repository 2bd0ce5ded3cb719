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

    static let cacheSize = 16 << 20

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
        code.deallocate(); hits.deallocate(); cpl.deallocate()
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
        stats.cacheFlushes += 1
    }

    /// Runs the translation at `offset` with a budget of `limit` instructions; returns how many
    /// retired.
    @inline(__always)
    func run(_ offset: Int32, limit: Int) -> Int {
        ctx.storeBytes(of: Int64(limit), toByteOffset: Int(JITLayout.ctxBudget), as: Int64.self)
        _ = entry(ctx, cache.address(Int(offset)))
        return limit - Int(ctx.load(fromByteOffset: Int(JITLayout.ctxBudget), as: Int64.self))
    }
}

extension X86Interpreter {
    /// What the translator did so far (nil when it is off).
    public var translationStatistics: TranslationStatistics? { jit?.stats }

    /// Runs one decoded instruction for translated code, exactly as the block loop would, and says
    /// whether translated code may go on (JITStatus).
    func jitExecute(_ p: UnsafeMutablePointer<DecodedInsn>, ripAfter: UInt64) -> UInt64 {
        let start = ripAfter &- UInt64(p.pointee.len)
        rip = ripAfter
        let op = p.pointee.op.rawValue
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
            return UInt64(JITStatus.exitRetired)
        }
        return UInt64(JITStatus.next)
    }

    /// Runs `block` translated if it has (or now gets) a translation for this CPL and the budget
    /// covers it; nil when the interpreter must run it.
    @inline(__always)
    func runTranslated(_ block: BlockRef, limit: Int) -> Int? {
        guard let jit, block.id >= 0, limit >= block.count else { return nil }
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
        let done = jit.run(off, limit: limit)
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
        guard let bytes = t.translate(force: jit.policy == .always) else {
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
        jit.cpl[id] = UInt8(truncatingIfNeeded: st.pointee.cpl)
        jit.stats.blocksTranslated += 1
        jit.stats.codeBytes = jit.cache.used
        at = nil
        return jit.code[id]
    }
}
