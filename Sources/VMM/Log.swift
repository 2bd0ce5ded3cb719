import Glibc

/// Minimal leveled logging to stderr. swhv's stdout belongs to the guest console.
public struct Log: Sendable {
    public enum Level: Int, Sendable { case debug = 0, info, error }
    public let level: Level
    public init(level: Level) { self.level = level }

    public func debug(_ message: @autoclosure () -> String) { emit(.debug, message) }
    public func info(_ message: @autoclosure () -> String) { emit(.info, message) }
    public func error(_ message: @autoclosure () -> String) { emit(.error, message) }

    private func emit(_ l: Level, _ message: () -> String) {
        guard l.rawValue >= level.rawValue else { return }
        // \r first: the terminal may be in raw mode.
        let line = "\rswhv: " + message() + "\n"
        _ = line.withCString { Glibc.write(STDERR_FILENO, $0, strlen($0)) }
    }
}
