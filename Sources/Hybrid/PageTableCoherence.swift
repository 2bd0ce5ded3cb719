import VMMemory

/// Keeps KVM's view of guest page tables coherent with the software CPU's writes.
///
/// kvm-pvm shadows guest page tables and learns of changes only through its own write protection,
/// which writes through the host mapping (the software CPU running the guest kernel, device DMA)
/// bypass: a stale translation survives CR3 switches and TLB flushes (shared/probes). Deleting any
/// memory slot makes KVM drop all shadow page tables, at the cost of rebuilding them on demand.
///
/// So the hybrid backend watches every page-table page KVM may have shadowed: all tables reachable
/// through user-accessible entries from each CR3 it gave KVM. It keeps a copy of each as KVM may
/// have seen it. Before user code runs natively again, the watched pages the software CPU wrote are
/// compared with their copies:
/// - an entry that was present and now differs in anything but the accessed bit or a newly set
///   dirty bit (an unmap, a remap, a permission or COW change): KVM may hold a stale translation,
///   so every shadow page is dropped and the watch starts over from the current CR3;
/// - an entry that was not present and now is: KVM never cached it; if the page is an upper-level
///   table, the new child tables it links are scanned and watched too.
/// Pure bookkeeping over guest memory; the caller arms the software CPU's write watch and zaps KVM.
final class PageTableCoherence {
    let memory: GuestMemory
    /// Watched pages: the copy of each as KVM may have seen it.
    private var copies: [Int32: UnsafeMutablePointer<UInt64>] = [:]
    /// Watched pages used as upper-level tables (PML4, PDPT, PD).
    private var upper: Set<Int32> = []
    /// Roots (CR3 page addresses) whose whole tree is watched.
    private var scannedRoots: Set<UInt64> = []
    /// Beyond this many watched pages the watch starts over (zap) rather than grow.
    let maxPages: Int

    /// Statistics.
    private(set) var zaps = 0
    private(set) var scans = 0

    /// Entry bits: present, user, page size; address bits 12-51.
    static let present: UInt64 = 1, user: UInt64 = 4, pageSize: UInt64 = 0x80
    static let accessed: UInt64 = 0x20, dirty: UInt64 = 0x40
    static let addressMask: UInt64 = 0x000F_FFFF_FFFF_F000

    init(memory: GuestMemory, maxPages: Int = 4096) {
        self.memory = memory
        self.maxPages = maxPages
    }

    deinit { for p in copies.values { p.deallocate() } }

    var watchedPages: [Int32] { Array(copies.keys) }
    var watchedCount: Int { copies.count }

    enum Outcome: Equatable {
        /// KVM's shadow tables may be stale: zap them; watch `arm` (the complete new set).
        case zap(arm: [Int32])
        /// Coherent; (re)arm `arm` (pages written since, and newly watched ones).
        case coherent(arm: [Int32])
        /// The tree is too large or malformed to watch: do not run natively.
        case unwatchable
        /// Coherent, but a page user code may execute failed `verify`: do not run natively;
        /// watch `arm` all the same.
        case unportable(arm: [Int32])
    }

    /// Entry bit 63: no execute (with EFER.NXE).
    static let noExecute: UInt64 = 1 << 63

    /// Called before user code with page-table root `cr3` runs natively, with the watched pages
    /// written since the watch was last armed. `verify` (if given) is asked about every page user
    /// code could execute that it was not asked about before under this watch (`nx`: EFER.NXE).
    func prepare(cr3: UInt64, written: [Int32], nx: Bool = true, verify: ((Int32) -> Bool)? = nil) -> Outcome {
        var zap = false
        var rescan = false
        var portable = true
        var arm: [Int32] = []
        for page in written {
            guard let copy = copies[page], let cur = tablePointer(UInt64(truncatingIfNeeded: page) << 12) else { continue }
            switch PageTableCoherence.compare(old: copy, new: cur) {
            case .stale:
                zap = true
            case .grew:
                if upper.contains(page) {
                    rescan = true
                } else if let verify {
                    // New leaf entries: pages user code may now execute.
                    for i in 0..<512 where copy[i] & PageTableCoherence.present == 0 {
                        let e = cur[i]
                        if PageTableCoherence.userExecutable(e, nx: nx) && !verify(PageTableCoherence.page(e)) { portable = false }
                    }
                }
                fallthrough
            case .same:
                copy.update(from: cur, count: 512)
                arm.append(page)
            }
            if zap { break }
        }
        self.verify = verify
        self.nx = nx
        defer { self.verify = nil }
        if zap { reset() }
        if rescan { scannedRoots.removeAll() }
        let root = cr3 & PageTableCoherence.addressMask
        if !scannedRoots.contains(root) {
            scans += 1
            var visited = Set<UInt64>()
            scanPortable = true
            guard scan(table: root, level: 4, noExecAbove: false, visited: &visited, arm: &arm) else {
                reset()
                zaps += 1
                return .unwatchable
            }
            if scanPortable { scannedRoots.insert(root) } else { portable = false }
        }
        if zap {
            zaps += 1
            return portable ? .zap(arm: Array(copies.keys)) : .unportable(arm: Array(copies.keys))
        }
        return portable ? .coherent(arm: arm) : .unportable(arm: arm)
    }

    /// Makes every root be scanned again before it runs natively (pages it executes need checking again).
    func forgetScans() { scannedRoots.removeAll(keepingCapacity: true) }

    private var verify: ((Int32) -> Bool)?
    private var nx = true
    private var scanPortable = true

    static func userExecutable(_ e: UInt64, nx: Bool) -> Bool {
        e & present != 0 && e & user != 0 && !(nx && e & noExecute != 0)
    }

    static func page(_ e: UInt64) -> Int32 { Int32(truncatingIfNeeded: (e & addressMask) >> 12) }

    /// Forgets everything (after KVM dropped its shadow tables, or before a fresh start).
    func reset() {
        for p in copies.values { p.deallocate() }
        copies.removeAll(keepingCapacity: true)
        upper.removeAll(keepingCapacity: true)
        scannedRoots.removeAll(keepingCapacity: true)
    }

    enum Change { case same, grew, stale }

    /// How a table page changed, as far as a cached translation is concerned.
    static func compare(old: UnsafePointer<UInt64>, new: UnsafePointer<UInt64>) -> Change {
        var grew = false
        for i in 0..<512 {
            let o = old[i], n = new[i]
            if o == n { continue }
            if o & present == 0 {
                if n & present != 0 { grew = true }
                continue
            }
            // Present before: only A (either way) and D going 0 -> 1 leave a cached translation valid.
            let diff = o ^ n
            if diff & ~(accessed | dirty) != 0 { return .stale }
            if diff & dirty != 0 && o & dirty != 0 { return .stale }
        }
        return grew ? .grew : .same
    }

    private func tablePointer(_ pa: UInt64) -> UnsafePointer<UInt64>? {
        memory.hostPointer(pa, length: 4096).map { UnsafePointer($0.assumingMemoryBound(to: UInt64.self)) }
    }

    /// Watches `table` and, through entries user code can use, the tables below it; passes the
    /// pages user code may execute to `verify`. False when the watch would grow beyond `maxPages`.
    private func scan(table: UInt64, level: Int, noExecAbove: Bool, visited: inout Set<UInt64>,
                      arm: inout [Int32]) -> Bool {
        let key = table | UInt64(truncatingIfNeeded: level)
        guard visited.insert(key).inserted else { return true }
        // A table outside RAM cannot be shadowed by KVM (no memory slot): nothing to watch.
        guard let cur = tablePointer(table) else { return true }
        let page = Int32(truncatingIfNeeded: table >> 12)
        if copies[page] == nil {
            guard copies.count < maxPages else { return false }
            let copy = UnsafeMutablePointer<UInt64>.allocate(capacity: 512)
            copy.update(from: cur, count: 512)
            copies[page] = copy
            arm.append(page)
        }
        if level == 1 {
            if let verify, !noExecAbove {
                for i in 0..<512 where PageTableCoherence.userExecutable(cur[i], nx: nx) {
                    if !verify(PageTableCoherence.page(cur[i])) { scanPortable = false }
                }
            }
            return true
        }
        upper.insert(page)
        for i in 0..<512 {
            let e = cur[i]
            guard e & PageTableCoherence.present != 0, e & PageTableCoherence.user != 0 else { continue }
            let noExec = noExecAbove || (nx && e & PageTableCoherence.noExecute != 0)
            if level <= 3 && e & PageTableCoherence.pageSize != 0 {
                // A 2 MiB or 1 GiB page: its 4 KiB pages are checked one by one (Linux maps no
                // executable user page this large; a guest that does is not run natively).
                if let verify, !noExec {
                    if level == 3 { scanPortable = false; continue }
                    let first = (e & PageTableCoherence.addressMask & ~0x1F_FFFF) >> 12
                    for k in 0..<512 where !verify(Int32(truncatingIfNeeded: first + UInt64(truncatingIfNeeded: k))) { scanPortable = false; break }
                }
                continue
            }
            guard scan(table: e & PageTableCoherence.addressMask, level: level - 1, noExecAbove: noExec,
                       visited: &visited, arm: &arm) else {
                return false
            }
        }
        return true
    }
}
