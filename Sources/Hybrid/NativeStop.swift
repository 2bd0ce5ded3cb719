/// What an exit from native user code means for the software CPU, which carries on from it.
/// Pure functions of what KVM reported, so they can be tested without KVM.
enum NativeStop: Equatable {
    /// A fault: the reported RIP is the faulting instruction. The software CPU executes it again
    /// and raises the same exception with the same vector, error code, CR2 and frame (it walks the
    /// real page tables, so a fault KVM saw through a stale shadow mapping resolves correctly).
    case reexecute
    /// SYSCALL: resume at the SYSCALL instruction `rip` with the RFLAGS it saved in R11; the software
    /// CPU executes it (RCX and R11 get the same values again).
    case syscall(rip: UInt64, rflags: UInt64)
    /// A trap the native CPU took after completing an instruction (INT3, INTO, INT1, single step):
    /// RIP is past it, so the software CPU delivers `vector` without executing anything.
    case trap(vector: UInt8, singleStep: Bool)

    static let rflagsTF: UInt64 = 1 << 8

    /// A SYSCALL that completed natively but whose landing at the trap address has not faulted yet
    /// (a kick can end KVM_RUN at that instruction boundary): RIP is the trap address.
    static func completedSyscall(rip: UInt64, rcx: UInt64, r11: UInt64, syscallTraps: (UInt64, UInt64),
                                 syscallBytes: (UInt64) -> Bool) -> NativeStop? {
        guard rip == syscallTraps.0 || rip == syscallTraps.1, syscallBytes(rcx &- 2) else { return nil }
        return .syscall(rip: rcx &- 2, rflags: r11)
    }

    /// Classifies a KVM_EXIT_SHUTDOWN (an exception with no IDT to deliver it through).
    /// `vector` is the exception KVM recorded in its vCPU events; `codeBefore(n)` returns the
    /// n bytes before RIP if readable.
    static func classifyShutdown(rip: UInt64, rcx: UInt64, r11: UInt64, cr2: UInt64, rflags: UInt64,
                                 vector: UInt8?, syscallTraps: (UInt64, UInt64),
                                 syscallBytes: (UInt64) -> Bool) -> NativeStop {
        if vector == 14 && (rip == syscallTraps.0 || rip == syscallTraps.1) && cr2 == rip
            && syscallBytes(rcx &- 2) {
            return .syscall(rip: rcx &- 2, rflags: r11)
        }
        switch vector {
        case 3, 4:
            return .trap(vector: vector!, singleStep: false)
        case 1:
            return .trap(vector: 1, singleStep: rflags & rflagsTF != 0)
        default:
            return .reexecute
        }
    }

    /// Where the port-I/O instruction that caused an I/O exit starts. kvm-pvm reports IN exits
    /// with RIP at the instruction and OUT exits with RIP past it; this finds the instruction
    /// either way from the bytes around RIP (`bytes[k]` is the byte at `rip - before + k`), the
    /// exit's port, size and direction and DX. Returns nil if no matching instruction is found.
    static func ioInstructionStart(rip: UInt64, bytes: [UInt8], before: Int, port: UInt16, size: Int,
                                   isOut: Bool, dx: UInt16) -> UInt64? {
        func matches(at start: Int) -> Int? {
            var i = start
            var opsize16 = false
            while i < bytes.count && i - start < 14 {
                let b = bytes[i]
                if b == 0x66 { opsize16 = true; i += 1; continue }
                if b == 0xF2 || b == 0xF3 || b == 0x26 || b == 0x2E || b == 0x36 || b == 0x3E || b == 0x64 || b == 0x65
                    || (b >= 0x40 && b <= 0x4F) { i += 1; continue }
                break
            }
            guard i < bytes.count else { return nil }
            let op = bytes[i]
            let wide = size == 1 ? false : true
            let sizeOK = size == 1 || (size == 2) == opsize16
            switch op {
            case 0xE4, 0xE5, 0xE6, 0xE7:
                guard (op & 2 != 0) == isOut, (op & 1 != 0) == wide, sizeOK, i + 1 < bytes.count,
                      UInt16(bytes[i + 1]) == port else { return nil }
                return i + 2 - start
            case 0xEC, 0xED, 0xEE, 0xEF, 0x6C, 0x6D, 0x6E, 0x6F:
                let outOp = op == 0xEE || op == 0xEF || op == 0x6E || op == 0x6F
                guard outOp == isOut, (op & 1 != 0) == wide, sizeOK, dx == port else { return nil }
                return i + 1 - start
            default:
                return nil
            }
        }
        // kvm-pvm reports OUT past the instruction and IN at it: try that place first, then the other.
        func ending() -> UInt64? {
            for len in 1...max(1, min(15, before)) where before - len >= 0 {
                if let n = matches(at: before - len), n == len { return rip &- UInt64(truncatingIfNeeded: len) }
            }
            return nil
        }
        let at: UInt64? = before < bytes.count && matches(at: before) != nil ? rip : nil
        if isOut { return ending() ?? at }
        return at ?? ending()
    }
}
