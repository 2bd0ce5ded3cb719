import CPUBackend
import Dispatch
import VMMemory

/// The software CPU backend of a VM: `count` vCPUs on one `InterpreterSystem`, each on a host thread
/// of its own (the bootstrap processor on the thread that calls `run`). Application processors start
/// in the wait-for-SIPI state and are brought up by the guest's INIT/SIPI. With one vCPU no thread is
/// made and nothing is shared with anyone.
public final class InterpreterCPUs: VcpuBackend {
    public typealias Failure = Never
    public let name = "interpreter"
    public let cpus: [X86Interpreter]
    let system: InterpreterSystem
    /// Application processor threads, waiting at `gate` until `run`.
    private var threads: [HostThread] = []
    private let start = VcpuStartGate()

    /// `deviceLock` guards the devices the vCPUs reach (timers, the 8259's INTA, posted work, the I/O
    /// APIC's EOI); the machine's I/O handler takes the same lock. `levelEOI` receives the EOI of a
    /// level-triggered vector (the I/O APIC's broadcast).
    public init(count: Int, memory: GuestMemory, clock: VirtualClock, externalInterrupts: ExternalInterrupts?,
                timedDevices: [TimedDevice], deviceLock: DeviceLock?, levelEOI: ((UInt8) -> Void)?,
                translation: TranslationPolicy = .default) {
        precondition(count >= 1, "a VM has at least one vCPU")
        let devices = DeviceAccess(lock: deviceLock, timedDevices: timedDevices,
                                   externalInterrupts: externalInterrupts, levelEOI: levelEOI)
        let system = InterpreterSystem(cpuCount: count, physPages: X86Interpreter.physPages(memory), devices: devices)
        self.system = system
        cpus = (0..<count).map {
            X86Interpreter(memory: memory, clock: clock, system: system, index: $0, translation: translation)
        }
        for ap in cpus.dropFirst() { ap.waitingForStartup = true }
    }

    deinit {
        start.open(threads.count, io: nil, control: nil, cancel: true)
        for t in threads { t.join() }
    }

    public func setEntryState(_ s: CPUEntryState) { cpus[0].setEntryState(s) }

    /// A device's MSI (or an I/O APIC message), to the local APIC(s) it names. Any thread.
    public func deliverMSI(address: UInt64, data: UInt32) { system.bus.deliverMSI(address: address, data: data) }

    /// Drops decoded code of a guest-physical range on every vCPU (device DMA).
    public func invalidateCode(physicalAddress: UInt64, length: UInt64) {
        system.code.invalidate(physicalAddress: physicalAddress, length: length)
    }

    /// Creates the application processors' threads (before the seccomp filter, which forbids new
    /// threads); they wait until `run`. Returns false if the host refused a thread.
    @discardableResult
    public func prepareThreads() -> Bool {
        guard threads.isEmpty, cpus.count > 1 else { return true }
        for cpu in cpus.dropFirst() {
            let start = self.start
            guard let t = HostThread({
                guard let (io, control) = start.wait() else { return }
                let stop = cpu.run(io: io, control: control)
                control.requestStop(stop)   // one vCPU's end (reset, triple fault, ...) ends them all
            }) else { return false }
            threads.append(t)
        }
        return true
    }

    /// Runs every vCPU until the VM stops; returns the first stop requested.
    public func run(io: IOHandler, control: VMControl) -> VcpuStop {
        if cpus.count == 1 { return cpus[0].run(io: io, control: control) }
        if threads.isEmpty && !prepareThreads() {
            // No threads: the application processors never start (the guest sees them not respond).
            return cpus[0].run(io: io, control: control)
        }
        start.open(threads.count, io: io, control: control, cancel: false)
        let stop = cpus[0].run(io: io, control: control)
        control.requestStop(stop)
        for t in threads { t.join() }
        threads = []
        return control.stopRequest ?? stop
    }

    public var guestInstructionCount: UInt64? { cpus.reduce(0) { $0 &+ $1.instructionsRetired } }

    public var statisticsReport: String? {
        var lines: [String] = []
        if cpus.count > 1 {
            lines.append("instructions by vCPU: " + cpus.map { "\($0.instructionsRetired)" }.joined(separator: ", ")
                         + "; \(system.bus.sent.load(ordering: .relaxed)) interrupt messages, "
                         + "\(system.bus.inboxes.reduce(0) { $0 + $1.wakeups.load(ordering: .relaxed) }) wake-ups from HLT")
        }
        if let t = cpus[0].translationReport { lines.append((cpus.count > 1 ? "vCPU 0: " : "") + t) }
        return lines.isEmpty ? nil : lines.joined(separator: "\n  ")
    }
}
