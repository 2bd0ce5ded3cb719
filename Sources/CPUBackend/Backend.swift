// A backend's interface is stated in VMCore's terms (interrupt controllers, the VM clock, timed
// devices): whoever imports CPUBackend gets them too.
@_exported import VMCore
import Synchronization

/// Where a vCPU's port I/O and MMIO accesses go. The machine implements it over its buses; both CPU
/// backends call it synchronously from the vCPU thread, in guest program order.
public protocol IOHandler: AnyObject {
    /// `size` is 1, 2 or 4. Unclaimed ports read as all-ones.
    func portRead(_ port: UInt16, size: Int) -> UInt32
    func portWrite(_ port: UInt16, size: Int, value: UInt32)
    /// `size` is 1, 2, 4 or 8. Unclaimed MMIO reads as all-ones.
    func mmioRead(_ address: UInt64, size: Int) -> UInt64
    func mmioWrite(_ address: UInt64, size: Int, value: UInt64)
}

/// Why a vCPU stopped running guest code without an error.
public enum VcpuStop: Equatable, Sendable, CustomStringConvertible {
    /// The guest asked for a reboot (i8042 reset, port 0xCF9, ...).
    case reset
    /// The guest powered itself off.
    case poweroff
    /// A triple fault or other shutdown condition (KVM_EXIT_SHUTDOWN).
    case shutdown
    /// HLT with interrupts disabled: nothing can ever wake the vCPU.
    case haltedForever
    /// The host asked the VM to stop (console escape, signal).
    case hostRequest

    public var description: String {
        switch self {
        case .reset: return "guest requested reset"
        case .poweroff: return "guest powered off"
        case .shutdown: return "guest triple-faulted (shutdown)"
        case .haltedForever: return "guest halted with interrupts disabled"
        case .hostRequest: return "stopped by the host"
        }
    }
}

/// Stop requests shared by devices, the console thread and the vCPU. Thread-safe.
public final class VMControl: Sendable {
    // 0 = running; otherwise 1 + index into `reasons`.
    private let state = Atomic<Int>(0)
    private static let reasons: [VcpuStop] = [.reset, .poweroff, .shutdown, .haltedForever, .hostRequest]
    private let kickers = Mutex<[(id: Int, kick: @Sendable () -> Void)]>([])
    private let nextKickerID = Atomic<Int>(0)

    public init() {}

    /// Asks the vCPU to stop at the next opportunity. The first request wins.
    public func requestStop(_ reason: VcpuStop) {
        let code = VMControl.reasons.firstIndex(of: reason)! + 1
        _ = state.compareExchange(expected: 0, desired: code, ordering: .sequentiallyConsistent)
        kick()
    }

    /// The pending stop request, if any. Cheap enough to poll between instruction blocks.
    @inline(__always)
    public var stopRequest: VcpuStop? {
        let s = state.load(ordering: .relaxed)
        return s == 0 ? nil : VMControl.reasons[s - 1]
    }

    /// Registers a way to interrupt a vCPU blocked in the hypervisor or asleep in HLT. A backend that
    /// registers one for a `run` removes it with the returned id when the run ends.
    @discardableResult
    public func addKicker(_ kick: @escaping @Sendable () -> Void) -> Int {
        let id = nextKickerID.wrappingAdd(1, ordering: .relaxed).oldValue
        kickers.withLock { $0.append((id, kick)) }
        return id
    }

    public func removeKicker(_ id: Int) {
        kickers.withLock { $0.removeAll { $0.id == id } }
    }

    /// Kickers registered now (a vCPU in `run` has one).
    public var kickerCount: Int { kickers.withLock { $0.count } }

    /// Interrupts the vCPU (it then polls stop requests, posted work and timers). Thread-safe.
    public func kick() {
        let ks = kickers.withLock { $0 }
        for k in ks { k.kick() }
    }

    // Work posted by other threads (console input, timers) to run on the vCPU thread, so devices are
    // only ever touched by one thread and need no locks.
    private let posted = Mutex<[@Sendable () -> Void]>([])
    private let hasPostedFlag = Atomic<Bool>(false)

    /// Queues `work` for the vCPU thread and kicks the vCPU so it runs soon.
    public func post(_ work: @escaping @Sendable () -> Void) {
        posted.withLock { $0.append(work) }
        hasPostedFlag.store(true, ordering: .sequentiallyConsistent)
        kick()
    }

    /// True when posted work is waiting. Cheap enough to poll between instruction blocks.
    @inline(__always)
    public var hasPostedWork: Bool { hasPostedFlag.load(ordering: .relaxed) }

    /// Runs posted work. Backends call this on the vCPU thread whenever `hasPostedWork` is true
    /// (and after every kick).
    public func runPostedWork() {
        hasPostedFlag.store(false, ordering: .sequentiallyConsistent)
        let work = posted.withLock { w -> [@Sendable () -> Void] in let x = w; w.removeAll(); return x }
        for w in work { w() }
    }
}

/// A segment register as both backends understand it (the fields of KVM's `kvm_segment`).
public struct Segment: Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    /// Descriptor type field (4 bits), e.g. 0xB = execute/read accessed code, 0x3 = read/write accessed data.
    public var type: UInt8
    public var present: Bool
    public var dpl: UInt8
    /// Default operation size (D/B).
    public var db: Bool
    /// Code/data (true) or system (false) descriptor.
    public var s: Bool
    /// 64-bit code segment.
    public var l: Bool
    /// Granularity: limit in 4 KiB units.
    public var g: Bool

    public init(base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: Bool = true,
                dpl: UInt8 = 0, db: Bool = false, s: Bool = true, l: Bool = false, g: Bool = false) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type
        self.present = present; self.dpl = dpl; self.db = db; self.s = s; self.l = l; self.g = g
    }

    /// A real-mode segment with the given selector (base = selector * 16, 64 KiB limit).
    public static func real(_ selector: UInt16, code: Bool = false) -> Segment {
        Segment(base: UInt64(selector) << 4, limit: 0xFFFF, selector: selector, type: code ? 0xB : 0x3)
    }
}

/// A descriptor-table register (GDTR/IDTR).
public struct DescriptorTable: Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt16
    public init(base: UInt64, limit: UInt16) { self.base = base; self.limit = limit }
}

/// The architectural state a vCPU starts from. The loader fills it for the Linux 64-bit boot
/// protocol; tests fill it for real- and protected-mode guests. Both backends apply it verbatim.
public struct CPUEntryState: Equatable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var rip: UInt64 = 0
    /// Bit 1 is architecturally always set.
    public var rflags: UInt64 = 0x2
    public var cr0: UInt64 = 0x10   // ET; real mode, no paging
    public var cr3: UInt64 = 0
    public var cr4: UInt64 = 0
    public var efer: UInt64 = 0
    public var cs = Segment.real(0, code: true)
    public var ds = Segment.real(0), es = Segment.real(0), fs = Segment.real(0)
    public var gs = Segment.real(0), ss = Segment.real(0)
    public var gdt = DescriptorTable(base: 0, limit: 0xFFFF)
    public var idt = DescriptorTable(base: 0, limit: 0xFFFF)

    public init() {}

    /// Real mode at `cs:ip`, everything else at reset values.
    public static func realMode(cs: UInt16, ip: UInt16, sp: UInt16 = 0) -> CPUEntryState {
        var s = CPUEntryState()
        s.cs = .real(cs, code: true)
        s.rip = UInt64(ip)
        s.rsp = UInt64(sp)
        return s
    }
}

/// A CPU backend: something that runs guest code on guest memory and reports port/MMIO accesses.
/// Two implementations: the KVM vCPU and the x86-64 interpreter.
public protocol VcpuBackend: AnyObject {
    /// What goes wrong running this backend, kept whole for the machine (the interpreter: `Never`).
    associatedtype Failure: Error
    /// A one-line name for messages, e.g. "kvm" or "interpreter".
    var name: String { get }
    /// Loads the architectural state the vCPU starts from.
    func setEntryState(_ state: CPUEntryState) throws(Failure)
    /// Runs guest code until it stops. Port/MMIO accesses are delivered to `io` synchronously.
    /// Returns when the guest stops (or `control` asks it to).
    func run(io: IOHandler, control: VMControl) throws(Failure) -> VcpuStop
    /// Guest instructions executed so far, where the backend counts them (the interpreter does;
    /// hardware virtualization does not).
    var guestInstructionCount: UInt64? { get }
    /// A line about how the backend ran the guest (the translator's share), for `--boot-timer`.
    var statisticsReport: String? { get }
}

extension VcpuBackend {
    public var guestInstructionCount: UInt64? { nil }
    public var statisticsReport: String? { nil }
}
