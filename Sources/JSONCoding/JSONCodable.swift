/// Encodes `Encodable` values as `JSONValue` (Swift's Codable without Foundation's JSONEncoder).
/// Integers are written exactly (a `UInt64` register stays a `UInt64`), `[UInt8]` as a base64
/// string, non-finite doubles are refused.
public struct JSONValueEncoder {
    public init() {}

    public func encode<T: Encodable>(_ value: T) throws -> JSONValue {
        try NodeEncoder.box(value, path: []).finished
    }

    /// Compact JSON bytes.
    public func encodeBytes<T: Encodable>(_ value: T) throws -> [UInt8] {
        try encode(value).bytes
    }
}

/// Decodes `Decodable` values from `JSONValue`. Integers must fit their type exactly; unknown
/// object keys are ignored (a newer writer may add fields), missing ones are errors unless the
/// type decodes them with `decodeIfPresent`.
public struct JSONValueDecoder {
    public init() {}

    public func decode<T: Decodable>(_ type: T.Type, from value: JSONValue) throws -> T {
        try ValueDecoder.unbox(type, value, path: [])
    }

    /// Parses then decodes; errors are `JSONError` (syntax) or `DecodingError` (shape).
    public func decode<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try decode(type, from: try JSONParser.parse(bytes))
    }

    /// A one-line account of a decoding failure: where and what.
    public static func describe(_ error: Error) -> String {
        func where_(_ path: [CodingKey]) -> String {
            let p = path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : " at \(p)"
        }
        switch error {
        case let e as JSONError: return e.description
        case DecodingError.keyNotFound(let key, let ctx):
            return "missing \"\(key.stringValue)\"\(where_(ctx.codingPath))"
        case DecodingError.typeMismatch(_, let ctx), DecodingError.valueNotFound(_, let ctx),
             DecodingError.dataCorrupted(let ctx):
            return ctx.debugDescription + where_(ctx.codingPath)
        default:
            return "\(error)"
        }
    }
}

// MARK: Encoding

/// A value under construction: containers of a parent hold their children by reference, so a
/// nested container's writes land in the tree.
final class EncodingNode {
    enum Storage {
        case unset
        case value(JSONValue)
        case object(keys: [String], nodes: [EncodingNode])
        case array([EncodingNode])
    }
    var storage: Storage = .unset

    init() {}
    init(_ value: JSONValue) { storage = .value(value) }

    var finished: JSONValue {
        switch storage {
        case .unset: return .object(JSONObject())
        case .value(let v): return v
        case .object(let keys, let nodes):
            var o = JSONObject()
            for (k, n) in zip(keys, nodes) { o[k] = n.finished }
            return .object(o)
        case .array(let nodes): return .array(nodes.map(\.finished))
        }
    }

    func makeObject() {
        if case .object = storage { return }
        storage = .object(keys: [], nodes: [])
    }

    func makeArray() {
        if case .array = storage { return }
        storage = .array([])
    }

    func set(_ key: String, _ node: EncodingNode) {
        guard case .object(var keys, var nodes) = storage else { return }
        storage = .unset
        if let i = keys.firstIndex(of: key) { nodes[i] = node } else { keys.append(key); nodes.append(node) }
        storage = .object(keys: keys, nodes: nodes)
    }

    func append(_ node: EncodingNode) {
        guard case .array(var nodes) = storage else { return }
        storage = .unset
        nodes.append(node)
        storage = .array(nodes)
    }

    var arrayCount: Int { if case .array(let n) = storage { return n.count }; return 0 }
}

struct IndexKey: CodingKey {
    var stringValue: String { "\(index)" }
    var intValue: Int? { index }
    let index: Int
    init(_ index: Int) { self.index = index }
    init?(stringValue: String) { guard let i = Int(stringValue) else { return nil }; index = i }
    init?(intValue: Int) { index = intValue }
}

final class NodeEncoder: Encoder {
    let node: EncodingNode
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(node: EncodingNode, path: [CodingKey]) { self.node = node; codingPath = path }

    static func number<T: BinaryInteger>(_ v: T) -> JSONValue {
        .number(v < 0 ? JSONNumber(Int64(truncatingIfNeeded: v)) : JSONNumber(UInt64(truncatingIfNeeded: v)))
    }

    static func number(_ v: Double, path: [CodingKey]) throws -> JSONValue {
        guard let n = JSONNumber(v) else {
            throw EncodingError.invalidValue(v, .init(codingPath: path, debugDescription: "\(v) has no JSON form"))
        }
        return .number(n)
    }

    /// The node for any encodable value, special-casing byte arrays.
    static func box<T: Encodable>(_ value: T, path: [CodingKey]) throws -> EncodingNode {
        // By type, not by cast: an empty [UInt16] also casts to [UInt8].
        if T.self == [UInt8].self, let bytes = value as? [UInt8] { return EncodingNode(.string(Base64.encode(bytes))) }
        let node = EncodingNode()
        try value.encode(to: NodeEncoder(node: node, path: path))
        return node
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        node.makeObject()
        return KeyedEncodingContainer(KeyedNodeEncoder<Key>(node: node, codingPath: codingPath))
    }

    func unkeyedContainer() -> UnkeyedEncodingContainer {
        node.makeArray()
        return UnkeyedNodeEncoder(node: node, codingPath: codingPath)
    }

    func singleValueContainer() -> SingleValueEncodingContainer {
        SingleNodeEncoder(node: node, codingPath: codingPath)
    }
}

struct KeyedNodeEncoder<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let node: EncodingNode
    let codingPath: [CodingKey]

    func put(_ v: JSONValue, _ key: Key) { node.set(key.stringValue, EncodingNode(v)) }

    mutating func encodeNil(forKey key: Key) throws { put(.null, key) }
    mutating func encode(_ v: Bool, forKey key: Key) throws { put(.bool(v), key) }
    mutating func encode(_ v: String, forKey key: Key) throws { put(.string(v), key) }
    mutating func encode(_ v: Double, forKey key: Key) throws { put(try NodeEncoder.number(v, path: codingPath + [key]), key) }
    mutating func encode(_ v: Float, forKey key: Key) throws { put(try NodeEncoder.number(Double(v), path: codingPath + [key]), key) }
    mutating func encode(_ v: Int, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: Int8, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: Int16, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: Int32, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: Int64, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: UInt, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: UInt8, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: UInt16, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: UInt32, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode(_ v: UInt64, forKey key: Key) throws { put(NodeEncoder.number(v), key) }
    mutating func encode<T: Encodable>(_ v: T, forKey key: Key) throws {
        node.set(key.stringValue, try NodeEncoder.box(v, path: codingPath + [key]))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key)
        -> KeyedEncodingContainer<NestedKey>
    {
        let child = EncodingNode()
        child.makeObject()
        node.set(key.stringValue, child)
        return KeyedEncodingContainer(KeyedNodeEncoder<NestedKey>(node: child, codingPath: codingPath + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
        let child = EncodingNode()
        child.makeArray()
        node.set(key.stringValue, child)
        return UnkeyedNodeEncoder(node: child, codingPath: codingPath + [key])
    }

    mutating func superEncoder() -> Encoder { superEncoder(named: "super") }
    mutating func superEncoder(forKey key: Key) -> Encoder { superEncoder(named: key.stringValue) }
    private func superEncoder(named name: String) -> Encoder {
        let child = EncodingNode()
        node.set(name, child)
        return NodeEncoder(node: child, path: codingPath)
    }
}

struct UnkeyedNodeEncoder: UnkeyedEncodingContainer {
    let node: EncodingNode
    let codingPath: [CodingKey]
    var count: Int { node.arrayCount }

    func put(_ v: JSONValue) { node.append(EncodingNode(v)) }
    var nextPath: [CodingKey] { codingPath + [IndexKey(count)] }

    mutating func encodeNil() throws { put(.null) }
    mutating func encode(_ v: Bool) throws { put(.bool(v)) }
    mutating func encode(_ v: String) throws { put(.string(v)) }
    mutating func encode(_ v: Double) throws { put(try NodeEncoder.number(v, path: nextPath)) }
    mutating func encode(_ v: Float) throws { put(try NodeEncoder.number(Double(v), path: nextPath)) }
    mutating func encode(_ v: Int) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int8) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int16) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int32) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int64) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt8) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt16) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt32) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt64) throws { put(NodeEncoder.number(v)) }
    mutating func encode<T: Encodable>(_ v: T) throws { node.append(try NodeEncoder.box(v, path: nextPath)) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let path = nextPath
        let child = EncodingNode()
        child.makeObject()
        node.append(child)
        return KeyedEncodingContainer(KeyedNodeEncoder<NestedKey>(node: child, codingPath: path))
    }

    mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
        let path = nextPath
        let child = EncodingNode()
        child.makeArray()
        node.append(child)
        return UnkeyedNodeEncoder(node: child, codingPath: path)
    }

    mutating func superEncoder() -> Encoder {
        let path = nextPath
        let child = EncodingNode()
        node.append(child)
        return NodeEncoder(node: child, path: path)
    }
}

struct SingleNodeEncoder: SingleValueEncodingContainer {
    let node: EncodingNode
    let codingPath: [CodingKey]

    func put(_ v: JSONValue) { node.storage = .value(v) }

    mutating func encodeNil() throws { put(.null) }
    mutating func encode(_ v: Bool) throws { put(.bool(v)) }
    mutating func encode(_ v: String) throws { put(.string(v)) }
    mutating func encode(_ v: Double) throws { put(try NodeEncoder.number(v, path: codingPath)) }
    mutating func encode(_ v: Float) throws { put(try NodeEncoder.number(Double(v), path: codingPath)) }
    mutating func encode(_ v: Int) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int8) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int16) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int32) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: Int64) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt8) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt16) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt32) throws { put(NodeEncoder.number(v)) }
    mutating func encode(_ v: UInt64) throws { put(NodeEncoder.number(v)) }
    mutating func encode<T: Encodable>(_ v: T) throws {
        node.storage = try NodeEncoder.box(v, path: codingPath).storage
    }
}

// MARK: Decoding

final class ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ value: JSONValue, path: [CodingKey]) { self.value = value; codingPath = path }

    static func unbox<T: Decodable>(_ type: T.Type, _ value: JSONValue, path: [CodingKey]) throws -> T {
        if T.self == [UInt8].self, case .string(let s) = value {
            guard let bytes = Base64.decode(s) else {
                throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "invalid base64 bytes"))
            }
            return bytes as! T
        }
        return try T(from: ValueDecoder(value, path: path))
    }

    static func mismatch(_ expected: String, _ value: JSONValue, _ path: [CodingKey]) -> DecodingError {
        .typeMismatch(Any.self, .init(codingPath: path, debugDescription: "expected \(expected), found \(value.kindName)"))
    }

    static func bool(_ v: JSONValue, _ path: [CodingKey]) throws -> Bool {
        guard case .bool(let b) = v else { throw mismatch("a boolean", v, path) }
        return b
    }

    static func string(_ v: JSONValue, _ path: [CodingKey]) throws -> String {
        guard case .string(let s) = v else { throw mismatch("a string", v, path) }
        return s
    }

    static func integer<T: FixedWidthInteger>(_ type: T.Type, _ v: JSONValue, _ path: [CodingKey]) throws -> T {
        guard case .number(let n) = v else { throw mismatch("an integer", v, path) }
        if let u = n.uint64, let t = T(exactly: u) { return t }
        if let s = n.int64, let t = T(exactly: s) { return t }
        throw DecodingError.dataCorrupted(.init(codingPath: path,
            debugDescription: "\(n.text) is not an integer that fits \(T.self)"))
    }

    static func double(_ v: JSONValue, _ path: [CodingKey]) throws -> Double {
        guard case .number(let n) = v else { throw mismatch("a number", v, path) }
        guard let d = n.double else {
            throw DecodingError.dataCorrupted(.init(codingPath: path, debugDescription: "\(n.text) is out of range"))
        }
        return d
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let o) = value else { throw ValueDecoder.mismatch("an object", value, codingPath) }
        return KeyedDecodingContainer(KeyedValueDecoder<Key>(object: o, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        guard case .array(let a) = value else { throw ValueDecoder.mismatch("an array", value, codingPath) }
        return UnkeyedValueDecoder(array: a, codingPath: codingPath)
    }

    func singleValueContainer() throws -> SingleValueDecodingContainer {
        SingleValueDecoder(value: value, codingPath: codingPath)
    }
}

struct KeyedValueDecoder<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let object: JSONObject
    let codingPath: [CodingKey]

    var allKeys: [Key] { object.keys.compactMap { Key(stringValue: $0) } }
    func contains(_ key: Key) -> Bool { object[key.stringValue] != nil }

    func member(_ key: Key) throws -> JSONValue {
        guard let v = object[key.stringValue] else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "missing \"\(key.stringValue)\""))
        }
        return v
    }
    func path(_ key: Key) -> [CodingKey] { codingPath + [key] }

    func decodeNil(forKey key: Key) throws -> Bool { try member(key) == .null }
    func decode(_ t: Bool.Type, forKey key: Key) throws -> Bool { try ValueDecoder.bool(member(key), path(key)) }
    func decode(_ t: String.Type, forKey key: Key) throws -> String { try ValueDecoder.string(member(key), path(key)) }
    func decode(_ t: Double.Type, forKey key: Key) throws -> Double { try ValueDecoder.double(member(key), path(key)) }
    func decode(_ t: Float.Type, forKey key: Key) throws -> Float { Float(try ValueDecoder.double(member(key), path(key))) }
    func decode(_ t: Int.Type, forKey key: Key) throws -> Int { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: Int8.Type, forKey key: Key) throws -> Int8 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: Int16.Type, forKey key: Key) throws -> Int16 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: Int32.Type, forKey key: Key) throws -> Int32 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: Int64.Type, forKey key: Key) throws -> Int64 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: UInt.Type, forKey key: Key) throws -> UInt { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: UInt8.Type, forKey key: Key) throws -> UInt8 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: UInt16.Type, forKey key: Key) throws -> UInt16 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: UInt32.Type, forKey key: Key) throws -> UInt32 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode(_ t: UInt64.Type, forKey key: Key) throws -> UInt64 { try ValueDecoder.integer(t, member(key), path(key)) }
    func decode<T: Decodable>(_ t: T.Type, forKey key: Key) throws -> T {
        try ValueDecoder.unbox(t, member(key), path: path(key))
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        try ValueDecoder(member(key), path: path(key)).container(keyedBy: type)
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
        try ValueDecoder(member(key), path: path(key)).unkeyedContainer()
    }
    func superDecoder() throws -> Decoder { ValueDecoder(object["super"] ?? .null, path: codingPath) }
    func superDecoder(forKey key: Key) throws -> Decoder { ValueDecoder(object[key.stringValue] ?? .null, path: path(key)) }
}

struct UnkeyedValueDecoder: UnkeyedDecodingContainer {
    let array: [JSONValue]
    let codingPath: [CodingKey]
    var currentIndex = 0
    var count: Int? { array.count }
    var isAtEnd: Bool { currentIndex >= array.count }

    init(array: [JSONValue], codingPath: [CodingKey]) { self.array = array; self.codingPath = codingPath }

    mutating func next() throws -> (JSONValue, [CodingKey]) {
        let path = codingPath + [IndexKey(currentIndex)]
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, .init(codingPath: path, debugDescription: "array has only \(array.count) elements"))
        }
        defer { currentIndex += 1 }
        return (array[currentIndex], path)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd else { return false }
        if array[currentIndex] == .null { currentIndex += 1; return true }
        return false
    }
    mutating func decode(_ t: Bool.Type) throws -> Bool { let (v, p) = try next(); return try ValueDecoder.bool(v, p) }
    mutating func decode(_ t: String.Type) throws -> String { let (v, p) = try next(); return try ValueDecoder.string(v, p) }
    mutating func decode(_ t: Double.Type) throws -> Double { let (v, p) = try next(); return try ValueDecoder.double(v, p) }
    mutating func decode(_ t: Float.Type) throws -> Float { let (v, p) = try next(); return Float(try ValueDecoder.double(v, p)) }
    mutating func decode(_ t: Int.Type) throws -> Int { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: Int8.Type) throws -> Int8 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: Int16.Type) throws -> Int16 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: Int32.Type) throws -> Int32 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: Int64.Type) throws -> Int64 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: UInt.Type) throws -> UInt { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: UInt8.Type) throws -> UInt8 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: UInt16.Type) throws -> UInt16 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: UInt32.Type) throws -> UInt32 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode(_ t: UInt64.Type) throws -> UInt64 { let (v, p) = try next(); return try ValueDecoder.integer(t, v, p) }
    mutating func decode<T: Decodable>(_ t: T.Type) throws -> T {
        let (v, p) = try next()
        return try ValueDecoder.unbox(t, v, path: p)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let (v, p) = try next()
        return try ValueDecoder(v, path: p).container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() throws -> UnkeyedDecodingContainer {
        let (v, p) = try next()
        return try ValueDecoder(v, path: p).unkeyedContainer()
    }
    mutating func superDecoder() throws -> Decoder {
        let (v, p) = try next()
        return ValueDecoder(v, path: p)
    }
}

struct SingleValueDecoder: SingleValueDecodingContainer {
    let value: JSONValue
    let codingPath: [CodingKey]

    func decodeNil() -> Bool { value == .null }
    func decode(_ t: Bool.Type) throws -> Bool { try ValueDecoder.bool(value, codingPath) }
    func decode(_ t: String.Type) throws -> String { try ValueDecoder.string(value, codingPath) }
    func decode(_ t: Double.Type) throws -> Double { try ValueDecoder.double(value, codingPath) }
    func decode(_ t: Float.Type) throws -> Float { Float(try ValueDecoder.double(value, codingPath)) }
    func decode(_ t: Int.Type) throws -> Int { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: Int8.Type) throws -> Int8 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: Int16.Type) throws -> Int16 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: Int32.Type) throws -> Int32 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: Int64.Type) throws -> Int64 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: UInt.Type) throws -> UInt { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: UInt8.Type) throws -> UInt8 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: UInt16.Type) throws -> UInt16 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: UInt32.Type) throws -> UInt32 { try ValueDecoder.integer(t, value, codingPath) }
    func decode(_ t: UInt64.Type) throws -> UInt64 { try ValueDecoder.integer(t, value, codingPath) }
    func decode<T: Decodable>(_ t: T.Type) throws -> T { try ValueDecoder.unbox(t, value, path: codingPath) }
}

extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        if let d = decoder as? ValueDecoder { self = d.value; return }
        throw DecodingError.typeMismatch(JSONValue.self, .init(codingPath: decoder.codingPath,
            debugDescription: "JSONValue decodes only with JSONValueDecoder"))
    }

    public func encode(to encoder: Encoder) throws {
        if let e = encoder as? NodeEncoder { e.node.storage = .value(self); return }
        throw EncodingError.invalidValue(self, .init(codingPath: encoder.codingPath,
            debugDescription: "JSONValue encodes only with JSONValueEncoder"))
    }
}
