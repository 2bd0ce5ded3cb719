import CPUBackend
import Devices
import Glibc
import KVM
import LinuxLoader
import Synchronization
import VMMemory
import X86Interpreter

/// Which CPU backend runs the guest.
public enum Accelerator: String, CaseIterable, Sendable {
    case auto, kvm, interp
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
    /// Block devices, in order: /dev/vda, /dev/vdb, ...
    public var disks: [DiskConfig] = []
    public init() {}
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

/// The standard PC addresses swhv's legacy devices live at.
public enum PCLayout {
    public static let com1: UInt64 = 0x3F8
    public static let com1IRQ: UInt32 = 4
    public static let postCodePort: UInt64 = 0x80
    public static let bootTimerPort: UInt64 = 0x440
    public static let bootTimerMMIO: UInt64 = 0xD100_0000
}

/// A virtual machine: guest memory, buses with devices, and one CPU backend. Owns the run loop.
/// Sendable because other threads only reach it through `sendInput`, which posts to the vCPU thread.
public final class Machine: IOHandler, @unchecked Sendable {
    public let config: MachineConfig
    public let memory: GuestMemory
    public let ports = Bus(name: "port I/O")
    public let mmio = Bus(name: "MMIO")
    public let control = VMControl()
    public let backend: VcpuBackend
    /// Why this backend was chosen, for the one-line message on stderr.
    public let backendReason: String
    /// Kernel arguments the backend needs on this host, appended to the command line.
    public let backendKernelArguments: [String]
    public let interrupts: any InterruptController
    public let timer = BootTimer()
    /// The one VM clock: the RTC here, and the interpreter's TSC, PIT and APIC timer, all read it.
    public let clock = VirtualClock()
    public let log: Log

    public private(set) var uart: Uart16550!
    /// The keyboard controller (the API's SendCtrlAltDel types into it).
    public private(set) var i8042: I8042?
    /// Host input waiting for room in the UART's receive FIFO (bounded).
    private var pendingInput: [UInt8] = []
    public static let maxPendingInput = 1 << 16
    /// Bytes sent with `sendInput` that have not reached the UART yet (posted or pending): the
    /// stdin pump waits while this is at `maxPendingInput`, so fast input is held back, not
    /// queued without bound or dropped.
    private let inputBacklog = Atomic<Int>(0)
    public var inputBacklogCount: Int { inputBacklog.load(ordering: .relaxed) }

    public init(config: MachineConfig, consoleOutput: SerialOutput) throws(MachineError) {
        self.config = config
        log = Log(level: config.verbose ? .debug : (config.quiet ? .error : .info))
        do { memory = try GuestMemory(size: config.memorySize) } catch { throw .memory(error as! MemoryError) }
        let setup = try Machine.makeBackend(config: config, memory: memory, clock: clock)
        (backend, interrupts, backendReason) = (setup.backend, setup.interrupts, setup.reason)
        backendKernelArguments = setup.kernelArguments
        do { try setup.registerPlatform(ports) } catch { throw .device("\(error)") }
        try attachLegacyDevices(consoleOutput: consoleOutput)
        try attachPCI(disks: config.disks)
        let log = self.log
        ports.onUnhandled = { addr, size, write in
            log.debug("unhandled port \(write ? "write" : "read") 0x\(String(addr, radix: 16)) size \(size)")
        }
        mmio.onUnhandled = { addr, size, write in
            log.debug("unhandled MMIO \(write ? "write" : "read") 0x\(String(addr, radix: 16)) size \(size)")
        }
    }

    /// A backend and what the machine must add for it.
    struct BackendSetup {
        let backend: VcpuBackend
        let interrupts: any InterruptController
        let reason: String
        /// Platform devices KVM models in the kernel but the interpreter needs on the bus.
        let registerPlatform: (Bus) throws -> Void
        /// Kernel arguments this backend needs to work at all on this host.
        var kernelArguments: [String] = []
    }

    /// Picks the backend. `auto`: KVM when a VM can be created and the host runs guest kernel code
    /// on hardware; the interpreter when /dev/kvm is missing, unusable, or kvm-pvm (which emulates
    /// guest supervisor code far slower than the interpreter runs it).
    static func makeBackend(config: MachineConfig, memory: GuestMemory, clock: VirtualClock) throws(MachineError)
        -> BackendSetup
    {
        switch config.accelerator {
        case .interp:
            return makeInterpreter(memory: memory, clock: clock, reason: "requested with --accel interp")
        case .kvm:
            do { return try makeKVM(config: config, memory: memory, reason: "requested with --accel kvm") }
            catch { throw .kvm(error) }
        case .auto:
            if KVMSystem.emulatesSupervisorCode {
                return makeInterpreter(memory: memory, clock: clock,
                    reason: "this host's /dev/kvm is kvm-pvm, which emulates guest kernel code slowly")
            }
            do { return try makeKVM(config: config, memory: memory, reason: "/dev/kvm works") }
            catch { return makeInterpreter(memory: memory, clock: clock, reason: "KVM is unusable (\(error))") }
        }
    }

    static func makeKVM(config: MachineConfig, memory: GuestMemory, reason: String) throws(KVMError) -> BackendSetup {
        let kvm = try KVMBackend(memory: memory, irqchip: config.irqchip)
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
        return BackendSetup(backend: kvm, interrupts: kvm.interrupts ?? NoInterruptController(), reason: reason,
                            registerPlatform: { _ in }, kernelArguments: args)
    }

    static func makeInterpreter(memory: GuestMemory, clock: VirtualClock, reason: String) -> BackendSetup {
        let platform = PlatformInterrupts()
        let pit = Pit8254(clock: clock, irq: platform.line(0))
        let cpu = X86Interpreter(memory: memory, clock: clock, externalInterrupts: platform.pic,
                                 timedDevices: [pit])
        platform.onMSI = { [unowned cpu] address, data in cpu.deliverMSI(address: address, data: data) }
        // Disk reads land in guest RAM without passing the CPU: drop code decoded from those pages.
        memory.dmaWriteObserver = { [unowned cpu] address, length in
            cpu.invalidateCode(physicalAddress: address, length: length)
        }
        return BackendSetup(backend: cpu, interrupts: platform, reason: reason, registerPlatform: { bus in
            try platform.pic.register(on: bus)
            try pit.register(on: bus)
        })
    }

    private func attachLegacyDevices(consoleOutput: SerialOutput) throws(MachineError) {
        do {
            let uart = Uart16550(irq: IRQLine(controller: interrupts, gsi: Uart16550.com1IRQ), output: consoleOutput)
            self.uart = uart
            uart.onReceiveReady = { [unowned self] in self.feedUART() }
            try ports.register(uart, name: "ttyS0", base: UInt64(Uart16550.com1Base), length: Uart16550.portCount)
            let control = self.control
            let i8042 = I8042(onReset: { control.requestStop(.reset) },
                              keyboardIRQ: IRQLine(controller: interrupts, gsi: I8042.keyboardIRQ))
            try i8042.register(on: ports)
            self.i8042 = i8042
            try ports.register(PortSink(), name: "post-code", base: UInt64(PortSink.postCodePort), length: 1)
            // KVM does not model the CMOS RTC in the kernel: Linux reads the wall clock from it.
            let rtc = CmosRtc(clock: clock, irq: IRQLine(controller: interrupts, gsi: 8))
            rtc.setMemorySize(belowFourGiB: min(memory.size, GuestMemory.mmioHoleStart),
                              aboveFourGiB: memory.size > GuestMemory.mmioHoleStart ? memory.size - GuestMemory.mmioHoleStart : 0)
            try rtc.register(on: ports)
            let timer = self.timer
            let bootTimer = BootTimerPort(now: { VirtualClock.hostMonotonicNs() },
                                          onSignal: { ev in timer.guestSignal(ev.milestone.value) })
            try ports.register(bootTimer, name: "boot-timer", base: UInt64(BootTimerPort.port), length: BootTimerPort.length)
            // The same register as MMIO, for guests whose kernel has no /dev/port (Debian's cloud kernel).
            try mmio.register(bootTimer, name: "boot-timer", base: PCLayout.bootTimerMMIO, length: 1)
        } catch let e as BusError {
            throw .device(e.description)
        } catch {
            throw .device("\(error)")
        }
    }

    /// The PCI host bridge and one virtio-blk PCI device per disk (00:01.0, 00:02.0, ...). A stock
    /// kernel finds them by probing config space at 0xCF8 — no ACPI needed — and uses MSI-X.
    private func attachPCI(disks: [DiskConfig]) throws(MachineError) {
        let root = PciRoot()
        let control = self.control
        root.onResetRequest = { control.requestStop(.reset) }
        do {
            for (i, d) in disks.enumerated() {
                // Our own lock would refuse it with "in use by another process": say what is wrong.
                if disks[..<i].contains(where: { !($0.readOnly && d.readOnly) && Machine.sameFile($0.path, d.path) }) {
                    throw MachineError.device("disk \(d.path) is given twice; a writable disk can be attached only once")
                }
                let blk = try VirtioBlock(path: d.path, readOnly: d.readOnly,
                                          serial: d.serial.isEmpty ? "swhv-disk\(i)" : d.serial)
                let dev = try VirtioPciDevice(device: blk, memory: memory, interrupts: interrupts,
                                              intx: IRQLine(controller: interrupts, gsi: 11))
                _ = try root.add(dev)
            }
            try root.register(ports: ports, mmio: mmio)
        } catch let e as MachineError {
            throw e
        } catch let e as BlockError {
            throw .device(e.description)
        } catch {
            throw .device("\(error)")
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
                                          unpackOnHost: config.unpackOnHost)
        } catch {
            throw .loader(error)
        }
        try setEntry(loaded.entry)
        timer.mark(.kernelLoaded)
    }

    /// Copies a flat binary into guest RAM and sets the entry state (small test guests).
    public func loadFlat(_ binary: [UInt8], at address: UInt64, entry: CPUEntryState) throws(MachineError) {
        do { try memory.write(bytes: binary, at: address) } catch { throw .memory(error as! MemoryError) }
        try setEntry(entry)
        timer.mark(.kernelLoaded)
    }

    private func setEntry(_ entry: CPUEntryState) throws(MachineError) {
        do { try backend.setEntryState(entry) } catch let e as KVMError { throw .kvm(e) } catch {
            throw .vcpu(error as? VcpuError ?? .unhandled("\(error)"))
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

    /// Starts reading the host's stdin into the guest console, handling the Ctrl-A x escape.
    public func startStdinPump(handleEscape: Bool) {
        let pump = StdinPump(control: control, handleEscape: handleEscape,
                             backlog: { [unowned self] in self.inputBacklogCount }) { [unowned self] bytes in
            self.sendInput(bytes)
        }
        pump.start()
    }

    // MARK: Running

    /// Runs the guest until it stops. Returns the stop reason; throws on vCPU failures.
    public func run() throws(MachineError) -> VcpuStop {
        timer.mark(.firstInstruction)
        do {
            return try backend.run(io: self, control: control)
        } catch let e as VcpuError {
            throw .vcpu(e)
        } catch let e as KVMError {
            throw .kvm(e)
        } catch {
            throw .vcpu(.unhandled("\(error)"))
        }
    }

    // MARK: IOHandler

    public func portRead(_ port: UInt16, size: Int) -> UInt32 {
        UInt32(truncatingIfNeeded: ports.read(UInt64(port), size: size))
    }

    public func portWrite(_ port: UInt16, size: Int, value: UInt32) {
        ports.write(UInt64(port), size: size, value: UInt64(value))
    }

    public func mmioRead(_ address: UInt64, size: Int) -> UInt64 {
        mmio.read(address, size: size)
    }

    public func mmioWrite(_ address: UInt64, size: Int, value: UInt64) {
        mmio.write(address, size: size, value: value)
    }
}

/// For VMs without an interrupt controller (bare test guests): interrupts go nowhere.
final class NoInterruptController: InterruptController {
    func setIRQ(_ gsi: UInt32, level: Bool) {}
    func signalMSI(address: UInt64, data: UInt32) {}
}
