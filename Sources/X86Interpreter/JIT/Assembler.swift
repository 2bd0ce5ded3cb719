// A small x86-64 machine-code encoder for the translator: the instruction forms it emits and
// nothing else. Operands are host registers or [base + index*scale + disp32] memory; jumps use
// 32-bit displacements to labels resolved when the block is finished.

/// Host general registers in encoding order.
enum HReg: UInt8 {
    case rax = 0, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15
    var low: UInt8 { rawValue & 7 }
    var ext: UInt8 { rawValue >> 3 }
}

/// A host memory operand.
struct HMem {
    var base: HReg
    var index: HReg? = nil
    /// log2 of the index scale.
    var scale: UInt8 = 0
    var disp: Int32 = 0

    init(_ base: HReg, _ disp: Int32 = 0) { self.base = base; self.disp = disp }
    init(_ base: HReg, index: HReg, scale: UInt8, disp: Int32 = 0) {
        self.base = base; self.index = index; self.scale = scale; self.disp = disp
    }
}

/// An operand that is a register or memory (ModRM.rm).
enum HRM {
    case r(HReg)
    case m(HMem)
}

/// x86 condition codes (the low nibble of Jcc/SETcc/CMOVcc).
typealias CondCode = UInt8

struct Label { let id: Int }

struct Assembler {
    var bytes: [UInt8] = []
    private var labelPos: [Int] = []
    /// (position of the rel32 field, label id)
    private var fixups: [(Int, Int)] = []

    /// Load forwarding: guest registers live in memory at [r15 + 8 * slot] and every write goes
    /// there at once (write-through), but a host register known to hold a slot's current value
    /// serves later loads of it, so dependency chains do not go through memory. `holds[r]` is the
    /// slot host register r holds (-1: none). Anything that writes r, or the slot, or may change
    /// either (a call, a join of control flow) forgets the pairing.
    private var holds = [Int8](repeating: -1, count: 16)
    /// The base register of the guest register file.
    static let guestBase = HReg.r15
    static let guestSlots: Int32 = 18

    init() { bytes.reserveCapacity(4096) }

    // MARK: Load forwarding

    private static func slot(_ rm: HRM) -> Int8? {
        guard case .m(let m) = rm, m.base == guestBase, m.index == nil, m.disp >= 0, m.disp < guestSlots * 8 else { return nil }
        return Int8(truncatingIfNeeded: m.disp >> 3)
    }

    private mutating func clobber(_ r: HReg) { holds[Int(r.rawValue)] = -1 }

    /// A write to guest memory `rm` (if it is a register slot) invalidates its holders.
    private mutating func wrote(_ rm: HRM) {
        switch rm {
        case .r(let r): clobber(r)
        case .m:
            guard let s = Assembler.slot(rm) else { return }
            for i in 0..<16 where holds[i] == s { holds[i] = -1 }
        }
    }

    private func holder(of slot: Int8) -> HReg? {
        guard let i = holds.firstIndex(of: slot) else { return nil }
        return HReg(rawValue: UInt8(i))
    }

    /// Forgets every pairing (a call clobbered the scratch registers, or control flow joins here).
    mutating func forgetAll() { for i in 0..<16 { holds[i] = -1 } }

    var position: Int { bytes.count }

    // MARK: Labels

    mutating func newLabel() -> Label {
        labelPos.append(-1)
        return Label(id: labelPos.count - 1)
    }

    mutating func bind(_ l: Label) {
        labelPos[l.id] = bytes.count
        forgetAll()
    }

    func isBound(_ l: Label) -> Bool { labelPos[l.id] >= 0 }

    /// Resolves every jump to its label. Returns false if a label was never bound.
    mutating func finish() -> Bool {
        for (at, id) in fixups {
            let target = labelPos[id]
            guard target >= 0 else { return false }
            let rel = Int32(truncatingIfNeeded: target - (at + 4))
            withUnsafeBytes(of: rel.littleEndian) { for i in 0..<4 { bytes[at + i] = $0[i] } }
        }
        fixups.removeAll()
        return true
    }

    // MARK: Raw bytes

    mutating func byte(_ b: UInt8) { bytes.append(b) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }

    // MARK: Encoding core

    /// Prefixes, REX, opcode and ModRM/SIB/displacement for `op reg, rm`. `size` (1, 2, 4, 8) picks
    /// 0x66 and REX.W; byte forms must pass their own (byte) opcode.
    private mutating func emit(_ opcode: [UInt8], size: Int, reg: UInt8, rm: HRM, forceRex: Bool = false) {
        if size == 2 { byte(0x66) }
        var rex: UInt8 = size == 8 ? 0x48 : 0x40
        if reg & 8 != 0 { rex |= 4 }
        var needRex = forceRex || size == 8 || reg & 8 != 0
        switch rm {
        case .r(let r):
            if r.ext != 0 { rex |= 1; needRex = true }
            // SPL/BPL/SIL/DIL need a REX prefix (without one, 4-7 name AH..BH).
            if size == 1 && (r.rawValue >= 4 || reg & 0xF >= 4) { needRex = true }
        case .m(let m):
            if m.base.ext != 0 { rex |= 1; needRex = true }
            if let i = m.index, i.ext != 0 { rex |= 2; needRex = true }
            if size == 1 && reg & 0xF >= 4 { needRex = true }
        }
        if needRex { byte(rex) }
        bytes.append(contentsOf: opcode)
        modrm(reg: reg & 7, rm: rm)
    }

    private mutating func modrm(reg: UInt8, rm: HRM) {
        switch rm {
        case .r(let r):
            byte(0xC0 | reg << 3 | r.low)
        case .m(let m):
            let needSIB = m.index != nil || m.base.low == 4
            let mod: UInt8
            if m.disp == 0 && m.base.low != 5 { mod = 0 }
            else if m.disp >= -128 && m.disp <= 127 { mod = 1 }
            else { mod = 2 }
            if needSIB {
                byte(mod << 6 | reg << 3 | 4)
                let idx = m.index?.low ?? 4
                precondition(m.index != .rsp, "rsp cannot be an index")
                byte(m.scale << 6 | idx << 3 | m.base.low)
            } else {
                byte(mod << 6 | reg << 3 | m.base.low)
            }
            if mod == 1 { byte(UInt8(bitPattern: Int8(truncatingIfNeeded: m.disp))) }
            else if mod == 2 { u32(UInt32(bitPattern: m.disp)) }
        }
    }

    // MARK: Moves

    /// reg ← rm (size 1, 2, 4, 8; a 4-byte load zero-extends into the 64-bit register).
    mutating func load(_ size: Int, _ dst: HReg, _ src: HRM) {
        if let s = Assembler.slot(src), case .m(let m) = src, m.disp & 7 == 0, size >= 4, let h = holder(of: s) {
            if size == 8 {
                if h != dst { emit([0x89], size: 8, reg: h.rawValue, rm: .r(dst)) }
                holds[Int(dst.rawValue)] = s
            } else {
                emit([0x89], size: 4, reg: h.rawValue, rm: .r(dst))   // mov dst32, h32 zero-extends
                if h != dst { clobber(dst) } else { holds[Int(dst.rawValue)] = -1 }
            }
            return
        }
        emit([size == 1 ? 0x8A : 0x8B], size: size, reg: dst.rawValue, rm: src)
        clobber(dst)
        if size == 8, let s = Assembler.slot(src), case .m(let m) = src, m.disp & 7 == 0 { holds[Int(dst.rawValue)] = s }
    }

    /// rm ← reg.
    mutating func store(_ size: Int, _ dst: HRM, _ src: HReg) {
        emit([size == 1 ? 0x88 : 0x89], size: size, reg: src.rawValue, rm: dst)
        switch dst {
        case .r(let r):
            let h = holds[Int(src.rawValue)]
            clobber(r)
            if size == 8 { holds[Int(r.rawValue)] = h }
        case .m(let m):
            wrote(dst)
            if size == 8, m.disp & 7 == 0, let s = Assembler.slot(dst) {
                clobber(src)
                holds[Int(src.rawValue)] = s
            }
        }
    }

    mutating func mov(_ dst: HReg, _ src: HReg) { store(8, .r(dst), src) }

    /// dst ← imm, in the shortest form.
    mutating func movImm(_ dst: HReg, _ imm: UInt64) {
        clobber(dst)
        if imm <= 0xFFFF_FFFF {
            if dst.ext != 0 { byte(0x41) }
            byte(0xB8 | dst.low); u32(UInt32(imm))
        } else if Int64(bitPattern: imm) >= Int64(Int32.min) && Int64(bitPattern: imm) < 0 {
            emit([0xC7], size: 8, reg: 0, rm: .r(dst)); u32(UInt32(truncatingIfNeeded: imm))
        } else {
            byte(0x48 | dst.ext); byte(0xB8 | dst.low); u64(imm)
        }
    }

    /// rm ← sign-extended imm32 (size 8), imm32 (4), imm16 (2) or imm8 (1).
    mutating func storeImm(_ size: Int, _ dst: HRM, _ imm: Int32) {
        emit([size == 1 ? 0xC6 : 0xC7], size: size, reg: 0, rm: dst)
        immediate(size, imm)
        wrote(dst)
    }

    private mutating func immediate(_ size: Int, _ imm: Int32) {
        switch size {
        case 1: byte(UInt8(truncatingIfNeeded: imm))
        case 2: withUnsafeBytes(of: UInt16(truncatingIfNeeded: imm).littleEndian) { bytes.append(contentsOf: $0) }
        default: u32(UInt32(bitPattern: imm))
        }
    }

    mutating func lea(_ dst: HReg, _ m: HMem) { emit([0x8D], size: 8, reg: dst.rawValue, rm: .m(m)); clobber(dst) }

    /// movzx dst(32/64) ← rm8/rm16.
    mutating func movzx(_ dst: HReg, srcSize: Int, _ src: HRM) {
        if let s = Assembler.slot(src), case .m(let m) = src, m.disp & 7 == 0, let h = holder(of: s) {
            emit([0x0F, srcSize == 1 ? 0xB6 : 0xB7], size: 4, reg: dst.rawValue, rm: .r(h), forceRex: srcSize == 1 && h.rawValue >= 4)
            clobber(dst)
            return
        }
        defer { clobber(dst) }
        emit([0x0F, srcSize == 1 ? 0xB6 : 0xB7], size: 4, reg: dst.rawValue, rm: src,
             forceRex: srcSize == 1 && { if case .r(let r) = src { return r.rawValue >= 4 } else { return false } }())
    }

    /// movsx dst(size) ← rm8/rm16; movsxd for 32.
    mutating func movsx(_ size: Int, _ dst: HReg, srcSize: Int, _ src: HRM) {
        defer { clobber(dst) }
        if srcSize == 4 {
            emit([0x63], size: 8, reg: dst.rawValue, rm: src)
        } else {
            emit([0x0F, srcSize == 1 ? 0xBE : 0xBF], size: size, reg: dst.rawValue, rm: src,
                 forceRex: srcSize == 1 && { if case .r(let r) = src { return r.rawValue >= 4 } else { return false } }())
        }
    }

    // MARK: Arithmetic

    /// ALU kind (ADD OR ADC SBB AND SUB XOR CMP = 0...7): reg op= rm.
    mutating func alu(_ kind: UInt8, _ size: Int, _ dst: HReg, _ src: HRM) {
        emit([kind << 3 | (size == 1 ? 2 : 3)], size: size, reg: dst.rawValue, rm: src)
        if kind != 7 { clobber(dst) }
    }

    /// ALU kind: rm op= reg.
    mutating func alu(_ kind: UInt8, _ size: Int, _ dst: HRM, _ src: HReg) {
        emit([kind << 3 | (size == 1 ? 0 : 1)], size: size, reg: src.rawValue, rm: dst)
        if kind != 7 { wrote(dst) }
    }

    /// ALU kind: rm op= imm (sign-extended imm32 for 64-bit).
    mutating func aluImm(_ kind: UInt8, _ size: Int, _ dst: HRM, _ imm: Int32) {
        defer { if kind != 7 { wrote(dst) } }
        if size == 1 {
            emit([0x80], size: 1, reg: kind, rm: dst); byte(UInt8(truncatingIfNeeded: imm))
        } else if imm >= -128 && imm <= 127 {
            emit([0x83], size: size, reg: kind, rm: dst); byte(UInt8(bitPattern: Int8(imm)))
        } else {
            emit([0x81], size: size, reg: kind, rm: dst); immediate(size, imm)
        }
    }

    mutating func test(_ size: Int, _ a: HRM, _ b: HReg) {
        emit([size == 1 ? 0x84 : 0x85], size: size, reg: b.rawValue, rm: a)
    }

    mutating func testImm(_ size: Int, _ a: HRM, _ imm: Int32) {
        emit([size == 1 ? 0xF6 : 0xF7], size: size, reg: 0, rm: a)
        immediate(size, imm)
    }

    /// Shift/rotate group 2 by an immediate: sub 0 ROL, 1 ROR, 2 RCL, 3 RCR, 4 SHL, 5 SHR, 7 SAR.
    mutating func shiftImm(_ sub: UInt8, _ size: Int, _ dst: HRM, _ count: UInt8) {
        emit([size == 1 ? 0xC0 : 0xC1], size: size, reg: sub, rm: dst); byte(count)
        wrote(dst)
    }

    /// Shift/rotate group 2 by CL.
    mutating func shiftCL(_ sub: UInt8, _ size: Int, _ dst: HRM) {
        emit([size == 1 ? 0xD2 : 0xD3], size: size, reg: sub, rm: dst)
        wrote(dst)
    }

    /// Group 3 (F6/F7): 2 NOT, 3 NEG, 4 MUL, 5 IMUL, 6 DIV, 7 IDIV.
    mutating func group3(_ sub: UInt8, _ size: Int, _ rm: HRM) {
        emit([size == 1 ? 0xF6 : 0xF7], size: size, reg: sub, rm: rm)
        if sub <= 3 { wrote(rm) } else { clobber(.rax); clobber(.rdx) }   // MUL/DIV write rdx:rax
    }

    /// INC (sub 0) / DEC (sub 1).
    mutating func incDec(_ sub: UInt8, _ size: Int, _ rm: HRM) {
        emit([size == 1 ? 0xFE : 0xFF], size: size, reg: sub, rm: rm)
        wrote(rm)
    }

    mutating func imul(_ size: Int, _ dst: HReg, _ src: HRM) { emit([0x0F, 0xAF], size: size, reg: dst.rawValue, rm: src); clobber(dst) }

    mutating func imul(_ size: Int, _ dst: HReg, _ src: HRM, imm: Int32) {
        emit([0x69], size: size, reg: dst.rawValue, rm: src); immediate(size == 2 ? 2 : 4, imm)
        clobber(dst)
    }

    mutating func bswap(_ size: Int, _ r: HReg) {
        byte((size == 8 ? 0x48 : 0x40) | r.ext); byte(0x0F); byte(0xC8 | r.low)
        clobber(r)
    }

    // MARK: Flags and conditions

    mutating func setcc(_ cc: CondCode, _ dst: HRM) { emit([0x0F, 0x90 | cc], size: 1, reg: 0, rm: dst); wrote(dst) }

    mutating func cmov(_ cc: CondCode, _ size: Int, _ dst: HReg, _ src: HRM) {
        emit([0x0F, 0x40 | cc], size: size, reg: dst.rawValue, rm: src)
        clobber(dst)
    }

    mutating func lahf() { byte(0x9F); clobber(.rax) }
    mutating func sahf() { byte(0x9E) }
    mutating func pushfq() { byte(0x9C) }
    mutating func popfq() { byte(0x9D) }
    /// Raw instruction bytes whose effect on registers the tracking cannot see: forget everything.
    /// An SSE instruction `[prefix] 0F opcode /r [imm8]`: `reg` is an XMM register number (or a
    /// general register where the instruction takes one), `rm` an XMM register (as the HReg of the
    /// same number), a general register or memory. `writesGPR`: the host general register the
    /// instruction writes, forgotten by load forwarding.
    mutating func sse(_ prefix: UInt8?, _ opcode: UInt8, reg: UInt8, _ rm: HRM, wide: Bool = false, imm: UInt8? = nil,
                      writesGPR: HReg? = nil) {
        if let prefix { byte(prefix) }
        emit([0x0F, opcode], size: wide ? 8 : 4, reg: reg, rm: rm)
        if let imm { byte(imm) }
        if let writesGPR { clobber(writesGPR) }
    }

    mutating func raw(_ b: [UInt8]) { bytes += b; forgetAll() }

    // MARK: Control flow

    mutating func jcc(_ cc: CondCode, _ l: Label) {
        byte(0x0F); byte(0x80 | cc)
        fixups.append((bytes.count, l.id)); u32(0)
    }

    mutating func jmp(_ l: Label) {
        byte(0xE9)
        fixups.append((bytes.count, l.id)); u32(0)
    }

    /// lea dst, [rip + label]: the absolute address of a label.
    mutating func leaRIP(_ dst: HReg, _ l: Label) {
        byte(0x48 | dst.ext << 2); byte(0x8D); byte(0x05 | dst.low << 3)
        fixups.append((bytes.count, l.id)); u32(0)
        clobber(dst)
    }

    mutating func jmp(_ rm: HRM) { emit([0xFF], size: 4, reg: 4, rm: rm) }
    mutating func call(_ rm: HRM) {
        emit([0xFF], size: 4, reg: 2, rm: rm)
        for r in [HReg.rax, .rcx, .rdx, .rsi, .rdi, .r8, .r9, .r10, .r11] { clobber(r) }
    }
    mutating func ret() { byte(0xC3) }

    mutating func push(_ r: HReg) { if r.ext != 0 { byte(0x41) }; byte(0x50 | r.low) }
    mutating func pop(_ r: HReg) { if r.ext != 0 { byte(0x41) }; byte(0x58 | r.low); clobber(r) }
}
