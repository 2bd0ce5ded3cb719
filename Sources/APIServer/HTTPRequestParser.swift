/// One HTTP/1.x request, as the API needs it.
public struct HTTPRequest: Equatable, Sendable {
    public var method: String
    /// The path of the request target, without the query.
    public var path: String
    public var query: String?
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// Header names in lower case, in order.
    public var headers: [Header]
    public var body: [UInt8]

    public struct Header: Equatable, Sendable {
        public var name: String
        public var value: String
    }

    public func header(_ name: String) -> String? { headers.first { $0.name == name }?.value }

    /// Whether the connection stays open after the response (HTTP/1.1 unless "Connection: close";
    /// HTTP/1.0 only with "Connection: keep-alive").
    public var keepAlive: Bool {
        let c = header("connection")?.lowercased()
        return minorVersion == 1 ? c != "close" : c == "keep-alive"
    }
}

/// An HTTP-level refusal: the status to answer with and a one-line reason.
public struct HTTPError: Error, Equatable, Sendable {
    public let status: Int
    public let message: String
    public init(_ status: Int, _ message: String) { self.status = status; self.message = message }
}

/// An incremental HTTP/1.1 request parser for the API socket (RFC 9112, the subset a JSON API
/// needs): origin-form targets, Content-Length bodies, pipelined requests. Strict and bounded,
/// because its input is whatever a client writes: request line and headers at most
/// `maxHeadBytes`, `maxHeaders` headers, bodies at most `maxBodyBytes`; no chunked encoding, no
/// header folding, no bare LF line ends. After an error the connection must be closed (the
/// parser does not resynchronise).
public struct HTTPRequestParser: Sendable {
    public static let maxHeadBytes = 8 << 10
    public static let maxHeaders = 64
    public static let maxBodyBytes = 64 << 10
    public static let maxTargetBytes = 2048

    private var buffer: [UInt8] = []
    /// The head of a request whose body has not fully arrived.
    private var pendingHead: HTTPRequest?
    private var pendingBodyLength = 0
    private var failed: HTTPError?

    public init() {}

    /// Bytes received but not yet part of a returned request.
    public var bufferedCount: Int { buffer.count }
    /// True while a request is partly received (for the server's idle timeout).
    public var isMidRequest: Bool { pendingHead != nil || !buffer.isEmpty }
    /// A request whose headers asked for "100 Continue" and whose body has not arrived yet.
    public var awaitsContinue: Bool {
        pendingHead?.header("expect")?.lowercased() == "100-continue" && buffer.count < pendingBodyLength
    }

    public mutating func feed(_ bytes: some Collection<UInt8>) {
        guard failed == nil else { return }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete request, nil if more input is needed, or the error that ends the connection.
    public mutating func next() -> Result<HTTPRequest, HTTPError>? {
        if let failed { return .failure(failed) }
        do throws(HTTPError) {
            if pendingHead == nil {
                guard let end = headEnd() else {
                    if buffer.count > HTTPRequestParser.maxHeadBytes {
                        throw HTTPError(431, "request line and headers exceed \(HTTPRequestParser.maxHeadBytes) bytes")
                    }
                    return nil
                }
                guard end <= HTTPRequestParser.maxHeadBytes else {
                    throw HTTPError(431, "request line and headers exceed \(HTTPRequestParser.maxHeadBytes) bytes")
                }
                let (head, bodyLength) = try parseHead(buffer[0..<end])
                buffer.removeFirst(end + 4)
                pendingHead = head
                pendingBodyLength = bodyLength
            }
            guard buffer.count >= pendingBodyLength, var request = pendingHead else { return nil }
            request.body = Array(buffer[0..<pendingBodyLength])
            buffer.removeFirst(pendingBodyLength)
            pendingHead = nil
            pendingBodyLength = 0
            return .success(request)
        } catch {
            failed = error
            buffer = []
            pendingHead = nil
            return .failure(error)
        }
    }

    /// Index of the "\r\n\r\n" that ends the head, searching no further than the limit allows.
    private func headEnd() -> Int? {
        let limit = min(buffer.count, HTTPRequestParser.maxHeadBytes + 4)
        guard limit >= 4 else { return nil }
        var i = 0
        while i + 3 < limit {
            if buffer[i] == 13 && buffer[i + 1] == 10 && buffer[i + 2] == 13 && buffer[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }

    static func isTokenByte(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            return Array("!#$%&'*+-.^_`|~".utf8).contains(c)
        }
    }

    private func parseHead(_ head: ArraySlice<UInt8>) throws(HTTPError) -> (HTTPRequest, Int) {
        var lines: [ArraySlice<UInt8>] = []
        var start = head.startIndex
        var i = head.startIndex
        while i < head.endIndex {
            if head[i] == 13 {
                guard i + 1 < head.endIndex, head[i + 1] == 10 else { throw HTTPError(400, "bare CR in request head") }
                lines.append(head[start..<i])
                i += 2
                start = i
                continue
            }
            if head[i] == 10 { throw HTTPError(400, "bare LF in request head (lines end with CRLF)") }
            if head[i] == 0 { throw HTTPError(400, "NUL byte in request head") }
            i += 1
        }
        lines.append(head[start..<head.endIndex])

        // Request line: METHOD SP target SP HTTP/1.x
        let parts = lines[0].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw HTTPError(400, "malformed request line") }
        guard !parts[0].isEmpty, parts[0].allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }) else {
            throw HTTPError(400, "malformed request method")
        }
        let method = String(decoding: parts[0], as: UTF8.self)
        let target = parts[1]
        guard target.count <= HTTPRequestParser.maxTargetBytes else {
            throw HTTPError(414, "request target exceeds \(HTTPRequestParser.maxTargetBytes) bytes")
        }
        guard target.first == UInt8(ascii: "/"), target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw HTTPError(400, "request target must be a path starting with '/'")
        }
        let minor: Int
        switch String(decoding: parts[2], as: UTF8.self) {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        default:
            if parts[2].starts(with: Array("HTTP/".utf8)) { throw HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are supported") }
            throw HTTPError(400, "malformed HTTP version")
        }
        let targetString = String(decoding: target, as: UTF8.self)
        let path: String, query: String?
        if let q = targetString.firstIndex(of: "?") {
            path = String(targetString[..<q])
            query = String(targetString[targetString.index(after: q)...])
        } else {
            (path, query) = (targetString, nil)
        }

        var headers: [HTTPRequest.Header] = []
        for line in lines.dropFirst() {
            guard headers.count < HTTPRequestParser.maxHeaders else {
                throw HTTPError(431, "more than \(HTTPRequestParser.maxHeaders) headers")
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw HTTPError(400, "malformed header line") }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(HTTPRequestParser.isTokenByte) else {
                // Also refuses obsolete line folding (a line starting with whitespace).
                throw HTTPError(400, "malformed header name")
            }
            var value = line[(colon + 1)...]
            while let f = value.first, f == 0x20 || f == 0x09 { value = value.dropFirst() }
            while let l = value.last, l == 0x20 || l == 0x09 { value = value.dropLast() }
            guard value.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw HTTPError(400, "control character in header value")
            }
            headers.append(.init(name: String(decoding: name, as: UTF8.self).lowercased(),
                                 value: String(decoding: value, as: UTF8.self)))
        }
        var request = HTTPRequest(method: method, path: path, query: query, minorVersion: minor, headers: headers, body: [])

        if request.header("transfer-encoding") != nil {
            throw HTTPError(501, "Transfer-Encoding is not supported; send Content-Length")
        }
        var length = 0
        let lengths = headers.filter { $0.name == "content-length" }.map(\.value)
        if let first = lengths.first {
            guard lengths.allSatisfy({ $0 == first }), !first.isEmpty, first.utf8.count <= 9,
                  first.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let n = Int(first) else {
                throw HTTPError(400, "invalid Content-Length")
            }
            length = n
        }
        guard length <= HTTPRequestParser.maxBodyBytes else {
            throw HTTPError(413, "request body exceeds \(HTTPRequestParser.maxBodyBytes) bytes")
        }
        if minor == 1 && request.header("host") == nil {
            // RFC 9112 requires Host on HTTP/1.1; curl always sends one. Not worth refusing a client over.
            request.headers.append(.init(name: "host", value: "localhost"))
        }
        return (request, length)
    }
}

/// A response on the API socket.
public struct HTTPResponse: Equatable, Sendable {
    public var status: Int
    public var body: [UInt8]
    public var contentType: String?
    /// Close the connection after sending (errors that leave the request stream unusable).
    public var close: Bool

    public init(status: Int, body: [UInt8] = [], contentType: String? = nil, close: Bool = false) {
        self.status = status; self.body = body; self.contentType = contentType; self.close = close
    }

    public static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 414: return "URI Too Long"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 503: return "Service Unavailable"
        case 505: return "HTTP Version Not Supported"
        default: return "Status"
        }
    }

    public func serialized() -> [UInt8] {
        var head = "HTTP/1.1 \(status) \(HTTPResponse.reason(status))\r\nServer: swhv\r\n"
        if let contentType { head += "Content-Type: \(contentType)\r\n" }
        if status != 204 && status != 100 { head += "Content-Length: \(body.count)\r\n" }
        if close { head += "Connection: close\r\n" }
        head += "\r\n"
        return Array(head.utf8) + (status == 204 ? [] : body)
    }
}
