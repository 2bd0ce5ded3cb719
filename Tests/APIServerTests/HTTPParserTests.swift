@testable import APIServer
import JSONCoding
import XCTest

final class HTTPParserTests: XCTestCase {
    func parseAll(_ text: String) -> [Result<HTTPRequest, HTTPError>] {
        var p = HTTPRequestParser()
        p.feed(Array(text.utf8))
        var out: [Result<HTTPRequest, HTTPError>] = []
        while let r = p.next() {
            out.append(r)
            if case .failure = r { break }
        }
        return out
    }

    func error(_ text: String) -> HTTPError? {
        if case .failure(let e) = parseAll(text).last { return e }
        return nil
    }

    func testParsesARequestWithABody() throws {
        let r = try XCTUnwrap(parseAll("PATCH /vm?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 19\r\n\r\n{\"state\":\"Paused\"}x").first).get()
        XCTAssertEqual(r.method, "PATCH")
        XCTAssertEqual(r.path, "/vm")
        XCTAssertEqual(r.query, "x=1")
        XCTAssertEqual(String(decoding: r.body, as: UTF8.self), "{\"state\":\"Paused\"}x")
        XCTAssertTrue(r.keepAlive)
    }

    func testRequestsArriveInPiecesAndPipelined() throws {
        let text = "GET /vm HTTP/1.1\r\nHost: a\r\n\r\nPUT /actions HTTP/1.0\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nConnection: close\r\n\r\n"
        var p = HTTPRequestParser()
        var got: [HTTPRequest] = []
        for b in text.utf8 {
            p.feed([b])
            while let r = p.next() { got.append(try r.get()) }
        }
        XCTAssertEqual(got.map(\.path), ["/vm", "/actions", "/"])
        XCTAssertEqual(got[1].body, Array("abc".utf8))
        XCTAssertFalse(got[1].keepAlive, "HTTP/1.0 closes by default")
        XCTAssertFalse(got[2].keepAlive)
        XCTAssertFalse(p.isMidRequest)
    }

    func testIncompleteRequestWaits() {
        var p = HTTPRequestParser()
        p.feed(Array("PUT /vm HTTP/1.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n{}".utf8))
        XCTAssertNil(p.next())
        XCTAssertTrue(p.isMidRequest)
        XCTAssertTrue(p.awaitsContinue)
    }

    func testRefusals() {
        let long = String(repeating: "a", count: 9000)
        let cases: [(String, Int)] = [
            ("GET /vm HTTP/1.1\r\nX: \(long)\r\n\r\n", 431),
            ("GET /\(long.prefix(3000)) HTTP/1.1\r\n\r\n", 414),
            ("PUT /vm HTTP/1.1\r\nContent-Length: 70000\r\n\r\n", 413),
            ("GET /vm HTTP/2.0\r\n\r\n", 505),
            ("PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("GET /vm HTTP/1.1\nHost: a\n\n\r\n\r\n", 400),
            ("GET /vm HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", 400),
            ("PUT /vm HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("PUT /vm HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("PUT /vm HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
            ("GET vm HTTP/1.1\r\n\r\n", 400),
            ("get /vm HTTP/1.1\r\n\r\n", 400),
            ("GET  /vm HTTP/1.1\r\n\r\n", 400),
            ("GET /vm HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            ("GET /vm HTTP/1.1\r\nA: \u{7F}\r\n\r\n", 400),
            ("GET /v\u{01}m HTTP/1.1\r\n\r\n", 400),
            ("\r\n\r\n", 400),
        ]
        for (text, status) in cases {
            XCTAssertEqual(error(text)?.status, status, text.prefix(60).debugDescription)
        }
        // Unbounded input without a header end is refused once it passes the limit, not buffered.
        var p = HTTPRequestParser()
        p.feed(Array(repeating: UInt8(ascii: "a"), count: 9000))
        if case .failure(let e) = p.next() { XCTAssertEqual(e.status, 431) } else { XCTFail("no error") }
        p.feed(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        if case .failure = p.next() {} else { XCTFail("a failed parser stays failed") }
    }

    func testResponseSerialization() {
        let r = HTTPResponse(status: 400, body: Array("{}".utf8), contentType: "application/json", close: true)
        XCTAssertEqual(String(decoding: r.serialized(), as: UTF8.self),
                       "HTTP/1.1 400 Bad Request\r\nServer: swhv\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        XCTAssertEqual(String(decoding: HTTPResponse(status: 204, body: Array("x".utf8)).serialized(), as: UTF8.self),
                       "HTTP/1.1 204 No Content\r\nServer: swhv\r\n\r\n")
    }
}

/// Records what the router asked for; `fail` makes every operation refuse.
final class FakeVM: VMOperations, @unchecked Sendable {
    var calls: [String] = []
    var fail: APIFault?
    var delay: UInt32 = 0
    private func record(_ s: String) throws(APIFault) {
        if delay > 0 { usleep(delay) }
        calls.append(s)
        if let fail { throw fail }
    }
    func pause() throws(APIFault) { try record("pause") }
    func resume() throws(APIFault) { try record("resume") }
    func vmInfo() throws(APIFault) -> JSONValue { try record("info"); return .object(JSONObject([("state", "Running")])) }
    func instanceInfo() throws(APIFault) -> JSONValue { try record("instance"); return .object(JSONObject()) }
    func machineConfig() throws(APIFault) -> JSONValue { try record("config"); return .object(JSONObject([("vcpu_count", 1)])) }
    func createSnapshot(statePath: String, memoryPath: String) throws(APIFault) { try record("create \(statePath) \(memoryPath)") }
    func loadSnapshot(statePath: String, memoryPath: String, resume: Bool) throws(APIFault) {
        try record("load \(statePath) \(memoryPath) \(resume)")
    }
    func sendCtrlAltDel() throws(APIFault) { try record("cad") }
}

final class APIRouterTests: XCTestCase {
    func request(_ method: String, _ path: String, _ body: String? = nil) -> HTTPRequest {
        HTTPRequest(method: method, path: path, query: nil, minorVersion: 1, headers: [], body: Array((body ?? "").utf8))
    }

    func fault(_ r: HTTPResponse) -> String? {
        (try? JSONParser.parse(r.body))?["fault_message"]?.stringValue
    }

    func testFirecrackerOperations() {
        let vm = FakeVM()
        let router = APIRouter(operations: vm)
        XCTAssertEqual(router.handle(request("PATCH", "/vm", #"{"state": "Paused"}"#)).status, 204)
        XCTAssertEqual(router.handle(request("PATCH", "/vm", #"{"state": "Resumed"}"#)).status, 204)
        XCTAssertEqual(router.handle(request("PUT", "/actions", #"{"action_type": "SendCtrlAltDel"}"#)).status, 204)
        XCTAssertEqual(router.handle(request("PUT", "/snapshot/create",
            #"{"snapshot_path": "/s/state", "mem_file_path": "/s/mem", "snapshot_type": "Full"}"#)).status, 204)
        XCTAssertEqual(router.handle(request("PUT", "/snapshot/load",
            #"{"snapshot_path": "/s/state", "mem_backend": {"backend_type": "File", "backend_path": "/s/mem"}, "resume_vm": true}"#)).status, 204)
        let info = router.handle(request("GET", "/vm"))
        XCTAssertEqual(info.status, 200)
        XCTAssertEqual(info.contentType, "application/json")
        XCTAssertEqual(try JSONParser.parse(info.body)["state"], "Running")
        XCTAssertEqual(router.handle(request("GET", "/machine-config")).status, 200)
        XCTAssertEqual(vm.calls, ["pause", "resume", "cad", "create /s/state /s/mem", "load /s/state /s/mem true", "info", "config"])
    }

    func testBadRequestsGetAJSONFaultAndCallNothing() {
        let vm = FakeVM()
        let router = APIRouter(operations: vm)
        let cases: [(HTTPRequest, Int, String)] = [
            (request("PATCH", "/vm", #"{"state": "Stopped"}"#), 400, "not one of Paused, Resumed"),
            (request("PATCH", "/vm", #"{"state": 1}"#), 400, "must be a string"),
            (request("PATCH", "/vm", #"{"state": "Paused", "extra": 1}"#), 400, "unknown field 'extra'"),
            (request("PATCH", "/vm", #"{"state": "Paused""#), 400, "not valid JSON"),
            (request("PATCH", "/vm", #"["Paused"]"#), 400, "must be a JSON object"),
            (request("PATCH", "/vm"), 400, "needs a JSON body"),
            (request("PUT", "/snapshot/create", #"{"snapshot_path": "/a"}"#), 400, "missing field 'mem_file_path'"),
            (request("PUT", "/snapshot/create", #"{"snapshot_path": "/a", "mem_file_path": "/b", "snapshot_type": "Diff"}"#), 400, "Full"),
            (request("PUT", "/actions", #"{"action_type": "InstanceStart"}"#), 400, "not supported"),
            (request("GET", "/nope"), 404, "no API resource"),
            (request("DELETE", "/vm"), 405, "accepts GET, PATCH"),
            (request("PUT", "/vm", "{}"), 405, "accepts"),
        ]
        for (r, status, text) in cases {
            let resp = router.handle(r)
            XCTAssertEqual(resp.status, status, "\(r.method) \(r.path)")
            XCTAssertTrue(fault(resp)?.contains(text) ?? false, "\(fault(resp) ?? "no fault") lacks \(text)")
        }
        XCTAssertEqual(vm.calls, [])
    }

    func testOperationFaultsBecomeResponses() {
        let vm = FakeVM()
        vm.fail = APIFault("the VM is already paused")
        let r = APIRouter(operations: vm).handle(request("PATCH", "/vm", #"{"state": "Paused"}"#))
        XCTAssertEqual(r.status, 400)
        XCTAssertEqual(fault(r), "the VM is already paused")
        vm.fail = .stopped("guest powered off")
        XCTAssertEqual(APIRouter(operations: vm).handle(request("GET", "/vm")).status, 503)
    }

    func testClientParsesResponses() {
        let text = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Length: 21\r\n\r\n{\"fault_message\":\"x\"}"
        XCTAssertNil(APIClient.parseResponse(Array(text.utf8.dropLast())))
        let r = APIClient.parseResponse(Array(text.utf8))
        XCTAssertEqual(r?.status, 400)
        XCTAssertEqual(r?.faultMessage, "x")
        XCTAssertEqual(APIClient.parseResponse(Array("HTTP/1.1 204 No Content\r\n\r\n".utf8))?.status, 204)
    }
}
