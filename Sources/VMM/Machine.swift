import CPUBackend
import Devices
import Glibc
import Hybrid
import KVM
import LinuxLoader
import Synchronization
import VMMemory
import X86Interpreter

/// Which CPU backend runs the guest.
public enum Accelerator: String, CaseIterable, Sendable {
    case auto, kvm, interp, hybrid
}

/// How a machine is built.
public struct MachineConfig: Sendable {
    public var memorySize: UInt64 = 512 << 20
    public var accelerator: Accelerator = .auto
    /// Create KVM's in-kernel PIC/IOAPIC/LAPIC/PIT (Linux needs them; bare test guests don't).
    public var irqchip = true
    public var quiet = false
    public var verbose = false
    /// Decompress a bzImage's payload on the host and enter the vmlinux directly, skipping the
    /// guest-side decompressor (tens of millions of guest instructions). Off: the plain boot protocol.
    public var unpackOnHost = true
    /// How the software CPU runs guest code: translated to host code when hot (the default) or
    /// only interpreted.
    public var translation: TranslationPolicy = .standard
    /// Block devices, in order: /dev/vda, /dev/vdb, ...
    public var disks: [DiskConfig] = []
    /// The hybrid backend's policy; nil: the defaults with SWHV_HYBRID_POLICY / SWHV_HYBRID_MIN_INSNS.
    public var hybridPolicy: HybridPolicyConfig?
    /// Network devices over existing TAPs, in order: eth0, eth1, ...
    public var nets: [NetConfig] = []
    /// A virtio-rng device feeding the guest's CRNG from the host's getrandom.
    public var rng = false
    /// vCPUs (1...maxCPUs).
    public var cpus = 1
    /// Describe the machine with ACPI tables (MADT with every CPU and the I/O APIC, FADT with the
    /// power-off and reset registers, DSDT with the PCI host bridge). Off: no firmware tables, one
    /// CPU visible to the guest through the 8259s, as before ACPI.
    public var acpi = true
    public init() {}

    /// The most vCPUs a VM may have (Firecracker's limit too).
    public static let maxCPUs = 32

    /// Checks the vCPU count against the limits, and against ACPI (without the MADT a guest finds
    /// only the first CPU).
    public func validate() throws(MachineError) {
        guard (1...MachineConfig.maxCPUs).contains(cpus) else {
            throw .invalidArgument("--cpus \(cpus) is out of range: a VM has 1 to \(MachineConfig.maxCPUs) vCPUs")
        }
        if cpus > 1 && accelerator == .hybrid {
            throw .invalidArgument("--accel hybrid runs one vCPU: --cpus \(cpus) needs --accel interp or kvm")
        }
        if cpus > 1 && !acpi {
            throw .invalidArgument("--cpus \(cpus) needs ACPI: without its MADT the guest finds only one CPU (drop --no-acpi)")
        }
    }
}

/// One `--disk PATH[,readonly][,serial=ID]`.
public struct DiskConfig: Sendable, Equatable {
    public var path: String
    public var readOnly = false
    public var serial = ""
    public init(path: String, readOnly: Bool = false, serial: String = "") {
        self.path = path; self.readOnly = readOnly; self.serial = serial
    }

    /// Parses `PATH[,readonly|ro][,serial=ID]`.
    public static func parse(_ text: String) throws(MachineError) -> DiskConfig {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let path = parts.first, !path.isEmpty else {
            throw .invalidArgument("--disk '\(text)' has no path (expected PATH[,readonly][,serial=ID])")
        }
        var d = DiskConfig(path: path)
        for opt in parts.dropFirst() {
            if opt == "readonly" || opt == "ro" { d.readOnly = true }
            else if opt.hasPrefix("serial=") {
                d.serial = String(opt.dropFirst("serial=".count))
                if d.serial.utf8.count > 20 {
                    throw .invalidArgument("--disk serial '\(d.serial)' is longer than 20 bytes")
                }
            } else {
                throw .invalidArgument("--disk option '\(opt)' is unknown (expected readonly or serial=ID)")
            }
        }
        return d
    }
}

/// A virtual machine: guest memory, the platform (buses, devices, interrupt routing) and one CPU
/// backend. Owns the run loop. Sendable because other threads only reach it through `sendInput`,
/// which posts to the vCPU thread.
public final class Machine: IOHandler, @unchecked Sendable {
    public let config: MachineConfig
    public let memory: GuestMemory
    public let platform: Platform
    public let control = VMControl()
    /// Why this backend was chosen, for the one-line message on stderr.
    public let backendReason: String
    /// Kernel arguments the backend needs on this host, appended to the command line.
    public let backendKernelArguments: [String]
    public let timer = BootTimer()
    /// The one VM clock: the RTC here, and the interpreter's TSC, PIT and APIC timer, all read it.
    public let clock = VirtualClock()
    public let log: Log
    /// Held around every device access from a vCPU thread (several vCPUs run at once).
    public let deviceLock = DeviceLock()
    private let vcpu: Vcpu
    /// The virtio-net devices (in `config.nets` order) and the thread that watches their TAPs.
    public private(set) var networks: [VirtioNet] = []
    private var netPoller: NetPoller?
    /// The virtio-rng device, when `config.rng`.
    public private(set) var entropy: VirtioRng?

    /// The backend running the guest, by kind, so that each one's failures keep their type.
    enum Vcpu {
        case kvm(KVMBackend)
        case interpreter(InterpreterCPUs)
        /// The hybrid backend and the software CPU (one vCPU) under it, which the platform's MSI and
        /// DMA callbacks reach (unowned: kept alive here).
        case hybrid(HybridBackend, software: InterpreterCPUs)
    }

    public var backend: any VcpuBackend {
        switch vcpu {
        case .kvm(let b): return b
        case .interpreter(let b): return b
        case .hybrid(let b, _): return b
        }
    }
    /// The hybrid backend runs (it needs a few more system calls under seccomp).
    public var usesHybridBackend: Bool {
        if case .hybrid = vcpu { return true }
        return false
    }
    /// The hybrid backend's account of what it did (nil for the other backends).
    public var hybridStatistics: HybridStatistics? {
        if case .hybrid(let h, _) = vcpu { return h.statistics }
        return nil
    }
    public var ports: Bus { platform.ports }
    public var mmio: Bus { platform.mmio }
    public var interrupts: any InterruptController { platform.interrupts }
    public var uart: Uart16550 { platform.uart }

    /// Host input waiting for room in the UART's receive FIFO (bounded).
    private var pendingInput: [UInt8] = []
    public static let maxPendingInput = 1 << 16
    /// Bytes sent with `sendInput` that have not reached the UART yet (posted or pending): the
    /// stdin pump waits while this is at `maxPendingInput`, so fast input is held back, not
    /// queued without bound or dropped.
    private let inputBacklog = Atomic<Int>(0)
    public var inputBacklogCount: Int { inputBacklog.load(ordering: .relaxed) }

    public init(config: MachineConfig, consoleOutput: SerialOutput) throws(MachineError) {
        try config.validate()
        self.config = config
        log = Log(level: config.verbose ? .debug : (config.quiet ? .error : .info))
        do { memory = try GuestMemory(size: config.memorySize) } catch { throw .memory(error) }
        let choice = try Machine.chooseBackend(config: config, memory: memory, clock: clock)
        (backendReason, backendKernelArguments) = (choice.reason, choice.kernelArguments)
        let control = self.control, timer = self.timer
        var platformConfig = PlatformConfig(
            memory: memory, clock: clock, interruptChip: choice.interruptChip, console: consoleOutput,
            onReset: { control.requestStop(.reset) },
            onBootMilestone: { timer.guestSignal($0.milestone.value) })
        platformConfig.onPowerOff = { control.requestStop(.poweroff) }
        platformConfig.acpi = config.acpi
        platformConfig.cpuCount = config.cpus
        do { platform = try Platform(platformConfig) } catch { throw .platform(error) }
        // Every device before the backend: it takes the platform's timed devices as they are now.
        try Machine.attachDisks(config.disks, platform: platform)
        (networks, netPoller) = try Machine.attachNetworks(config.nets, platform: platform, control: control)
        if config.rng {
            let rng = VirtioRng(clock: clock)
            do { try platform.addVirtio(rng) } catch { throw .platform(error) }
            entropy = rng
        }
        switch (choice.kvm, choice.hybridPolicy) {
        case (let kvm?, _):
            kvm.timedDevices = platform.timedDevices
            kvm.deviceLock = deviceLock
            vcpu = .kvm(kvm)
        case (nil, let policy?):
            let software = Machine.makeInterpreter(platform: platform, cpus: 1, lock: deviceLock,
                                                   translation: config.translation)
            do {
                vcpu = .hybrid(try HybridBackend(interpreter: software.cpus[0], memory: memory, clock: clock, policy: policy),
                               software: software)
            } catch {
                throw .backendUnavailable("--accel hybrid: cannot set up KVM for guest user code: \(error)")
            }
        case (nil, nil):
            vcpu = .interpreter(Machine.makeInterpreter(platform: platform, cpus: config.cpus, lock: deviceLock,
                                                        translation: config.translation))
        }
        platform.uart.onReceiveReady = { [unowned self] in self.feedUART() }
        let log = self.log
        ports.onUnhandled = { addr, size, write in
            log.debug("unhandled port \(write ? "write" : "read") \(hex(addr)) size \(size)")
        }
        mmio.onUnhandled = { addr, size, write in
            log.debug("unhandled MMIO \(write ? "write" : "read") \(hex(addr)) size \(size)")
        }
    }

    deinit { netPoller?.stop() }

    /// The backend picked for a config, before the platform exists: KVM's VM (its irqchip is the
    /// platform's interrupt controller), or nil for the interpreter (the platform models the chips),
    /// which with a hybrid policy runs guest user code on KVM (Sources/Hybrid).
    struct BackendChoice {
        let kvm: KVMBackend?
        let reason: String
        /// Kernel arguments this backend needs to work at all on this host.
        var kernelArguments: [String] = []
        var hybridPolicy: HybridPolicyConfig? = nil

        var interruptChip: InterruptChip {
            guard let kvm else { return .emulated }
            return .hypervisor(kvm.interrupts ?? NoInterruptController())
        }
    }

    /// Picks the backend. `auto`: KVM when a VM can be created and the host runs guest kernel code
    /// on hardware; the interpreter when /dev/kvm is missing, unusable, or kvm-pvm (which emulates
    /// guest supervisor code far slower than the interpreter runs it).
    static func chooseBackend(config: MachineConfig, memory: GuestMemory, clock: VirtualClock) throws(MachineError)
        -> BackendChoice
    {
        switch config.accelerator {
        case .interp:
            return BackendChoice(kvm: nil, reason: "requested with --accel interp")
        case .kvm:
            do { return try makeKVM(config: config, memory: memory, clock: clock, reason: "requested with --accel kvm") }
            catch { throw .kvm(error) }
        case .hybrid:
            return try makeHybrid(policy: config.hybridPolicy, reason: "requested with --accel hybrid")
        case .auto:
            if KVMSystem.emulatesSupervisorCode {
                return BackendChoice(kvm: nil,
                    reason: "this host's /dev/kvm is kvm-pvm, which emulates guest kernel code slowly")
            }
            do { return try makeKVM(config: config, memory: memory, clock: clock, reason: "/dev/kvm works") }
            catch { return BackendChoice(kvm: nil, reason: "KVM is unusable (\(error))") }
        }
    }

    static func makeKVM(config: MachineConfig, memory: GuestMemory, clock: VirtualClock, reason: String)
        throws(KVMError) -> BackendChoice
    {
        let kvm = try KVMBackend(memory: memory, irqchip: config.irqchip, clock: clock, cpuCount: config.cpus)
        var reason = reason
        var args: [String] = []
        if KVMSystem.emulatesSupervisorCode {
            // kvm-pvm's instruction emulator cannot run XRSTOR, and the guest still detects XSAVE
            // whatever CPUID says; `noxsave` makes Linux use FXSAVE (as with QEMU on this host).
            // The guest reads the host's CPUID whatever KVM_SET_CPUID2 says, so features whose
            // instructions the emulator lacks (POPCNT, CLAC/STAC, RDRAND, ...) are cleared by name.
            args.append("noxsave")
            args.append("clearcpuid=" + KVMBackend.pvmUnemulatedFeatures.joined(separator: ","))
            reason += " (kvm-pvm: guest kernel code is emulated by the host, slowly; adding 'noxsave clearcpuid=...')"
        }
        return BackendChoice(kvm: kvm, reason: reason, kernelArguments: args)
    }

    /// The hybrid backend (Sources/Hybrid): the interpreter for the guest kernel, KVM for guest user
    /// code. Only offered where KVM runs user code natively but emulates kernel code (kvm-pvm): on
    /// a hardware-virtualization host KVM runs everything natively, and without /dev/kvm there is
    /// nothing to run user code on. The KVM side is made with the interpreter, once the platform is.
    static func makeHybrid(policy configured: HybridPolicyConfig?, reason: String) throws(MachineError) -> BackendChoice {
        let policy: HybridPolicyConfig
        if let configured {
            policy = configured
        } else {
            switch HybridPolicyConfig.fromEnvironment({ getenv($0).map { String(cString: $0) } }) {
            case .success(let p): policy = p
            case .failure(let e): throw .invalidArgument(e.description)
            }
        }
        if let why = hybridUnavailableReason() { throw .backendUnavailable("--accel hybrid: \(why)") }
        return BackendChoice(kvm: nil,
                             reason: reason + " (guest kernel on the interpreter, guest user code on kvm-pvm; policy \(policy.mode.rawValue))",
                             hybridPolicy: policy)
    }

    /// Why the hybrid backend does not apply on this host, or nil if it does.
    public static func hybridUnavailableReason() -> String? {
        if access("/dev/kvm", F_OK) != 0 { return "this host has no /dev/kvm to run guest user code on" }
        if !KVMSystem.emulatesSupervisorCode {
            return "this host's KVM runs guest kernel code on hardware; use --accel kvm (the hybrid backend is for kvm-pvm hosts)"
        }
        return nil
    }

    /// The interpreter on a platform that models the PIC, PIT and I/O APIC: the bootstrap vCPU reads
    /// INTR from the 8259 pair, the vCPUs advance the platform's timed devices and take MSIs and
    /// I/O APIC messages into their local APICs, whose level-triggered EOIs go back to the I/O APIC.
    static func makeInterpreter(platform: Platform, cpus: Int, lock: DeviceLock,
                                translation: TranslationPolicy) -> InterpreterCPUs {
        let cpu = InterpreterCPUs(count: cpus, memory: platform.memory, clock: platform.clock,
                                  externalInterrupts: platform.externalInterrupts,
                                  timedDevices: platform.timedDevices, deviceLock: lock,
                                  levelEOI: { [unowned platform] v in platform.endOfInterrupt(vector: v) },
                                  translation: translation)
        platform.setMSITarget { [unowned cpu] address, data in cpu.deliverMSI(address: address, data: data) }
        // Disk reads land in guest RAM without passing the CPU: drop code decoded from those pages.
        platform.memory.dmaWriteObserver = { [unowned cpu] address, length in
            cpu.invalidateCode(physicalAddress: address, length: length)
        }
        return cpu
    }

    /// One virtio-blk PCI function per disk (00:01.0, 00:02.0, ...). A stock kernel finds them by
    /// probing config space at 0xCF8 — no ACPI needed — and uses MSI-X.
    private static func attachDisks(_ disks: [DiskConfig], platform: Platform) throws(MachineError) {
        for (i, d) in disks.enumerated() {
            // Our own lock would refuse it with "in use by another process": say what is wrong.
            if disks[..<i].contains(where: { !($0.readOnly && d.readOnly) && Machine.sameFile($0.path, d.path) }) {
                throw .platform(.diskGivenTwice(path: d.path))
            }
            let blk: VirtioBlock
            do { blk = try VirtioBlock(path: d.path, readOnly: d.readOnly, serial: d.serial.isEmpty ? "swhv-disk\(i)" : d.serial) }
            catch { throw .platform(.disk(error)) }
            do { try platform.addVirtio(blk) } catch { throw .platform(error) }
        }
    }

    /// Whether two paths name the same file (after resolving links and relative paths).
    static func sameFile(_ a: String, _ b: String) -> Bool {
        func resolved(_ p: String) -> String? {
            guard let r = realpath(p, nil) else { return nil }
            defer { free(r) }
            return String(cString: r)
        }
        guard let ra = resolved(a), let rb = resolved(b) else { return false }
        return ra == rb
    }

    // MARK: Loading

    /// Reads the kernel and initrd files, with one-line errors for missing, unreadable, empty or
    /// oversized files. Done before the VM is built so bad input fails fast.
    public static func readBootFiles(kernelPath: String, initrdPath: String?, memorySize: UInt64)
        throws(MachineError) -> (kernel: [UInt8], initrd: [UInt8]?)
    {
        let kernel = try HostFile.read(kernelPath, role: "kernel", limit: memorySize)
        guard let initrdPath else { return (kernel, nil) }
        let size = try HostFile.size(of: initrdPath, role: "initrd")
        if size > memorySize {
            throw .file(role: "initrd", path: initrdPath,
                        problem: "(\(size >> 20) MiB) is larger than guest RAM (\(memorySize >> 20) MiB)")
        }
        return (kernel, try HostFile.read(initrdPath, role: "initrd", limit: memorySize))
    }

    /// Loads a Linux kernel (bzImage or vmlinux), optional initrd and command line; sets the entry state.
    public func loadLinux(kernel: [UInt8], initrd: [UInt8]?, cmdline: String) throws(MachineError) {
        let loaded: LoadedKernel
        do {
            let fullCmdline = ([cmdline] + backendKernelArguments).filter { !$0.isEmpty }.joined(separator: " ")
            loaded = try LinuxLoader.load(kernel: kernel, initrd: initrd, cmdline: fullCmdline, memory: memory,
                                          acpiRSDP: platform.acpiTables?.rsdpAddress, unpackOnHost: config.unpackOnHost)
        } catch {
            throw .loader(error)
        }
        try setEntry(loaded.entry)
        timer.mark(.kernelLoaded)
    }

    /// Copies a flat binary into guest RAM and sets the entry state (small test guests).
    public func loadFlat(_ binary: [UInt8], at address: UInt64, entry: CPUEntryState) throws(MachineError) {
        do { try memory.write(bytes: binary, at: address) } catch { throw .memory(error) }
        try setEntry(entry)
        timer.mark(.kernelLoaded)
    }

    private func setEntry(_ entry: CPUEntryState) throws(MachineError) {
        switch vcpu {
        case .kvm(let kvm): do { try kvm.setEntryState(entry) } catch { throw .kvmRun(error) }
        case .interpreter(let cpu): cpu.setEntryState(entry)
        case .hybrid(let h, _): do { try h.setEntryState(entry) } catch { throw .kvmRun(.ioctl(error)) }
        }
    }

    // MARK: Console input

    /// Queues host bytes for the guest's serial port. Safe from any thread.
    public func sendInput(_ bytes: [UInt8]) {
        inputBacklog.add(bytes.count, ordering: .relaxed)
        control.post { [unowned self] in
            let room = Machine.maxPendingInput - self.pendingInput.count
            let kept = min(bytes.count, max(room, 0))
            self.pendingInput.append(contentsOf: bytes.prefix(kept))
            if kept < bytes.count { self.inputBacklog.subtract(bytes.count - kept, ordering: .relaxed) }
            self.feedUART()
        }
    }

    /// Moves pending host input into the UART as its FIFO drains. vCPU thread only.
    func feedUART() {
        guard !pendingInput.isEmpty else { return }
        let accepted = uart.enqueue(pendingInput)
        if accepted > 0 {
            pendingInput.removeFirst(accepted)
            inputBacklog.subtract(accepted, ordering: .relaxed)
        }
    }

    /// Starts reading the host's stdin (or `fd`) into the guest console, handling the Ctrl-A x escape.
    public func startStdinPump(fd: Int32 = STDIN_FILENO, handleEscape: Bool) {
        let pump = StdinPump(control: control, fd: fd, handleEscape: handleEscape,
                             backlog: { [unowned self] in self.inputBacklogCount }) { [unowned self] bytes in
            self.sendInput(bytes)
        }
        pump.start()
    }

    // MARK: Running

    /// Creates the vCPU threads (they wait for `run`). Call before installing the seccomp filter,
    /// which forbids new threads; `run` does it itself if nobody did.
    public func prepareToRun() throws(MachineError) {
        let prepared: Bool
        switch vcpu {
        case .kvm(let kvm): prepared = kvm.prepareThreads()
        case .interpreter(let cpus): prepared = cpus.prepareThreads()
        case .hybrid: prepared = true   // one vCPU, on the calling thread
        }
        guard prepared else {
            throw .backendUnavailable("cannot create \(config.cpus - 1) vCPU threads: \(String(cString: strerror(errno)))")
        }
    }

    /// Runs the guest until it stops. Returns the stop reason; throws on vCPU failures.
    public func run() throws(MachineError) -> VcpuStop {
        try prepareToRun()
        timer.mark(.firstInstruction)
        defer { netPoller?.stop() }
        switch vcpu {
        case .kvm(let kvm): do { return try kvm.run(io: self, control: control) } catch { throw .kvmRun(error) }
        case .interpreter(let cpu): return cpu.run(io: self, control: control)
        case .hybrid(let h, _): do { return try h.run(io: self, control: control) } catch { throw .kvmRun(.ioctl(error)) }
        }
    }

    // MARK: IOHandler

    // Every vCPU thread comes here: the device lock makes the devices see one access at a time.

    public func portRead(_ port: UInt16, size: Int) -> UInt32 {
        deviceLock.withLock { UInt32(truncatingIfNeeded: ports.read(UInt64(port), size: size)) }
    }

    public func portWrite(_ port: UInt16, size: Int, value: UInt32) {
        deviceLock.withLock { ports.write(UInt64(port), size: size, value: UInt64(value)) }
    }

    public func mmioRead(_ address: UInt64, size: Int) -> UInt64 {
        deviceLock.withLock { mmio.read(address, size: size) }
    }

    public func mmioWrite(_ address: UInt64, size: Int, value: UInt64) {
        deviceLock.withLock { mmio.write(address, size: size, value: value) }
    }
}

/// For VMs without an interrupt controller (bare test guests): interrupts go nowhere.
final class NoInterruptController: InterruptController {
    func setIRQ(_ gsi: UInt32, level: Bool) {}
    func signalMSI(address: UInt64, data: UInt32) {}
}
