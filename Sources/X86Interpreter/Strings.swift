// String instructions with REP/REPE/REPNE. Registers advance per element, so a fault in the middle
// of a REP leaves the architecturally correct partial state and the instruction restarts.
// REP MOVS/STOS with DF = 0 copy whole runs within a page through host pointers.

extension X86Interpreter {
    /// Iterations (single elements or page-sized bulk runs) of a REP string instruction per dispatch.
    static let repSlice = 4096

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
            let v = gpr(r)
            setGPR(r, (v & ~amask) | ((v &+ step) & amask))
        }

        if rep == 0 {
            try stringElement(op, s, srcSeg, amask)
            if op == .movs || op == .cmps || op == .lods { advance(Reg.rsi) }
            if op != .lods { advance(Reg.rdi) }
            return
        }
        var count = gpr(Reg.rcx) & amask
        var slices = 0
        while count != 0 {
            // Hardware takes interrupts between iterations; so does this: after a bounded slice the
            // instruction ends with RIP still on it (RCX/RSI/RDI show the work done) and the next
            // dispatch resumes it. Otherwise RCX = 2^64-1 holds the vCPU, deaf to interrupts and to
            // the host, inside one instruction for hours.
            if slices == X86Interpreter.repSlice {
                rip = rip &- UInt64(d.pointee.len)
                st.pointee.codeModified = true   // leave the block: the next instruction is this one again
                return
            }
            slices += 1
            if !down && (op == .stos || op == .movs) {
                let n = try bulkString(op, s, srcSeg, amask, count)
                if n > 0 {
                    count -= n
                    setGPR(Reg.rcx, (gpr(Reg.rcx) & ~amask) | count)
                    continue
                }
            }
            try stringElement(op, s, srcSeg, amask)
            if op == .movs || op == .cmps || op == .lods { advance(Reg.rsi) }
            if op != .lods { advance(Reg.rdi) }
            count -= 1
            setGPR(Reg.rcx, (gpr(Reg.rcx) & ~amask) | count)
            if op == .cmps || op == .scas {
                let zf = condition(4)
                if rep == Pfx.rep ? !zf : zf { break }
            }
        }
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
        // Stay within the address-size wrap.
        n = min(n, (amask - diOff) / size + 1)
        if n < 2 { return 0 }
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
            n = min(n, (4096 - (si & 0xFFF)) / size, (amask - siOff) / size + 1)
            if n < 2 { return 0 }
            let e = tlbSlot(si)
            guard e.pointee.rtag == si & ~0xFFF else { return 0 }
            let src = UnsafeRawPointer(bitPattern: UInt(si) &+ e.pointee.addend).unsafelyUnwrapped
            // Overlapping forward copies must behave element by element (memmove is not the same).
            let bytes = Int(n * size)
            let srcAddr = UInt(bitPattern: src), dstAddr = UInt(bitPattern: dst)
            if dstAddr > srcAddr && dstAddr < srcAddr + UInt(bytes) { return 0 }
            dst.copyMemory(from: src, byteCount: bytes)
            setGPR(Reg.rsi, (gpr(Reg.rsi) & ~amask) | ((siOff &+ n * size) & amask))
        }
        setGPR(Reg.rdi, (gpr(Reg.rdi) & ~amask) | ((diOff &+ n * size) & amask))
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
        while count != 0 {
            if d.pointee.op == .ins {
                let di = linear(Seg.es, gpr(Reg.rdi) & amask)
                // Check the destination before the port read (reads can have side effects).
                _ = try rmwPointer(di, Int(size))
                let v = io?.portRead(port, size: Int(size)) ?? UInt32.max
                try writeSized(di, s, UInt64(v))
                setGPR(Reg.rdi, (gpr(Reg.rdi) & ~amask) | ((gpr(Reg.rdi) &+ step) & amask))
            } else {
                let si = linear(Int(d.pointee.seg), gpr(Reg.rsi) & amask)
                let v = try readSized(si, s)
                io?.portWrite(port, size: Int(size), value: UInt32(truncatingIfNeeded: v))
                setGPR(Reg.rsi, (gpr(Reg.rsi) & ~amask) | ((gpr(Reg.rsi) &+ step) & amask))
            }
            count -= 1
            if rep { setGPR(Reg.rcx, (gpr(Reg.rcx) & ~amask) | count) }
        }
        ioHappened()
    }
}
