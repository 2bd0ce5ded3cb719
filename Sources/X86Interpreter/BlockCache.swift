// Decoded-instruction cache. Blocks of straight-line code are keyed by the physical address of
// their first instruction and the code size they were decoded for; they never cross a page. Each
// physical page has a generation number: decoding marks the page as holding code (so TLB write
// entries for it take the slow path), and a guest write there bumps the generation, which makes
// every block of that page stale at its next lookup. The pool is flushed wholesale when full.
//
// Chaining: each decoded block has two links remembering where control went after it (linear
// address → successor block). Following a link skips the TLB lookup and the hash probe, which are
// dependent loads that miss the cache at every block boundary. A link is valid while the chain
// epoch is unchanged (bumped by anything that could change a linear → physical mapping, its
// permissions or the code size: TLB flushes, INVLPG, mode and CPL changes, a cache flush) and the
// successor's page generation is unchanged (its code was not written).

struct BlockEntry {
    var pa: UInt64 = ~0
    var mode: UInt32 = 0
    var gen: UInt32 = 0
    var start: Int32 = 0
    var count: Int32 = 0
    var id: Int32 = -1
}

/// Where a block went next (see "Chaining" above).
struct BlockLink {
    var la: UInt64 = ~0
    var epoch: UInt32 = 0
    var gen: UInt32 = 0
    var start: Int32 = 0
    var count: Int32 = 0
    var id: Int32 = -1
    var page: Int32 = 0
}

/// A block ready to run: its instructions, how many, and its id for chaining (-1: not chainable).
struct BlockRef {
    var insns: UnsafeMutablePointer<DecodedInsn>
    var count: Int
    var id: Int32
    /// Physical page of the block's first instruction (valid when id >= 0).
    var page: Int32 = 0
}

enum BlockCache {
    static let slots = 1 << 16
    static let poolSize = 1 << 19
    static let maxBlock = 48
}

extension X86Interpreter {
    @inline(__always)
    func blockSlot(_ pa: UInt64) -> Int {
        Int(truncatingIfNeeded: (pa &* 0x9E37_79B9_7F4A_7C15) >> 48)
    }

    /// The decoded block starting at linear address `la` (CS:RIP).
    @inline(__always)
    func fetchBlock(_ la: UInt64) throws(Fault) -> BlockRef {
        let e = tlbSlot(la)
        let pa: UInt64
        if e.pointee.xtag == la & ~0xFFF {
            pa = (e.pointee.phys & ~0xFFF) | (la & 0xFFF)
        } else {
            pa = try translate(la, .exec, user: st.pointee.cpl == 3)
        }
        let mode = UInt32(st.pointee.codeSize)
        let slot = blocks + blockSlot(pa)
        let page = Int(pa >> 12)
        if slot.pointee.pa == pa && slot.pointee.mode == mode && page < physPages
            && slot.pointee.gen == pageGen[page] {
            return BlockRef(insns: pool + Int(slot.pointee.start), count: Int(slot.pointee.count), id: slot.pointee.id,
                            page: Int32(truncatingIfNeeded: page))
        }
        return try decodeBlock(la: la, pa: pa, mode: mode, slot: slot)
    }

    func decodeBlock(la: UInt64, pa: UInt64, mode: UInt32, slot: UnsafeMutablePointer<BlockEntry>) throws(Fault)
        -> BlockRef {
        let page = Int(pa >> 12)
        guard page < physPages, let host = memory.hostPointer(pa, length: 1) else {
            // Executing from MMIO (ROM, device memory): decode one instruction without caching.
            return try decodeUncached(la: la)
        }
        // Every block holds at least one instruction, so block ids (and links) stay below poolSize too.
        if poolUsed + BlockCache.maxBlock > BlockCache.poolSize { flushCodeCache() }
        // Marked before the bytes are read: a write on any vCPU from here on invalidates the block.
        let (gen, newlyMarked) = system.code.markCode(page)
        if newlyMarked { noteCodePageDecoded(page) }
        let base = pool + poolUsed
        // Decode by page offset: in 64-bit code a block is a trace that follows direct jumps and
        // calls, and the not-taken side of conditional branches, as long as they stay in this page.
        var pageOffset = Int(pa & 0xFFF)
        let pageBytes = UnsafePointer((host - pageOffset).assumingMemoryBound(to: UInt8.self))
        var n = 0
        while n < BlockCache.maxBlock && pageOffset < 4096 {
            var dec = Decoder(bytes: pageBytes + pageOffset, available: 4096 - pageOffset, codeSize: Int(mode))
            do {
                base[n] = try dec.decode()
            } catch .needMore {
                if n == 0 { return try decodeUncached(la: la) }
                break
            } catch {
                // Over 15 bytes: #GP(0) when executed.
                base[n] = DecodedInsn(op: .ud, len: 15, sub: 13)
                n += 1
                break
            }
            let next = pageOffset + Int(base[n].len)
            n += 1
            if !dec.endsBlock {
                pageOffset = next
                continue
            }
            guard mode == 2 else { break }
            let op = base[n - 1].op
            let expected: Int
            switch op {
            case .jcc:
                expected = next
            case .jmpRel, .callRel:
                expected = next + Int(Int64(bitPattern: base[n - 1].imm))
            default:
                expected = -1
            }
            guard expected >= 0 && expected < 4096 else { break }
            base[n - 1].pfx |= Pfx.trace
            base[n - 1].disp = Int32(expected)
            pageOffset = expected
        }
        for i in 0..<n { base[i].specialise(mode: mode) }
        poolUsed += n
        let id = blocksDecoded
        blocksDecoded += 1
        links[2 * Int(id)] = BlockLink()
        links[2 * Int(id) + 1] = BlockLink()
        jit?.newBlock(id)
        slot.pointee = BlockEntry(pa: pa, mode: mode, gen: gen, start: Int32(base - pool), count: Int32(n), id: id)
        return BlockRef(insns: base, count: n, id: id, page: Int32(truncatingIfNeeded: page))
    }

    /// Decodes a single instruction into the scratch slot: for instructions that cross a page or
    /// live outside RAM. Fetch faults are raised in order (first page, then second page).
    func decodeUncached(la: UInt64) throws(Fault) -> BlockRef {
        let user = st.pointee.cpl == 3
        var fetched = 0
        var pa = try translate(la, .exec, user: user)
        while true {
            var dec = Decoder(bytes: UnsafePointer(fetchBuffer), available: fetched, codeSize: st.pointee.codeSize)
            do {
                scratch.pointee = try dec.decode()
                return BlockRef(insns: scratch, count: 1, id: -1)
            } catch .needMore {
                // Fetch one more byte, translating when crossing into the next page.
                let a = (la &+ UInt64(fetched)) & st.pointee.linearMask
                if fetched > 0 && a & 0xFFF == 0 { pa = try translate(a, .exec, user: user) }
                else if fetched > 0 { pa &+= 1 }
                fetchBuffer[fetched] = UInt8(truncatingIfNeeded: physRead(pa, 1))
                fetched += 1
            } catch {
                scratch.pointee = DecodedInsn(op: .ud, len: 15, sub: 13)
                return BlockRef(insns: scratch, count: 1, id: -1)
            }
        }
    }

    /// Marks a physical page's decoded code stale (on every vCPU).
    func invalidateCodePage(_ page: Int) {
        system.code.invalidate(page)
        st.pointee.codeModified = true
    }

    func flushCodeCache() {
        for i in 0..<BlockCache.slots { blocks[i] = BlockEntry() }
        poolUsed = 0
        blocksDecoded = 0
        jit?.flush()
        bumpChainEpoch()
    }

    /// Invalidates every chain link (see "Chaining" above).
    @inline(__always)
    func bumpChainEpoch() {
        chainEpoch &+= 1
        if chainEpoch == 0 { chainEpoch = 1 }   // 0 marks a link never set
    }

    /// The block after block `from` (which just ran) at linear address `la`, through its links.
    @inline(__always)
    func followLink(from: Int32, la: UInt64) -> BlockRef? {
        let l = links + 2 * Int(from)
        for i in 0..<2 {
            let e = l + i
            if e.pointee.la == la && e.pointee.epoch == chainEpoch && pageGen[Int(e.pointee.page)] == e.pointee.gen {
                return BlockRef(insns: pool + Int(e.pointee.start), count: Int(e.pointee.count), id: e.pointee.id,
                                page: e.pointee.page)
            }
        }
        return nil
    }

    /// Remembers that block `from` continued at `la` with block `to`.
    func setLink(from: Int32, la: UInt64, to: BlockRef) {
        guard to.id >= 0 else { return }
        let l = links + 2 * Int(from)
        // Fill an unused or stale link first; otherwise replace the second one, so a block with a
        // stable successor (the fall-through or a loop) keeps it beside a changing one (RET).
        let i = l.pointee.epoch != chainEpoch ? 0 : 1
        l[i] = BlockLink(la: la, epoch: chainEpoch, gen: pageGen[Int(to.page)], start: Int32(to.insns - pool),
                         count: Int32(to.count), id: to.id, page: to.page)
    }

}
