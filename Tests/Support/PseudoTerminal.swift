import Foundation

/// A pseudo-terminal pair: the test holds the master side (the keyboard and screen of a terminal
/// emulator) and gives the slave side to swhv as its terminal, as a person's terminal would.
public final class PseudoTerminal {
    public let master: Int32
    /// Kept open by the test too, so the terminal outlives swhv and its settings can be read after.
    public let slave: Int32
    public let slavePath: String

    public init() throws {
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard master >= 0 else { throw TestSetupError("cannot open /dev/ptmx: \(String(cString: strerror(errno)))") }
        // TIOCSPTLCK and TIOCGPTN (linux/tty.h): unlock the slave and learn its number.
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard ioctl(master, 0x4004_5431, &unlock) == 0, ioctl(master, 0x8004_5430, &number) == 0 else {
            close(master)
            throw TestSetupError("cannot unlock the pseudo-terminal: \(String(cString: strerror(errno)))")
        }
        slavePath = "/dev/pts/\(number)"
        slave = open(slavePath, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard slave >= 0 else {
            close(master)
            throw TestSetupError("cannot open \(slavePath): \(String(cString: strerror(errno)))")
        }
    }

    deinit {
        close(slave)
        close(master)
    }

    /// The terminal's settings as swhv sees them (the slave side's termios).
    public var attributes: TerminalAttributes {
        var t = termios()
        _ = tcgetattr(slave, &t)
        return TerminalAttributes(t)
    }

    /// Types bytes, as a keyboard would.
    public func type(_ bytes: [UInt8]) {
        var rest = bytes[...]
        while !rest.isEmpty {
            let n = rest.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR || errno == EAGAIN { usleep(1_000); continue }; return }
            rest = rest.dropFirst(n)
        }
    }

    public func type(_ s: String) { type(Array(s.utf8)) }
}

/// `termios` field by field, comparable, with a readable difference.
public struct TerminalAttributes: Equatable, CustomStringConvertible {
    public let iflag: UInt32, oflag: UInt32, cflag: UInt32, lflag: UInt32
    public let line: UInt8
    public let cc: [UInt8]
    public let inputSpeed: UInt32, outputSpeed: UInt32

    public init(_ t: termios) {
        var t = t
        iflag = UInt32(t.c_iflag); oflag = UInt32(t.c_oflag); cflag = UInt32(t.c_cflag); lflag = UInt32(t.c_lflag)
        line = t.c_line
        cc = withUnsafeBytes(of: &t.c_cc) { Array($0) }
        inputSpeed = UInt32(cfgetispeed(&t)); outputSpeed = UInt32(cfgetospeed(&t))
    }

    /// Canonical input with echo: what a shell's terminal looks like, and what raw mode turns off.
    public var isCookedWithEcho: Bool { lflag & UInt32(ICANON) != 0 && lflag & UInt32(ECHO) != 0 }
    public var isRaw: Bool { lflag & UInt32(ICANON | ECHO | ISIG) == 0 }

    /// The fields that differ, or [] when identical.
    public func differences(from other: TerminalAttributes) -> [String] {
        func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
        var d: [String] = []
        if iflag != other.iflag { d.append("c_iflag \(hex(other.iflag)) -> \(hex(iflag))") }
        if oflag != other.oflag { d.append("c_oflag \(hex(other.oflag)) -> \(hex(oflag))") }
        if cflag != other.cflag { d.append("c_cflag \(hex(other.cflag)) -> \(hex(cflag))") }
        if lflag != other.lflag { d.append("c_lflag \(hex(other.lflag)) -> \(hex(lflag))") }
        if line != other.line { d.append("c_line \(other.line) -> \(line)") }
        for i in cc.indices where cc[i] != other.cc[i] { d.append("c_cc[\(i)] \(other.cc[i]) -> \(cc[i])") }
        if inputSpeed != other.inputSpeed { d.append("input speed \(other.inputSpeed) -> \(inputSpeed)") }
        if outputSpeed != other.outputSpeed { d.append("output speed \(other.outputSpeed) -> \(outputSpeed)") }
        return d
    }

    public var description: String {
        "iflag \(iflag) oflag \(oflag) cflag \(cflag) lflag \(lflag) cc \(cc)"
    }
}

/// `swhv` running on a pseudo-terminal (stdin, stdout and stderr), with everything the terminal
/// shows collected as it comes.
public final class TerminalSession: @unchecked Sendable {
    public let terminal: PseudoTerminal
    public let process = Process()
    private let screen = LockedData()
    private let stopReading = LockedFlag()
    private var reader: Thread?
    private var readerDone = DispatchSemaphore(value: 0)

    /// Starts `binary` with `arguments` in `directory` (default: the repository).
    public init(binary: String, arguments: [String], directory: String = Repository.root.path,
                terminal: PseudoTerminal? = nil) throws {
        self.terminal = try terminal ?? PseudoTerminal()
        let handle = FileHandle(fileDescriptor: self.terminal.slave, closeOnDealloc: false)
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardInput = handle
        process.standardOutput = handle
        process.standardError = handle
        let master = self.terminal.master, screen = self.screen, stop = self.stopReading, done = readerDone
        let t = Thread {
            var buf = [UInt8](repeating: 0, count: 65536)
            while !stop.isSet {
                var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 20) > 0 else { continue }
                let n = buf.withUnsafeMutableBytes { read(master, $0.baseAddress, $0.count) }
                if n > 0 { screen.append(Data(buf[0..<n])) } else if n < 0 && errno != EINTR && errno != EAGAIN { break }
            }
            done.signal()
        }
        reader = t
        t.start()
        try process.run()
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() }
        stopReading.set()
        if reader != nil { readerDone.wait() }
    }

    /// Everything the terminal received so far (raw bytes as text, `\r` included).
    public var text: String { screen.text }
    /// The last screenful, with control characters escaped (an escape sequence in a failure
    /// message would redraw the reader's terminal).
    public var tail: String {
        let t = String(text.suffix(1500)).unicodeScalars.map { c -> String in
            c == "\n" ? "\n" : (c.value < 0x20 || c.value == 0x7F ? "\\x" + String(c.value, radix: 16) : String(c))
        }.joined()
        return "terminal tail:\n" + t
    }

    /// The screen without carriage returns: the guest's terminal sends CR LF, and the host
    /// terminal's output processing (kept on, as QEMU does, so host messages start at column 0)
    /// turns its LF into another CR LF.
    public var lines: String { text.replacingOccurrences(of: "\r", with: "") }

    /// How often `needle` appears in `lines`.
    public func count(_ needle: String) -> Int { lines.components(separatedBy: needle).count - 1 }

    /// Waits until `lines` contains `needle`.
    public func waitFor(_ needle: String, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lines.contains(needle) { return true }
            if !process.isRunning { usleep(100_000); return lines.contains(needle) }
            usleep(20_000)
        }
        return false
    }

    public func type(_ s: String) { terminal.type(s) }
    public func type(_ bytes: [UInt8]) { terminal.type(bytes) }

    public struct Exit: Equatable, CustomStringConvertible {
        public let status: Int32
        public let signalled: Bool
        public static func exited(_ s: Int32) -> Exit { Exit(status: s, signalled: false) }
        public static func killed(by s: Int32) -> Exit { Exit(status: s, signalled: true) }
        public var description: String { signalled ? "killed by signal \(status)" : "exit status \(status)" }
    }

    /// How swhv ended, or nil when it had to be killed after `timeout` seconds (a hang).
    public func waitForExit(timeout: TimeInterval) -> Exit? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit(); return nil }
        usleep(100_000)   // let the reader take the last bytes
        return Exit(status: process.terminationStatus, signalled: process.terminationReason == .uncaughtSignal)
    }
}

/// A flag set on one thread and read on another.
public final class LockedFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    public init() {}
    public func set() { lock.lock(); value = true; lock.unlock() }
    public var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}
