import CHost
import CPUBackend
import Dispatch
import VMMemory

/// The x86-64 interpreter CPU backend.
///
/// Instructions are decoded once into `DecodedInsn`s grouped in blocks (straight-line code ending at
/// a control transfer or page end), cached by physical address and invalidated when the guest
/// writes to a page holding decoded code. Blocks run through one `switch` per instruction with
/// lazy flags and a software TLB. Interrupts, timers and host requests are checked between blocks.
///
/// One vCPU. Not thread-safe: one thread runs it and calls everything here. The vCPUs of a
/// multi-processor VM (`InterpreterCPUs`) share an `InterpreterSystem`: decoded-code bookkeeping,
/// the APIC bus, and the way to the devices (under the device lock).
public final class X86Interpreter: VcpuBackend {
    public let name = "interpreter"

    let memory: GuestMemory
    let clock: VirtualClock
    let system: InterpreterSystem
    /// This vCPU's number (its initial APIC ID); 0 is the bootstrap processor.
    public let index: Int
    let apic: LocalAPIC
    /// Interrupts, INITs and start-ups other threads sent this vCPU.
    let inbox: InterruptInbox
    /// LOCKed instructions use host atomics (more than one vCPU runs in parallel).
    let atomicMemory: Bool
    /// After INIT (and from power-on for an application processor): waiting for a start-up IPI.
    public internal(set) var waitingForStartup = false
    /// An NMI is pending, and NMIs are blocked until the next IRET (one NMI handler at a time).
    var nmiPending = false
    var nmiBlocked = false

    // Hot state, in manually managed memory (see CPUState.swift).
    let st: UnsafeMutablePointer<CPUState>
    let regs: UnsafeMutableRawPointer
    let segs: UnsafeMutablePointer<SegmentCache>
    /// Effective segment bases for address computation: 0 for ES/CS/SS/DS in 64-bit mode; slot 6 is 0.
    let segBase: UnsafeMutablePointer<UInt64>
    let tlb: UnsafeMutablePointer<TLBEntry>
    /// x87/MMX/SSE state, kept in the 512-byte FXSAVE layout (see FPU.swift).
    let fx: UnsafeMutableRawPointer
    /// Bytes of an instruction being fetched outside the block cache.
    let fetchBuffer: UnsafeMutablePointer<UInt8>

    // Decoded-code cache.
    let blocks: UnsafeMutablePointer<BlockEntry>
    let pool: UnsafeMutablePointer<DecodedInsn>
    var poolUsed = 0
    /// Chain links, two per decoded block (by block id); see BlockCache.swift.
    let links: UnsafeMutablePointer<BlockLink>
    var blocksDecoded: Int32 = 0
    var chainEpoch: UInt32 {
        @inline(__always) get { st.pointee.chainEpoch }
        @inline(__always) set { st.pointee.chainEpoch = newValue }
    }
    /// Per physical page: generation (bumped when decoded code there is invalidated) and whether
    /// decoded code exists (writes to such pages take the slow path).
    let pageGen: UnsafeMutablePointer<UInt32>
    let codePages: UnsafeMutablePointer<UInt8>
    let physPages: Int
    /// Scratch space for instructions that are not cached (page-crossing, fetched from MMIO).
    let scratch: UnsafeMutablePointer<DecodedInsn>

    /// The binary translator (nil: pure interpreter, by policy or because no code cache could be made).
    let jit: JIT?
    /// Why the translator is off although it was asked for (the code cache could not be mapped).
    public let translatorUnavailable: String?

    /// The I/O handler of the current `run` call.
    var io: IOHandler?

    /// Instructions executed so far (for MIPS figures and bounded runs).
    public internal(set) var instructionsRetired: UInt64 = 0
    /// Decoded blocks entered (instructionsRetired / blocksEntered is the mean block length).
    public internal(set) var blocksEntered: UInt64 = 0
    /// Executions of opcodes this model does not implement (each raised #UD in the guest).
    public internal(set) var unimplementedCount: UInt64 = 0
    /// The opcode bytes (map << 8 | opcode) of the last unimplemented instruction seen.
    public internal(set) var lastUnimplemented: UInt32 = 0

    /// Test hook: exceptions are recorded in `interceptedException` and stop the run instead of
    /// being delivered through the IDT.
    public var interceptExceptions = false
    public var interceptedException: (vector: Int, errorCode: UInt32?)?

    /// PAUSEs executed with other vCPUs present (spin-wait back-off, see Execute.swift).
    var pausesSeen: UInt64 = 0

    // Timers.
    var pollCountdown = 0
    static let pollInterval = 8192
    let wakeup = DispatchSemaphore(value: 0)
    /// The VMControl our kicker is registered with (a vCPU normally runs under one for its life).
    weak var kickedControl: VMControl?
    /// MTRR MSRs: stored, not acted on (all memory is write-back).
    var mtrrs: [UInt32: UInt64] = [:]
    /// Hooks for sharing the guest with another CPU (HybridSupport.swift).
    var hybrid = HybridHooks()
    /// Where RDTSC counts from when not the VM clock, and the rate it advertises (HybridSupport.swift).
    var tscSource: (() -> UInt64)?
    var tscHzOverride: UInt64?

    /// A lone vCPU (a uniprocessor VM, tests): a system of its own, devices reached without a lock.
    public convenience init(memory: GuestMemory, clock: VirtualClock, externalInterrupts: ExternalInterrupts? = nil,
                            timedDevices: [TimedDevice] = [], translation: TranslationPolicy = .default) {
        let devices = DeviceAccess(lock: nil, timedDevices: timedDevices, externalInterrupts: externalInterrupts,
                                   levelEOI: nil)
        let system = InterpreterSystem(cpuCount: 1, physPages: X86Interpreter.physPages(memory), devices: devices)
        self.init(memory: memory, clock: clock, system: system, index: 0, translation: translation)
    }

    /// Guest-physical pages the code bookkeeping covers.
    static func physPages(_ memory: GuestMemory) -> Int { Int(min(memory.highestAddress, 1 << 40) >> 12) }

    /// vCPU `index` of `system`.
    init(memory: GuestMemory, clock: VirtualClock, system: InterpreterSystem, index: Int,
         translation: TranslationPolicy) {
        self.memory = memory
        self.clock = clock
        self.system = system
        self.index = index
        apic = LocalAPIC(id: UInt32(truncatingIfNeeded: index), bootstrap: index == 0)
        inbox = system.bus.inboxes[index]
        atomicMemory = system.cpuCount > 1
        // The state every instruction writes sits on cache lines of its own: two vCPUs' small
        // allocations side by side would bounce a shared line between their host cores.
        st = X86Interpreter.ownLines(CPUState.self, 1)
        st.initialize(to: CPUState())
        regs = UnsafeMutableRawPointer(X86Interpreter.ownLines(UInt64.self, Reg.count))
        regs.initializeMemory(as: UInt64.self, repeating: 0, count: Reg.count)
        segs = X86Interpreter.ownLines(SegmentCache.self, 6)
        segs.initialize(repeating: SegmentCache(), count: 6)
        var jit: JIT? = nil
        var unavailable: String? = nil
        if translation != .off {
            do { jit = try JIT(policy: translation, blockCapacity: BlockCache.poolSize) } catch { unavailable = "\(error)" }
        }
        self.jit = jit
        translatorUnavailable = unavailable
        // Translated code reads FS/GS bases from its context block: the array lives there.
        if let jit {
            segBase = (jit.ctx + Int(JITLayout.ctxSegBase)).bindMemory(to: UInt64.self, capacity: 8)
        } else {
            segBase = X86Interpreter.ownLines(UInt64.self, 8)
        }
        segBase.initialize(repeating: 0, count: 8)
        tlb = .allocate(capacity: 2 * TLBSize.entries)
        tlb.initialize(repeating: TLBEntry(), count: 2 * TLBSize.entries)
        fx = .allocate(byteCount: 512, alignment: 16)
        fetchBuffer = X86Interpreter.ownLines(UInt8.self, 16)
        blocks = .allocate(capacity: BlockCache.slots)
        blocks.initialize(repeating: BlockEntry(), count: BlockCache.slots)
        // DecodedInsn is a trivial type and entries are written before they are read, so the
        // 32 MiB pool is left uninitialised (and untouched pages are never committed).
        pool = .allocate(capacity: BlockCache.poolSize)
        // Written for each block as it is decoded; pages of unused ids are never committed.
        links = .allocate(capacity: 2 * BlockCache.poolSize)
        scratch = X86Interpreter.ownLines(DecodedInsn.self, 1)
        scratch.initialize(to: DecodedInsn())
        physPages = system.code.physPages
        pageGen = system.code.pageGen
        codePages = system.code.codePages
        system.code.register(tlb: tlb)
        if let jit {
            jit.ctx.storeBytes(of: Unmanaged.passUnretained(self).toOpaque(), toByteOffset: Int(JITLayout.ctxSelf), as: UnsafeMutableRawPointer.self)
            jit.ctx.storeBytes(of: regs, toByteOffset: Int(JITLayout.ctxRegs), as: UnsafeMutableRawPointer.self)
            jit.ctx.storeBytes(of: UnsafeMutableRawPointer(st), toByteOffset: Int(JITLayout.ctxState), as: UnsafeMutableRawPointer.self)
            jit.ctx.storeBytes(of: UnsafeMutableRawPointer(tlb), toByteOffset: Int(JITLayout.ctxTLB), as: UnsafeMutableRawPointer.self)
            jit.ctx.storeBytes(of: UnsafeMutableRawPointer(pageGen), toByteOffset: Int(JITLayout.ctxPageGen), as: UnsafeMutableRawPointer.self)
            jit.ctx.storeBytes(of: fx, toByteOffset: Int(JITLayout.ctxFX), as: UnsafeMutableRawPointer.self)
        }
        reset()
        wireAPIC()
    }

    /// Room for `count` values of `T` on whole 64-byte cache lines (freed with `deallocate()`).
    static func ownLines<T>(_: T.Type, _ count: Int) -> UnsafeMutablePointer<T> {
        let bytes = (MemoryLayout<T>.stride * count + 63) & ~63
        return UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 64), alignment: 64).bindMemory(to: T.self, capacity: count)
    }

    deinit {
        st.deallocate(); regs.deallocate(); segs.deallocate(); tlb.deallocate()
        if jit == nil { segBase.deallocate() }
        fx.deallocate(); fetchBuffer.deallocate(); blocks.deallocate(); scratch.deallocate()
        pool.deallocate(); links.deallocate()
    }

    /// Power-on state: real mode at F000:FFF0.
    func reset() {
        st.pointee = CPUState()
        regs.initializeMemory(as: UInt64.self, repeating: 0, count: Reg.count)
        for i in 0..<6 { segs[i] = SegmentCache(selector: 0, base: 0, limit: 0xFFFF, attr: 0x93) }
        segs[Seg.cs] = SegmentCache(selector: 0xF000, base: 0xFFFF_0000, limit: 0xFFFF, attr: 0x9B)
        rip = 0xFFF0
        setGPR(Reg.rdx, 0x600)
        resetFPU()
        updateMode()
        flushTLB(keepGlobal: false)
    }

    // MARK: VcpuBackend

    public func setEntryState(_ s: CPUEntryState) {
        let values = [s.rax, s.rcx, s.rdx, s.rbx, s.rsp, s.rbp, s.rsi, s.rdi]
        for (i, v) in values.enumerated() { setGPR(i, v) }
        for i in 8..<16 { setGPR(i, 0) }
        rip = s.rip
        setRFlags(s.rflags)
        st.pointee.cr0 = s.cr0 | CR0.et
        st.pointee.cr3 = s.cr3
        st.pointee.cr4 = s.cr4 & CR4.allowed
        var efer = s.efer & EFER.allowed
        if efer & EFER.lme != 0 && s.cr0 & CR0.pg != 0 && s.cr0 & CR0.pe != 0 { efer |= EFER.lma }
        st.pointee.efer = efer
        let list = [s.es, s.cs, s.ss, s.ds, s.fs, s.gs]
        for (i, seg) in list.enumerated() { segs[i] = SegmentCache(seg) }
        st.pointee.gdtBase = s.gdt.base; st.pointee.gdtLimit = UInt32(s.gdt.limit)
        st.pointee.idtBase = s.idt.base; st.pointee.idtLimit = UInt32(s.idt.limit)
        st.pointee.cpl = s.cr0 & CR0.pe != 0 ? Int(s.cs.dpl & 3) : 0
        st.pointee.halted = false
        st.pointee.shutdown = false
        updateMode()
        flushTLB(keepGlobal: false)
    }

    public func run(io: IOHandler, control: VMControl) -> VcpuStop {
        while true {
            if let stop = runLoop(io: io, control: control, limit: UInt64.max) { return stop }
        }
    }

    /// Runs at most `maxInstructions` instructions. Returns nil when the budget ran out first.
    public func run(io: IOHandler, control: VMControl, maxInstructions: UInt64) -> VcpuStop? {
        runLoop(io: io, control: control, limit: maxInstructions)
    }

    /// Runs at most `maxInstructions` instructions with no host control: stops early (returning
    /// nil) at HLT instead of waiting, like `step`. For harnesses that compare runs.
    public func run(io: IOHandler, maxInstructions: UInt64) -> VcpuStop? {
        runLoop(io: io, control: nil, limit: maxInstructions)
    }

    /// Executes one instruction (or delivers one pending interrupt). Returns a stop reason if the
    /// CPU cannot continue; a halted CPU with interrupts enabled and nothing pending returns nil.
    @discardableResult
    public func step(io: IOHandler) -> VcpuStop? {
        runLoop(io: io, control: nil, limit: 1)
    }

    /// A message-signalled interrupt from a device, to whichever local APIC it names (any thread).
    public func deliverMSI(address: UInt64, data: UInt32) {
        system.bus.deliverMSI(address: address, data: data)
    }

    /// Makes decoded code in a guest-physical range stale: for writes that bypass the CPU (device DMA).
    public func invalidateCode(physicalAddress: UInt64, length: UInt64) {
        system.code.invalidate(physicalAddress: physicalAddress, length: length)
    }

    // MARK: Mode bookkeeping

    /// Recomputes code size, linear-address width, TLB half and effective segment bases after a
    /// change to CR0/EFER/CS/CPL.
    func updateMode() {
        let lma = st.pointee.efer & EFER.lma != 0
        let cs = segs[Seg.cs]
        if st.pointee.cr0 & CR0.pe == 0 {
            st.pointee.codeSize = cs.db ? 1 : 0
            st.pointee.cpl = 0
        } else if lma && cs.l {
            st.pointee.codeSize = 2
        } else {
            st.pointee.codeSize = cs.db ? 1 : 0
        }
        st.pointee.linearMask = lma ? ~0 : 0xFFFF_FFFF
        st.pointee.stackMask = st.pointee.codeSize == 2 ? ~0 : (segs[Seg.ss].db ? 0xFFFF_FFFF : 0xFFFF)
        st.pointee.tlbHalf = st.pointee.cpl == 3 ? TLBSize.entries : 0
        refreshSegBases()
        if hybrid.active { privilegeChanged() }
    }

    func refreshSegBases() {
        bumpChainEpoch()
        let long = st.pointee.codeSize == 2
        for i in 0..<6 { segBase[i] = long && i < 4 ? 0 : segs[i].base }
        segBase[6] = 0
    }

    // MARK: The run loop

    func runLoop(io: IOHandler, control: VMControl?, limit: UInt64) -> VcpuStop? {
        self.io = io
        defer { self.io = nil }
        if let control { registerKicker(control) }
        let target = instructionsRetired &+ limit < instructionsRetired ? UInt64.max : instructionsRetired &+ limit
        var eventsWithoutProgress: UInt64 = 0
        while true {
            if st.pointee.shutdown { return .shutdown }
            if st.pointee.testStop { st.pointee.testStop = false; return nil }
            if waitingForStartup {
                guard let control else { return .haltedForever }
                if let stop = startupWait(control) { return stop }
                continue
            }
            if instructionsRetired >= target || eventsWithoutProgress >= limit { return nil }
            if pollCountdown <= 0 {
                pollCountdown = X86Interpreter.pollInterval
                if let stop = poll(control) { return stop }
            }
            if st.pointee.eventCheck && !st.pointee.interruptShadow { checkInterrupts() }
            if st.pointee.halted {
                if control == nil {
                    return st.pointee.flagsRest & Flag.if == 0 ? .haltedForever : nil
                }
                if let stop = haltWait(control!) { return stop }
                continue
            }
            var budget = target &- instructionsRetired
            if st.pointee.interruptShadow || st.pointee.flagsRest & Flag.tf != 0 { budget = 1 }
            let executed = runBlocks(budget: budget)
            // A fault whose handler faults again (an IRETQ to a bad CS, say) retires nothing, forever.
            // Each such delivery still counts towards polling and the run's limit; otherwise the
            // loop never polls again and the VM ignores the host (Ctrl-A x) for good.
            pollCountdown -= max(executed, 1)
            eventsWithoutProgress = executed == 0 ? eventsWithoutProgress + 1 : 0
        }
    }

    func registerKicker(_ control: VMControl) {
        if kickedControl === control { return }
        kickedControl = control
        let sem = wakeup
        control.addKicker { sem.signal() }
    }

    /// Host requests, posted work, mail from other vCPUs and timers; called every few thousand
    /// instructions.
    func poll(_ control: VMControl?) -> VcpuStop? {
        if let control {
            if let stop = control.stopRequest { return stop }
            if control.hasPostedWork {
                system.devices.runPostedWork(control)
                st.pointee.eventCheck = true
            }
        }
        if inbox.hasMail.load(ordering: .relaxed) { st.pointee.eventCheck = true }
        serviceTimers(now: clock.nowNs)
        return nil
    }

    func serviceTimers(now: UInt64) {
        if apic.advanceTimer(now: now) { st.pointee.eventCheck = true }
        if system.devices.serviceTimers(now: now) { st.pointee.eventCheck = true }
    }

    /// The earliest timer deadline (VM clock ns), if any.
    var nextDeadline: UInt64? {
        let d = min(apic.timerDeadline ?? .max, system.devices.nextDeadline.load(ordering: .relaxed))
        return d == .max ? nil : d
    }

    /// HLT: sleeps until an interrupt is deliverable, a timer falls due or the host kicks us. With
    /// interrupts off only an NMI or INIT can end it: a uniprocessor VM has then stopped for good; in a
    /// multiprocessor one this vCPU waits (Linux parks offline CPUs so), and the VM stops only when
    /// every vCPU is stuck.
    func haltWait(_ control: VMControl) -> VcpuStop? {
        var stuck = false
        defer { if stuck { system.stuck.subtract(1, ordering: .sequentiallyConsistent) } }
        while st.pointee.halted && !waitingForStartup {
            // A stop the guest itself requested (i8042 reset just before `cli; hlt`) wins.
            if let stop = control.stopRequest { return stop }
            let interruptsOff = st.pointee.flagsRest & Flag.if == 0
            if interruptsOff && !stuck {
                if system.cpuCount == 1 && !nmiPending { return .haltedForever }
                stuck = true
                if system.stuck.add(1, ordering: .sequentiallyConsistent).newValue == system.cpuCount {
                    control.requestStop(.haltedForever)
                }
            } else if !interruptsOff && stuck {
                stuck = false
                system.stuck.subtract(1, ordering: .sequentiallyConsistent)
            }
            if control.hasPostedWork { system.devices.runPostedWork(control); st.pointee.eventCheck = true }
            let now = clock.nowNs
            serviceTimers(now: now)
            checkInterrupts()
            if !st.pointee.halted || waitingForStartup { break }
            sleep(until: nextDeadline, now: now)
        }
        return nil
    }

    /// Waits for a start-up IPI (after INIT, or from power-on for an application processor).
    func startupWait(_ control: VMControl) -> VcpuStop? {
        registerKicker(control)
        if system.stuck.add(1, ordering: .sequentiallyConsistent).newValue == system.cpuCount {
            control.requestStop(.haltedForever)
        }
        defer { system.stuck.subtract(1, ordering: .sequentiallyConsistent) }
        while waitingForStartup {
            if let stop = control.stopRequest { return stop }
            takeMail()
            if !waitingForStartup { break }
            sleep(until: nil, now: clock.nowNs)
        }
        return nil
    }

    /// Sleeps until `deadline` (VM clock ns; at most a second), a kick, or mail from another vCPU.
    func sleep(until deadline: UInt64?, now: UInt64) {
        let ns = deadline.map { $0 > now ? min($0 - now, 1_000_000_000) : 0 } ?? 1_000_000_000
        guard ns > 0 else { return }
        // Announce the sleep before the last look at the mail: a sender that posts after this look
        // sees `sleeping` and signals (see InterruptInbox).
        inbox.sleeping.store(true, ordering: .sequentiallyConsistent)
        if !inbox.hasMail.load(ordering: .sequentiallyConsistent) {
            _ = wakeup.wait(timeout: .now() + .nanoseconds(Int(truncatingIfNeeded: ns)))
        }
        inbox.sleeping.store(false, ordering: .sequentiallyConsistent)
    }

    /// Delivers the highest-priority pending external interrupt if RFLAGS.IF allows (an NMI
    /// regardless of it).
    func checkInterrupts() {
        st.pointee.eventCheck = false
        if inbox.hasMail.load(ordering: .relaxed) { takeMail() }
        if nmiPending && !nmiBlocked {
            nmiPending = false
            nmiBlocked = true
            st.pointee.halted = false
            deliverEvent(vector: 2, kind: .external)
            st.pointee.eventCheck = true
            return
        }
        guard st.pointee.flagsRest & Flag.if != 0 else { return }
        if let v = apic.pendingVector() {
            apic.acknowledge(v)
            st.pointee.halted = false
            deliverEvent(vector: v, kind: .external)
            st.pointee.eventCheck = true
            return
        }
        if apic.acceptsExtINT, let v = system.devices.acknowledgeExternal() {
            st.pointee.halted = false
            deliverEvent(vector: Int(v), kind: .external)
            st.pointee.eventCheck = true
        }
    }

    /// Executes the `count` decoded instructions of a block entered at `entryRip`, again and again
    /// while it loops back to its own start, retiring at most `limit`. The switch is inlined here so
    /// its register saves happen once per block, not once per instruction. A fault restores RIP, is
    /// recorded in the state (delivered by the caller) and ends the block.
    @inline(never)
    func executeBlock(_ block: UnsafeMutablePointer<DecodedInsn>, _ count: Int, _ limit: Int, _ entryRip: UInt64) -> Int {
        var done = 0
        let epoch = chainEpoch
        while true {
            let n = min(count, limit - done)
            var p = block
            var j = 0
            var leftTrace = false
            while j < n {
                let start = rip
                rip = start &+ UInt64(p.pointee.len)
                let op = p.pointee.op.rawValue
                do {
                    if op >= Op.mov64RR.rawValue {
                        try executeSpecialised(p)
                        if op < Op.store64.rawValue {
                            // Writes no memory and does not branch: nothing below can apply.
                            j += 1
                            p += 1
                            continue
                        }
                    } else {
                        try execute(p)
                    }
                } catch {
                    rip = start
                    recordFault(error, p)
                    return done + j
                }
                j += 1
                if st.pointee.codeModified {
                    st.pointee.codeModified = false
                    return done + j
                }
                if p.pointee.pfx & Pfx.trace != 0 && rip != (start & ~0xFFF) | UInt64(UInt32(bitPattern: p.pointee.disp)) {
                    leftTrace = true   // the branch left the trace
                    break
                }
                p += 1
            }
            done += j
            // A loop that comes back to this block's start runs again right here, without the run
            // loop's block lookup.
            if (leftTrace || j == count) && done < limit && canLoop(entryRip, epoch) { continue }
            return done
        }
    }

    /// Whether a block may run again from its start without going back to the run loop: RIP is back
    /// at its entry, no mapping or mode changed, and nothing needs the run loop's attention.
    @inline(__always)
    func canLoop(_ entryRip: UInt64, _ epoch: UInt32) -> Bool {
        rip == entryRip && chainEpoch == epoch && !st.pointee.eventCheck && !st.pointee.halted
            && !st.pointee.shutdown && !st.pointee.testStop && !st.pointee.interruptShadow
            && st.pointee.flagsRest & Flag.tf == 0
    }

    /// Records a fault raised by `p` for delivery once the block has ended.
    func recordFault(_ error: Fault, _ p: UnsafePointer<DecodedInsn>) {
        var fault = error
        // The page walk raises #GP(0) for a non-canonical address; through SS (an RSP- or
        // RBP-based operand) that is a stack fault.
        if fault.vector == 13 && fault.code == 0 && p.pointee.mem && Int(p.pointee.seg) == Seg.ss
            && st.pointee.codeSize == 2 {
            let top = Int64(bitPattern: linearAddress(p)) >> 47
            if top != 0 && top != -1 { fault = Fault.ss(0) }
        }
        st.pointee.pendingFault = true
        st.pointee.faultVector = fault.vector
        st.pointee.faultCode = fault.code
        st.pointee.faultHasCode = fault.hasCode
    }

    /// Runs blocks from CS:RIP until `budget` instructions retired, the poll interval expires or
    /// something needs the run loop (an event to check, HLT, shutdown). Returns instructions retired.
    func runBlocks(budget: UInt64) -> Int {
        let tf = st.pointee.flagsRest & Flag.tf != 0
        let shadow = st.pointee.interruptShadow
        var total = 0
        var previous: Int32 = -1
        /// The exit of translated code that led here, to be linked to this block's translation.
        var chainSite: UnsafeRawPointer? = nil
        let jit = self.jit
        while true {
            let la = (segBase[Seg.cs] &+ rip) & st.pointee.linearMask
            let block: BlockRef
            if previous >= 0, let next = followLink(from: previous, la: la) {
                block = next
            } else {
                do {
                    block = try fetchBlock(la)
                } catch {
                    deliverFault(error)
                    return total
                }
                if previous >= 0 { setLink(from: previous, la: la, to: block) }
            }
            // Instructions this block may retire, looping included: the rest of the budget, and no
            // more than the poll interval allows (timers and host requests wait for the poll).
            let remaining = budget &- UInt64(total)
            let untilPoll = max(pollCountdown - total, 1)
            let limit = remaining < UInt64(untilPoll) ? Int(remaining) : untilPoll
            let done: Int
            if let jit, let translated = runTranslated(jit, block, limit: limit, chainFrom: &chainSite) {
                done = translated
            } else {
                chainSite = nil
                done = executeBlock(block.insns, block.count, limit, rip)
                jit?.stats.instructionsInterpreted &+= UInt64(done)
            }
            previous = block.id
            blocksEntered &+= 1
            instructionsRetired &+= UInt64(done)
            total += done
            if st.pointee.pendingFault {
                st.pointee.pendingFault = false
                deliverFault(Fault(vector: st.pointee.faultVector, code: st.pointee.faultCode, hasCode: st.pointee.faultHasCode))
                return total
            }
            if shadow || tf {
                if shadow {
                    st.pointee.interruptShadow = false
                    st.pointee.eventCheck = true
                }
                if tf && done > 0 {
                    // Single-step trap after the instruction.
                    st.pointee.dr6 |= 0x4000
                    deliverEvent(vector: 1, kind: .exception)
                }
                return total
            }
            if UInt64(total) >= budget || total >= pollCountdown || st.pointee.eventCheck || st.pointee.halted
                || st.pointee.shutdown || st.pointee.testStop || st.pointee.interruptShadow
                || st.pointee.flagsRest & Flag.tf != 0 {
                return total
            }
        }
    }
}

extension SegmentCache {
    init(_ s: Segment) {
        self.init(selector: s.selector, base: s.base, limit: s.limit,
                  attr: UInt16(s.type & 0xF) | (s.s ? 0x10 : 0) | UInt16(s.dpl & 3) << 5 | (s.present ? 0x80 : 0)
                      | (s.l ? 0x2000 : 0) | (s.db ? 0x4000 : 0) | (s.g ? 0x8000 : 0))
    }

    var segment: Segment {
        Segment(base: base, limit: limit, selector: selector, type: type, present: present, dpl: UInt8(dpl),
                db: db, s: s, l: l, g: attr & 0x8000 != 0)
    }
}
