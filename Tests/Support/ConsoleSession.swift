import Foundation

/// A running `swhv` whose console is a pair of pipes: output accumulates as it comes, commands are
/// typed into the guest's serial port. Used by every test that boots Linux without a terminal.
public final class ConsoleSession: @unchecked Sendable {
    public let process = Process()
    private let input = Pipe(), output = Pipe(), errors = Pipe()
    private let lock = NSLock()
    private var buffer = Data()
    private var errorBuffer = Data()
    private var killNeedle: String?
    private var sequence = 0
    public private(set) var killed = false

    /// `environment`: variables added to this process's environment for swhv.
    public init(binary: String, arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        output.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self, !d.isEmpty else { return }
            self.lock.lock(); defer { self.lock.unlock() }
            self.buffer.append(d)
            // SIGKILL from the output handler the moment a string appears, with no polling delay.
            if let n = self.killNeedle, String(decoding: self.buffer, as: UTF8.self).contains(n) {
                kill(self.process.processIdentifier, SIGKILL)
                self.killNeedle = nil
                self.killed = true
            }
        }
        errors.fileHandleForReading.readabilityHandler = { [weak self] h in
            let d = h.availableData
            guard let self, !d.isEmpty else { return }
            self.lock.lock(); self.errorBuffer.append(d); self.lock.unlock()
        }
        try process.run()
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    /// The console so far, without the `\r` the guest's terminal adds.
    public var text: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: buffer, as: UTF8.self).replacingOccurrences(of: "\r", with: "")
    }
    public var stderr: String { lock.lock(); defer { lock.unlock() }; return String(decoding: errorBuffer, as: UTF8.self) }
    /// For failure messages.
    public var tail: String { "console tail:\n\(text.suffix(1500))\nstderr: \(stderr)" }

    public func send(_ s: String) { try? input.fileHandleForWriting.write(contentsOf: Data(s.utf8)) }
    public func closeInput() { try? input.fileHandleForWriting.close() }

    /// Waits until `match` finds something in the output; nil on timeout or exit.
    public func waitFor<T>(timeout: TimeInterval, _ match: (String) -> T?) -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let m = match(text) { return m }
            if !process.isRunning { return match(text) }
            usleep(20_000)
        }
        return nil
    }

    public func waitFor(_ needle: String, timeout: TimeInterval) -> Bool {
        waitFor(timeout: timeout) { $0.contains(needle) ? true : nil } ?? false
    }

    /// Boots to the shell: the initramfs marker, then a command the shell must answer. Input
    /// typed during boot is held by swhv until the guest's serial driver is ready (RTS), so one
    /// command suffices.
    public func waitForShell(timeout: TimeInterval = 600) -> Bool {
        guard waitFor("SWHV-USERSPACE-UP", timeout: timeout) else { return false }
        return run("echo ready", timeout: 120) == "ready"
    }

    /// Runs `command` in the guest shell; returns its output (stdout and stderr, trimmed), or nil
    /// on timeout. The delimiters are computed by the shell (`$((...))`), so the terminal's echo of
    /// the typed line never matches them.
    public func run(_ command: String, timeout: TimeInterval = 120) -> String? {
        runWithStatus(command, timeout: timeout)?.output
    }

    public func runWithStatus(_ command: String, timeout: TimeInterval = 120) -> (output: String, status: Int)? {
        sequence += 1
        let n = sequence
        send("o=$( { \(command) ; } 2>&1 ); s=$?; echo \"<@\(n)@$((40+2))@$o@$s@$((6*7))@\(n)@>\"\n")
        let open = "<@\(n)@42@", close = "@42@\(n)@>"
        return waitFor(timeout: timeout) { text -> (String, Int)? in
            guard let a = text.range(of: open), let b = text.range(of: close, range: a.upperBound..<text.endIndex)
            else { return nil }
            let body = text[a.upperBound..<b.lowerBound]
            guard let at = body.lastIndex(of: "@"), let status = Int(body[body.index(after: at)...]) else { return nil }
            return (body[..<at].trimmingCharacters(in: .whitespacesAndNewlines), status)
        }
    }

    /// SIGKILLs swhv as soon as the console shows `needle`.
    public func killWhenOutputContains(_ needle: String) {
        lock.lock(); killNeedle = needle; lock.unlock()
    }

    /// The exit status, or nil when swhv had to be killed after `timeout` (a hang).
    public func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit(); return nil }
        return process.terminationStatus
    }

    /// `reboot -f` in the guest; swhv's exit status (nil: it did not exit).
    public func reboot(timeout: TimeInterval = 120) -> Int32? {
        send("reboot -f\n")
        return waitForExit(timeout: timeout)
    }
}
