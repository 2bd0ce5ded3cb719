@testable import APIServer
import Foundation
import JSONCoding
import XCTest

final class APIServerTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "swhv-api-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func connect(_ path: String) throws -> Int32 {
        var addr = try APIServer.sockaddr(for: path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard APIServer.withSockaddr(&addr, { Glibc.connect(fd, $0, $1) }) == 0 else {
            close(fd)
            throw NSError(domain: "connect", code: Int(errno))
        }
        var tv = timeval(tv_sec: 20, tv_usec: 0)   // a hang watchdog, not a timing assertion
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    func send(_ fd: Int32, _ s: String) { _ = s.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }

    /// Reads until one response is complete or the peer closes.
    func readResponse(_ fd: Int32) -> APIClient.Response? {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            if let r = APIClient.parseResponse(data) { return r }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return APIClient.parseResponse(data, atEOF: true) }
            data += buf[0..<n]
        }
    }

    func makeServer(_ vm: FakeVM = FakeVM(), requestTimeout: UInt64 = 10) throws -> APIServer {
        let server = try APIServer(path: dir + "/api.sock", router: APIRouter(operations: vm), requestTimeout: requestTimeout)
        server.start()
        return server
    }

    func testServesRequestsOnASocketOnlyItsOwnerCanUse() throws {
        let vm = FakeVM()
        let server = try makeServer(vm)
        var st = stat()
        XCTAssertEqual(lstat(server.path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
        XCTAssertEqual(st.st_mode & S_IFMT, S_IFSOCK)
        let r = try APIClient.request(socket: server.path, method: "PATCH", path: "/vm",
                                      body: .object(JSONObject([("state", "Paused")])))
        XCTAssertEqual(r.status, 204)
        let info = try APIClient.request(socket: server.path, method: "GET", path: "/vm")
        XCTAssertEqual(info.json?["state"], "Running")
        XCTAssertEqual(vm.calls, ["pause", "info"])
        server.stop()
        XCTAssertNotEqual(lstat(server.path, &st), 0, "the socket file is removed when the server stops")
    }

    func testKeepAliveServesSeveralRequestsOnOneConnection() throws {
        let server = try makeServer()
        defer { server.stop() }
        let fd = try connect(server.path)
        defer { close(fd) }
        for _ in 0..<3 {
            send(fd, "GET /vm HTTP/1.1\r\nHost: x\r\n\r\n")
            XCTAssertEqual(readResponse(fd)?.status, 200)
        }
    }

    func testASecondClientIsTurnedAwayAndTheFirstKeepsWorking() throws {
        let server = try makeServer()
        defer { server.stop() }
        let first = try connect(server.path)
        defer { close(first) }
        send(first, "GET /vm HTTP/1.1\r\n\r\n")
        XCTAssertEqual(readResponse(first)?.status, 200)
        let second = try connect(server.path)
        let r = readResponse(second)
        close(second)
        XCTAssertEqual(r?.status, 503)
        XCTAssertTrue(r?.faultMessage.contains("another API client") ?? false)
        send(first, "GET /vm HTTP/1.1\r\n\r\n")
        XCTAssertEqual(readResponse(first)?.status, 200)
    }

    func testMalformedAndOversizedRequestsAreAnsweredAndTheServerGoesOn() throws {
        let vm = FakeVM()
        let server = try makeServer(vm)
        defer { server.stop() }
        for bad in ["BLAH\r\n\r\n", "PUT /vm HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
                    "GET /vm HTTP/1.1\r\nX: " + String(repeating: "y", count: 20_000) + "\r\n\r\n",
                    "PATCH /vm HTTP/1.1\r\nContent-Length: 5\r\n\r\n{{{{{"] {
            let fd = try connect(server.path)
            send(fd, bad)
            let r = readResponse(fd)
            close(fd)
            XCTAssertNotNil(r?.status, "no answer to \(bad.prefix(40).debugDescription)")
            XCTAssertTrue((400..<500).contains(r?.status ?? 0), "\(r?.status ?? 0)")
            XCTAssertFalse(r?.faultMessage.isEmpty ?? true)
        }
        XCTAssertEqual(try APIClient.request(socket: server.path, method: "GET", path: "/vm").status, 200)
        XCTAssertEqual(vm.calls, ["info"], "no bad request reached the VM")
    }

    func testAStalledRequestIsDroppedSoOthersCanConnect() throws {
        let server = try makeServer(requestTimeout: 1)
        defer { server.stop() }
        let staller = try connect(server.path)
        defer { close(staller) }
        send(staller, "GET /vm HTTP/1.1\r\n")   // never finished
        XCTAssertEqual(readResponse(staller)?.status, 408)
        XCTAssertEqual(try APIClient.request(socket: server.path, method: "GET", path: "/vm").status, 200)
    }

    func testSocketPathProblemsAreOneLineErrors() throws {
        let file = dir + "/file"
        FileManager.default.createFile(atPath: file, contents: Data("keep".utf8))
        XCTAssertThrowsError(try APIServer(path: file, router: APIRouter(operations: FakeVM()))) { e in
            XCTAssertTrue("\(e)".contains("exists and is not a socket"), "\(e)")
        }
        XCTAssertEqual(try String(contentsOfFile: file, encoding: .utf8), "keep", "a file in the way is left alone")
        XCTAssertThrowsError(try APIServer(path: dir + "/" + String(repeating: "x", count: 120), router: APIRouter(operations: FakeVM())))
        XCTAssertThrowsError(try APIServer(path: dir + "/missing/api.sock", router: APIRouter(operations: FakeVM()))) { e in
            XCTAssertTrue("\(e)".contains("cannot bind"), "\(e)")
        }
        let live = try makeServer()
        defer { live.stop() }
        XCTAssertThrowsError(try APIServer(path: live.path, router: APIRouter(operations: FakeVM()))) { e in
            XCTAssertTrue("\(e)".contains("in use by another process"), "\(e)")
        }
    }

    func testAStaleSocketIsReplaced() throws {
        let path = dir + "/api.sock"
        // A socket file nobody listens on, as a killed swhv leaves behind.
        var addr = try APIServer.sockaddr(for: path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertEqual(APIServer.withSockaddr(&addr) { bind(fd, $0, $1) }, 0)
        close(fd)
        let server = try makeServer()
        defer { server.stop() }
        XCTAssertEqual(try APIClient.request(socket: path, method: "GET", path: "/vm").status, 200)
    }

    func testClientReportsAMissingServerInOneLine() {
        XCTAssertThrowsError(try APIClient.request(socket: dir + "/none.sock", method: "GET", path: "/vm")) { e in
            XCTAssertTrue("\(e)".contains("is a swhv running with --api-sock"), "\(e)")
        }
    }
}
