// String instructions with REP/REPE/REPNE. Registers advance per element, so a fault in the middle
// of a REP leaves the architecturally correct partial state and the instruction restarts.
// REP MOVS/STOS with DF = 0 copy whole runs within a page through host pointers.

extension X86Interpreter {
    /// Elements (or bulk page runs) a REP instruction processes before yielding.
    static let repSlice = 16384

    /// Leaves a REP instruction unfinished: RIP back on it, the block ends, the run loop polls.
    func yieldRep(_ d: UnsafePointer<DecodedInsn>) {
        rip = rip &- UInt64(d.pointee.len)
        st.pointee.codeModified = true
        st.pointee.eventCheck = true
        pollCountdown = 0
    }

    func stringOp(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let size = UInt64(1 << s)
        let amask = addressMask(d)
        let rep = d.pointee.pfx & (Pfx.rep | Pfx.repne)
        let op = d.pointee.op
        let srcSeg = Int(d.pointee.seg)
        let down = st.pointee.flagsRest & Flag.df != 0
        let step = down ? 0 &- size : size

        @inline(__always) func advance(_ r: Int) {
            setAddressReg(r, gpr(r) &+ step, amask)
        }

        if rep == 0 {
            try stringElement(op, s, srcSeg, amask)
            if op == .movs || op == .cmps || op == .lods { advance(Reg.rsi) }
            if op != .lods { advance(Reg.rdi) }
            return
        }
        var count = gpr(Reg.rcx) & amask
        // A long REP is interrupted every so often (RIP stays on it and it resumes), so the host
        // can stop the vCPU and interrupts are not held off: hardware also allows this.
        var slice = X86Interpreter.repSlice
        while count != 0 {
            if slice <= 0 {
                yieldRep(d)
                return
            }
            slice -= 1
            if !down && (op == .stos || op == .movs) {
                let n = try bulkString(op, s, srcSeg, amask, count)
                if n > 0 {
                    count -= n
                    setAddressReg(Reg.rcx, count, amask)
                    continue
                }
            }
            try stringElement(op, s, srcSeg, amask)
            if op == .movs || op == .cmps || op == .lods { advance(Reg.rsi) }
            if op != .lods { advance(Reg.rdi) }
            count -= 1
            setAddressReg(Reg.rcx, count, amask)
            if op == .cmps || op == .scas {
                let zf = condition(4)
                if rep == Pfx.rep ? !zf : zf { break }
            }
        }
    }

    /// Writes RSI/RDI/RCX as the address size does: a 32-bit address size writes ESI/EDI/ECX,
    /// clearing the upper halves like any 32-bit register write in 64-bit mode; 16-bit addressing
    /// keeps the bits above SI/DI/CX.
    @inline(__always)
    func setAddressReg(_ r: Int, _ value: UInt64, _ amask: UInt64) {
        setGPR(r, amask == 0xFFFF ? (gpr(r) & ~amask) | (value & amask) : value & amask)
    }

    /// One element of MOVS/STOS/LODS/CMPS/SCAS.
    @inline(__always)
    func stringElement(_ op: Op, _ s: Int, _ srcSeg: Int, _ amask: UInt64) throws(Fault) {
        let si = linear(srcSeg, gpr(Reg.rsi) & amask)
        let di = linear(Seg.es, gpr(Reg.rdi) & amask)
        switch op {
        case .movs:
            try writeSized(di, s, try readSized(si, s))
        case .stos:
            try writeSized(di, s, gpr(0))
        case .lods:
            setRegSized(0, s, try readSized(si, s))
        case .cmps:
            let a = try readSized(si, s), b = try readSized(di, s)
            setCC(CC.sub, s, dst: (a &- b) & sizeMask(s), src: b)
        default:  // scas
            let b = try readSized(di, s)
            let a = gpr(0) & sizeMask(s)
            setCC(CC.sub, s, dst: (a &- b) & sizeMask(s), src: b)
        }
    }

    /// Copies/fills as many whole elements as fit in the current source and destination pages
    /// (both RAM, TLB-mapped). Returns the number of elements done (0: take the slow path).
    func bulkString(_ op: Op, _ s: Int, _ srcSeg: Int, _ amask: UInt64, _ count: UInt64) throws(Fault) -> UInt64 {
        let size = UInt64(1 << s)
        let diOff = gpr(Reg.rdi) & amask
        let di = linear(Seg.es, diOff)
        var n = min(count, (4096 - (di & 0xFFF)) / size)
        if n < 2 { return 0 }
        // Stay within the address-size wrap.
        let room = (amask - diOff) / size
        if room < n - 1 { n = room + 1 }
        guard let dst = try rmwPointer(di, Int(n * size)) else { return 0 }
        if op == .stos {
            let v = gpr(0)
            switch s {
            case 0: dst.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: v), count: Int(n))
            case 1: for i in 0..<Int(n) { dst.storeBytes(of: UInt16(truncatingIfNeeded: v), toByteOffset: i * 2, as: UInt16.self) }
            case 2: for i in 0..<Int(n) { dst.storeBytes(of: UInt32(truncatingIfNeeded: v), toByteOffset: i * 4, as: UInt32.self) }
            default: for i in 0..<Int(n) { dst.storeBytes(of: v, toByteOffset: i * 8, as: UInt64.self) }
            }
        } else {
            let siOff = gpr(Reg.rsi) & amask
            let si = linear(srcSeg, siOff)
            n = min(n, (4096 - (si & 0xFFF)) / size)
            // Less than two elements left in the source page: n may be 0 here (n - 1 would trap).
            if n < 2 { return 0 }
            let srcRoom = (amask - siOff) / size
            if srcRoom < n - 1 { n = srcRoom + 1 }
            if n < 2 { return 0 }
            let e = tlbSlot(si)
            guard e.pointee.rtag == si & ~0xFFF else { return 0 }
            let src = UnsafeRawPointer(bitPattern: UInt(si) &+ e.pointee.addend).unsafelyUnwrapped
            // Overlapping forward copies must behave element by element (memmove is not the same).
            let bytes = Int(n * size)
            let srcAddr = UInt(bitPattern: src), dstAddr = UInt(bitPattern: dst)
            if dstAddr > srcAddr && dstAddr < srcAddr + UInt(bytes) { return 0 }
            dst.copyMemory(from: src, byteCount: bytes)
            setAddressReg(Reg.rsi, siOff &+ n * size, amask)
        }
        setAddressReg(Reg.rdi, diOff &+ n * size, amask)
        return n
    }

    /// INS/OUTS (with REP).
    func stringIO(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let s = Int(d.pointee.osz)
        let size = UInt64(1 << s)
        try checkIOPermission(port: UInt16(truncatingIfNeeded: gpr(Reg.rdx)), size: Int(size))
        let amask = addressMask(d)
        let rep = d.pointee.pfx & (Pfx.rep | Pfx.repne) != 0
        let step = st.pointee.flagsRest & Flag.df != 0 ? 0 &- size : size
        let port = UInt16(truncatingIfNeeded: gpr(Reg.rdx))
        var count = rep ? gpr(Reg.rcx) & amask : 1
        var slice = X86Interpreter.repSlice
        while count != 0 {
            if slice <= 0 {
                yieldRep(d)
                break
            }
            slice -= 1
            if d.pointee.op == .ins {
                let di = linear(Seg.es, gpr(Reg.rdi) & amask)
                // Check the destination before the port read (reads can have side effects).
                _ = try rmwPointer(di, Int(size))
                let v = io?.portRead(port, size: Int(size)) ?? UInt32.max
                try writeSized(di, s, UInt64(v))
                setAddressReg(Reg.rdi, gpr(Reg.rdi) &+ step, amask)
            } else {
                let si = linear(Int(d.pointee.seg), gpr(Reg.rsi) & amask)
                let v = try readSized(si, s)
                io?.portWrite(port, size: Int(size), value: UInt32(truncatingIfNeeded: v))
                setAddressReg(Reg.rsi, gpr(Reg.rsi) &+ step, amask)
            }
            count -= 1
            if rep { setAddressReg(Reg.rcx, count, amask) }
        }
        ioHappened()
    }
}
