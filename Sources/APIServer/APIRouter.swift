import JSONCoding

/// A refused API operation: the HTTP status and the message that goes into Firecracker's error
/// body, `{"fault_message": "..."}`.
public struct APIFault: Error, Equatable, Sendable {
    public let status: Int
    public let message: String
    public init(_ message: String, status: Int = 400) { self.status = status; self.message = message }

    /// The VM is gone (the guest stopped): nothing can act on it any more.
    public static func stopped(_ why: String) -> APIFault { APIFault("the VM has stopped: \(why)", status: 503) }
}

/// What the API can ask of a VM. The machine implements it; each call returns once the vCPU
/// thread has acted (a pause returns when the guest is paused).
public protocol VMOperations: AnyObject, Sendable {
    func pause() throws(APIFault)
    func resume() throws(APIFault)
    /// GET /vm: state, backend, guest instruction count.
    func vmInfo() throws(APIFault) -> JSONValue
    /// GET /: Firecracker's InstanceInfo.
    func instanceInfo() throws(APIFault) -> JSONValue
    /// GET /machine-config: Firecracker's MachineConfiguration.
    func machineConfig() throws(APIFault) -> JSONValue
    func createSnapshot(statePath: String, memoryPath: String) throws(APIFault)
    func loadSnapshot(statePath: String, memoryPath: String, resume: Bool) throws(APIFault)
    func sendCtrlAltDel() throws(APIFault)
}

/// Maps requests to operations, with Firecracker's paths, bodies and error format. Pure: every
/// request gets exactly one response, and nothing but the operations it calls has effects.
public struct APIRouter: Sendable {
    public let operations: any VMOperations

    public init(operations: any VMOperations) { self.operations = operations }

    static func fault(_ f: APIFault) -> HTTPResponse {
        let body = JSONValue.object(JSONObject([("fault_message", .string(f.message))]))
        return HTTPResponse(status: f.status, body: body.bytes, contentType: "application/json")
    }

    static func json(_ v: JSONValue) -> HTTPResponse {
        HTTPResponse(status: 200, body: v.bytes, contentType: "application/json")
    }

    /// A response for a request the parser refused.
    public static func response(for error: HTTPError) -> HTTPResponse {
        var r = fault(APIFault(error.message, status: error.status))
        r.close = true
        return r
    }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        do throws(APIFault) {
            return try route(request)
        } catch {
            return APIRouter.fault(error)
        }
    }

    /// The paths and the methods each accepts.
    static let routes: [String: [String]] = [
        "/": ["GET"], "/vm": ["GET", "PATCH"], "/machine-config": ["GET"], "/actions": ["PUT"],
        "/snapshot/create": ["PUT"], "/snapshot/load": ["PUT"],
    ]

    private func route(_ r: HTTPRequest) throws(APIFault) -> HTTPResponse {
        guard let methods = APIRouter.routes[r.path] else {
            throw APIFault("no API resource at '\(r.path)' (try GET /vm)", status: 404)
        }
        guard methods.contains(r.method) else {
            throw APIFault("\(r.path) accepts \(methods.joined(separator: ", ")), not \(r.method)", status: 405)
        }
        switch (r.method, r.path) {
        case ("GET", "/"):
            return APIRouter.json(try operations.instanceInfo())
        case ("GET", "/vm"):
            return APIRouter.json(try operations.vmInfo())
        case ("GET", "/machine-config"):
            return APIRouter.json(try operations.machineConfig())
        case ("PATCH", "/vm"):
            let body = try Body(r, fields: ["state"])
            switch try body.string("state") {
            case "Paused": try operations.pause()
            case "Resumed": try operations.resume()
            case let s: throw APIFault("state '\(s)' is not one of Paused, Resumed")
            }
            return HTTPResponse(status: 204)
        case ("PUT", "/actions"):
            let body = try Body(r, fields: ["action_type"])
            switch try body.string("action_type") {
            case "SendCtrlAltDel": try operations.sendCtrlAltDel()
            case "FlushMetrics", "InstanceStart":
                throw APIFault("action '\(try body.string("action_type"))' is not supported by swhv (it has no metrics, and boots at start)")
            case let s: throw APIFault("action_type '\(s)' is not one of SendCtrlAltDel")
            }
            return HTTPResponse(status: 204)
        case ("PUT", "/snapshot/create"):
            let body = try Body(r, fields: ["snapshot_path", "mem_file_path", "snapshot_type", "version"])
            if let type = try body.optionalString("snapshot_type"), type != "Full" {
                throw APIFault("snapshot_type '\(type)' is not supported: swhv writes Full snapshots")
            }
            try operations.createSnapshot(statePath: try body.string("snapshot_path"),
                                          memoryPath: try body.string("mem_file_path"))
            return HTTPResponse(status: 204)
        case ("PUT", "/snapshot/load"):
            let body = try Body(r, fields: ["snapshot_path", "mem_file_path", "mem_backend", "resume_vm",
                                            "enable_diff_snapshots", "track_dirty_pages"])
            let memory: String
            if let backend = body.object["mem_backend"] {
                guard body.object["mem_file_path"] == nil else {
                    throw APIFault("give mem_file_path or mem_backend, not both")
                }
                guard backend["backend_type"]?.stringValue == "File", let p = backend["backend_path"]?.stringValue else {
                    throw APIFault("mem_backend must be {\"backend_type\": \"File\", \"backend_path\": PATH}")
                }
                memory = p
            } else {
                memory = try body.string("mem_file_path")
            }
            try operations.loadSnapshot(statePath: try body.string("snapshot_path"), memoryPath: memory,
                                        resume: try body.optionalBool("resume_vm") ?? false)
            return HTTPResponse(status: 204)
        default:
            throw APIFault("\(r.path) accepts \(methods.joined(separator: ", ")), not \(r.method)", status: 405)
        }
    }

    /// A JSON object body with known fields only (as Firecracker's API refuses unknown ones).
    struct Body {
        let object: JSONObject

        init(_ r: HTTPRequest, fields: [String]) throws(APIFault) {
            guard !r.body.isEmpty else { throw APIFault("\(r.method) \(r.path) needs a JSON body") }
            let value: JSONValue
            do { value = try JSONParser.parse(r.body, maxDepth: 8) } catch {
                throw APIFault("the request body is not valid JSON: \(error)")
            }
            guard case .object(let o) = value else { throw APIFault("the request body must be a JSON object") }
            if let unknown = o.keys.first(where: { !fields.contains($0) }) {
                throw APIFault("unknown field '\(unknown)' (expected \(fields.joined(separator: ", ")))")
            }
            object = o
        }

        func string(_ key: String) throws(APIFault) -> String {
            guard let v = object[key] else { throw APIFault("missing field '\(key)'") }
            guard case .string(let s) = v else { throw APIFault("field '\(key)' must be a string, not \(v.kindName)") }
            return s
        }

        func optionalString(_ key: String) throws(APIFault) -> String? {
            guard object[key] != nil else { return nil }
            return try string(key)
        }

        func optionalBool(_ key: String) throws(APIFault) -> Bool? {
            guard let v = object[key] else { return nil }
            guard case .bool(let b) = v else { throw APIFault("field '\(key)' must be true or false, not \(v.kindName)") }
            return b
        }
    }
}
