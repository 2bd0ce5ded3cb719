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
                sa.sa_flags = Int32(truncatingIfNeeded: SA_RESETHAND)   // 0x80000000: does not fit Int32 as a value
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
    private let backlog: @Sendable () -> Int
    private var thread = pthread_t()

    init(control: VMControl, handleEscape: Bool, backlog: @escaping @Sendable () -> Int = { 0 },
         deliver: @escaping @Sendable ([UInt8]) -> Void) {
        self.control = control
        self.deliver = deliver
        self.handleEscape = handleEscape
        self.backlog = backlog
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
            // Backpressure: read no more while the guest has not taken what it was sent.
            if backlog() >= Machine.maxPendingInput { usleep(2_000); continue }
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

/// Console output to a host file descriptor. Never blocks the vCPU: pipes, FIFOs, sockets and
/// terminals are written through a private non-blocking descriptor; what the reader cannot take yet
/// waits in a bounded buffer (`bufferCapacity`), and only when that is full, or the reader has gone
/// (EPIPE), are bytes dropped and counted. A guest printing into a pipe nobody reads keeps running.
public final class HostConsoleOutput: SerialOutput {
    /// Bytes held for a slow reader (a burst of kernel messages on a slow terminal fits).
    public static let bufferCapacity = 1 << 20
    private let fd: Int32
    private let ownsFD: Bool
    private var pending: [UInt8] = []
    private var pendingStart = 0
    public private(set) var bytesWritten: UInt64 = 0
    public private(set) var bytesDropped: UInt64 = 0
    /// Called once, with the first byte the guest prints (for the boot timer).
    public var onFirstByte: (() -> Void)?

    public init(fd: Int32 = STDOUT_FILENO) {
        // A reader that goes away must not kill swhv (and its guest) with SIGPIPE: writes fail with EPIPE.
        signal(SIGPIPE, SIG_IGN)
        var st = stat()
        let type = fstat(fd, &st) == 0 ? st.st_mode & S_IFMT : 0
        // O_NONBLOCK on the inherited descriptor would also change it for the shell that shares it;
        // a fresh open of the same pipe or terminal gets a description of its own.
        if type == S_IFIFO || type == S_IFCHR || type == S_IFSOCK {
            let own = open("/proc/self/fd/\(fd)", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            if own >= 0 {
                (self.fd, ownsFD) = (own, true)
                return
            }
        }
        (self.fd, ownsFD) = (fd, false)
    }

    deinit {
        flush(blockingFor: 100)
        if ownsFD { close(fd) }
    }

    /// Bytes waiting for the reader.
    public var bufferedCount: Int { pending.count - pendingStart }

    public func write(_ byte: UInt8) {
        if let f = onFirstByte { onFirstByte = nil; f() }
        if bufferedCount > 0 {
            drain()
        }
        if bufferedCount == 0 {
            var b = byte
            while true {
                let n = Glibc.write(fd, &b, 1)
                if n == 1 { bytesWritten += 1; return }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { break }
                bytesDropped += 1   // EPIPE, EBADF, EIO: the reader is gone for good
                return
            }
        }
        guard bufferedCount < HostConsoleOutput.bufferCapacity else { bytesDropped += 1; return }
        if pendingStart > 0 && pendingStart >= pending.count / 2 {
            pending.removeFirst(pendingStart)
            pendingStart = 0
        }
        pending.append(byte)
    }

    /// Writes as much of the buffer as the reader takes now.
    private func drain() {
        while pendingStart < pending.count {
            let n = pending.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + pendingStart, $0.count - pendingStart) }
            if n > 0 { pendingStart += n; bytesWritten += UInt64(n); continue }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return }
            bytesDropped += UInt64(pending.count - pendingStart)   // the reader is gone
            pendingStart = pending.count
        }
        pending.removeAll(keepingCapacity: pending.count <= 4096)
        pendingStart = 0
    }

    /// At exit: gives a slow reader up to `milliseconds` to take what is buffered.
    public func flush(blockingFor milliseconds: Int) {
        var waited = 0
        while bufferedCount > 0 {
            drain()
            guard bufferedCount > 0, waited < milliseconds else { break }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, 10)
            waited += 10
        }
    }
}
