// The complete architectural state of one x86-64 CPU as a value: what must move when a running guest
// changes CPU backend (the hybrid backend hands it between the software CPU and KVM at every switch
// of privilege level) or is saved and restored. Both backends convert to and from it; neither's
// internal representation leaks into it.

/// A segment register with its hidden part (the fields of KVM's `kvm_segment`).
public struct SegmentState: Codable, Equatable, Sendable {
    public var selector: UInt16
    public var base: UInt64
    /// Byte-granular limit (already scaled by G).
    public var limit: UInt32
    /// Descriptor type (4 bits).
    public var type: UInt8
    public var present: Bool
    public var dpl: UInt8
    /// Default operation size (D/B).
    public var db: Bool
    /// Code/data (true) or system (false).
    public var s: Bool
    /// 64-bit code segment.
    public var l: Bool
    /// Granularity bit as loaded (the limit is already scaled).
    public var g: Bool
    public var avl: Bool
    /// Loaded with a null selector (VMX "unusable"): no access through it.
    public var unusable: Bool

    public init(selector: UInt16 = 0, base: UInt64 = 0, limit: UInt32 = 0xFFFF, type: UInt8 = 3,
                present: Bool = true, dpl: UInt8 = 0, db: Bool = false, s: Bool = true, l: Bool = false,
                g: Bool = false, avl: Bool = false, unusable: Bool = false) {
        self.selector = selector; self.base = base; self.limit = limit; self.type = type
        self.present = present; self.dpl = dpl; self.db = db; self.s = s; self.l = l; self.g = g
        self.avl = avl; self.unusable = unusable
    }

    public init(_ s: Segment) {
        self.init(selector: s.selector, base: s.base, limit: s.limit, type: s.type, present: s.present,
                  dpl: s.dpl, db: s.db, s: s.s, l: s.l, g: s.g, unusable: !s.present)
    }

    public var segment: Segment {
        Segment(base: base, limit: limit, selector: selector, type: type, present: present, dpl: dpl,
                db: db, s: s, l: l, g: g)
    }
}

/// An MSR index and value.
public struct MSRValue: Codable, Equatable, Sendable {
    public var index: UInt32
    public var value: UInt64
    public init(_ index: UInt32, _ value: UInt64) { self.index = index; self.value = value }
}

/// Events that are part of the state between two instructions.
public struct PendingEvents: Codable, Equatable, Sendable {
    /// Interrupts are blocked for one instruction (after STI or MOV SS / POP SS).
    public var interruptShadow = false
    /// An NMI handler is running (NMIs blocked until IRET).
    public var nmiMasked = false
    public var nmiPending = false
    /// An exception raised but not yet delivered (KVM may hold one across an exit).
    public var exception: PendingException? = nil
    /// An external interrupt vector accepted but not yet delivered.
    public var interrupt: UInt8? = nil
    /// HLT: the CPU waits for an interrupt.
    public var halted = false
    public init() {}
}

public struct PendingException: Codable, Equatable, Sendable {
    public var vector: UInt8
    public var errorCode: UInt32?
    public init(vector: UInt8, errorCode: UInt32? = nil) { self.vector = vector; self.errorCode = errorCode }
}

/// Everything software on an x86-64 CPU can observe, as one Codable value.
///
/// - `gpr` holds the sixteen general registers in instruction-encoding order
///   (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
/// - `fxsave` is the 512-byte FXSAVE64 image: x87 (registers in ST(i) order, abridged tag byte),
///   MMX, SSE and MXCSR — the layout both `KVM_GET_FPU` and the FXSAVE instruction use.
/// - `msrs` lists the MSRs in `X86ArchState.architecturalMSRs` that the source CPU implements,
///   sorted by index. EFER, the APIC base and the FS/GS bases live in their own fields.
/// - The local APIC's registers other than TPR (CR8) and the base are interrupt-controller state,
///   not CPU state: they travel with the platform's device state.
public struct X86ArchState: Codable, Equatable, Sendable {
    /// Bumped when fields change meaning; decoders refuse other versions.
    public static let formatVersion = 1
    public var version = X86ArchState.formatVersion

    public var gpr = [UInt64](repeating: 0, count: 16)
    public var rip: UInt64 = 0xFFF0
    public var rflags: UInt64 = 0x2

    public var es = SegmentState(), cs = SegmentState(selector: 0xF000, base: 0xFFFF_0000, type: 0xB)
    public var ss = SegmentState(), ds = SegmentState(), fs = SegmentState(), gs = SegmentState()
    public var ldtr = SegmentState(type: 2, s: false)
    public var tr = SegmentState(type: 0xB, s: false)
    public var gdt = DescriptorTableState(base: 0, limit: 0xFFFF)
    public var idt = DescriptorTableState(base: 0, limit: 0xFFFF)

    public var cr0: UInt64 = 0x10
    public var cr2: UInt64 = 0
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    /// Task priority (CR8 = APIC TPR bits 7:4).
    public var cr8: UInt64 = 0
    public var efer: UInt64 = 0
    public var apicBase: UInt64 = 0xFEE0_0900

    public var msrs: [MSRValue] = []
    public var fxsave = [UInt8](repeating: 0, count: 512)
    /// DR0-DR3.
    public var dr = [UInt64](repeating: 0, count: 4)
    public var dr6: UInt64 = 0xFFFF_0FF0
    public var dr7: UInt64 = 0x400
    public var events = PendingEvents()

    public init() {
        setFXWord(UInt16(0x37F), at: 0)     // FCW at reset
        setFXWord(UInt32(0x1F80), at: 24)   // MXCSR at reset
    }

    /// The MSRs a snapshot or backend switch carries besides EFER, the APIC base and FS/GS base.
    public static let architecturalMSRs: [UInt32] = [
        0x10,                                   // IA32_TSC
        0x174, 0x175, 0x176,                    // SYSENTER_CS/ESP/EIP
        0x1A0,                                  // MISC_ENABLE
        0x277,                                  // PAT
        0x2FF,                                  // MTRR default type
        0x200, 0x201, 0x202, 0x203, 0x204, 0x205, 0x206, 0x207,   // MTRR variable ranges 0-3
        0x208, 0x209, 0x20A, 0x20B, 0x20C, 0x20D, 0x20E, 0x20F,   // MTRR variable ranges 4-7
        0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,  // fixed MTRRs
        0xC000_0081, 0xC000_0082, 0xC000_0083, 0xC000_0084,       // STAR, LSTAR, CSTAR, SFMASK
        0xC000_0102,                            // KERNEL_GS_BASE
        0xC000_0103,                            // TSC_AUX
    ]

    /// The value of MSR `index`, if present.
    public func msr(_ index: UInt32) -> UInt64? { msrs.first { $0.index == index }?.value }

    /// Sets MSR `index`, keeping the list sorted.
    public mutating func setMSR(_ index: UInt32, _ value: UInt64) {
        if let i = msrs.firstIndex(where: { $0.index == index }) { msrs[i].value = value; return }
        msrs.append(MSRValue(index, value))
        msrs.sort { $0.index < $1.index }
    }

    // MARK: FXSAVE image fields

    public var fcw: UInt16 { fxWord(at: 0) }
    public var fsw: UInt16 { fxWord(at: 2) }
    public var mxcsr: UInt32 { fxWord(at: 24) }

    public func fxWord<T: FixedWidthInteger>(at offset: Int, as: T.Type = T.self) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(fxsave[offset + i]) << (8 * i) }
        return v
    }

    public mutating func setFXWord<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { fxsave[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }

    /// XMM register i as (low, high) quadwords.
    public func xmm(_ i: Int) -> (UInt64, UInt64) {
        (fxWord(at: 160 + 16 * i), fxWord(at: 168 + 16 * i))
    }

    /// The segment register `i` in encoding order (ES, CS, SS, DS, FS, GS).
    public subscript(segment i: Int) -> SegmentState {
        get { [es, cs, ss, ds, fs, gs][i] }
        set {
            switch i {
            case 0: es = newValue
            case 1: cs = newValue
            case 2: ss = newValue
            case 3: ds = newValue
            case 4: fs = newValue
            default: gs = newValue
            }
        }
    }

    /// Checks the shape of a decoded value (counts, version), so a corrupt snapshot fails with a
    /// reason instead of trapping later.
    public func validate() throws(ArchStateError) {
        guard version == X86ArchState.formatVersion else { throw .version(version) }
        guard gpr.count == 16 else { throw .malformed("gpr has \(gpr.count) registers, not 16") }
        guard fxsave.count == 512 else { throw .malformed("fxsave has \(fxsave.count) bytes, not 512") }
        guard dr.count == 4 else { throw .malformed("dr has \(dr.count) registers, not 4") }
    }
}

/// GDTR/IDTR.
public struct DescriptorTableState: Codable, Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt16
    public init(base: UInt64, limit: UInt16) { self.base = base; self.limit = limit }
}

/// Why an architectural state cannot be used.
public enum ArchStateError: Error, Equatable, CustomStringConvertible {
    /// Written by a different format version.
    case version(Int)
    /// Wrong counts or sizes.
    case malformed(String)
    /// The target CPU refused a value (e.g. a control-register bit it does not support).
    case rejected(String)

    public var description: String {
        switch self {
        case .version(let v): return "CPU state format version \(v) is not \(X86ArchState.formatVersion)"
        case .malformed(let s): return "CPU state is malformed: \(s)"
        case .rejected(let s): return "CPU state was refused: \(s)"
        }
    }
}
