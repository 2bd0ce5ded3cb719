#if canImport(Glibc)
import Glibc
#endif

/// Why the API socket could not be set up, in one line.
public struct APISocketError: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
    static func errno(_ what: String, _ path: String, _ e: Int32 = Glibc.errno) -> APISocketError {
        APISocketError("--api-sock '\(path)': \(what): \(String(cString: strerror(e)))")
    }
}

/// The API socket: HTTP/1.1 on a Unix stream socket (file mode 0600: only the user who started
/// swhv can drive the VM), served by one thread of its own. One client at a time: a second
/// connection gets a 503 with a JSON message and is closed, so two controllers never interleave
/// pause/snapshot/resume. A client that stalls mid-request for `requestTimeout` seconds, or
/// stays idle for `idleTimeout`, is disconnected, so it cannot hold the socket forever.
public final class APIServer: @unchecked Sendable {
    public let path: String
    /// Seconds a client may take to finish a request it started, and may stay connected idle.
    public let requestTimeout: UInt64
    public let idleTimeout: UInt64
    private let listenFD: Int32
    private let wakeRead: Int32
    private let wakeWrite: Int32
    private let router: APIRouter
    private var thread = pthread_t()
    private var started = false
    /// Runs first on the server thread (to install its seccomp filter there, say).
    private let onThreadStart: (@Sendable () -> Void)?

    /// Creates, binds and listens on `path` now (so errors reach the user before the guest runs);
    /// serving starts with `start()`. A stale socket at `path` (nobody listening) is replaced;
    /// a live one, or any other kind of file, is an error.
    public init(path: String, router: APIRouter, requestTimeout: UInt64 = 10, idleTimeout: UInt64 = 300,
                onThreadStart: (@Sendable () -> Void)? = nil) throws(APISocketError) {
        self.path = path
        self.requestTimeout = requestTimeout
        self.idleTimeout = idleTimeout
        self.router = router
        self.onThreadStart = onThreadStart
        listenFD = try APIServer.listen(path: path)
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else {
            let e = errno
            close(listenFD)
            unlink(path)
            throw .errno("cannot create a pipe", path, e)
        }
        (wakeRead, wakeWrite) = (fds[0], fds[1])
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    }

    deinit {
        close(listenFD); close(wakeRead); close(wakeWrite)
    }

    static func sockaddr(for path: String) throws(APISocketError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw APISocketError("--api-sock '\(path)': a socket path must be 1 to \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        return addr
    }

    static func withSockaddr<T>(_ addr: inout sockaddr_un, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { body($0, socklen_t(truncatingIfNeeded: MemoryLayout<sockaddr_un>.size)) }
        }
    }

    static func listen(path: String) throws(APISocketError) -> Int32 {
        var addr = try sockaddr(for: path)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFSOCK else {
                throw APISocketError("--api-sock '\(path)' exists and is not a socket (remove it or pick another path)")
            }
            // A socket file: in use if someone answers, stale (a swhv that was killed) otherwise.
            let probe = socket(AF_UNIX, Int32(bitPattern: SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
            let connected = withSockaddr(&addr) { connect(probe, $0, $1) } == 0
            let e = errno
            close(probe)
            if connected { throw APISocketError("--api-sock '\(path)' is in use by another process") }
            guard e == ECONNREFUSED else { throw .errno("cannot check the existing socket", path, e) }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(bitPattern: SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .errno("cannot create a socket", path) }
        // The socket file is created 0600 from the start: no window where others could connect.
        let old = umask(0o177)
        let bound = withSockaddr(&addr) { bind(fd, $0, $1) }
        let e = errno
        umask(old)
        guard bound == 0 else { close(fd); throw .errno("cannot bind", path, e) }
        chmod(path, 0o600)
        guard Glibc.listen(fd, 4) == 0 else {
            let e = errno
            close(fd); unlink(path)
            throw .errno("cannot listen", path, e)
        }
        return fd
    }

    public func start() {
        guard !started else { return }
        started = true
        let context = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { ctx in
            let server = Unmanaged<APIServer>.fromOpaque(ctx!).takeRetainedValue()
            server.onThreadStart?()
            server.serve()
            return nil
        }, context)
    }

    /// Stops serving, removes the socket file and waits for the server thread. Call once, from
    /// another thread than the server's.
    public func stop() {
        guard started else { unlink(path); return }
        var b: UInt8 = 1
        _ = write(wakeWrite, &b, 1)
        pthread_join(thread, nil)
        started = false
    }

    static func monotonicSeconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(clamping: ts.tv_sec)
    }

    /// One connection: its parser and timestamps.
    struct Client {
        let fd: Int32
        var parser = HTTPRequestParser()
        var lastActivity = APIServer.monotonicSeconds()
        var continueSent = false
    }

    private func serve() {
        var client: Client?
        defer {
            if let c = client { close(c.fd) }
            // The server thread removes the socket file: the vCPU thread's filter forbids unlink.
            unlink(path)
        }
        while true {
            var fds = [pollfd(fd: listenFD, events: Int16(truncatingIfNeeded: POLLIN), revents: 0),
                       pollfd(fd: wakeRead, events: Int16(truncatingIfNeeded: POLLIN), revents: 0)]
            if let c = client { fds.append(pollfd(fd: c.fd, events: Int16(truncatingIfNeeded: POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(truncatingIfNeeded: fds.count), 1000)
            if n < 0 && errno != EINTR { return }
            if fds[1].revents != 0 { return }
            // The current client first: one that just hung up frees the slot for a newcomer.
            if var c = client, fds.count > 2, fds[2].revents != 0 {
                if receive(&c) { client = c } else { close(c.fd); client = nil }
            }
            if fds[0].revents & Int16(truncatingIfNeeded: POLLIN) != 0 {
                let fd = accept(listenFD, nil, nil)
                if fd >= 0 {
                    _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                    // A stalled reader must not block the server: sends give up after 5 s.
                    var tv = timeval(tv_sec: 5, tv_usec: 0)
                    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(truncatingIfNeeded: MemoryLayout<timeval>.size))
                    if client == nil {
                        client = Client(fd: fd)
                    } else {
                        var r = APIRouter.fault(APIFault("another API client is connected; swhv serves one at a time", status: 503))
                        r.close = true
                        send(r, to: fd)
                        close(fd)
                    }
                }
            }
            guard let c = client else { continue }
            if fds.count <= 2 || fds[2].revents == 0 {
                let idle = APIServer.monotonicSeconds() - c.lastActivity
                if c.parser.isMidRequest && idle >= requestTimeout {
                    send(APIRouter.response(for: HTTPError(408, "request not completed within \(requestTimeout) s")), to: c.fd)
                    close(c.fd); client = nil; continue
                }
                if idle >= idleTimeout { close(c.fd); client = nil; continue }
            }
        }
    }

    /// Reads what the client sent and answers every complete request. False: close the connection.
    private func receive(_ c: inout Client) -> Bool {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { read(c.fd, $0.baseAddress, $0.count) }
        if n < 0 { return errno == EINTR || errno == EAGAIN }
        if n == 0 { return false }
        c.lastActivity = APIServer.monotonicSeconds()
        c.parser.feed(buf[0..<n])
        while let result = c.parser.next() {
            switch result {
            case .failure(let e):
                send(APIRouter.response(for: e), to: c.fd)
                return false
            case .success(let request):
                c.continueSent = false
                var response = router.handle(request)
                if !request.keepAlive { response.close = true }
                guard send(response, to: c.fd), !response.close else { return false }
            }
        }
        if c.parser.awaitsContinue && !c.continueSent {
            c.continueSent = true
            _ = writeAll(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8), to: c.fd)
        }
        return true
    }

    @discardableResult
    private func send(_ r: HTTPResponse, to fd: Int32) -> Bool { writeAll(r.serialized(), to: fd) }

    private func writeAll(_ bytes: [UInt8], to fd: Int32) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, $0.count - done, Int32(truncatingIfNeeded: MSG_NOSIGNAL)) }
            if n < 0 { if errno == EINTR { continue }; return false }
            done += n
        }
        return true
    }
}
