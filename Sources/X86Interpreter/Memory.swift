import CHost
import VMMemory

// Linear-address access: a direct-mapped software TLB caches page walks as host pointers, so a RAM
// access that hits is one compare and one load. Misses walk the guest page tables (4-level, PAE,
// legacy 32-bit), set A/D bits, check permissions and fill the TLB. Non-RAM physical pages go to
// the local APIC or the machine's MMIO handler.

/// One TLB slot. Tags are the virtual page address when that access kind may use `addend`; any
/// value with low bits set never matches.
struct TLBEntry {
    var rtag: UInt64 = 1
    var wtag: UInt64 = 1
    var xtag: UInt64 = 1
    /// host address of the page minus its virtual address (wrapping).
    var addend: UInt = 0
    /// Physical page address; bit 0 = global page, bit 1 = page is not RAM.
    var phys: UInt64 = 0
}

enum TLBSize {
    static let entries = 1024
    static let mask: UInt64 = 1023
}

enum Access {
    case read, write, exec
}

/// An x86 exception raised by an instruction.
struct Fault: Error {
    var vector: UInt8
    var code: UInt32 = 0
    var hasCode = false

    static func gp(_ code: UInt32 = 0) -> Fault { Fault(vector: 13, code: code, hasCode: true) }
    static func ss(_ code: UInt32 = 0) -> Fault { Fault(vector: 12, code: code, hasCode: true) }
    static func np(_ code: UInt32) -> Fault { Fault(vector: 11, code: code, hasCode: true) }
    static func ts(_ code: UInt32) -> Fault { Fault(vector: 10, code: code, hasCode: true) }
    static func pf(_ code: UInt32) -> Fault { Fault(vector: 14, code: code, hasCode: true) }
    static let ud = Fault(vector: 6)
    static let de = Fault(vector: 0)
    static let nm = Fault(vector: 7)
    static let mf = Fault(vector: 16)
    static let xm = Fault(vector: 19)
}

extension X86Interpreter {
    // MARK: Registers

    @inline(__always) func reg64(_ off: UInt8) -> UInt64 { regs.load(fromByteOffset: Int(off), as: UInt64.self) }
    @inline(__always) func setReg64(_ off: UInt8, _ v: UInt64) { regs.storeBytes(of: v, toByteOffset: Int(off), as: UInt64.self) }
    @inline(__always) func gpr(_ n: Int) -> UInt64 { regs.load(fromByteOffset: n << 3, as: UInt64.self) }
    @inline(__always) func setGPR(_ n: Int, _ v: UInt64) { regs.storeBytes(of: v, toByteOffset: n << 3, as: UInt64.self) }

    @inline(__always) func getReg<T: FixedWidthInteger>(_ off: UInt8, _: T.Type) -> T {
        regs.load(fromByteOffset: Int(off), as: T.self)
    }
    /// Writes a register at operand size T; 32-bit writes zero the upper half, 8/16-bit writes merge.
    @inline(__always) func setReg<T: FixedWidthInteger>(_ off: UInt8, _ v: T) {
        if T.bitWidth == 32 {
            regs.storeBytes(of: UInt64(UInt32(truncatingIfNeeded: v)), toByteOffset: Int(off), as: UInt64.self)
        } else {
            regs.storeBytes(of: v, toByteOffset: Int(off), as: T.self)
        }
    }
    /// Register read/write at a runtime operand size index.
    @inline(__always) func getRegSized(_ off: UInt8, _ s: Int) -> UInt64 {
        switch s {
        case 0: return UInt64(regs.load(fromByteOffset: Int(off), as: UInt8.self))
        case 1: return UInt64(regs.load(fromByteOffset: Int(off), as: UInt16.self))
        case 2: return UInt64(regs.load(fromByteOffset: Int(off), as: UInt32.self))
        default: return regs.load(fromByteOffset: Int(off), as: UInt64.self)
        }
    }
    @inline(__always) func setRegSized(_ off: UInt8, _ s: Int, _ v: UInt64) {
        switch s {
        case 0: regs.storeBytes(of: UInt8(truncatingIfNeeded: v), toByteOffset: Int(off), as: UInt8.self)
        case 1: regs.storeBytes(of: UInt16(truncatingIfNeeded: v), toByteOffset: Int(off), as: UInt16.self)
        case 2: regs.storeBytes(of: v & 0xFFFF_FFFF, toByteOffset: Int(off), as: UInt64.self)
        default: regs.storeBytes(of: v, toByteOffset: Int(off), as: UInt64.self)
        }
    }

    @inline(__always) var rip: UInt64 {
        get { regs.load(fromByteOffset: Reg.rip << 3, as: UInt64.self) }
        set { regs.storeBytes(of: newValue, toByteOffset: Reg.rip << 3, as: UInt64.self) }
    }

    // MARK: Addresses

    /// The effective address of a decoded memory operand, truncated to the address size.
    @inline(__always)
    func effectiveAddress(_ d: UnsafePointer<DecodedInsn>) -> UInt64 {
        var ea = UInt64(bitPattern: Int64(d.pointee.disp)) &+ reg64(d.pointee.base)
            &+ (reg64(d.pointee.index) << UInt64(d.pointee.scale))
        let asz = d.pointee.asz
        if asz != 3 { ea &= asz == 2 ? 0xFFFF_FFFF : 0xFFFF }
        return ea
    }

    /// The linear address of a decoded memory operand.
    @inline(__always)
    func linearAddress(_ d: UnsafePointer<DecodedInsn>) -> UInt64 {
        (effectiveAddress(d) &+ segBase[Int(d.pointee.seg)]) & st.pointee.linearMask
    }

    /// Linear address of `seg:offset` (offset already truncated by the caller).
    @inline(__always)
    func linear(_ seg: Int, _ offset: UInt64) -> UInt64 {
        (offset &+ segBase[seg]) & st.pointee.linearMask
    }

    // MARK: Fast paths

    @inline(__always)
    func tlbSlot(_ la: UInt64) -> UnsafeMutablePointer<TLBEntry> {
        tlb + (st.pointee.tlbHalf + Int((la >> 12) & TLBSize.mask))
    }

    @inline(__always)
    func read<T: FixedWidthInteger>(_ la: UInt64, _: T.Type) throws(Fault) -> T {
        let e = tlbSlot(la)
        if e.pointee.rtag == la & ~0xFFF && la & 0xFFF <= UInt64(4096 - MemoryLayout<T>.size) {
            return UnsafeRawPointer(bitPattern: UInt(la) &+ e.pointee.addend).unsafelyUnwrapped
                .loadUnaligned(as: T.self)
        }
        return T(truncatingIfNeeded: try readSlow(la, MemoryLayout<T>.size, user: st.pointee.cpl == 3))
    }

    @inline(__always)
    func write<T: FixedWidthInteger>(_ la: UInt64, _ v: T) throws(Fault) {
        let e = tlbSlot(la)
        if e.pointee.wtag == la & ~0xFFF && la & 0xFFF <= UInt64(4096 - MemoryLayout<T>.size) {
            UnsafeMutableRawPointer(bitPattern: UInt(la) &+ e.pointee.addend).unsafelyUnwrapped
                .storeBytes(of: v, as: T.self)
            return
        }
        try writeSlow(la, MemoryLayout<T>.size, UInt64(truncatingIfNeeded: v), user: st.pointee.cpl == 3)
    }

    /// A host pointer for a read-modify-write of `size` bytes, or nil when the access must go
    /// through `read`/`write` (MMIO, page-crossing). Write permission is checked either way.
    @inline(__always)
    func rmwPointer(_ la: UInt64, _ size: Int) throws(Fault) -> UnsafeMutableRawPointer? {
        let e = tlbSlot(la)
        if e.pointee.wtag == la & ~0xFFF && la & 0xFFF <= UInt64(4096 - size) {
            return UnsafeMutableRawPointer(bitPattern: UInt(la) &+ e.pointee.addend).unsafelyUnwrapped
        }
        return try rmwSlow(la, size)
    }

    /// Sized accessors at a runtime size index.
    @inline(__always)
    func readSized(_ la: UInt64, _ s: Int) throws(Fault) -> UInt64 {
        switch s {
        case 0: return UInt64(try read(la, UInt8.self))
        case 1: return UInt64(try read(la, UInt16.self))
        case 2: return UInt64(try read(la, UInt32.self))
        default: return try read(la, UInt64.self)
        }
    }
    @inline(__always)
    func writeSized(_ la: UInt64, _ s: Int, _ v: UInt64) throws(Fault) {
        switch s {
        case 0: try write(la, UInt8(truncatingIfNeeded: v))
        case 1: try write(la, UInt16(truncatingIfNeeded: v))
        case 2: try write(la, UInt32(truncatingIfNeeded: v))
        default: try write(la, v)
        }
    }

    // MARK: Slow paths

    func readSlow(_ la: UInt64, _ size: Int, user: Bool) throws(Fault) -> UInt64 {
        if la & 0xFFF > UInt64(4096 - size) {
            // Crosses a page: translate both pages before reading anything.
            let first = 4096 - Int(la & 0xFFF)
            let pa1 = try translate(la, .read, user: user)
            let pa2 = try translate((la &+ UInt64(first)) & st.pointee.linearMask, .read, user: user)
            var v: UInt64 = 0
            for i in 0..<size {
                let pa = i < first ? pa1 &+ UInt64(i) : pa2 &+ UInt64(i - first)
                v |= physRead(pa, 1) << UInt64(8 * i)
            }
            return v
        }
        let pa = try translate(la, .read, user: user)
        return physRead(pa, size)
    }

    func writeSlow(_ la: UInt64, _ size: Int, _ v: UInt64, user: Bool) throws(Fault) {
        if la & 0xFFF > UInt64(4096 - size) {
            let first = 4096 - Int(la & 0xFFF)
            let pa1 = try translate(la, .write, user: user)
            let pa2 = try translate((la &+ UInt64(first)) & st.pointee.linearMask, .write, user: user)
            for i in 0..<size {
                let pa = i < first ? pa1 &+ UInt64(i) : pa2 &+ UInt64(i - first)
                physWrite(pa, 1, (v >> UInt64(8 * i)) & 0xFF)
            }
            return
        }
        let pa = try translate(la, .write, user: user)
        physWrite(pa, size, v)
    }

    func rmwSlow(_ la: UInt64, _ size: Int) throws(Fault) -> UnsafeMutableRawPointer? {
        let user = st.pointee.cpl == 3
        if la & 0xFFF > UInt64(4096 - size) {
            // Check both pages for write permission now, so the later write cannot fault half-way.
            _ = try translate(la, .write, user: user)
            _ = try translate((la &+ UInt64(4096 - Int(la & 0xFFF))) & st.pointee.linearMask, .write, user: user)
            return nil
        }
        let pa = try translate(la, .write, user: user)
        noteCodeWrite(pa, size)
        return memory.hostPointer(pa, length: UInt64(size))
    }

    /// Supervisor-mode ("system") accesses: descriptor tables, TSS, IDT. Always use kernel permissions.
    func readSys(_ la: UInt64, _ size: Int) throws(Fault) -> UInt64 {
        let saved = st.pointee.tlbHalf
        st.pointee.tlbHalf = 0
        defer { st.pointee.tlbHalf = saved }
        return try readSlow(la & st.pointee.linearMask, size, user: false)
    }
    func writeSys(_ la: UInt64, _ size: Int, _ v: UInt64) throws(Fault) {
        let saved = st.pointee.tlbHalf
        st.pointee.tlbHalf = 0
        defer { st.pointee.tlbHalf = saved }
        try writeSlow(la & st.pointee.linearMask, size, v, user: false)
    }

    // MARK: Physical accesses

    /// Reads guest-physical memory: RAM, the local APIC page, or the machine's MMIO.
    func physRead(_ pa: UInt64, _ size: Int) -> UInt64 {
        if let p = memory.hostPointer(pa, length: UInt64(size)) {
            switch size {
            case 1: return UInt64(p.load(as: UInt8.self))
            case 2: return UInt64(p.loadUnaligned(as: UInt16.self))
            case 4: return UInt64(p.loadUnaligned(as: UInt32.self))
            default: return p.loadUnaligned(as: UInt64.self)
            }
        }
        if apic.covers(pa) { return apic.read(offset: Int(pa & 0xFFF), size: size, now: clock.nowNs) }
        guard let io else { return size == 8 ? ~0 : (UInt64(1) << UInt64(size * 8)) &- 1 }
        return io.mmioRead(pa, size: size)
    }

    func physWrite(_ pa: UInt64, _ size: Int, _ v: UInt64) {
        if let p = memory.hostPointer(pa, length: UInt64(size)) {
            switch size {
            case 1: p.storeBytes(of: UInt8(truncatingIfNeeded: v), as: UInt8.self)
            case 2: p.storeBytes(of: UInt16(truncatingIfNeeded: v), as: UInt16.self)
            case 4: p.storeBytes(of: UInt32(truncatingIfNeeded: v), as: UInt32.self)
            default: p.storeBytes(of: v, as: UInt64.self)
            }
            // After the store: another vCPU decoding this page meanwhile either sees the new bytes or
            // has its block invalidated now.
            noteCodeWrite(pa, size)
            return
        }
        if apic.covers(pa) {
            apic.write(offset: Int(pa & 0xFFF), value: UInt32(truncatingIfNeeded: v), now: clock.nowNs)
            st.pointee.eventCheck = true
            return
        }
        io?.mmioWrite(pa, size: size, value: v)
        // A device may have raised an interrupt or armed a timer (a virtio notification).
        ioHappened()
    }

    /// Self-modifying code: a write to a page holding decoded instructions invalidates them.
    @inline(__always)
    func noteCodeWrite(_ pa: UInt64, _ size: Int) {
        let page = Int(pa >> 12)
        if page < physPages && codePages[page] != 0 { invalidateCodePage(page) }
        let last = Int((pa &+ UInt64(size) &- 1) >> 12)
        if last != page && last < physPages && codePages[last] != 0 { invalidateCodePage(last) }
    }

    // MARK: Page walk

    /// Translates a linear address for an access, filling the TLB. Raises #PF (or #GP for a
    /// non-canonical address in long mode).
    func translate(_ la: UInt64, _ access: Access, user: Bool) throws(Fault) -> UInt64 {
        let lma = st.pointee.efer & EFER.lma != 0
        if lma {
            let top = Int64(bitPattern: la) >> 47
            if top != 0 && top != -1 { throw Fault.gp(0) }
        }
        let e = tlb + ((user ? TLBSize.entries : 0) + Int((la >> 12) & TLBSize.mask))
        let vpage = la & ~0xFFF
        if st.pointee.cr0 & CR0.pg == 0 {
            fillTLB(e, vpage: vpage, ppage: vpage & 0xFFFF_FFFF_FFFF_F000, read: true, write: true, exec: true, global: false)
            return la
        }
        let w = try walk(la, access, user: user)
        fillTLB(e, vpage: vpage, ppage: w.ppage, read: true, write: w.writable && w.dirty, exec: w.executable, global: w.global)
        return w.ppage | (la & 0xFFF)
    }

    struct WalkResult {
        var ppage: UInt64
        var writable: Bool
        var executable: Bool
        var dirty: Bool
        var global: Bool
    }

    /// Physical address bits offered in CPUID 0x80000008.
    static let physAddrBits = 40

    func walk(_ la: UInt64, _ access: Access, user: Bool) throws(Fault) -> WalkResult {
        let cr4 = st.pointee.cr4
        let nxe = st.pointee.efer & EFER.nxe != 0
        let wp = st.pointee.cr0 & CR0.wp != 0
        let isWrite = access == .write
        // #PF error code bits.
        let code: UInt32 = (isWrite ? 2 : 0) | (user ? 4 : 0) | (access == .exec && nxe ? 16 : 0)
        let addrMask: UInt64 = ((UInt64(1) << UInt64(X86Interpreter.physAddrBits)) - 1) & ~0xFFF
        // Reserved: address bits from MAXPHYADDR to 51, and NX when EFER.NXE is off. Bits 52-62
        // are ignored (software-available; Linux uses some of them).
        let rsvdHigh: UInt64 = (((UInt64(1) << 52) - 1) & ~((UInt64(1) << UInt64(X86Interpreter.physAddrBits)) - 1))
            | (nxe ? 0 : 1 << 63)

        func fault(_ present: Bool, rsvd: Bool = false) -> Fault {
            st.pointee.cr2 = la
            var c = code | (present ? 1 : 0)
            if rsvd { c |= 8 | 1 }
            return Fault.pf(c)
        }

        var writable = true, userOK = true, noExec = false
        // Entries whose A/D bits we update at the end (host pointers into guest RAM).
        var ptrs: (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) = (nil, nil, nil, nil)
        var nptr = 0
        var leafPtr: UnsafeMutableRawPointer? = nil
        var leafIs64 = true
        var ppage: UInt64 = 0
        var global = false

        func load(_ pa: UInt64, wide: Bool) -> (UInt64, UnsafeMutableRawPointer?) {
            guard let p = memory.hostPointer(pa, length: wide ? 8 : 4) else { return (0, nil) }
            return (wide ? p.load(as: UInt64.self) : UInt64(p.load(as: UInt32.self)), p)
        }

        if cr4 & CR4.pae != 0 {
            var levels: Int
            var table: UInt64
            if st.pointee.efer & EFER.lma != 0 {
                levels = 4
                table = st.pointee.cr3 & addrMask
            } else {
                // PAE: the four PDPTEs (read at walk time; real CPUs cache them at CR3 load).
                levels = 2
                let (pdpte, _) = load((st.pointee.cr3 & 0xFFFF_FFE0) + ((la >> 30) & 3) * 8, wide: true)
                if pdpte & 1 == 0 { throw fault(false) }
                if pdpte & (rsvdHigh | 0x1E6) & ~(1 << 63) != 0 { throw fault(true, rsvd: true) }
                table = pdpte & addrMask
            }
            while true {
                let shift = UInt64(12 + 9 * (levels - 1))
                let idx = (la >> shift) & 511
                let (pte, p) = load(table + idx * 8, wide: true)
                if pte & 1 == 0 { throw fault(false) }
                if pte & rsvdHigh != 0 { throw fault(true, rsvd: true) }
                if pte & 2 == 0 { writable = false }
                if pte & 4 == 0 { userOK = false }
                if nxe && pte & (1 << 63) != 0 { noExec = true }
                let isLeaf = levels == 1 || (pte & 0x80 != 0 && levels <= 3)
                if levels == 4 && pte & 0x80 != 0 { throw fault(true, rsvd: true) }
                if levels == 3 && pte & 0x80 != 0 && st.pointee.efer & EFER.lma == 0 { throw fault(true, rsvd: true) }
                if isLeaf {
                    let pageSize = UInt64(1) << shift
                    if levels > 1 {
                        // Large page: bits 12..shift-1 except PAT (bit 12) must be zero.
                        if pte & (pageSize - 1) & ~0x1FFF & addrMask != 0 { throw fault(true, rsvd: true) }
                    }
                    let base = pte & addrMask & ~(pageSize - 1)
                    ppage = base | (la & (pageSize - 1) & ~0xFFF)
                    global = pte & 0x100 != 0 && cr4 & CR4.pge != 0
                    leafPtr = p
                    break
                }
                if nptr < 4 {
                    switch nptr { case 0: ptrs.0 = p case 1: ptrs.1 = p case 2: ptrs.2 = p default: ptrs.3 = p }
                    nptr += 1
                }
                table = pte & addrMask
                levels -= 1
            }
        } else {
            // Legacy 32-bit paging with optional 4 MiB pages.
            leafIs64 = false
            let (pde, p) = load((st.pointee.cr3 & 0xFFFF_F000) + ((la >> 22) & 1023) * 4, wide: false)
            if pde & 1 == 0 { throw fault(false) }
            if pde & 2 == 0 { writable = false }
            if pde & 4 == 0 { userOK = false }
            if pde & 0x80 != 0 && cr4 & CR4.pse != 0 {
                // Bits 13-20 hold physical address bits 32-39.
                ppage = (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32 | (la & 0x3F_F000)
                global = pde & 0x100 != 0 && cr4 & CR4.pge != 0
                leafPtr = p
            } else {
                ptrs.0 = p; nptr = 1
                let (pte, p2) = load((pde & 0xFFFF_F000) + ((la >> 12) & 1023) * 4, wide: false)
                if pte & 1 == 0 { throw fault(false) }
                if pte & 2 == 0 { writable = false }
                if pte & 4 == 0 { userOK = false }
                ppage = pte & 0xFFFF_F000
                global = pte & 0x100 != 0 && cr4 & CR4.pge != 0
                leafPtr = p2
            }
        }

        // Permission checks (no SMEP/SMAP: not offered).
        if user && !userOK { throw fault(true) }
        if isWrite && !writable && (user || wp) { throw fault(true) }
        if access == .exec && noExec { throw fault(true) }

        // Accessed on every level, dirty on the leaf for writes.
        for i in 0..<nptr {
            let p: UnsafeMutableRawPointer?
            switch i { case 0: p = ptrs.0 case 1: p = ptrs.1 case 2: p = ptrs.2 default: p = ptrs.3 }
            if let p { _ = setPTEBits(p, wide: leafIs64, 0x20) }
        }
        var dirty = false
        if let p = leafPtr {
            dirty = setPTEBits(p, wide: leafIs64, isWrite ? 0x60 : 0x20) & 0x40 != 0
        }
        // Supervisor writes to read-only pages with CR0.WP = 0 succeed but are never cached as writable.
        return WalkResult(ppage: ppage, writable: writable, executable: !noExec, dirty: dirty, global: global)
    }

    /// Sets accessed/dirty bits in a paging-structure entry and returns its new value. With several
    /// vCPUs this is a locked update, as on hardware: another CPU's XCHG clearing the entry (Linux's
    /// ptep_get_and_clear) must not be undone by a write-back of the old value, and an entry found
    /// not present is left alone.
    @inline(__always)
    func setPTEBits(_ p: UnsafeMutableRawPointer, wide: Bool, _ bits: UInt64) -> UInt64 {
        if !atomicMemory {
            if wide {
                let v = p.load(as: UInt64.self) | bits
                p.storeBytes(of: v, as: UInt64.self)
                return v
            }
            let v = p.load(as: UInt32.self) | UInt32(truncatingIfNeeded: bits)
            p.storeBytes(of: v, as: UInt32.self)
            return UInt64(v)
        }
        var v = wide ? p.load(as: UInt64.self) : UInt64(p.load(as: UInt32.self))
        while v & bits != bits && v & 1 != 0 {
            let seen = wide ? chost_cas64(p, v, v | bits) : UInt64(chost_cas32(p, UInt32(truncatingIfNeeded: v), UInt32(truncatingIfNeeded: v | bits)))
            if seen == v { return v | bits }
            v = seen
        }
        return v
    }

    func fillTLB(_ e: UnsafeMutablePointer<TLBEntry>, vpage: UInt64, ppage: UInt64, read: Bool, write: Bool,
                 exec: Bool, global: Bool) {
        let page = Int(ppage >> 12)
        if let host = memory.hostPointer(ppage, length: 4096) {
            e.pointee.addend = UInt(bitPattern: host) &- UInt(vpage)
            e.pointee.rtag = read ? vpage : 1
            let isCode = page < physPages && codePages[page] != 0
            e.pointee.wtag = write && !isCode ? vpage : 1
            e.pointee.xtag = exec ? vpage : 1
            e.pointee.phys = ppage | (global ? 1 : 0)
            // Another vCPU may have marked the page as code between the check and the fill, and
            // scanned this TLB before the entry was in it: look again after a fence (SharedCode).
            if write && !isCode && atomicMemory && page < physPages {
                chost_fence()
                if codePages[page] != 0 { e.pointee.wtag = 1 }
            }
        } else {
            e.pointee.rtag = 1; e.pointee.wtag = 1; e.pointee.xtag = 1
            e.pointee.phys = ppage | 2 | (global ? 1 : 0)
        }
    }

    /// Flushes the whole TLB (CR3 write without PGE, CR0/CR4 paging changes).
    func flushTLB(keepGlobal: Bool) {
        bumpChainEpoch()
        for i in 0..<(2 * TLBSize.entries) {
            if keepGlobal && tlb[i].phys & 1 != 0 { continue }
            tlb[i] = TLBEntry()
        }
    }

    /// INVLPG: drops any entry for the page (both privilege halves).
    func flushTLBPage(_ la: UInt64) {
        bumpChainEpoch()
        let idx = Int((la >> 12) & TLBSize.mask)
        tlb[idx] = TLBEntry()
        tlb[TLBSize.entries + idx] = TLBEntry()
    }

}
