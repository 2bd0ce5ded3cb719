import CHost
import CPUBackend
import Synchronization

// What the vCPUs of one VM share: the code-coherence bookkeeping of guest RAM, the APIC bus, and the
// way to the devices (under the device lock). A single-vCPU interpreter gets a system of its own.

/// Decoded and translated code per physical page, for all vCPUs at once. Each vCPU has its own block
/// cache and translations, but the page generations are one array: a guest write on any vCPU to a
/// page holding code bumps its generation, and every vCPU's blocks and translations of that page
/// (which record the generation they were made at) go stale together.
///
/// A page that holds code has no writable entry in any vCPU's TLB, so writes to it take the slow
/// path, which invalidates. Marking a page withdraws write permission from every vCPU's TLB; a vCPU
/// filling a writable entry re-checks the mark after a fence, so the two never miss each other.
/// A write that raced with the decode it invalidates (a fast-path store already under way while the
/// page is being marked) is a cross-modifying-code race the guest must serialise anyway (SDM 8.1.3).
final class SharedCode: @unchecked Sendable {
    let physPages: Int
    /// Per page: generation (bumped when decoded code there is invalidated) and `PageMark` bits
    /// (decoded code exists; the hybrid backend's watches, which only a lone vCPU uses). Any mark
    /// makes guest writes to the page take the slow path. The translator reads `pageGen` directly
    /// (its context holds the pointer).
    let pageGen: UnsafeMutablePointer<UInt32>
    let codePages: UnsafeMutablePointer<UInt8>
    /// Orders mark and invalidate of the same page (the pair of values changes together).
    private let lock = DeviceLock()
    /// Every vCPU's TLB (both privilege halves).
    private var tlbs: [UnsafeMutablePointer<TLBEntry>] = []
    /// More than one vCPU: TLB fills re-check marks, LOCKed instructions use host atomics.
    private(set) var shared = false
    /// Serialises LOCKed operations that cannot be one host atomic (MMIO or page-crossing operands).
    let splitLock = DeviceLock()

    init(physPages: Int) {
        self.physPages = physPages
        pageGen = .allocate(capacity: max(physPages, 1))
        pageGen.initialize(repeating: 0, count: max(physPages, 1))
        codePages = .allocate(capacity: max(physPages, 1))
        codePages.initialize(repeating: 0, count: max(physPages, 1))
    }

    deinit {
        pageGen.deallocate()
        codePages.deallocate()
    }

    /// Adds a vCPU's TLB. Only while the VM is being built (before any vCPU runs).
    func register(tlb: UnsafeMutablePointer<TLBEntry>) {
        tlbs.append(tlb)
        shared = tlbs.count > 1
    }

    /// Marks `page` as holding decoded code (its TLB entries lose write permission on every vCPU)
    /// and returns the generation code decoded from it now is valid for, and whether the page did not
    /// hold code before. Call before reading the bytes to decode: a write that lands after the mark
    /// invalidates what is decoded.
    func markCode(_ page: Int) -> (gen: UInt32, newlyMarked: Bool) {
        // Fast path: already marked, and no invalidation completed meanwhile (generation unchanged
        // around the read of the mark; an invalidation clears the mark, then bumps the generation).
        let g1 = chost_load32_acquire(pageGen + page)
        if chost_load8_acquire(codePages + page) & PageMark.code != 0 && chost_load32_acquire(pageGen + page) == g1 {
            return (g1, false)
        }
        lock.lock()
        defer { lock.unlock() }
        let gen = pageGen[page]
        let marks = codePages[page]
        guard marks & PageMark.code == 0 else { return (gen, false) }
        chost_store8(codePages + page, marks | PageMark.code)   // a full fence: the scans below see every fill before it
        let ppage = UInt64(truncatingIfNeeded: page) << 12
        for tlb in tlbs {
            for i in 0..<(2 * TLBSize.entries) where tlb[i].phys & ~0xFFF == ppage { tlb[i].wtag = 1 }
        }
        return (gen, true)
    }

    /// A guest write (or DMA) reached `page` while it held code or a watch mark: decoded code of it is
    /// stale on every vCPU and every mark is cleared; watch marks cleared are recorded for
    /// `takeClearedWatches` (the writer may be a device thread).
    func invalidate(_ page: Int) {
        lock.lock()
        defer { lock.unlock() }
        let marks = codePages[page]
        guard marks != 0 else { return }
        chost_store8(codePages + page, 0)
        chost_store32(pageGen + page, pageGen[page] &+ 1)
        if marks & ~PageMark.code != 0 { clearedWatches.append((Int32(truncatingIfNeeded: page), marks)) }
    }

    // MARK: Watches (the hybrid backend's page-table and verified-code marks)

    /// Pages whose watch marks a write cleared, with the marks they had, since the last take.
    private var clearedWatches: [(page: Int32, marks: UInt8)] = []

    /// Adds watch `mark` to `pages`; the TLB entries of newly marked pages lose write permission, so
    /// the next write to each takes the slow path and clears the marks (`invalidate`).
    func watch<S: Sequence>(_ pages: S, mark: UInt8) where S.Element == Int32 {
        lock.lock()
        defer { lock.unlock() }
        var any = false
        for p in pages where p >= 0 && Int(p) < physPages && codePages[Int(p)] & mark == 0 {
            chost_store8(codePages + Int(p), codePages[Int(p)] | mark)
            any = true
        }
        guard any else { return }
        for tlb in tlbs {
            for i in 0..<(2 * TLBSize.entries) where tlb[i].wtag & 1 == 0 {
                let page = Int(truncatingIfNeeded: tlb[i].phys >> 12)
                if page < physPages && codePages[page] & mark != 0 { tlb[i].wtag = 1 }
            }
        }
    }

    /// Removes watch `mark` from every page.
    func unwatch(mark: UInt8) {
        lock.lock()
        defer { lock.unlock() }
        for p in 0..<physPages where codePages[p] & mark != 0 { chost_store8(codePages + p, codePages[p] & ~mark) }
    }

    /// The pages whose watch marks writes cleared since the last call.
    func takeClearedWatches() -> [(page: Int32, marks: UInt8)] {
        lock.lock()
        defer { lock.unlock() }
        guard !clearedWatches.isEmpty else { return [] }
        defer { clearedWatches.removeAll(keepingCapacity: true) }
        return clearedWatches
    }
}

/// How the vCPUs reach the platform outside the CPU: device timers, the 8259's INTR, the I/O APIC's
/// EOI broadcast and work posted by other threads, all under the device lock (the machine's I/O
/// handler takes the same lock for port and MMIO accesses).
final class DeviceAccess: @unchecked Sendable {
    let lock: DeviceLock?
    let timedDevices: [TimedDevice]
    let externalInterrupts: ExternalInterrupts?
    let levelEOI: ((UInt8) -> Void)?
    /// When the timed devices next need advancing (VM clock ns); 0 asks them now (after I/O, which
    /// may have re-armed a timer).
    let nextDeadline = Atomic<UInt64>(0)

    init(lock: DeviceLock?, timedDevices: [TimedDevice], externalInterrupts: ExternalInterrupts?,
         levelEOI: ((UInt8) -> Void)?) {
        self.lock = lock
        self.timedDevices = timedDevices
        self.externalInterrupts = externalInterrupts
        self.levelEOI = levelEOI
    }

    @inline(__always)
    func withLock<T>(_ body: () -> T) -> T {
        lock?.lock()
        defer { lock?.unlock() }
        return body()
    }

    /// Advances the timed devices if their deadline passed. Returns true if it ran them (they may have
    /// raised interrupts).
    @inline(__always)
    func serviceTimers(now: UInt64) -> Bool {
        guard now >= nextDeadline.load(ordering: .relaxed) else { return false }
        return withLock {
            // Another vCPU may have done it meanwhile.
            guard now >= nextDeadline.load(ordering: .relaxed) else { return false }
            var next = UInt64.max
            for dev in timedDevices {
                if let d = dev.advance(to: now) { next = min(next, d) }
            }
            nextDeadline.store(next, ordering: .relaxed)
            return true
        }
    }

    /// A device was accessed: a timer may have been re-armed.
    @inline(__always)
    func devicesTouched() { nextDeadline.store(0, ordering: .relaxed) }

    /// The 8259's INTA cycle, if it asserts INTR.
    func acknowledgeExternal() -> UInt8? {
        guard let ext = externalInterrupts else { return nil }
        return withLock { ext.interruptPending ? ext.acknowledge() : nil }
    }

    func endOfInterrupt(_ vector: UInt8) {
        guard let levelEOI else { return }
        withLock { levelEOI(vector) }
    }

    func runPostedWork(_ control: VMControl) {
        withLock { control.runPostedWork() }
    }
}

/// Everything the vCPUs of one VM share.
final class InterpreterSystem: @unchecked Sendable {
    let code: SharedCode
    let bus: APICBus
    let devices: DeviceAccess
    let cpuCount: Int
    /// vCPUs that cannot run until something wakes them (halted with interrupts off, or waiting for a
    /// start-up IPI). When every vCPU is, the VM has stopped for good.
    let stuck = Atomic<Int>(0)

    init(cpuCount: Int, physPages: Int, devices: DeviceAccess) {
        self.cpuCount = cpuCount
        code = SharedCode(physPages: physPages)
        bus = APICBus(count: cpuCount)
        self.devices = devices
    }
}
