import CKVM
import CPUBackend

/// One port access KVM could not complete in the kernel: `count` accesses of `size` bytes at `port`
/// (string I/O, `rep outsb`, has count > 1). The bytes live in the run page: KVM filled them for a
/// write; for a read the handler stores them there and KVM copies them to the guest on re-entry.
public struct KVMPortIO {
    public let port: UInt16
    public let size: Int
    public let count: Int
    public let isWrite: Bool
    public let data: UnsafeMutableRawBufferPointer
}

/// One MMIO access outside guest RAM: `size` (1-8) bytes at `address`, little-endian in `data`.
public struct KVMMMIO {
    public let address: UInt64
    public let size: Int
    public let isWrite: Bool
    public let data: UnsafeMutableRawBufferPointer
}

/// Why KVM_RUN returned, decoded from the `kvm_run` page into a value (as rust-vmm's `VcpuExit`), so
/// that handling an exit is a function of this value that tests drive with synthetic pages.
public enum KVMExit {
    case portIO(KVMPortIO)
    case mmio(KVMMMIO)
    /// KVM_EXIT_INTR: a signal or `immediate_exit` interrupted the run.
    case interrupted
    /// KVM_EXIT_HLT: only without an in-kernel irqchip.
    case halt
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    case shutdown
    /// KVM_EXIT_SYSTEM_EVENT: `type` is KVM_SYSTEM_EVENT_RESET, _SHUTDOWN, _CRASH, ...
    case systemEvent(type: UInt32)
    /// KVM_EXIT_FAIL_ENTRY: the hardware refused the vCPU state.
    case failEntry(reason: UInt64, cpu: UInt32)
    /// KVM_EXIT_INTERNAL_ERROR with what KVM attached (instruction bytes for emulation failures).
    case internalError(KVMInternalError)
    /// A run page that contradicts itself (an I/O data area outside the page, an access size KVM
    /// never produces). The kernel does not write such pages; decoding refuses them all the same.
    case malformed(reason: UInt32, detail: String)
    /// An exit reason swhv does not handle.
    case unknown(reason: UInt32)

    /// Decodes the run page at `run`, `pageSize` bytes long (KVM_GET_VCPU_MMAP_SIZE).
    public init(run: UnsafeMutableRawPointer, pageSize: Int) {
        func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            run.loadUnaligned(fromByteOffset: offset, as: T.self)
        }
        let reason = load(CKVM_RUN_EXIT_REASON(), UInt32.self)
        switch Int32(bitPattern: reason) {
        case KVM_EXIT_IO:
            let size = Int(load(CKVM_RUN_IO_SIZE(), UInt8.self))
            let count = Int(load(CKVM_RUN_IO_COUNT(), UInt32.self))
            let offset = load(CKVM_RUN_IO_DATA_OFFSET(), UInt64.self)
            let length = size * count
            guard size == 1 || size == 2 || size == 4, offset <= UInt64(truncatingIfNeeded: pageSize),
                  length <= pageSize - Int(truncatingIfNeeded: offset) else {
                self = .malformed(reason: reason, detail: "port I/O of \(count) x \(size) bytes at page offset \(hex(offset))")
                return
            }
            self = .portIO(KVMPortIO(
                port: load(CKVM_RUN_IO_PORT(), UInt16.self), size: size, count: count,
                isWrite: load(CKVM_RUN_IO_DIRECTION(), UInt8.self) == UInt8(truncatingIfNeeded: KVM_EXIT_IO_OUT),
                data: UnsafeMutableRawBufferPointer(start: run + Int(truncatingIfNeeded: offset), count: length)))
        case KVM_EXIT_MMIO:
            let size = Int(load(CKVM_RUN_MMIO_LEN(), UInt32.self))
            guard size >= 1 && size <= 8 else {
                self = .malformed(reason: reason, detail: "MMIO access of \(size) bytes")
                return
            }
            self = .mmio(KVMMMIO(
                address: load(CKVM_RUN_MMIO_PHYS_ADDR(), UInt64.self), size: size,
                isWrite: load(CKVM_RUN_MMIO_IS_WRITE(), UInt8.self) != 0,
                data: UnsafeMutableRawBufferPointer(start: run + CKVM_RUN_MMIO_DATA(), count: size)))
        case KVM_EXIT_INTR:
            self = .interrupted
        case KVM_EXIT_HLT:
            self = .halt
        case KVM_EXIT_SHUTDOWN:
            self = .shutdown
        case KVM_EXIT_SYSTEM_EVENT:
            self = .systemEvent(type: load(CKVM_RUN_SYSTEM_EVENT_TYPE(), UInt32.self))
        case KVM_EXIT_FAIL_ENTRY:
            self = .failEntry(reason: load(CKVM_RUN_FAIL_ENTRY_REASON(), UInt64.self),
                              cpu: load(CKVM_RUN_FAIL_ENTRY_CPU(), UInt32.self))
        case KVM_EXIT_INTERNAL_ERROR:
            let suberror = load(CKVM_RUN_INTERNAL_SUBERROR(), UInt32.self)
            let ndata = min(Int(load(CKVM_RUN_INTERNAL_NDATA(), UInt32.self)), 16)
            let data = (0..<ndata).map { load(CKVM_RUN_INTERNAL_DATA() + 8 * $0, UInt64.self) }
            // kvm_run.emulation_failure overlays `internal`: flags, then insn_size and up to 15 bytes.
            var bytes: [UInt8]?
            if suberror == UInt32(truncatingIfNeeded: KVM_INTERNAL_ERROR_EMULATION), ndata >= 3,
               load(CKVM_RUN_EMULATION_FLAGS(), UInt64.self)
                   & UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0 {
                let n = min(Int(load(CKVM_RUN_EMULATION_INSN_SIZE(), UInt8.self)), 15)
                bytes = (0..<n).map { load(CKVM_RUN_EMULATION_INSN_BYTES() + $0, UInt8.self) }
            }
            self = .internalError(KVMInternalError(suberror: suberror, data: data, instructionBytes: bytes))
        default:
            self = .unknown(reason: reason)
        }
    }
}

/// KVM_EXIT_INTERNAL_ERROR as a value: the suberror, the words KVM attached and, for an instruction
/// its emulator could not run, that instruction's bytes. The run loop adds the guest RIP.
public struct KVMInternalError: Equatable, Sendable, CustomStringConvertible {
    public var suberror: UInt32
    public var data: [UInt64]
    public var instructionBytes: [UInt8]?
    public var rip: UInt64?

    public init(suberror: UInt32, data: [UInt64], instructionBytes: [UInt8]? = nil, rip: UInt64? = nil) {
        self.suberror = suberror; self.data = data; self.instructionBytes = instructionBytes; self.rip = rip
    }

    public var description: String {
        let kind = suberror == UInt32(truncatingIfNeeded: KVM_INTERNAL_ERROR_EMULATION)
            ? "the host could not emulate a guest instruction" : "suberror \(suberror)"
        var parts: [String] = []
        if let rip { parts.append("rip \(hex(rip))") }
        if let bytes = instructionBytes, !bytes.isEmpty {
            parts.append("instruction bytes " + bytes.map { hexDigits($0, width: 2) }.joined(separator: " "))
        } else if !data.isEmpty {
            parts.append("data " + data.map { hex($0) }.joined(separator: " "))
        }
        return "KVM internal error: \(kind)" + (parts.isEmpty ? "" : " (\(parts.joined(separator: ", ")))")
    }
}

/// What ends or breaks a KVM vCPU run, each keeping what KVM said.
public enum KVMRunError: Error, Equatable, CustomStringConvertible {
    /// An ioctl of the run loop failed (KVM_RUN itself, or register access for a workaround).
    case ioctl(KVMError)
    /// KVM_EXIT_FAIL_ENTRY.
    case entryFailed(reason: UInt64, cpu: UInt32)
    /// KVM_EXIT_INTERNAL_ERROR.
    case internalError(KVMInternalError)
    /// An exit swhv does not handle, or a run page that makes no sense.
    case unhandledExit(reason: UInt32, detail: String)
    /// KVM refused to raise an interrupt line or deliver an MSI: the guest would wait for it forever.
    case interruptDelivery(KVMError)

    public var description: String {
        switch self {
        case .ioctl(let e): return e.description
        case .entryFailed(let r, let cpu): return "vCPU \(cpu) entry failed (hardware reason \(hex(r)))"
        case .internalError(let e): return e.description
        case .unhandledExit(let r, let d): return "unhandled KVM exit reason \(r)" + (d.isEmpty ? "" : " (\(d))")
        case .interruptDelivery(let e): return "interrupt delivery failed: \(e.description)"
        }
    }
}

/// What the run loop does after an exit.
public enum KVMExitAction: Equatable {
    /// Enter the guest again.
    case resume
    /// The guest stopped (reset, power-off, triple fault, halted for good).
    case stop(VcpuStop)
}

/// Handles decoded exits: port and MMIO accesses go to the machine's `IOHandler` synchronously, in
/// guest order; guest stop events become `VcpuStop`s; everything else is a `KVMRunError`.
public enum KVMExitHandler {
    public static func handle(_ exit: KVMExit, io: IOHandler) throws(KVMRunError) -> KVMExitAction {
        switch exit {
        case .portIO(let access):
            portIO(access, io: io)
            return .resume
        case .mmio(let access):
            mmio(access, io: io)
            return .resume
        case .interrupted:
            return .resume
        case .halt:
            // Only without an in-kernel irqchip: nothing can ever wake the vCPU.
            return .stop(.haltedForever)
        case .shutdown:
            return .stop(.shutdown)
        case .systemEvent(let type):
            switch type {
            case UInt32(truncatingIfNeeded: KVM_SYSTEM_EVENT_RESET): return .stop(.reset)
            case UInt32(truncatingIfNeeded: KVM_SYSTEM_EVENT_SHUTDOWN): return .stop(.poweroff)
            default: return .stop(.shutdown)       // CRASH and anything newer: the guest is gone
            }
        case .failEntry(let reason, let cpu):
            throw .entryFailed(reason: reason, cpu: cpu)
        case .internalError(let e):
            throw .internalError(e)
        case .malformed(let reason, let detail):
            throw .unhandledExit(reason: reason, detail: detail)
        case .unknown(let reason):
            throw .unhandledExit(reason: reason, detail: "")
        }
    }

    static func portIO(_ a: KVMPortIO, io: IOHandler) {
        for i in 0..<a.count {
            let at = i * a.size
            if a.isWrite {
                var v: UInt32 = 0
                for b in 0..<a.size { v |= UInt32(a.data[at + b]) << (8 * UInt32(truncatingIfNeeded: b)) }
                io.portWrite(a.port, size: a.size, value: v)
            } else {
                let v = io.portRead(a.port, size: a.size)
                for b in 0..<a.size { a.data[at + b] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(truncatingIfNeeded: b))) }
            }
        }
    }

    static func mmio(_ a: KVMMMIO, io: IOHandler) {
        if a.isWrite {
            var v: UInt64 = 0
            for b in 0..<a.size { v |= UInt64(a.data[b]) << (8 * UInt64(truncatingIfNeeded: b)) }
            io.mmioWrite(a.address, size: a.size, value: v)
        } else {
            let v = io.mmioRead(a.address, size: a.size)
            for b in 0..<a.size { a.data[b] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(truncatingIfNeeded: b))) }
        }
    }
}
