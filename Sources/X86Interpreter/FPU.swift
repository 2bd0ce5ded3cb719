// x87/MMX/SSE state lives in `fx`, a 512-byte buffer in the FXSAVE layout, so FXSAVE/FXRSTOR are
// copies and SIMD instructions address XMM registers at fixed offsets.
//   0: FCW  2: FSW  4: abridged FTW  6: FOP  8: FIP  16: FDP  24: MXCSR  28: MXCSR_MASK
//   32 + 16*i: ST(i)/MMi (80 bits)   160 + 16*i: XMMi

enum FX {
    static let fcw = 0, fsw = 2, ftw = 4, fop = 6, fip = 8, fdp = 16, mxcsr = 24, mxcsrMask = 28
    static let st0 = 32, xmm0 = 160
    static let mxcsrMaskValue: UInt32 = 0xFFFF
}

extension X86Interpreter {
    func resetFPU() {
        fx.initializeMemory(as: UInt8.self, repeating: 0, count: 512)
        fx.storeBytes(of: UInt16(0x37F), toByteOffset: FX.fcw, as: UInt16.self)
        fx.storeBytes(of: UInt32(0x1F80), toByteOffset: FX.mxcsr, as: UInt32.self)
        fx.storeBytes(of: FX.mxcsrMaskValue, toByteOffset: FX.mxcsrMask, as: UInt32.self)
    }

    var fcw: UInt16 {
        get { fx.load(fromByteOffset: FX.fcw, as: UInt16.self) }
        set { fx.storeBytes(of: newValue, toByteOffset: FX.fcw, as: UInt16.self) }
    }
    var fsw: UInt16 {
        get { fx.load(fromByteOffset: FX.fsw, as: UInt16.self) }
        set { fx.storeBytes(of: newValue, toByteOffset: FX.fsw, as: UInt16.self) }
    }
    var mxcsr: UInt32 {
        get { fx.load(fromByteOffset: FX.mxcsr, as: UInt32.self) }
        set { fx.storeBytes(of: newValue, toByteOffset: FX.mxcsr, as: UInt32.self) }
    }

    /// #NM when CR0.EM or CR0.TS forbid x87 use.
    @inline(__always)
    func checkFPUAvailable() throws(Fault) {
        if st.pointee.cr0 & (CR0.em | CR0.ts) != 0 { throw Fault.nm }
    }

    /// SSE instructions: #UD without CR4.OSFXSR or with CR0.EM, #NM with CR0.TS.
    @inline(__always)
    func checkSSEAvailable() throws(Fault) {
        if st.pointee.cr0 & CR0.em != 0 || st.pointee.cr4 & CR4.osfxsr == 0 { throw Fault.ud }
        if st.pointee.cr0 & CR0.ts != 0 { throw Fault.nm }
    }

    /// FWAIT: a pending unmasked x87 exception is reported (#MF with CR0.NE).
    func fpuCheckPending() throws(Fault) {
        if fsw & 0x80 != 0 && st.pointee.cr0 & CR0.ne != 0 { throw Fault.mf }
    }

    func executeFXState(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        let la = linearAddress(d)
        switch d.pointee.op {
        case .fxsave, .fxrstor:
            if st.pointee.cr0 & (CR0.em | CR0.ts) != 0 { throw st.pointee.cr0 & CR0.em != 0 ? Fault.ud : Fault.nm }
            guard la & 15 == 0 else { throw Fault.gp(0) }
            // 64-bit FXSAVE (REX.W) stores 64-bit FIP/FDP; we keep them zero-extended either way.
            // Registers are kept in physical order; the image holds them in ST(i) order.
            let top = Int((fsw >> 11) & 7)
            func imageOffset(_ off: Int) -> Int {
                guard off >= FX.st0 && off < FX.xmm0 else { return off }
                let st = (off - FX.st0) / 16
                return FX.st0 + 16 * ((top + st) & 7) + (off - FX.st0) % 16
            }
            if d.pointee.op == .fxsave {
                _ = try rmwPointer(la, 1)
                _ = try rmwPointer(la &+ 511, 1)
                for off in stride(from: 0, to: 512, by: 8) {
                    try write(la &+ UInt64(off), fx.load(fromByteOffset: imageOffset(off), as: UInt64.self))
                }
            } else {
                let m = try read(la &+ 24, UInt32.self)
                if m & ~FX.mxcsrMaskValue != 0 { throw Fault.gp(0) }
                var image = [UInt64](repeating: 0, count: 64)
                for i in 0..<64 { image[i] = try read(la &+ UInt64(i * 8), UInt64.self) }
                fx.storeBytes(of: image[0], toByteOffset: 0, as: UInt64.self)   // FCW FSW FTW FOP
                let newTop = Int((fsw >> 11) & 7)
                for i in 1..<52 where i != 3 {   // keep MXCSR_MASK; 416..511 are reserved
                    let off = i * 8
                    var dst = off
                    if off >= FX.st0 && off < FX.xmm0 {
                        let st = (off - FX.st0) / 16
                        dst = FX.st0 + 16 * ((newTop + st) & 7) + (off - FX.st0) % 16
                    }
                    fx.storeBytes(of: image[i], toByteOffset: dst, as: UInt64.self)
                }
                mxcsr = m
            }
        case .ldmxcsr:
            try checkSSEAvailable()
            let m = try read(la, UInt32.self)
            if m & ~FX.mxcsrMaskValue != 0 { throw Fault.gp(0) }
            mxcsr = m
        default:  // stmxcsr
            try checkSSEAvailable()
            try write(la, mxcsr)
        }
    }
}
