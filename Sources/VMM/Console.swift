import CPUBackend
import Devices
import Glibc

/// Puts the host terminal in raw mode while the guest owns it and restores it on every exit path:
/// normal return (deinit), `exit()` (atexit) and fatal signals (handler).
public final class TerminalRawMode {
    private let fd: Int32
    private var saved = termios()
    private var active = false

    public init?(fd: Int32 = STDIN_FILENO) {
        guard isatty(fd) == 1 else { return nil }
        self.fd = fd
        guard tcgetattr(fd, &saved) == 0 else { return nil }
        var raw = saved
        cfmakeraw(&raw)
        // Keep output post-processing so host-side messages still start at column 0.
        raw.c_oflag |= tcflag_t(OPOST | ONLCR)
        guard tcsetattr(fd, TCSANOW, &raw) == 0 else { return nil }
        active = true
        TerminalRestore.arm(fd: fd, saved: saved)
    }

    public func restore() {
        guard active else { return }
        active = false
        tcsetattr(fd, TCSANOW, &saved)
        TerminalRestore.disarm()
    }

    deinit { restore() }
}

/// The one piece of process-global state in swhv: signal handlers and atexit hooks cannot capture
/// context, so the terminal settings to restore live here while raw mode is active.
enum TerminalRestore {
    nonisolated(unsafe) static var fd: Int32 = -1
    nonisolated(unsafe) static var saved = termios()
    nonisolated(unsafe) static var hooksInstalled = false

    static func arm(fd: Int32, saved: termios) {
        self.saved = saved
        self.fd = fd
        if !hooksInstalled {
            hooksInstalled = true
            atexit { TerminalRestore.restoreNow() }
            for sig in [SIGTERM, SIGHUP, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE] {
                var sa = sigaction()
                sa.__sigaction_handler.sa_handler = { sig in
                    TerminalRestore.restoreNow()
                    signal(sig, SIG_DFL)
                    raise(sig)
                }
                sigemptyset(&sa.sa_mask)
                sa.sa_flags = Int32(SA_RESETHAND)
                sigaction(sig, &sa, nil)
            }
        }
    }

    static func disarm() { fd = -1 }

    static func restoreNow() {
        if fd >= 0 { tcsetattr(fd, TCSANOW, &saved); fd = -1 }
    }
}

/// Recognises the console escape (Ctrl-A x quits, Ctrl-A Ctrl-A sends a literal Ctrl-A), as QEMU.
public struct EscapeParser {
    public enum Action: Equatable { case forward([UInt8]), quit }
    public static let escapeByte: UInt8 = 0x01
    private var pendingEscape = false

    public init() {}

    /// Feeds host input; returns the bytes for the guest and whether the user asked to quit.
    public mutating func feed(_ input: [UInt8]) -> (forward: [UInt8], quit: Bool) {
        var out: [UInt8] = []
        out.reserveCapacity(input.count)
        for b in input {
            if pendingEscape {
                pendingEscape = false
                switch b {
                case UInt8(ascii: "x"), UInt8(ascii: "X"): return (out, true)
                case EscapeParser.escapeByte: out.append(b)
                default: out.append(EscapeParser.escapeByte); out.append(b)
                }
            } else if b == EscapeParser.escapeByte {
                pendingEscape = true
            } else {
                out.append(b)
            }
        }
        return (out, false)
    }
}

/// Reads host stdin on its own thread and posts the bytes to the vCPU thread. Devices never see
/// this thread: input reaches the UART through `VMControl.post`.
final class StdinPump: @unchecked Sendable {
    private let control: VMControl
    private let deliver: @Sendable ([UInt8]) -> Void
    private let handleEscape: Bool
    private var thread = pthread_t()

    init(control: VMControl, handleEscape: Bool, deliver: @escaping @Sendable ([UInt8]) -> Void) {
        self.control = control
        self.deliver = deliver
        self.handleEscape = handleEscape
    }

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
        pthread_create(&thread, &attr, { ctx in
            let pump = Unmanaged<StdinPump>.fromOpaque(ctx!).takeRetainedValue()
            pump.loop()
            return nil
        }, context)
        pthread_attr_destroy(&attr)
    }

    private func loop() {
        var parser = EscapeParser()
        var buf = [UInt8](repeating: 0, count: 4096)
        while control.stopRequest == nil {
            let n = buf.withUnsafeMutableBytes { Glibc.read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return }
            if n == 0 { return }  // EOF: the guest keeps running without input.
            var bytes = Array(buf[0..<n])
            if handleEscape {
                let r = parser.feed(bytes)
                bytes = r.forward
                if !bytes.isEmpty { deliver(bytes) }
                if r.quit { control.requestStop(.hostRequest); return }
            } else {
                deliver(bytes)
            }
        }
    }
}

/// Console output to a host file descriptor. Never blocks the vCPU for long: on a full pipe or a
/// closed stdout, bytes are dropped (and counted) rather than wedging the guest.
public final class HostConsoleOutput: SerialOutput {
    private let fd: Int32
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var bytesDropped: UInt64 = 0
    /// Called once, with the first byte the guest prints (for the boot timer).
    public var onFirstByte: (() -> Void)?

    public init(fd: Int32 = STDOUT_FILENO) { self.fd = fd }

    public func write(_ byte: UInt8) {
        if let f = onFirstByte { onFirstByte = nil; f() }
        var b = byte
        while true {
            let n = Glibc.write(fd, &b, 1)
            if n == 1 { bytesWritten += 1; return }
            if n < 0 && errno == EINTR { continue }
            bytesDropped += 1
            return
        }
    }
}
