/// A JSON document as a value. Numbers keep their text, so 64-bit integers (guest registers,
/// addresses) round-trip exactly instead of passing through a `Double`. Objects keep their member
/// order (what we write is what a reader sees).
///
/// swhv's own JSON, without Foundation: the API socket's bodies and the snapshot's sections use it,
/// and issue 15 wants the binary free of Foundation.
public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var uint64Value: UInt64? { if case .number(let n) = self { return n.uint64 }; return nil }
    public var int64Value: Int64? { if case .number(let n) = self { return n.int64 }; return nil }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }

    /// What kind of value this is, for error messages ("expected a string, found a number").
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

/// A JSON number as written: validated by the parser, converted on demand.
public struct JSONNumber: Equatable, Sendable, CustomStringConvertible {
    public let text: String

    /// `text` must be a valid JSON number (the parser and the initialisers below guarantee it).
    init(validated text: String) { self.text = text }

    public init(_ v: UInt64) { text = String(v) }
    public init(_ v: Int64) { text = String(v) }
    public init(_ v: Int) { text = String(v) }

    /// A finite double, in Swift's shortest round-trip form; nil for infinities and NaN (JSON
    /// has no spelling for them).
    public init?(_ v: Double) {
        guard v.isFinite else { return nil }
        var t = v.description            // "1.0", "1e-05", "-0.0", "1.5e+300"
        if t.hasSuffix(".0") && !t.contains("e") { t.removeLast(2) }
        text = t
    }

    /// The value as an unsigned integer, if it is one and fits (no fraction, no exponent).
    public var uint64: UInt64? { UInt64(text) }
    /// The value as a signed integer, if it is one and fits.
    public var int64: Int64? { Int64(text) }
    /// The value as a double (integers too); nil only if the text overflows to infinity.
    public var double: Double? {
        guard let d = Double(text), d.isFinite else { return nil }
        return d
    }

    public var description: String { text }
}

/// A JSON object: members in order, keys unique (the parser refuses duplicates).
public struct JSONObject: Equatable, Sendable {
    public private(set) var members: [(key: String, value: JSONValue)] = []

    public init() {}
    public init(_ members: [(String, JSONValue)]) {
        for (k, v) in members { self[k] = v }
    }

    public var keys: [String] { members.map(\.key) }
    public var count: Int { members.count }

    /// Lookup is linear: objects here have a handful of members.
    public subscript(key: String) -> JSONValue? {
        get { members.first { $0.key == key }?.value }
        set {
            if let i = members.firstIndex(where: { $0.key == key }) {
                if let newValue { members[i].value = newValue } else { members.remove(at: i) }
            } else if let newValue {
                members.append((key, newValue))
            }
        }
    }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.members.count == b.members.count
            && zip(a.members, b.members).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
    public init(nilLiteral: ()) { self = .null }
}
