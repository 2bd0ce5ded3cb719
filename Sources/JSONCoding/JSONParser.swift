/// Why a JSON text was refused: what and where (byte offset), for a one-line message.
public struct JSONError: Error, Equatable, CustomStringConvertible {
    public let message: String
    public let offset: Int?
    public init(_ message: String, offset: Int? = nil) { self.message = message; self.offset = offset }
    public var description: String {
        offset.map { "\(message) at byte \($0)" } ?? message
    }
}

/// A strict RFC 8259 parser for untrusted input (API request bodies, snapshot sections).
/// Bounded: nesting deeper than `maxDepth` is refused (no unbounded recursion), every string
/// must be valid UTF-8, duplicate object keys are refused (which one would win is ambiguous),
/// and nothing but whitespace may follow the value.
public struct JSONParser {
    public static let defaultMaxDepth = 64

    private let bytes: [UInt8]
    private var i = 0
    private let maxDepth: Int

    private init(_ bytes: [UInt8], maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    public static func parse(_ bytes: [UInt8], maxDepth: Int = defaultMaxDepth) throws(JSONError) -> JSONValue {
        var p = JSONParser(bytes, maxDepth: maxDepth)
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == bytes.count else { throw JSONError("unexpected data after the JSON value", offset: p.i) }
        return v
    }

    public static func parse(_ text: String, maxDepth: Int = defaultMaxDepth) throws(JSONError) -> JSONValue {
        try parse(Array(text.utf8), maxDepth: maxDepth)
    }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
    }

    private func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

    private mutating func value(depth: Int) throws(JSONError) -> JSONValue {
        guard depth < maxDepth else { throw JSONError("JSON nested deeper than \(maxDepth) levels", offset: i) }
        guard let c = peek() else { throw JSONError("unexpected end of JSON", offset: i) }
        switch c {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try number())
        default: throw JSONError("unexpected character '\(printable(c))' in JSON", offset: i)
        }
    }

    private func printable(_ c: UInt8) -> String {
        (0x20..<0x7F).contains(c) ? String(UnicodeScalar(c)) : "\\x" + String(c, radix: 16)
    }

    private mutating func literal(_ word: StaticString) throws(JSONError) {
        let start = i
        var ok = true
        word.withUTF8Buffer { w in
            if bytes.count - i >= w.count && bytes[i..<i + w.count].elementsEqual(w) { i += w.count } else { ok = false }
        }
        if !ok { throw JSONError("invalid literal in JSON", offset: start) }
    }

    private mutating func object(depth: Int) throws(JSONError) -> JSONValue {
        i += 1
        var o = JSONObject()
        skipSpace()
        if peek() == UInt8(ascii: "}") { i += 1; return .object(o) }
        while true {
            skipSpace()
            guard peek() == UInt8(ascii: "\"") else { throw JSONError("expected a string key in JSON object", offset: i) }
            let keyOffset = i
            let key = try string()
            if o[key] != nil { throw JSONError("duplicate key \"\(key)\" in JSON object", offset: keyOffset) }
            skipSpace()
            guard peek() == UInt8(ascii: ":") else { throw JSONError("expected ':' in JSON object", offset: i) }
            i += 1
            skipSpace()
            o[key] = try value(depth: depth + 1)
            skipSpace()
            switch peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "}"): i += 1; return .object(o)
            default: throw JSONError("expected ',' or '}' in JSON object", offset: i)
            }
        }
    }

    private mutating func array(depth: Int) throws(JSONError) -> JSONValue {
        i += 1
        var a: [JSONValue] = []
        skipSpace()
        if peek() == UInt8(ascii: "]") { i += 1; return .array(a) }
        while true {
            skipSpace()
            a.append(try value(depth: depth + 1))
            skipSpace()
            switch peek() {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "]"): i += 1; return .array(a)
            default: throw JSONError("expected ',' or ']' in JSON array", offset: i)
            }
        }
    }

    private mutating func number() throws(JSONError) -> JSONNumber {
        let start = i
        func digits(_ p: inout JSONParser) -> Int {
            let s = p.i
            while let c = p.peek(), c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") { p.i += 1 }
            return p.i - s
        }
        if peek() == UInt8(ascii: "-") { i += 1 }
        if peek() == UInt8(ascii: "0") {
            i += 1
        } else if digits(&self) == 0 {
            throw JSONError("invalid number in JSON", offset: start)
        }
        if peek() == UInt8(ascii: ".") {
            i += 1
            guard digits(&self) > 0 else { throw JSONError("invalid number in JSON", offset: start) }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            i += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { i += 1 }
            guard digits(&self) > 0 else { throw JSONError("invalid number in JSON", offset: start) }
        }
        // A number longer than this is not one anybody means (and keeps conversions cheap).
        guard i - start <= 64 else { throw JSONError("number too long in JSON", offset: start) }
        return JSONNumber(validated: String(decoding: bytes[start..<i], as: UTF8.self))
    }

    private mutating func hex4() throws(JSONError) -> UInt32 {
        guard bytes.count - i >= 4 else { throw JSONError("truncated \\u escape in JSON string", offset: i) }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw JSONError("invalid \\u escape in JSON string", offset: i)
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func string() throws(JSONError) -> String {
        let start = i
        i += 1
        var out: [UInt8] = []
        while true {
            guard let c = peek() else { throw JSONError("unterminated JSON string", offset: start) }
            i += 1
            switch c {
            case UInt8(ascii: "\""):
                // Validates UTF-8: a malformed sequence is refused rather than repaired.
                guard let s = String(validating: out, as: UTF8.self) else {
                    throw JSONError("JSON string is not valid UTF-8", offset: start)
                }
                return s
            case UInt8(ascii: "\\"):
                guard let e = peek() else { throw JSONError("unterminated JSON string", offset: start) }
                i += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4()
                    if (0xD800..<0xDC00).contains(scalar) {
                        // A high surrogate must be followed by an escaped low one.
                        guard bytes.count - i >= 2, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                            throw JSONError("unpaired surrogate in JSON string", offset: i)
                        }
                        i += 2
                        let low = try hex4()
                        guard (0xDC00..<0xE000).contains(low) else { throw JSONError("unpaired surrogate in JSON string", offset: i) }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw JSONError("unpaired surrogate in JSON string", offset: i)
                    }
                    guard let u = Unicode.Scalar(scalar) else { throw JSONError("invalid \\u escape in JSON string", offset: i) }
                    out.append(contentsOf: Array(String(Character(u)).utf8))
                default:
                    throw JSONError("invalid escape '\\\(printable(e))' in JSON string", offset: i - 1)
                }
            default:
                guard c >= 0x20 else { throw JSONError("control character in JSON string", offset: i - 1) }
                out.append(c)
            }
        }
    }
}
