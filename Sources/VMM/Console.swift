import CPUBackend
import Devices
import Glibc
import Synchronization

/// Puts the host terminal in raw mode while the guest owns it and restores it on every exit path:
/// normal return (deinit), `exit()` (atexit), fatal signals (handler) and the stop signals
/// (`StopSignals`, which end the run normally first).
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
        raw.c_oflag |= tcflag_t(truncatingIfNeeded: OPOST | ONLCR)
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

/// Process-global state, because signal handlers and atexit hooks cannot capture context: the
/// terminal settings to restore live here while raw mode is active.
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
            // SIGTERM, SIGHUP and SIGINT stop the VM cleanly instead (`StopSignals`).
            for sig in [SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE] {
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

/// SIGTERM, SIGHUP and SIGINT stop the VM as `Ctrl-A x` does, so swhv restores the terminal,
/// flushes the console and then dies of the signal (the parent sees which). With the terminal raw,
/// Ctrl-C is a byte for the guest; these come from `kill`, a closing terminal, or Ctrl-C when
/// stdin is not the terminal.
///
/// The handler only writes the signal number to a pipe (async-signal-safe, and allowed by the
/// seccomp filter); a thread reads it and asks the vCPU to stop.
public final class StopSignals: @unchecked Sendable {
    public static let handled: [Int32] = [SIGTERM, SIGHUP, SIGINT]
    private let control: VMControl
    private let received = Atomic<Int32>(0)

    /// Installs the handlers; nil if no pipe could be made (the signals then keep their default).
    public init?(control: VMControl) {
        self.control = control
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        StopSignalPipe.writeFD = fds[1]
        let readFD = fds[0]
        for sig in StopSignals.handled {
            var sa = sigaction()
            sa.__sigaction_handler.sa_handler = { sig in
                var b = UInt8(truncatingIfNeeded: sig)
                _ = Glibc.write(StopSignalPipe.writeFD, &b, 1)
            }
            sigemptyset(&sa.sa_mask)
            sa.sa_flags = Int32(SA_RESTART)
            sigaction(sig, &sa, nil)
        }
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(truncatingIfNeeded: PTHREAD_CREATE_DETACHED))
        StopSignalPipe.readFD = readFD
        pthread_create(&thread, &attr, { ctx in
            let me = Unmanaged<StopSignals>.fromOpaque(ctx!).takeRetainedValue()
            var b: UInt8 = 0
            while true {
                let n = Glibc.read(StopSignalPipe.readFD, &b, 1)
                if n < 0 && errno == EINTR { continue }
                guard n == 1 else { return nil }
                _ = me.received.compareExchange(expected: 0, desired: Int32(b), ordering: .sequentiallyConsistent)
                me.control.requestStop(.hostRequest)
            }
        }, context)
        pthread_attr_destroy(&attr)
    }

    /// The first stop signal that arrived, if any.
    public var signal: Int32? {
        let s = received.load(ordering: .sequentiallyConsistent)
        return s == 0 ? nil : s
    }

    /// Ends the process by `sig` with its default action, after swhv has cleaned up.
    public static func die(of sig: Int32) -> Never {
        Glibc.signal(sig, SIG_DFL)
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, sig)
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
        raise(sig)
        Glibc.exit(128 + sig)   // not reached: the default action of these signals is to terminate
    }

    public static func name(_ sig: Int32) -> String {
        switch sig {
        case SIGTERM: "SIGTERM"
        case SIGHUP: "SIGHUP"
        case SIGINT: "SIGINT"
        default: "signal \(sig)"
        }
    }
}

/// The pipe between the stop-signal handler and its thread (a handler cannot capture context).
enum StopSignalPipe {
    nonisolated(unsafe) static var writeFD: Int32 = -1
    nonisolated(unsafe) static var readFD: Int32 = -1
}

/// File descriptors 0, 1 and 2 that are closed when swhv starts are opened on /dev/null, before
/// anything else: otherwise the next file swhv opens (the kernel, a disk image) would take their
/// number, and the console would read the disk as keyboard input or print into the image.
public func openMissingStandardDescriptors() {
    for fd in [STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO] where fcntl(fd, F_GETFD) == -1 && errno == EBADF {
        let n = open("/dev/null", O_RDWR)
        if n >= 0 && n != fd { dup2(n, fd); close(n) }
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
    private let fd: Int32
    private var thread = pthread_t()

    init(control: VMControl, fd: Int32 = STDIN_FILENO, handleEscape: Bool, backlog: @escaping @Sendable () -> Int = { 0 },
         deliver: @escaping @Sendable ([UInt8]) -> Void) {
        self.control = control
        self.fd = fd
        self.deliver = deliver
        self.handleEscape = handleEscape
        self.backlog = backlog
    }

    func start() {
        let context = Unmanaged.passRetained(self).toOpaque()
        var attr = pthread_attr_t()
        pthread_attr_init(&attr)
        pthread_attr_setdetachstate(&attr, Int32(truncatingIfNeeded: PTHREAD_CREATE_DETACHED))
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
            // Backpressure: read no more than the guest has room for, so nothing sent is ever
            // dropped (reading a full buffer whenever below the bound used to overshoot it).
            let room = Machine.maxPendingInput - backlog()
            if room <= 0 { usleep(2_000); continue }
            let n = buf.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, min($0.count, room)) }
            if n < 0 { if errno == EINTR { continue }; return }   // EIO (terminal hung up), EBADF
            if n == 0 { return }  // EOF (a pipe's writer is done, /dev/null): the guest keeps running without input.
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

    /// At exit, after `flush`: counts what the reader never took as dropped and forgets it, so the
    /// count reported is final (nothing is written after it).
    public func abandonPending() {
        bytesDropped += UInt64(bufferedCount)
        pending.removeAll()
        pendingStart = 0
    }

    /// At exit: gives a slow reader up to `milliseconds` to take what is buffered.
    public func flush(blockingFor milliseconds: Int) {
        var waited = 0
        while bufferedCount > 0 {
            drain()
            guard bufferedCount > 0, waited < milliseconds else { break }
            var p = pollfd(fd: fd, events: Int16(truncatingIfNeeded: POLLOUT), revents: 0)
            _ = poll(&p, 1, 10)
            waited += 10
        }
    }
}
