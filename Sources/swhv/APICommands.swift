import APIServer
import ArgumentParser
import CPUBackend
import Glibc
import JSONCoding
import VMM

/// The API socket's client commands share this: one request, and the server's JSON error as
/// one line on failure.
enum APICommand {
    static func call(_ socket: String, _ method: String, _ path: String, _ body: JSONValue? = nil) throws -> APIClient.Response {
        let r = try APIClient.request(socket: socket, method: method, path: path, body: body)
        guard (200..<300).contains(r.status) else { throw MachineError.invalidArgument(r.faultMessage) }
        return r
    }

    static func describe(_ result: Result<VcpuStop, MachineError>) -> String {
        switch result {
        case .success(let stop): return stop.description
        case .failure(let e): return e.description
        }
    }

    static func say(_ s: String) { _ = (s + "\n").withCString { write(STDOUT_FILENO, $0, strlen($0)) } }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Pause a running VM (through its --api-sock).",
        discussion: "Returns once the guest is paused: it runs no instruction and its clocks stand still until resumed.")

    @Option(name: .long, help: ArgumentHelp("The VM's API socket (swhv boot --api-sock).", valueName: "path"))
    var apiSock: String

    func run() throws { _ = try APICommand.call(apiSock, "PATCH", "/vm", .object(JSONObject([("state", "Paused")]))) }
}

struct Resume: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a paused VM (through its --api-sock).",
        discussion: "The guest continues where it stopped; its clocks do not jump by the pause.")

    @Option(name: .long, help: ArgumentHelp("The VM's API socket (swhv boot --api-sock).", valueName: "path"))
    var apiSock: String

    func run() throws { _ = try APICommand.call(apiSock, "PATCH", "/vm", .object(JSONObject([("state", "Resumed")]))) }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a VM's state, backend and guest instruction count as JSON (GET /vm).")

    @Option(name: .long, help: ArgumentHelp("The VM's API socket (swhv boot --api-sock).", valueName: "path"))
    var apiSock: String

    func run() throws {
        let r = try APICommand.call(apiSock, "GET", "/vm")
        APICommand.say(r.json?.serialized(pretty: true) ?? String(decoding: r.body, as: UTF8.self))
    }
}

struct Snapshot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a paused VM's snapshot into a directory (PUT /snapshot/create).",
        discussion: """
            Writes DIR/state (machine, vCPU and device state; checksummed) and DIR/memory (guest RAM, \
            sparse). The VM must be paused first (swhv pause). DIR is created if missing; files \
            already there are replaced only once the new snapshot is complete.

            Resume it from the snapshot with: swhv restore DIR
            """)

    @Option(name: .long, help: ArgumentHelp("The VM's API socket (swhv boot --api-sock).", valueName: "path"))
    var apiSock: String

    @Argument(help: ArgumentHelp("Directory for the snapshot files.", valueName: "dir"))
    var directory: String

    func run() throws {
        if mkdir(directory, 0o700) != 0 && errno != EEXIST {
            throw MachineError.file(role: "snapshot directory", path: directory, problem: "cannot be created: " + String(cString: strerror(errno)))
        }
        guard let abs = realpath(directory, nil) else {
            throw MachineError.file(role: "snapshot directory", path: directory, problem: "cannot be resolved: " + String(cString: strerror(errno)))
        }
        let dir = String(cString: abs)
        free(abs)
        let paths = PreparedRestore.paths(directory: dir)
        _ = try APICommand.call(apiSock, "PUT", "/snapshot/create",
                                .object(JSONObject([("snapshot_path", .string(paths.state)), ("mem_file_path", .string(paths.memory))])))
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Resume a VM from a snapshot directory (written by swhv snapshot).",
        discussion: """
            Checks the snapshot before the guest runs: the state file's checksums and version, that the \
            memory file belongs to it, and that every disk is still at its path, the same size and \
            unmodified. Guest RAM is mapped from DIR/memory (pages load as the guest touches them; \
            the file is never written). The console is this terminal, as with boot.
            """)

    @Argument(help: ArgumentHelp("The snapshot directory (DIR/state and DIR/memory).", valueName: "dir"))
    var directory: String

    @Option(name: .long, help: ArgumentHelp(
        "CPU backend: auto, kvm or interp; may differ from the one the snapshot was taken on.", valueName: "auto|kvm|interp"))
    var accel: String = "auto"

    @Option(name: .long, help: ArgumentHelp("Software CPU: translate hot code (on) or only interpret (off), as for boot.",
                                            valueName: "on|off"))
    var translate: String = "on"

    @Option(name: .long, help: ArgumentHelp(
        "The most guest RAM to allow (a snapshot of a larger VM is refused). Default: the snapshot's size.", valueName: "size"))
    var memory: String?

    @Option(name: .long, help: ArgumentHelp("Serve the API on this Unix socket (as boot --api-sock).", valueName: "path"))
    var apiSock: String?

    @Flag(name: .long, help: "Skip checking guest RAM against its checksums (faster; a corrupted memory file goes unnoticed).")
    var noVerifyMemory = false

    @Flag(name: .long, help: "Print on exit when the restored guest ran its first instruction (ms since swhv started).")
    var bootTimer = false

    @Flag(name: [.short, .long], help: "Print only errors on stderr.")
    var quiet = false

    @Flag(name: [.short, .long], help: "Debug logging on stderr.")
    var verbose = false

    @Flag(name: .long, help: ArgumentHelp("Run without the seccomp system-call filter (see docs/security.md)."))
    var noSeccomp = false

    var processStart: UInt64 = VirtualClock.hostMonotonicNs()

    enum CodingKeys: String, CodingKey {
        case directory, accel, translate, memory, apiSock, noVerifyMemory, bootTimer, quiet, verbose, noSeccomp
    }

    func run() throws {
        // The hybrid backend cannot load a snapshot's vCPU state (nor is one taken on it restorable).
        guard let a = Accelerator(rawValue: accel), a != .hybrid else {
            throw MachineError.invalidArgument("--accel '\(accel)' is not one of auto, kvm, interp (restore does not run on hybrid)")
        }
        let translation = try MachineOptions.translation(translate)
        var limit: UInt64?
        if let memory {
            guard let size = MemorySize.parse(memory), size > 0 else {
                throw MachineError.invalidArgument("--memory '\(memory)' is not a size (try 512M or 1G)")
            }
            limit = size
        }
        if quiet && verbose { throw MachineError.invalidArgument("--quiet and --verbose contradict each other; use one") }
        let paths = PreparedRestore.paths(directory: directory)
        let prepared = try PreparedRestore.check(statePath: paths.state, memoryPath: paths.memory, memoryLimit: limit,
                                                 verifyMemory: !noVerifyMemory)
        let console = HostConsoleOutput()
        let machine = try Machine.restore(prepared, accelerator: a, translation: translation, quiet: quiet, verbose: verbose, consoleOutput: console)
        machine.timer.processStart = processStart
        if !quiet {
            machine.log.info("restoring a snapshot taken on \(prepared.snapshot.machine.backend), on \(machine.backend.name): \(machine.backendReason)")
        }
        let api = try APISession.start(socketPath: apiSock, machine: machine, memoryIsAnonymous: false)
        let stopSignals = StopSignals(control: machine.control)
        let raw = TerminalRawMode()
        machine.startStdinPump(handleEscape: true)
        try machine.prepareToRun()   // the vCPU threads: the filter forbids making threads
        if !noSeccomp { try APISession.confine(api) }
        let result: Result<VcpuStop, MachineError>
        do { result = .success(try machine.run()) } catch { result = .failure(error) }
        api?.finish(APICommand.describe(result))
        raw?.restore()
        console.flush(blockingFor: 500)
        if bootTimer { machine.log.error(machine.timer.report) }
        MachineOptions.reportDropped(console, log: machine.log)
        if let sig = stopSignals?.signal {
            machine.log.info("stopped by \(StopSignals.name(sig))")
            StopSignals.die(of: sig)
        }
        switch result {
        case .failure(let e): throw e
        case .success(let stop):
            if stop == .shutdown { throw MachineError.guestFailure("guest triple-faulted (shutdown)") }
            if !quiet { machine.log.info("guest stopped: \(stop)") }
        }
    }
}
