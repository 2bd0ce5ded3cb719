import JSONCoding
#if canImport(Glibc)
import Glibc
#endif

/// The CLI's side of the API socket: one request, one response, then close.
public enum APIClient {
    public struct Response: Sendable {
        public let status: Int
        public let body: [UInt8]
        /// The parsed body, when it is JSON.
        public var json: JSONValue? { body.isEmpty ? nil : try? JSONParser.parse(body) }
        /// Firecracker's error message, or the raw body.
        public var faultMessage: String {
            json?["fault_message"]?.stringValue ?? String(decoding: body.prefix(500), as: UTF8.self)
        }
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Sends `method path` with an optional JSON body and waits up to `timeoutSeconds` for the answer.
    public static func request(socket path: String, method: String, path resource: String, body: JSONValue? = nil,
                               timeoutSeconds: Int32 = 600) throws(Failure) -> Response {
        var addr: sockaddr_un
        do { addr = try APIServer.sockaddr(for: path) } catch { throw Failure(description: error.description) }
        let fd = socket(AF_UNIX, Int32(bitPattern: SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "cannot create a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard APIServer.withSockaddr(&addr, { connect(fd, $0, $1) }) == 0 else {
            let e = errno
            let hint = e == ENOENT || e == ECONNREFUSED ? " (is a swhv running with --api-sock \(path)?)" : ""
            throw Failure(description: "cannot connect to the API socket '\(path)': \(String(cString: strerror(e)))\(hint)")
        }
        let payload = body?.bytes ?? []
        var head = "\(method) \(resource) HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\nConnection: close\r\n"
        if body != nil { head += "Content-Type: application/json\r\nContent-Length: \(payload.count)\r\n" }
        head += "\r\n"
        let out = Array(head.utf8) + payload
        var sent = 0
        var sendError: Int32?
        while sent < out.count {
            let n = out.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(truncatingIfNeeded: MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                // The server may have answered (a 503 to a second client) and closed: read that.
                sendError = errno
                break
            }
            sent += n
        }
        if let e = sendError {
            if let r = try? readResponse(fd, timeoutSeconds: 5) { return r }
            throw Failure(description: "cannot send to the API socket: \(String(cString: strerror(e)))")
        }
        return try readResponse(fd, timeoutSeconds: timeoutSeconds)
    }

    static func readResponse(_ fd: Int32, timeoutSeconds: Int32) throws(Failure) -> Response {
        var received: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16 << 10)
        let deadline = APIServer.monotonicSeconds() + UInt64(clamping: timeoutSeconds)
        while true {
            if let r = parseResponse(received) { return r }
            guard received.count < 16 << 20 else { throw Failure(description: "the API response is too large") }
            let now = APIServer.monotonicSeconds()
            guard now < deadline else { throw Failure(description: "no answer from the API socket within \(timeoutSeconds) s") }
            var p = pollfd(fd: fd, events: Int16(truncatingIfNeeded: POLLIN), revents: 0)
            let ready = poll(&p, 1, Int32(truncatingIfNeeded: min(deadline - now, 60)) * 1000)
            if ready < 0 && errno != EINTR { throw Failure(description: "poll: \(String(cString: strerror(errno)))") }
            if ready <= 0 { continue }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; throw Failure(description: "cannot read the API response: \(String(cString: strerror(errno)))") }
            if n == 0 {
                if let r = parseResponse(received, atEOF: true) { return r }
                throw Failure(description: "the API socket closed without a complete response")
            }
            received += buf[0..<n]
        }
    }

    /// A complete response in `bytes` (interim 1xx responses skipped), or nil if more is needed.
    public static func parseResponse(_ bytes: [UInt8], atEOF: Bool = false) -> Response? {
        var start = 0
        while true {
            guard let end = find([13, 10, 13, 10], in: bytes, from: start) else { return nil }
            let head = String(decoding: bytes[start..<end], as: UTF8.self)
            let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
            let status = lines.first.flatMap { l -> Int? in
                let parts = l.split(separator: " ")
                return parts.count >= 2 ? Int(parts[1]) : nil
            } ?? 0
            if status >= 100 && status < 200 { start = end + 4; continue }
            var length: Int?
            for l in lines.dropFirst() {
                let kv = l.split(separator: ":", maxSplits: 1)
                if kv.count == 2, kv[0].lowercased() == "content-length" {
                    length = Int(kv[1].trimmingSpaces)
                }
            }
            let bodyStart = end + 4
            if status == 204 || status == 304 { return Response(status: status, body: []) }
            if let length {
                guard bytes.count - bodyStart >= length else { return nil }
                return Response(status: status, body: Array(bytes[bodyStart..<bodyStart + length]))
            }
            return atEOF ? Response(status: status, body: Array(bytes[bodyStart...])) : nil
        }
    }

    static func find(_ needle: [UInt8], in hay: [UInt8], from: Int) -> Int? {
        guard hay.count >= needle.count else { return nil }
        var i = from
        while i + needle.count <= hay.count {
            if hay[i..<i + needle.count].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

extension Substring {
    var trimmingSpaces: String {
        var s = self[...]
        while s.first == " " || s.first == "\t" { s = s.dropFirst() }
        while s.last == " " || s.last == "\t" { s = s.dropLast() }
        return String(s)
    }
}
