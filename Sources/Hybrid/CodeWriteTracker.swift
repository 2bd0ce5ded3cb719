import KVM

/// Notices native writes to pages the software CPU holds decoded code for, so it drops that code
/// before running it again (a JIT, or a page that held code and was reused).
///
/// KVM's dirty log in manual-protect mode with every page initially dirty: pages start writable and
/// unlogged; clearing a page's dirty bit (KVM_CLEAR_DIRTY_LOG) write-protects it, and the first
/// native write sets the bit again. Only pages with decoded code are cleared, so other user writes
/// cost nothing. After each native run the log is read and intersected with the protected pages.
final class CodeWriteTracker {
    struct Slot {
        let slot: UInt32
        let firstPage: Int
        let pages: Int
        /// Pages write-protected in KVM because they hold decoded code.
        let protected: UnsafeMutablePointer<UInt64>
        /// Scratch for KVM_GET_DIRTY_LOG and KVM_CLEAR_DIRTY_LOG.
        let scratch: UnsafeMutablePointer<UInt64>
        var words: Int { (pages + 63) / 64 }
        var protectedCount = 0
    }

    let vm: KVMVirtualMachine
    private(set) var slots: [Slot]
    /// Statistics: pages write-protected, and native writes that invalidated decoded code.
    private(set) var protections = 0
    private(set) var invalidations = 0

    init(vm: KVMVirtualMachine, slots: [(slot: UInt32, base: UInt64, pages: Int)]) {
        self.vm = vm
        self.slots = slots.map { s in
            let words = (s.pages + 63) / 64
            let p = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
            p.initialize(repeating: 0, count: words)
            let d = UnsafeMutablePointer<UInt64>.allocate(capacity: words)
            d.initialize(repeating: 0, count: words)
            return Slot(slot: s.slot, firstPage: Int(s.base >> 12), pages: s.pages, protected: p, scratch: d)
        }
    }

    deinit { for s in slots { s.protected.deallocate(); s.scratch.deallocate() } }

    /// Write-protects `pages` (guest-physical page numbers) that are not protected yet.
    func protect(_ pages: [Int32]) throws(KVMError) {
        guard !pages.isEmpty else { return }
        for i in slots.indices {
            let s = slots[i]
            var lo = Int.max, hi = -1
            for p in pages {
                let off = Int(p) - s.firstPage
                guard off >= 0 && off < s.pages else { continue }
                let bit = UInt64(1) << UInt64(off & 63)
                if s.protected[off >> 6] & bit != 0 { continue }
                if lo == Int.max { s.scratch.update(repeating: 0, count: s.words) }
                s.scratch[off >> 6] |= bit
                lo = min(lo, off >> 6)
                hi = max(hi, off >> 6)
            }
            guard hi >= 0 else { continue }
            // One ioctl over the words that changed (first page and count must be multiples of 64,
            // except that the count may end at the slot's end).
            let count = min((hi - lo + 1) * 64, s.pages - lo * 64)
            try vm.clearDirtyLog(slot: s.slot, firstPage: UInt64(truncatingIfNeeded: lo * 64), count: UInt32(truncatingIfNeeded: count),
                                 bitmap: UnsafeMutableRawPointer(s.scratch + lo))
            for w in lo...hi {
                let newly = s.scratch[w] & ~s.protected[w]
                slots[i].protectedCount += newly.nonzeroBitCount
                protections += newly.nonzeroBitCount
                s.protected[w] |= s.scratch[w]
            }
        }
    }

    /// Reads the dirty log and calls `invalidate` for each protected page written since it was
    /// protected; those pages are unprotected (writable again) until they hold code again.
    func collectWrites(_ invalidate: (Int) -> Void) throws(KVMError) {
        for i in slots.indices where slots[i].protectedCount > 0 {
            let s = slots[i]
            try vm.getDirtyLog(slot: s.slot, into: UnsafeMutableRawPointer(s.scratch))
            for w in 0..<s.words {
                var hit = s.scratch[w] & s.protected[w]
                guard hit != 0 else { continue }
                s.protected[w] &= ~hit
                slots[i].protectedCount -= hit.nonzeroBitCount
                while hit != 0 {
                    let b = hit.trailingZeroBitCount
                    hit &= hit - 1
                    invalidations += 1
                    invalidate(s.firstPage + w * 64 + b)
                }
            }
        }
    }

    var protectedCount: Int { slots.reduce(0) { $0 + $1.protectedCount } }
}
