import APIServer
import ArgumentParser
import CPUBackend
import Glibc
import LinuxLoader
import VMM

@main
struct Swhv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swhv",
        abstract: "A hypervisor for Linux hosts: boots a Linux kernel with its console on your terminal.",
        discussion: """
            Runs guests on KVM where /dev/kvm works, or on swhv's own x86-64 interpreter. The guest console is this terminal (the 16550 UART at COM1). Press Ctrl-A x to quit.
            """,
        version: "swhv \(swhvVersion)",
        subcommands: [Boot.self, RunImage.self, Restore.self, Pause.self, Resume.self, Info.self, Snapshot.self,
                      SeccompCheck.self])

    /// Errors swhv itself reports get one line and exit status 1; usage errors go through
    /// ArgumentParser (which prints the usage and exits 64).
    static func main() {
        let start = VirtualClock.hostMonotonicNs()
        openMissingStandardDescriptors()
        do {
            var command = try parseAsRoot()
            if var boot = command as? Boot {
                boot.processStart = start
                try boot.run()
            } else if var restore = command as? Restore {
                restore.processStart = start
                try restore.run()
            } else {
                try command.run()
            }
        } catch let e as MachineError {
            fail(e.description)
        } catch let e as APIClient.Failure {
            fail(e.description)
        } catch {
            exit(withError: error)
        }
    }

    static func fail(_ message: String) -> Never {
        let line = "\rswhv: error: \(message)\n"
        _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        Glibc.exit(1)
    }
}

struct Boot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot a Linux kernel.",
        // Written out: ArgumentParser collapses more than a dozen options into `[<options>]`.
        usage: """
            swhv boot --kernel <path> [--initrd <path>] [--cmdline <args>] [--no-default-cmdline]
                      [--disk <path>[,readonly][,serial=ID]]... [--net tap=NAME[,mac=MAC]]... [--rng|--no-rng]
                      [--memory <size>] [--accel auto|kvm|interp|hybrid] [--cpus <n>] [--no-acpi] [--translate on|off]
                      [--guest-decompress] [--boot-timer] [--no-seccomp] [--quiet] [--verbose] [--api-sock <path>]
            """,
        // One line per paragraph: ArgumentParser wraps them to the terminal.
        discussion: """
            The kernel may be a bzImage or an uncompressed vmlinux (ELF). The guest console is this terminal; press Ctrl-A x to quit, Ctrl-A Ctrl-A to send Ctrl-A. swhv exits with status 0 when the guest reboots or powers off, and 1 with a one-line message on any error (bad files, a guest triple fault, a vCPU failure).

            SIGTERM, SIGHUP and SIGINT (from kill; in the raw terminal Ctrl-C goes to the guest) stop the guest, restore the terminal, and end swhv by that signal.

            Examples (in the repository, after scripts/fetch-guest and a release build):
              .build/release/swhv boot --kernel fixtures/vmlinuz-cloud \\
                  --initrd fixtures/initramfs.cpio.gz
              .build/release/swhv boot --kernel fixtures/vmlinuz-cloud \\
                  --initrd fixtures/initramfs.cpio.gz --memory 1G --accel interp
            """)

    @Option(name: .long, help: ArgumentHelp("Linux kernel: bzImage or vmlinux ELF.", valueName: "path"))
    var kernel: String

    @Option(name: .long, help: ArgumentHelp("Initial ramdisk (initramfs), loaded for the kernel.", valueName: "path"))
    var initrd: String?

    @Option(name: .long, help: ArgumentHelp(
        "Extra kernel command-line arguments, appended to the default '\(LinuxLoader.defaultCmdline)'.",
        valueName: "args"))
    var cmdline: String?

    @Flag(name: .long, help: "Do not start from the default command line: --cmdline is the whole command line.")
    var noDefaultCmdline = false

    @Option(name: .long, help: ArgumentHelp(
        "A host file as a virtio-blk disk (/dev/vda, /dev/vdb, ... in order). Repeatable. Options: readonly, serial=ID.",
        valueName: "path[,readonly][,serial=ID]"))
    var disk: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "A network device over an existing TAP interface (eth0, eth1, ... in order). Repeatable. "
            + "Options: mac=MAC, offload=all|csum|none, mrg_rxbuf=on|off.",
        valueName: "tap=NAME[,mac=MAC]"))
    var net: [String] = []

    @Flag(name: .long, inversion: .prefixedNo, help: ArgumentHelp(
        "A virtio-rng device: the guest's entropy comes from the host's getrandom (at most 1 MiB/s)."))
    var rng = false

    @Option(name: .long, help: ArgumentHelp(
        "Guest RAM: a number of MiB, or with a unit (256M, 1G). Default 512M.", valueName: "size"))
    var memory: String = "512M"

    @Option(name: .long, help: ArgumentHelp(
        "CPU backend: auto (KVM on hardware-virtualization hosts, else the interpreter), kvm, interp (swhv's x86-64 interpreter), or hybrid (kvm-pvm hosts: guest kernel on the interpreter, guest user code on KVM).",
        valueName: "auto|kvm|interp|hybrid"))
    var accel: String = "auto"

    @Option(name: .long, help: ArgumentHelp("vCPUs, 1 to \(MachineConfig.maxCPUs) (default 1).", valueName: "n"))
    var cpus: Int = 1

    @Flag(name: .long, help: "No ACPI tables: the guest finds one CPU and the 8259s, and cannot power the machine off (--cpus 1 only).")
    var noAcpi = false

    @Option(name: .long, help: ArgumentHelp(
        "On the software CPU, translate hot guest code to host code (on, the default) or only interpret it (off: slower, for diffing and debugging).",
        valueName: "on|off"))
    var translate: String = "on"

    @Flag(name: .long, help: "Run the bzImage's own decompressor in the guest instead of unpacking the kernel on the host.")
    var guestDecompress = false

    @Flag(name: .long, help: "Print boot milestones (kernel loaded, guest entered, first output, userspace up) on exit.")
    var bootTimer = false

    @Flag(name: [.short, .long], help: "Print only errors on stderr.")
    var quiet = false

    @Flag(name: [.short, .long], help: "Debug logging on stderr (unhandled device accesses, exits).")
    var verbose = false

    @Flag(name: .long, help: ArgumentHelp(
        "Run without the seccomp system-call filter (for debugging swhv; see docs/security.md)."))
    var noSeccomp = false

    @Option(name: .long, help: ArgumentHelp(
        "Serve the API (HTTP/1.1 + JSON, Firecracker's paths) on this Unix socket: pause, resume, info, snapshot.",
        valueName: "path"))
    var apiSock: String?

    var processStart: UInt64 = VirtualClock.hostMonotonicNs()

    enum CodingKeys: String, CodingKey {
        case kernel, initrd, cmdline, noDefaultCmdline, disk, memory, guestDecompress, accel, translate, bootTimer, quiet, verbose
        case noSeccomp, cpus, noAcpi, net, rng, apiSock
    }

    func run() throws {
        if quiet && verbose { throw MachineError.invalidArgument("--quiet and --verbose contradict each other; use one") }
        if noDefaultCmdline && (cmdline ?? "").isEmpty {
            throw MachineError.invalidArgument(
                "--no-default-cmdline needs --cmdline: the kernel would get an empty command line (and no console)")
        }
        var config = try MachineOptions.config(memory: memory, accel: accel, translate: translate, disks: disk)
        for n in net { config.nets.append(try NetConfig.parse(n)) }
        config.rng = rng
        config.cpus = cpus
        config.acpi = !noAcpi
        try config.validate()
        config.quiet = quiet
        config.verbose = verbose
        config.unpackOnHost = !guestDecompress

        var line = noDefaultCmdline ? "" : LinuxLoader.defaultCmdline
        if let cmdline, !cmdline.isEmpty { line = line.isEmpty ? cmdline : line + " " + cmdline }

        let files = try MachineOptions.withFetchHint { () throws(MachineError) in
            try Machine.readBootFiles(kernelPath: kernel, initrdPath: initrd, memorySize: config.memorySize)
        }
        let console = HostConsoleOutput()
        let machine = try Machine(config: config, consoleOutput: console)
        machine.timer.processStart = processStart
        console.onFirstByte = { [timer = machine.timer] in timer.mark(.firstConsoleByte) }
        try machine.loadLinux(kernel: files.kernel, initrd: files.initrd, cmdline: line)
        // After loading, so that bad input gets exactly one line on stderr.
        if !quiet { machine.log.info("using \(machine.backend.name): \(machine.backendReason)") }

        let api = try APISession.start(socketPath: apiSock, machine: machine, memoryIsAnonymous: true)
        let stopSignals = StopSignals(control: machine.control)
        let raw = TerminalRawMode()
        machine.startStdinPump(handleEscape: true)
        try machine.prepareToRun()
        // Everything is open, mapped and started: from here on the guest faces only the calls the
        // run loop needs.
        if !noSeccomp { try APISession.confine(api, hybrid: machine.usesHybridBackend) }
        let result: Result<VcpuStop, MachineError>
        do { result = .success(try machine.run()) } catch { result = .failure(error) }
        api?.finish(APICommand.describe(result))
        raw?.restore()
        console.flush(blockingFor: 500)
        if bootTimer {
            machine.log.error(machine.timer.report)
            if let n = machine.backend.guestInstructionCount, let up = machine.timer.milliseconds(.firstInstruction) {
                let runMs = Double(VirtualClock.hostMonotonicNs() &- processStart) / 1e6 - up
                machine.log.error("boot timer: \(n) guest instructions, \(Int(Double(n) / max(runMs, 1) / 1000)) MIPS")
            }
            if let r = machine.backend.statisticsReport { machine.log.error("boot timer: " + r) }
        }
        MachineOptions.reportDropped(console, log: machine.log)
        if let sig = stopSignals?.signal {
            machine.log.info("stopped by \(StopSignals.name(sig))")
            StopSignals.die(of: sig)
        }
        switch result {
        case .failure(let e): throw e
        case .success(let stop):
            switch stop {
            case .shutdown: throw MachineError.guestFailure("guest triple-faulted (shutdown)")
            default:
                if !quiet { machine.log.info("guest stopped: \(stop)") }
            }
        }
    }
}

/// Runs a flat real-mode image (the small guests of Tests/Guests): for backend debugging and the
/// VM-exit benchmark. No firmware, no interrupt controller: `hlt` with interrupts off ends the run.
struct RunImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run-image",
        abstract: "Run a flat real-mode test image (e.g. Tests/Guests/*.asm assembled with nasm).",
        discussion: """
            The image is copied to --load (default 0x1000) and entered in real mode at 0:load with SP 0x8000. COM1 output goes to stdout. The run ends when the guest resets (i8042, exit status 0), halts with interrupts disabled (0), or triple-faults (2); swhv prints how it stopped on stderr. The guest runs under the same seccomp filter as boot.

            --disk adds virtio-blk PCI functions as for boot (config mechanism #1 at 0xCF8, BARs preassigned from 0xC0000000), for guests that drive virtio themselves.
            """)

    @Option(name: .long, help: ArgumentHelp("Flat binary image.", valueName: "path"))
    var image: String

    @Option(name: .long, help: ArgumentHelp("Guest-physical load address and entry (real mode).", valueName: "address"))
    var load: String = "0x1000"

    @Option(name: .long, help: ArgumentHelp("Store a 32-bit value in guest RAM before the run. Repeatable.",
                                            valueName: "address=value"))
    var write32: [String] = []

    @Option(name: .long, help: ArgumentHelp("Guest RAM (default 16M).", valueName: "size"))
    var memory: String = "16M"

    @Option(name: .long, help: ArgumentHelp("CPU backend: auto, kvm, interp or hybrid.", valueName: "auto|kvm|interp|hybrid"))
    var accel: String = "auto"

    @Option(name: .long, help: ArgumentHelp("Software CPU: translate hot code (on) or only interpret (off).",
                                            valueName: "on|off"))
    var translate: String = "on"

    @Option(name: .long, help: ArgumentHelp(
        "vCPUs (default 1). The others wait for the guest's INIT/SIPI; with more than one, KVM's in-kernel "
            + "local APICs are used, so the guest must end by a reset (i8042 0xFE), not by hlt.",
        valueName: "n"))
    var cpus: Int = 1

    @Option(name: .long, help: ArgumentHelp(
        "A host file as a virtio-blk PCI device (00:01.0, 00:02.0, ... in order), as for boot. Repeatable.",
        valueName: "path[,readonly][,serial=ID]"))
    var disk: [String] = []

    @Flag(name: .long, help: ArgumentHelp(
        "Run without the seccomp system-call filter (for debugging swhv; see docs/security.md)."))
    var noSeccomp = false

    @Option(name: .long, help: ArgumentHelp("Serve the API on this Unix socket, as boot --api-sock.", valueName: "path"))
    var apiSock: String?

    func run() throws {
        func number(_ t: String) throws -> UInt64 {
            let v = t.hasPrefix("0x") ? UInt64(t.dropFirst(2), radix: 16) : UInt64(t)
            guard let v else { throw MachineError.invalidArgument("'\(t)' is not a number") }
            return v
        }
        var config = try MachineOptions.config(memory: memory, accel: accel, translate: translate, disks: disk)
        // Several CPUs need local APICs (INIT/SIPI, IPIs): KVM's in-kernel ones. One CPU runs bare, so
        // that `hlt` ends the run; it needs no firmware tables either.
        config.irqchip = cpus > 1
        config.acpi = cpus > 1
        config.cpus = cpus
        try config.validate()
        config.quiet = true
        let address = try number(load)
        guard address < 0x10000 else { throw MachineError.invalidArgument("--load must be below 0x10000 (real mode)") }
        let bytes = try HostFile.read(image, role: "image", limit: config.memorySize)
        let console = HostConsoleOutput()
        let machine = try Machine(config: config, consoleOutput: console)
        try machine.loadFlat(bytes, at: address, entry: .realMode(cs: 0, ip: UInt16(address), sp: 0x8000))
        for w in write32 {
            let parts = w.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw MachineError.invalidArgument("--write32 '\(w)' is not address=value") }
            let (at, value) = (try number(parts[0]), try number(parts[1]))
            guard value <= UInt32.max else { throw MachineError.invalidArgument("--write32 value \(value) exceeds 32 bits") }
            do { try machine.memory.write(UInt32(value), at: at) }
            catch { throw MachineError.invalidArgument("--write32 address 0x\(String(at, radix: 16)) is outside guest RAM") }
        }
        let api = try APISession.start(socketPath: apiSock, machine: machine, memoryIsAnonymous: true)
        let stopSignals = StopSignals(control: machine.control)
        try machine.prepareToRun()   // the vCPU threads: the filter forbids making threads
        // The same confinement as boot: hostile test guests run under the filter too.
        if !noSeccomp { try APISession.confine(api, hybrid: machine.usesHybridBackend) }
        let start = VirtualClock.hostMonotonicNs()
        let result: Result<VcpuStop, MachineError>
        do { result = .success(try machine.run()) } catch { result = .failure(error) }
        api?.finish(APICommand.describe(result))
        let stop = try result.get()
        let ms = Double(VirtualClock.hostMonotonicNs() &- start) / 1e6
        console.flush(blockingFor: 500)
        var line = "\(machine.backend.name): \(stop) after \(ms) ms"
        if let n = machine.backend.guestInstructionCount {
            line += ", \(n) guest instructions (\(Int(Double(n) / max(ms, 0.001) / 1000)) MIPS)"
        }
        machine.log.error(line)
        if let r = machine.backend.statisticsReport { machine.log.error(r) }
        MachineOptions.reportDropped(console, log: machine.log, always: true)
        if let sig = stopSignals?.signal { StopSignals.die(of: sig) }
        if stop == .shutdown { Glibc.exit(2) }
    }
}

/// Hidden: installs swhv's seccomp filter and makes one system call, so tests can show what the
/// filter allows and refuses without a guest. `allowed` exercises the calls a run needs.
struct SeccompCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seccomp-check", abstract: "Install the seccomp filter and try a system call.",
        shouldDisplay: false)

    @Argument(help: "allowed, socket, execve, openat, mmap-exec, ioctl, kill")
    var call: String

    func run() throws {
        try Seccomp.install()
        func say(_ s: String) { _ = (s + "\n").withCString { write(STDOUT_FILENO, $0, strlen($0)) } }
        switch call {
        case "allowed":
            var ts = timespec()
            clock_gettime(CLOCK_MONOTONIC, &ts)
            let p = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 4096)
            p.deallocate()
            var m = pthread_mutex_t()
            pthread_mutex_init(&m, nil); pthread_mutex_lock(&m); pthread_mutex_unlock(&m)
            usleep(1000)
            say("allowed calls work")
            return
        case "socket": _ = socket(AF_INET, Int32(bitPattern: SOCK_STREAM.rawValue), 0)
        case "execve": _ = execv("/bin/true", [strdup("/bin/true"), nil])
        case "openat":
            let fd = open("/etc/hostname", O_RDONLY)
            say(fd < 0 ? "open refused: \(String(cString: strerror(errno)))" : "open allowed")
            return
        case "mmap-exec": _ = mmap(nil, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        case "ioctl": _ = Seccomp.syscall(16 /* ioctl */, Int(STDIN_FILENO), Int(TIOCSTI), 0)
        case "kill": _ = kill(1, 0)
        default: throw MachineError.invalidArgument("unknown call '\(call)'")
        }
        say("\(call) was not refused")
        Glibc.exit(3)
    }
}
