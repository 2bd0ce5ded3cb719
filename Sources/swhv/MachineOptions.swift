import Glibc
import VMM
import X86Interpreter

/// swhv's version, printed by `swhv --version`.
let swhvVersion = "0.1.0"

/// The options `boot` and `run-image` share, validated in one place: guest RAM, the CPU backend
/// and the disks. Each problem is one `MachineError` line.
enum MachineOptions {
    static func config(memory: String, accel: String, translate: String = "on", disks: [String]) throws(MachineError) -> MachineConfig {
        var config = MachineConfig()
        guard let size = MemorySize.parse(memory) else {
            throw .invalidArgument("--memory '\(memory)' is not a size (try 512M or 1G)")
        }
        guard size > 0 else { throw .invalidArgument("--memory must be larger than 0") }
        config.memorySize = size
        guard let a = Accelerator(rawValue: accel) else {
            throw .invalidArgument("--accel '\(accel)' is not one of auto, kvm, interp, hybrid")
        }
        config.accelerator = a
        config.translation = try translation(translate)
        for d in disks { config.disks.append(try DiskConfig.parse(d)) }
        try HostFile.checkDisks(config.disks.map(\.path))
        return config
    }

    /// `--translate on|off` (boot, run-image and restore).
    static func translation(_ text: String) throws(MachineError) -> TranslationPolicy {
        switch text {
        case "on": return TranslationPolicy.default   // SWHV_TRANSLATE may tune it for experiments
        case "off": return .off
        default: throw .invalidArgument("--translate '\(text)' is not one of on, off")
        }
    }

    /// README's first command names files that scripts/fetch-guest makes: when one of them is
    /// missing, the one line says so.
    static func withFetchHint<T>(_ body: () throws(MachineError) -> T) throws(MachineError) -> T {
        do {
            return try body()
        } catch .file(let role, let path, let problem) where path.contains("fixtures/") && !fileExists(path) {
            throw .file(role: role, path: path, problem: problem + " (run scripts/fetch-guest first: it fetches the Debian guest into fixtures/)")
        }
    }

    private static func fileExists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    /// Console output the reader never got (stdout closed, more than 1 MiB behind, or still
    /// buffered at exit) is counted; at exit the count is reported, so a truncated log is known to
    /// be truncated.
    static func reportDropped(_ console: HostConsoleOutput, log: Log, always: Bool = false) {
        console.abandonPending()
        let lost = console.bytesDropped
        guard lost > 0 else { return }
        let line = "\(lost) bytes of guest console output were dropped (stdout's reader went away or fell too far behind)"
        if always { log.error(line) } else { log.info(line) }
    }
}
