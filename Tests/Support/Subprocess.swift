import Foundation

/// Runs a host program to its end under a watchdog, with its output drained while it runs (a
/// chatty child never blocks on a full pipe). The one process runner of the test targets.
public enum Subprocess {
    public enum Input {
        case null
        case bytes(Data)
    }

    public struct Outcome: Sendable {
        /// Exit status, or the signal number when `signalled`.
        public let status: Int32
        public let signalled: Bool
        /// The watchdog killed it (SIGKILL): a hang.
        public let timedOut: Bool
        public let stdoutData: Data
        public let stderrData: Data
        public var stdout: String { String(decoding: stdoutData, as: UTF8.self) }
        public var stderr: String { String(decoding: stderrData, as: UTF8.self) }
        /// stderr split into lines, without the `\r` swhv puts first (the terminal may be raw).
        public var stderrLines: [String] {
            stderr.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).map(String.init)
        }
    }

    /// Runs `executable` with `arguments`; a run longer than `timeout` seconds is killed and
    /// reported as `timedOut` (a generous hang watchdog, not a speed claim).
    /// `standardOutput` replaces the collected stdout (a pipe the test reads, or never reads).
    public static func run(_ executable: String, _ arguments: [String], input: Input = .null,
                           environment: [String: String]? = nil, standardOutput: Pipe? = nil,
                           timeout: Double = 600) throws -> Outcome {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = arguments
        if let environment { p.environment = environment }
        let out = Pipe(), err = Pipe()
        p.standardOutput = standardOutput ?? out
        p.standardError = err
        var inPipe: Pipe?
        switch input {
        case .null: p.standardInput = FileHandle.nullDevice
        case .bytes: inPipe = Pipe(); p.standardInput = inPipe
        }
        let o = LockedData(), e = LockedData()
        if standardOutput == nil { out.fileHandleForReading.readabilityHandler = { h in o.append(h.availableData) } }
        err.fileHandleForReading.readabilityHandler = { h in e.append(h.availableData) }
        try p.run()
        if case .bytes(let data) = input, let inPipe {
            // From a thread: a child that does not read must not block the watchdog.
            Thread {
                try? inPipe.fileHandleForWriting.write(contentsOf: data)
                try? inPipe.fileHandleForWriting.close()
            }.start()
        }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(5_000) }
        let timedOut = p.isRunning
        if timedOut { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        out.fileHandleForReading.readabilityHandler = nil
        err.fileHandleForReading.readabilityHandler = nil
        if standardOutput == nil { o.append(out.fileHandleForReading.readDataToEndOfFile()) }
        e.append(err.fileHandleForReading.readDataToEndOfFile())
        return Outcome(status: p.terminationStatus, signalled: p.terminationReason == .uncaughtSignal,
                       timedOut: timedOut, stdoutData: o.data, stderrData: e.data)
    }

    /// Runs a shell command line (`/bin/sh -c`).
    public static func shell(_ command: String, timeout: Double = 600) throws -> Outcome {
        try run("/bin/sh", ["-c", command], timeout: timeout)
    }
}

/// Bytes appended from a pipe's handler thread and read from the test's thread.
public final class LockedData: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = Data()
    public init() {}
    public func append(_ d: Data) { lock.lock(); buffer.append(d); lock.unlock() }
    public var data: Data { lock.lock(); defer { lock.unlock() }; return buffer }
    public var text: String { String(decoding: data, as: UTF8.self) }
}
