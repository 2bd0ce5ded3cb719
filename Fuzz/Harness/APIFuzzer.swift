import APIServer
import JSONCoding

/// Operations that record nothing and always succeed, so every route runs to its end.
final class FuzzVM: VMOperations, @unchecked Sendable {
    var calls = 0
    func pause() throws(APIFault) { calls += 1 }
    func resume() throws(APIFault) { calls += 1 }
    func vmInfo() throws(APIFault) -> JSONValue { calls += 1; return .object(JSONObject([("state", "Running")])) }
    func instanceInfo() throws(APIFault) -> JSONValue { calls += 1; return .null }
    func machineConfig() throws(APIFault) -> JSONValue { calls += 1; return .null }
    func createSnapshot(statePath: String, memoryPath: String) throws(APIFault) { calls += 1 }
    func loadSnapshot(statePath: String, memoryPath: String, resume: Bool) throws(APIFault) { calls += 1 }
    func sendCtrlAltDel() throws(APIFault) { calls += 1 }
}

/// A hostile API client: the input is the byte stream on the socket, delivered in pieces of
/// fuzzed sizes, through the same parser and router the server runs.
public enum APIFuzzer {
    public static func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        guard let first = data.first else { return [:] }
        let stream = data.dropFirst()
        var parser = HTTPRequestParser()
        let vm = FuzzVM()
        let router = APIRouter(operations: vm)
        var at = stream.startIndex
        var piece = Int(first % 32) + 1
        var requests = 0
        var closed = false
        while at < stream.endIndex && !closed {
            let end = min(at + piece, stream.endIndex)
            parser.feed(stream[at..<end])
            at = end
            piece = piece % 61 + 3
            checks.expect(parser.bufferedCount <= HTTPRequestParser.maxHeadBytes + HTTPRequestParser.maxBodyBytes + 64 + 4,
                      "parser buffered \(parser.bufferedCount) bytes")
            while let result = parser.next() {
                let response: HTTPResponse
                switch result {
                case .failure(let e):
                    checks.expect((400..<600).contains(e.status), "parser error status \(e.status)")
                    response = APIRouter.response(for: e)
                    closed = true
                case .success(let request):
                    requests += 1
                    response = router.handle(request)
                }
                check(response, checks)
                if closed { break }
            }
        }
        checks.expect(vm.calls <= requests, "\(vm.calls) operations for \(requests) requests")
        // The body parser alone, on the raw input: never more than the depth it allows.
        let json = (try? JSONParser.parse(Array(stream.prefix(4096)), maxDepth: 8)) != nil
        return ["requests": requests, "operations": vm.calls, "closed": closed ? 1 : 0, "json": json ? 1 : 0]
    }

    /// Every response is well formed and, for errors, carries Firecracker's fault body.
    static func check(_ r: HTTPResponse, _ checks: FuzzChecks) {
        checks.expect((100..<600).contains(r.status), "response status \(r.status)")
        let bytes = r.serialized()
        let parsed = APIClient.parseResponse(bytes, atEOF: true)
        checks.expect(parsed?.status == r.status, "response does not parse back")
        if r.status >= 400 {
            let fault = (try? JSONParser.parse(r.body))?["fault_message"]?.stringValue
            checks.expect(fault?.isEmpty == false, "error response without a fault_message")
        }
    }
}
