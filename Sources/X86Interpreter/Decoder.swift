// x86 instruction decoder: legacy prefixes, REX, ModRM/SIB, displacements and immediates for 16-, 32-
// and 64-bit code. Produces a DecodedInsn; never touches CPU state, so its output can be cached.

enum DecodeError: Error {
    /// The instruction continues past the bytes supplied (the caller fetches the next page and retries).
    case needMore
    /// Longer than 15 bytes: #GP(0).
    case tooLong
}

struct Decoder {
    let bytes: UnsafePointer<UInt8>
    let available: Int
    /// 0 = 16-bit, 1 = 32-bit, 2 = 64-bit code.
    let codeSize: Int
    var pos = 0

    // Prefix state.
    var rex: UInt8 = 0
    var opsizePrefix = false
    var adsizePrefix = false
    var segOverride = -1
    /// The last of F2/F3 seen (Pfx.rep / Pfx.repne), 0 if none.
    var rep: UInt8 = 0
    var d = DecodedInsn()
    /// The decoded instruction ends a block (control transfer or state change the block cache
    /// depends on).
    var endsBlock = false

    init(bytes: UnsafePointer<UInt8>, available: Int, codeSize: Int) {
        self.bytes = bytes
        self.available = min(available, 15)
        self.codeSize = codeSize
    }

    @inline(__always)
    mutating func byte() throws(DecodeError) -> UInt8 {
        if pos >= available { throw pos >= 15 ? DecodeError.tooLong : DecodeError.needMore }
        let b = bytes[pos]
        pos += 1
        return b
    }
    mutating func imm8() throws(DecodeError) -> UInt64 { UInt64(bitPattern: Int64(Int8(bitPattern: try byte()))) }
    mutating func imm16() throws(DecodeError) -> UInt64 {
        let lo = UInt16(try byte()), hi = UInt16(try byte())
        return UInt64(bitPattern: Int64(Int16(bitPattern: lo | hi << 8)))
    }
    mutating func imm32() throws(DecodeError) -> UInt64 {
        var v: UInt32 = 0
        for i in 0..<4 { v |= UInt32(try byte()) << UInt32(8 * i) }
        return UInt64(bitPattern: Int64(Int32(bitPattern: v)))
    }
    mutating func imm64() throws(DecodeError) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v |= UInt64(try byte()) << UInt64(8 * i) }
        return v
    }
    /// Iz: 16 bits for 16-bit operands, else 32 bits sign-extended.
    mutating func immZ() throws(DecodeError) -> UInt64 { d.osz == 1 ? try imm16() : try imm32() }
    mutating func immBySize() throws(DecodeError) -> UInt64 { d.osz == 0 ? try imm8() : try immZ() }

    var rexR: UInt8 { rex & 4 != 0 ? 8 : 0 }
    var rexX: UInt8 { rex & 2 != 0 ? 8 : 0 }
    var rexB: UInt8 { rex & 1 != 0 ? 8 : 0 }

    /// Register-file byte offset of general register `n` at the current operand size.
    func regOffset(_ n: UInt8, byteOp: Bool) -> UInt8 {
        if byteOp && rex == 0 && n >= 4 && n < 8 { return (n - 4) * 8 + 1 }
        return n * 8
    }

    // The ModRM byte of the instruction being decoded.
    var modrmByte: UInt8 = 0
    var modrmReg: UInt8 { (modrmByte >> 3) & 7 }

    /// Decodes ModRM (+SIB, displacement). `byteOp` selects 8-bit register naming.
    mutating func modrm(byteOp: Bool = false) throws(DecodeError) {
        let m = try byte()
        modrmByte = m
        let mod = m >> 6, regField = (m >> 3) & 7, rmField = m & 7
        d.reg = regOffset(regField | rexR, byteOp: byteOp)
        if mod == 3 {
            d.mem = false
            d.rm = regOffset(rmField | rexB, byteOp: byteOp)
            return
        }
        d.mem = true
        var seg = Seg.ds
        if d.asz == 1 {
            // 16-bit addressing: fixed base/index pairs.
            let bx = UInt8(Reg.rbx * 8), bp = UInt8(Reg.rbp * 8), si = UInt8(Reg.rsi * 8), di = UInt8(Reg.rdi * 8)
            let z = UInt8(Reg.zero * 8)
            let pairs: [(UInt8, UInt8)] = [(bx, si), (bx, di), (bp, si), (bp, di), (si, z), (di, z), (bp, z), (bx, z)]
            (d.base, d.index) = pairs[Int(rmField)]
            if rmField == 2 || rmField == 3 { seg = Seg.ss }
            if mod == 0 && rmField == 6 {
                d.base = z
                d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm16()))
            } else if rmField == 6 {
                seg = Seg.ss
            }
            if mod == 1 { d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm8())) }
            if mod == 2 { d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm16())) }
        } else {
            var baseReg = rmField | rexB
            if rmField == 4 {
                let sib = try byte()
                d.scale = sib >> 6
                let idx = ((sib >> 3) & 7) | rexX
                d.index = idx == 4 ? UInt8(Reg.zero * 8) : idx * 8
                baseReg = (sib & 7) | rexB
                if sib & 7 == 5 && mod == 0 {
                    d.base = UInt8(Reg.zero * 8)
                    d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm32()))
                } else {
                    d.base = baseReg * 8
                    if baseReg == 4 || baseReg == 5 { seg = Seg.ss }
                }
            } else if rmField == 5 && mod == 0 {
                // disp32: RIP-relative in 64-bit mode, absolute otherwise.
                d.base = codeSize == 2 ? UInt8(Reg.rip * 8) : UInt8(Reg.zero * 8)
                d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm32()))
            } else {
                d.base = baseReg * 8
                if baseReg == 4 || baseReg == 5 { seg = Seg.ss }
            }
            if mod == 1 { d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm8())) }
            if mod == 2 { d.disp = Int32(truncatingIfNeeded: Int64(bitPattern: try imm32())) }
        }
        if segOverride >= 0 { seg = segOverride }
        d.seg = UInt8(seg)
    }

    /// Decodes one instruction. Undefined encodings decode to `.ud` (not an error): the executor raises #UD.
    mutating func decode() throws(DecodeError) -> DecodedInsn {
        var lock = false
        var op: UInt8
        // Prefixes.
        while true {
            op = try byte()
            switch op {
            case 0x26, 0x2E, 0x36, 0x3E:
                // In 64-bit mode ES/CS/SS/DS overrides are ignored.
                if codeSize != 2 { segOverride = Int(op >> 3) & 3 }
                rex = 0; continue
            case 0x64, 0x65: segOverride = Int(op) - 0x64 + Seg.fs; rex = 0; continue
            case 0x66: opsizePrefix = true; rex = 0; continue
            case 0x67: adsizePrefix = true; rex = 0; continue
            case 0xF0: lock = true; rex = 0; continue
            case 0xF2: rep = Pfx.repne; rex = 0; continue
            case 0xF3: rep = Pfx.rep; rex = 0; continue
            case 0x40...0x4F where codeSize == 2: rex = op; continue
            default: break
            }
            break
        }
        // Sizes.
        switch codeSize {
        case 2:
            d.osz = rex & 8 != 0 ? 3 : (opsizePrefix ? 1 : 2)
            d.asz = adsizePrefix ? 2 : 3
        case 1:
            d.osz = opsizePrefix ? 1 : 2
            d.asz = adsizePrefix ? 1 : 2
        default:
            d.osz = opsizePrefix ? 2 : 1
            d.asz = adsizePrefix ? 2 : 1
        }
        d.seg = UInt8(segOverride >= 0 ? segOverride : Seg.ds)
        d.pfx = rep | (lock ? Pfx.lock : 0) | (opsizePrefix ? Pfx.opsize : 0) | (rex & 8 != 0 ? Pfx.rexW : 0)
            | (rex != 0 ? Pfx.rex : 0)
        var lockable = false
        if op == 0x0F {
            lockable = try decodeTwoByte()
        } else {
            lockable = try decodeOneByte(op)
        }
        if lock && !(lockable && d.mem) { d.op = .ud }
        d.len = UInt8(pos)
        if d.op == .ud || d.op == .unimpl { endsBlock = true }
        return d
    }

    /// In 64-bit mode, stack operations and near branches default to 64-bit operands (66 gives 16).
    mutating func stackSize() {
        if codeSize == 2 { d.osz = opsizePrefix ? 1 : 3 }
    }
    mutating func branchSize() {
        if codeSize == 2 { d.osz = 3 }
    }

    /// Returns whether the instruction accepts LOCK (with a memory destination).
    mutating func decodeOneByte(_ op: UInt8) throws(DecodeError) -> Bool {
        let is64 = codeSize == 2
        switch op {
        case 0x00...0x3F where op & 7 < 6:
            let kind = (op >> 3) & 7
            d.sub = kind
            let byteOp = op & 1 == 0
            if byteOp { d.osz = 0 }
            switch op & 7 {
            case 0, 1: try modrm(byteOp: byteOp); d.op = .aluEG; return kind != AluKind.cmp
            case 2, 3: try modrm(byteOp: byteOp); d.op = .aluGE
            case 4: d.op = .aluEI; d.rm = 0; d.imm = try imm8()
            default: d.op = .aluEI; d.rm = 0; d.imm = try immZ()
            }
        case 0x06, 0x0E, 0x16, 0x1E:
            if is64 { d.op = .ud } else { d.op = .pushSeg; d.sub = op >> 3 }
        case 0x07, 0x17, 0x1F:
            if is64 { d.op = .ud } else { d.op = .popSeg; d.sub = op >> 3; endsBlock = true }
        case 0x27: d.op = is64 ? .ud : .daa
        case 0x2F: d.op = is64 ? .ud : .das
        case 0x37: d.op = is64 ? .ud : .aaa
        case 0x3F: d.op = is64 ? .ud : .aas
        case 0x40...0x47: d.op = .incE; d.rm = (op & 7) * 8
        case 0x48...0x4F: d.op = .decE; d.rm = (op & 7) * 8
        case 0x50...0x57: stackSize(); d.op = .pushE; d.rm = ((op & 7) | rexB) * 8
        case 0x58...0x5F: stackSize(); d.op = .popE; d.rm = ((op & 7) | rexB) * 8
        case 0x60: d.op = is64 ? .ud : .pusha
        case 0x61: d.op = is64 ? .ud : .popa
        case 0x62:
            if is64 { d.op = .ud } else { try modrm(); d.op = d.mem ? .bound : .ud }
        case 0x63:
            try modrm()
            if is64 { d.op = .movsxd } else { d.osz = 1; d.op = .arpl }
        case 0x68: stackSize(); d.op = .pushI; d.imm = try immZ()
        case 0x69: try modrm(); d.op = .imulGEI; d.imm = try immZ()
        case 0x6A: stackSize(); d.op = .pushI; d.imm = try imm8()
        case 0x6B: try modrm(); d.op = .imulGEI; d.imm = try imm8()
        case 0x6C, 0x6D: if op == 0x6C { d.osz = 0 }; if d.osz == 3 { d.osz = 2 }; d.op = .ins; endsBlock = true
        case 0x6E, 0x6F: if op == 0x6E { d.osz = 0 }; if d.osz == 3 { d.osz = 2 }; d.op = .outs; endsBlock = true
        case 0x70...0x7F: branchSize(); d.op = .jcc; d.sub = op & 0xF; d.imm = try imm8(); endsBlock = true
        case 0x80...0x83:
            if op == 0x82 && is64 { d.op = .ud; return false }
            let byteOp = op != 0x81 && op != 0x83
            if byteOp { d.osz = 0 }
            try modrm(byteOp: byteOp)
            d.sub = modrmReg
            d.op = .aluEI
            d.imm = op == 0x81 ? try immZ() : try imm8()
            return d.sub != AluKind.cmp
        case 0x84, 0x85: if op == 0x84 { d.osz = 0 }; try modrm(byteOp: op == 0x84); d.op = .testEG
        case 0x86, 0x87: if op == 0x86 { d.osz = 0 }; try modrm(byteOp: op == 0x86); d.op = .xchgEG; return true
        case 0x88...0x8B:
            if op & 1 == 0 { d.osz = 0 }
            try modrm(byteOp: op & 1 == 0)
            d.op = op & 2 == 0 ? .movEG : .movGE
        case 0x8C:
            try modrm(); d.reg = modrmReg
            if d.reg > 5 { d.op = .ud } else { d.op = .movEsreg; if d.mem { d.osz = 1 } }
        case 0x8D: try modrm(); d.op = d.mem ? .lea : .ud
        case 0x8E:
            try modrm(); d.reg = modrmReg; d.osz = 1
            if d.reg > 5 || d.reg == UInt8(Seg.cs) { d.op = .ud } else { d.op = .movSregE; endsBlock = true }
        case 0x8F:
            stackSize(); try modrm()
            d.op = modrmReg == 0 ? .popE : .ud
        case 0x90:
            if rex & 1 != 0 { d.op = .xchgEG; d.reg = 0; d.rm = 8 * 8; d.mem = false }
            else { d.op = rep == Pfx.rep ? .pause : .nop }
        case 0x91...0x97: d.op = .xchgEG; d.reg = 0; d.rm = ((op & 7) | rexB) * 8; d.mem = false
        case 0x98: d.op = .cbw
        case 0x99: d.op = .cwd
        case 0x9A:
            if is64 { d.op = .ud } else {
                d.op = .callFarImm; d.imm = d.osz == 1 ? try imm16() & 0xFFFF : try imm32() & 0xFFFF_FFFF
                d.disp = Int32(try imm16() & 0xFFFF); endsBlock = true
            }
        case 0x9B: d.op = .fwait
        case 0x9C: stackSize(); d.op = .pushf
        case 0x9D: stackSize(); d.op = .popf; endsBlock = true
        case 0x9E: d.op = .sahf
        case 0x9F: d.op = .lahf
        case 0xA0...0xA3:
            if op & 1 == 0 { d.osz = 0 }
            d.op = op & 2 == 0 ? .movAccMoffs : .movMoffsAcc
            d.mem = true
            d.base = UInt8(Reg.zero * 8)
            switch d.asz {
            case 1: d.imm = try imm16() & 0xFFFF
            case 2: d.imm = try imm32() & 0xFFFF_FFFF
            default: d.imm = try imm64()
            }
        case 0xA4, 0xA5: if op == 0xA4 { d.osz = 0 }; d.op = .movs
        case 0xA6, 0xA7: if op == 0xA6 { d.osz = 0 }; d.op = .cmps
        case 0xA8: d.osz = 0; d.op = .testEI; d.rm = 0; d.imm = try imm8()
        case 0xA9: d.op = .testEI; d.rm = 0; d.imm = try immZ()
        case 0xAA, 0xAB: if op == 0xAA { d.osz = 0 }; d.op = .stos
        case 0xAC, 0xAD: if op == 0xAC { d.osz = 0 }; d.op = .lods
        case 0xAE, 0xAF: if op == 0xAE { d.osz = 0 }; d.op = .scas
        case 0xB0...0xB7: d.osz = 0; d.op = .movEI; d.rm = regOffset((op & 7) | rexB, byteOp: true); d.imm = try imm8()
        case 0xB8...0xBF:
            d.op = .movEI; d.rm = ((op & 7) | rexB) * 8
            d.imm = d.osz == 3 ? try imm64() : try immZ()
        case 0xC0, 0xC1, 0xD0...0xD3:
            let byteOp = op & 1 == 0
            if byteOp { d.osz = 0 }
            try modrm(byteOp: byteOp)
            d.sub = modrmReg
            switch op {
            case 0xC0, 0xC1: d.op = .shiftEI; d.imm = try imm8() & 0xFF
            case 0xD0, 0xD1: d.op = .shiftEI; d.imm = 1
            default: d.op = .shiftECL
            }
        case 0xC2: branchSize(); d.op = .ret; d.imm = try imm16() & 0xFFFF; endsBlock = true
        case 0xC3: branchSize(); d.op = .ret; d.imm = 0; endsBlock = true
        case 0xC4, 0xC5:
            // LES/LDS; VEX in 64-bit mode (and with mod == 3 in 32-bit mode): AVX is not offered.
            if is64 { d.op = .ud } else {
                try modrm()
                if d.mem { d.op = .lxs; d.sub = op == 0xC4 ? UInt8(Seg.es) : UInt8(Seg.ds) } else { d.op = .ud }
            }
        case 0xC6, 0xC7:
            if op == 0xC6 { d.osz = 0 }
            try modrm(byteOp: op == 0xC6)
            d.op = modrmReg == 0 ? .movEI : .ud
            d.imm = op == 0xC6 ? try imm8() : try immZ()
        case 0xC8:
            stackSize(); d.op = .enter; d.imm = try imm16() & 0xFFFF; d.sub = UInt8(try imm8() & 0xFF)
        case 0xC9: stackSize(); d.op = .leave
        case 0xCA: d.op = .retf; d.imm = try imm16() & 0xFFFF; endsBlock = true
        case 0xCB: d.op = .retf; d.imm = 0; endsBlock = true
        case 0xCC: d.op = .int3; endsBlock = true
        case 0xCD: d.op = .int; d.imm = try imm8() & 0xFF; endsBlock = true
        case 0xCE: d.op = is64 ? .ud : .into; endsBlock = true
        case 0xCF: d.op = .iret; endsBlock = true
        case 0xD4: d.op = is64 ? .ud : .aam; d.imm = try imm8() & 0xFF
        case 0xD5: d.op = is64 ? .ud : .aad; d.imm = try imm8() & 0xFF
        case 0xD6: d.op = is64 ? .ud : .salc
        case 0xD7: d.op = .xlat; d.osz = 0
        case 0xD8...0xDF:
            try modrm()
            d.op = .x87
            d.imm = UInt64(op) << 8 | UInt64(modrmByte)
        case 0xE0...0xE2: branchSize(); d.op = .loop; d.sub = op - 0xE0; d.imm = try imm8(); endsBlock = true
        case 0xE3: branchSize(); d.op = .jcxz; d.imm = try imm8(); endsBlock = true
        case 0xE4...0xE7:
            if op & 1 == 0 { d.osz = 0 } else if d.osz == 3 { d.osz = 2 }
            d.op = op & 2 == 0 ? .inImm : .outImm; d.imm = try imm8() & 0xFF; endsBlock = true
        case 0xEC...0xEF:
            if op & 1 == 0 { d.osz = 0 } else if d.osz == 3 { d.osz = 2 }
            d.op = op & 2 == 0 ? .inDX : .outDX; endsBlock = true
        case 0xE8: branchSize(); d.op = .callRel; d.imm = try (d.osz == 1 ? imm16() : imm32()); endsBlock = true
        case 0xE9: branchSize(); d.op = .jmpRel; d.imm = try (d.osz == 1 ? imm16() : imm32()); endsBlock = true
        case 0xEA:
            if is64 { d.op = .ud } else {
                d.op = .jmpFarImm; d.imm = d.osz == 1 ? try imm16() & 0xFFFF : try imm32() & 0xFFFF_FFFF
                d.disp = Int32(try imm16() & 0xFFFF); endsBlock = true
            }
        case 0xEB: branchSize(); d.op = .jmpRel; d.imm = try imm8(); endsBlock = true
        case 0xF1: d.op = .int1; endsBlock = true
        case 0xF4: d.op = .hlt; endsBlock = true
        case 0xF5: d.op = .cmc
        case 0xF6, 0xF7:
            if op == 0xF6 { d.osz = 0 }
            try modrm(byteOp: op == 0xF6)
            switch modrmReg {
            case 0, 1: d.op = .testEI; d.imm = op == 0xF6 ? try imm8() : try immZ()
            case 2: d.op = .notE; return true
            case 3: d.op = .negE; return true
            case 4: d.op = .mulE
            case 5: d.op = .imulE
            case 6: d.op = .divE
            default: d.op = .idivE
            }
        case 0xF8: d.op = .clc
        case 0xF9: d.op = .stc
        case 0xFA: d.op = .cli
        case 0xFB: d.op = .sti; endsBlock = true
        case 0xFC: d.op = .cld
        case 0xFD: d.op = .std
        case 0xFE:
            d.osz = 0
            try modrm(byteOp: true)
            switch modrmReg {
            case 0: d.op = .incE; return true
            case 1: d.op = .decE; return true
            default: d.op = .ud
            }
        case 0xFF:
            try modrm()
            switch modrmReg {
            case 0: d.op = .incE; return true
            case 1: d.op = .decE; return true
            case 2: branchSize(); d.op = .callE; endsBlock = true
            case 3: d.op = d.mem ? .callFarE : .ud; endsBlock = true
            case 4: branchSize(); d.op = .jmpE; endsBlock = true
            case 5: d.op = d.mem ? .jmpFarE : .ud; endsBlock = true
            case 6: stackSize(); d.op = .pushE
            default: d.op = .ud
            }
        default:
            d.op = .ud
        }
        return false
    }

    mutating func decodeTwoByte() throws(DecodeError) -> Bool {
        let op = try byte()
        let is64 = codeSize == 2
        switch op {
        case 0x00:
            try modrm()
            switch modrmReg {
            case 0: d.op = .sldt
            case 1: d.op = .str
            case 2: d.op = .lldt; d.osz = 1
            case 3: d.op = .ltr; d.osz = 1
            case 4: d.op = .verr; d.osz = 1
            case 5: d.op = .verw; d.osz = 1
            default: d.op = .ud
            }
        case 0x01:
            try modrm()
            let reg = modrmReg
            if d.mem {
                switch reg {
                case 0: d.op = .sgdt
                case 1: d.op = .sidt
                case 2: d.op = .lgdt; endsBlock = true
                case 3: d.op = .lidt; endsBlock = true
                case 4: d.op = .smsw
                case 6: d.op = .lmsw; endsBlock = true
                case 7: d.op = .invlpg; endsBlock = true
                default: d.op = .ud
                }
            } else {
                switch modrmByte {
                case 0xF8: d.op = is64 ? .swapgs : .ud
                case 0xF9: d.op = .rdtscp
                default:
                    switch reg {
                    case 4: d.op = .smsw
                    case 6: d.op = .lmsw; endsBlock = true
                    default: d.op = .ud   // MONITOR/MWAIT, XGETBV, CLAC/STAC, VMX: not offered
                    }
                }
            }
        case 0x02: try modrm(); d.op = .lar
        case 0x03: try modrm(); d.op = .lsl
        case 0x05: d.op = is64 ? .syscall : .ud; endsBlock = true
        case 0x06: d.op = .clts
        case 0x07: d.op = is64 ? .sysret : .ud; endsBlock = true
        case 0x08, 0x09: d.op = .wbinvd
        case 0x0B: d.op = .ud
        case 0x0D: try modrm(); d.op = d.mem ? .nop : .ud   // PREFETCHW
        case 0x18...0x1F: try modrm(); d.op = .nop          // hint NOPs, PREFETCHh
        case 0x20...0x23:
            // MOV to/from CR/DR: ModRM.mod is ignored (always register).
            let m = try byte()
            modrmByte = m
            d.mem = false
            d.rm = ((m & 7) | rexB) * 8
            d.reg = ((m >> 3) & 7) | rexR
            d.osz = is64 ? 3 : 2
            switch op {
            case 0x20: d.op = .movFromCR
            case 0x21: d.op = .movFromDR
            case 0x22: d.op = .movToCR; endsBlock = true
            default: d.op = .movToDR; endsBlock = true
            }
        case 0x30: d.op = .wrmsr; endsBlock = true
        case 0x31: d.op = .rdtsc
        case 0x32: d.op = .rdmsr
        case 0x33: d.op = .rdpmc
        case 0x34: d.op = .sysenter; endsBlock = true
        case 0x35: d.op = .sysexit; endsBlock = true
        case 0x40...0x4F: try modrm(); d.op = .cmovcc; d.sub = op & 0xF
        case 0x80...0x8F:
            branchSize(); d.op = .jcc; d.sub = op & 0xF
            d.imm = try (d.osz == 1 ? imm16() : imm32()); endsBlock = true
        case 0x90...0x9F: d.osz = 0; try modrm(byteOp: true); d.op = .setcc; d.sub = op & 0xF
        case 0xA0: stackSize(); d.op = .pushSeg; d.sub = UInt8(Seg.fs)
        case 0xA1: stackSize(); d.op = .popSeg; d.sub = UInt8(Seg.fs)
        case 0xA2: d.op = .cpuid
        case 0xA3: try modrm(); d.op = .btEG; d.sub = 0
        case 0xA4: try modrm(); d.op = .shldI; d.imm = try imm8() & 0xFF
        case 0xA5: try modrm(); d.op = .shldCL
        case 0xA8: stackSize(); d.op = .pushSeg; d.sub = UInt8(Seg.gs)
        case 0xA9: stackSize(); d.op = .popSeg; d.sub = UInt8(Seg.gs)
        case 0xAB: try modrm(); d.op = .btEG; d.sub = 1; return true
        case 0xAC: try modrm(); d.op = .shrdI; d.imm = try imm8() & 0xFF
        case 0xAD: try modrm(); d.op = .shrdCL
        case 0xAE:
            try modrm()
            if d.mem {
                switch modrmReg {
                case 0: d.op = .fxsave
                case 1: d.op = .fxrstor
                case 2: d.op = .ldmxcsr
                case 3: d.op = .stmxcsr
                case 7: d.op = .clflush
                default: d.op = .ud   // XSAVE family: not offered
                }
            } else if rep == Pfx.rep && modrmReg <= 3 && is64 {
                d.op = .rdwrFSGSBase; d.sub = modrmReg
            } else {
                d.op = modrmReg >= 5 ? .fence : .ud
            }
        case 0xAF: try modrm(); d.op = .imulGE
        case 0xB0, 0xB1:
            if op == 0xB0 { d.osz = 0 }
            try modrm(byteOp: op == 0xB0); d.op = .cmpxchg; return true
        case 0xB2, 0xB4, 0xB5:
            try modrm()
            if d.mem { d.op = .lxs; d.sub = op == 0xB2 ? UInt8(Seg.ss) : UInt8(op - 0xB4 + 4) } else { d.op = .ud }
            if op == 0xB2 { endsBlock = true }
        case 0xB3: try modrm(); d.op = .btEG; d.sub = 2; return true
        case 0xB6, 0xB7:
            try modrm(byteOp: op == 0xB6); d.op = .movzx; d.sub = op == 0xB6 ? 0 : 1
            if op == 0xB6 { d.reg = regOffset(modrmReg | rexR, byteOp: false) }
        case 0xB8: try modrm(); d.op = .ud   // POPCNT: not offered
        case 0xB9: try modrm(); d.op = .ud   // UD1
        case 0xBA:
            try modrm()
            let r = modrmReg
            d.imm = try imm8() & 0xFF
            if r < 4 { d.op = .ud } else { d.op = .btEI; d.sub = r - 4; return r != 4 }
        case 0xBB: try modrm(); d.op = .btEG; d.sub = 3; return true
        case 0xBC: try modrm(); d.op = .bsf   // TZCNT without BMI1 executes as BSF
        case 0xBD: try modrm(); d.op = .bsr   // LZCNT without ABM executes as BSR
        case 0xBE, 0xBF:
            try modrm(byteOp: op == 0xBE); d.op = .movsx; d.sub = op == 0xBE ? 0 : 1
            if op == 0xBE { d.reg = regOffset(modrmReg | rexR, byteOp: false) }
        case 0xC0, 0xC1:
            if op == 0xC0 { d.osz = 0 }
            try modrm(byteOp: op == 0xC0); d.op = .xadd; return true
        case 0xC7:
            try modrm()
            if modrmReg == 1 && d.mem { d.op = .cmpxchg8b; return true }
            d.op = .ud   // RDRAND/RDSEED/VMX: not offered
        case 0xC8...0xCF: d.op = .bswap; d.rm = ((op & 7) | rexB) * 8
        case 0x77:
            // EMMS: no ModRM.
            d.op = .sse
            d.imm = UInt64(op) << 8
        case 0x10...0x17, 0x28...0x2F, 0x50...0x7F, 0xC2...0xC6, 0xD0...0xFF:
            // SSE/SSE2/MMX: decoded by the SIMD unit at execution.
            try modrm()
            d.op = .sse
            d.imm = UInt64(op) << 8 | UInt64(modrmByte)
            if op == 0x70 || op == 0x71 || op == 0x72 || op == 0x73 || op == 0xC2 || op == 0xC4 || op == 0xC5 || op == 0xC6 {
                d.sub = UInt8(try imm8() & 0xFF)
            }
        default:
            d.op = .ud
        }
        return false
    }
}
