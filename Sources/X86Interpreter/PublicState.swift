import CPUBackend
import VMMemory

// Register and state access for tests, the differential harness and debugging.

extension X86Interpreter {
    /// General-purpose registers in encoding order.
    public enum Register: Int, CaseIterable, Sendable {
        case rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15
    }

    public enum SegmentRegister: Int, CaseIterable, Sendable {
        case es, cs, ss, ds, fs, gs
    }

    public subscript(_ r: Register) -> UInt64 {
        get { gpr(r.rawValue) }
        set { setGPR(r.rawValue, newValue) }
    }

    /// The instruction pointer (RIP/EIP/IP, as an offset in CS).
    public var instructionPointer: UInt64 {
        get { rip }
        set { rip = newValue }
    }

    /// RFLAGS with the lazily evaluated arithmetic flags folded in.
    public var flags: UInt64 {
        get { rflags }
        set {
            setRFlags(newValue)
            st.pointee.eventCheck = true
        }
    }

    public var cr0: UInt64 { st.pointee.cr0 }
    public var cr2: UInt64 { st.pointee.cr2 }
    public var cr3: UInt64 { st.pointee.cr3 }
    public var cr4: UInt64 { st.pointee.cr4 }
    public var efer: UInt64 { st.pointee.efer }
    public var cpl: Int { st.pointee.cpl }
    public var isHalted: Bool { st.pointee.halted }

    /// Writes a control register as MOV CRn would (with its checks and side effects).
    public func setControlRegister(_ n: Int, _ value: UInt64) -> Bool {
        do { try writeCR(n, value); return true } catch { return false }
    }

    public func segment(_ s: SegmentRegister) -> Segment { segs[s.rawValue].segment }

    public func setSegment(_ s: SegmentRegister, _ value: Segment) {
        segs[s.rawValue] = SegmentCache(value)
        if s == .cs { updateMode() } else { finishSegmentLoad(s.rawValue) }
    }

    public var gdt: DescriptorTable {
        DescriptorTable(base: st.pointee.gdtBase, limit: UInt16(truncatingIfNeeded: st.pointee.gdtLimit))
    }
    public var idt: DescriptorTable {
        DescriptorTable(base: st.pointee.idtBase, limit: UInt16(truncatingIfNeeded: st.pointee.idtLimit))
    }

    /// Reads an MSR as RDMSR would; nil where RDMSR raises #GP.
    public func msr(_ index: UInt32) -> UInt64? { try? readMSR(index) }
    @discardableResult
    public func setMSR(_ index: UInt32, _ value: UInt64) -> Bool {
        do { try writeMSR(index, value); return true } catch { return false }
    }

    /// XMM register i as (low, high) quadwords.
    public func xmm(_ i: Int) -> (UInt64, UInt64) {
        let off = FX.xmm0 + (i & 15) * 16
        return (fx.load(fromByteOffset: off, as: UInt64.self), fx.load(fromByteOffset: off + 8, as: UInt64.self))
    }
    public func setXMM(_ i: Int, _ v: (UInt64, UInt64)) {
        let off = FX.xmm0 + (i & 15) * 16
        fx.storeBytes(of: v.0, toByteOffset: off, as: UInt64.self)
        fx.storeBytes(of: v.1, toByteOffset: off + 8, as: UInt64.self)
    }

    /// x87 physical register Ri (not ST(i)) as (significand, sign and exponent); MMi is its significand.
    public func x87Register(_ i: Int) -> (UInt64, UInt16) {
        let off = FX.st0 + (i & 7) * 16
        return (fx.load(fromByteOffset: off, as: UInt64.self), fx.load(fromByteOffset: off + 8, as: UInt16.self))
    }
    public func setX87Register(_ i: Int, _ v: (UInt64, UInt16)) {
        let off = FX.st0 + (i & 7) * 16
        fx.storeBytes(of: v.0, toByteOffset: off, as: UInt64.self)
        fx.storeBytes(of: v.1, toByteOffset: off + 8, as: UInt16.self)
    }

    /// x87 control word, status word (TOP in bits 11-13) and abridged tag byte (bit i: Ri valid).
    public var x87ControlWord: UInt16 {
        get { fcw }
        set { fcw = newValue }
    }
    public var x87StatusWord: UInt16 {
        get { fsw }
        set { fsw = newValue }
    }
    public var x87TagByte: UInt8 {
        get { ftw }
        set { ftw = newValue }
    }

    /// The guest RAM this CPU runs on.
    public var guestMemory: GuestMemory { memory }

    /// MXCSR.
    public var mxcsrRegister: UInt32 {
        get { mxcsr }
        set { mxcsr = newValue }
    }

    /// Drops every cached translation (as a CR3 write without global pages would).
    public func invalidateTranslations() { flushTLB(keepGlobal: false) }

    /// Power-on reset (real mode at F000:FFF0).
    public func powerOnReset() { reset() }
}
