import VMMemory
import X86Interpreter

/// Which pages of user code may run natively without changing what the guest computes.
///
/// A few instructions give results that differ between CPU models: the SSE reciprocal estimates
/// (RCPPS, RSQRTPS and their scalar forms) and the x87 transcendentals (F2XM1, FYL2X, FPATAN, FSIN,
/// ...). The software CPU gives QEMU's results; a hardware CPU gives its own. So before user code
/// runs natively, every page it could execute (present, user, executable in its page tables) is
/// decoded once and an address space that could execute one of those instructions stays in
/// software. Verdicts are per physical page and dropped when the page changes (the software CPU
/// and KVM's dirty log report writes to checked pages).
final class CodeVerifier {
    let memory: GuestMemory
    private var clean: Set<Int32> = []
    private var tainted: Set<Int32> = []
    /// Pages checked since the last `takeNewlyChecked` (to be watched for changes).
    private var newlyChecked: [Int32] = []
    private(set) var checkedPages = 0
    private(set) var taintedPages = 0

    init(memory: GuestMemory) { self.memory = memory }

    /// True if the page holds no instruction with a model-specific result.
    func isPortable(_ page: Int32) -> Bool {
        if clean.contains(page) { return true }
        if tainted.contains(page) { return false }
        // Not RAM: KVM cannot run code from it (no memory slot); nothing to check.
        guard let p = memory.hostPointer(UInt64(UInt32(bitPattern: page)) << 12, length: 4096) else { return true }
        checkedPages += 1
        newlyChecked.append(page)
        if X86Interpreter.containsModelSpecificInstruction(UnsafeRawBufferPointer(start: p, count: 4096)) {
            tainted.insert(page)
            taintedPages += 1
            return false
        }
        clean.insert(page)
        return true
    }

    /// Forgets the verdicts for pages whose content changed.
    func forget(_ pages: [Int32]) {
        for p in pages {
            clean.remove(p)
            tainted.remove(p)
        }
    }

    func takeNewlyChecked() -> [Int32] {
        defer { newlyChecked.removeAll(keepingCapacity: true) }
        return newlyChecked
    }
}
