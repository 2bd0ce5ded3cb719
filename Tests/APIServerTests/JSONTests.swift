import JSONCoding
import XCTest

final class JSONParserTests: XCTestCase {
    func parse(_ s: String) throws -> JSONValue { try JSONParser.parse(s) }

    func testParsesEveryKindOfValue() throws {
        let v = try parse(#" { "a": [1, -2, 3.5e2, true, false, null], "b": {"c": "d\n\u00e9\ud83d\ude00"} } "#)
        XCTAssertEqual(v["a"], .array([1, .number(JSONNumber(Int64(-2))), try parse("3.5e2"), true, false, .null]))
        if case .number(let n)? = v["a"]?.arrayValue?[2] { XCTAssertEqual(n.double, 350) }
        XCTAssertEqual(v["b"]?["c"], .string("d\né😀"))
    }

    func testSixtyFourBitIntegersAreExact() throws {
        let v = try parse("[18446744073709551615, -9223372036854775808, 9007199254740993]")
        XCTAssertEqual(v.arrayValue?[0].uint64Value, UInt64.max)
        XCTAssertEqual(v.arrayValue?[1].int64Value, Int64.min)
        XCTAssertEqual(v.arrayValue?[2].uint64Value, 9_007_199_254_740_993, "2^53+1 would round through a Double")
    }

    func testRefusesMalformedText() {
        let bad = ["", " ", "{", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
                   "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"a\u{01}\"", "[1] 2", "{\"a\":1}}",
                   "NaN", "Infinity", "'a'", "{1:2}", "[\"a\" \"b\"]"]
        for b in bad {
            XCTAssertThrowsError(try parse(b), "accepted \(b.debugDescription)")
        }
    }

    func testRefusesInvalidUTF8AndDuplicateKeys() {
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]))   // "\xC3(" is not UTF-8
        XCTAssertThrowsError(try JSONParser.parse([0x22, 0xFF, 0x22]))
        XCTAssertThrowsError(try parse(#"{"a": 1, "a": 2}"#)) { e in
            XCTAssertTrue("\(e)".contains("duplicate key"), "\(e)")
        }
    }

    func testNestingIsBounded() throws {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        XCTAssertThrowsError(try parse(deep)) { e in XCTAssertTrue("\(e)".contains("nested deeper"), "\(e)") }
        XCTAssertNoThrow(try parse(String(repeating: "[", count: 60) + String(repeating: "]", count: 60)))
    }

    func testWriterRoundTripsAndEscapes() throws {
        let v: JSONValue = .object(JSONObject([("q\"\\", .string("line\nnext\t\u{01}é")), ("n", .array([1, .null]))]))
        let text = v.serialized()
        XCTAssertEqual(text, #"{"q\"\\":"line\nnext\t\u0001é","n":[1,null]}"#)
        XCTAssertEqual(try parse(text), v)
        XCTAssertEqual(try parse(v.serialized(pretty: true)), v)
    }

    func testBase64() {
        for n in 0..<20 {
            let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            XCTAssertEqual(Base64.decode(Base64.encode(bytes)), bytes)
        }
        XCTAssertEqual(Base64.encode(Array("foobar".utf8)), "Zm9vYmFy")
        XCTAssertEqual(Base64.encode(Array("fo".utf8)), "Zm8=")
        for bad in ["Zm9", "Zm9=v", "Z===", "Zm8!", "Zm9=Zm8=", "Zm9vYmF="] {   // last: stray bits under padding
            XCTAssertNil(Base64.decode(bad), bad)
        }
    }
}

final class JSONCodableTests: XCTestCase {
    enum Mode: String, Codable { case a, b }
    struct Inner: Codable, Equatable { var x: UInt8; var name: String? }
    struct Sample: Codable, Equatable {
        var u64: UInt64
        var i32: Int32
        var flag: Bool
        var d: Double
        var bytes: [UInt8]
        var list: [Inner]
        var map: [String: Int]
        var mode: Mode
        var missing: Int?
        var nested: [[UInt16]]
    }

    let sample = Sample(u64: .max, i32: -5, flag: true, d: 0.1, bytes: [0, 1, 254, 255], list: [Inner(x: 7, name: nil),
                        Inner(x: 255, name: "n")], map: ["k": 3], mode: .b, missing: nil, nested: [[1, 2], []])

    func testRoundTrip() throws {
        let json = try JSONValueEncoder().encode(sample)
        XCTAssertEqual(json["u64"], .number(JSONNumber(UInt64.max)))
        XCTAssertEqual(json["bytes"], .string("AAH+/w=="), "byte arrays travel as base64")
        let back = try JSONValueDecoder().decode(Sample.self, from: try JSONParser.parse(json.bytes))
        XCTAssertEqual(back, sample)
    }

    func testDecodingErrorsNameThePath() throws {
        var json = try JSONValueEncoder().encode(sample)
        guard case .object(var o) = json, case .array(var list) = o["list"]!, case .object(var first) = list[0] else {
            return XCTFail("unexpected shape")
        }
        first["x"] = 256
        list[0] = .object(first)
        o["list"] = .array(list)
        json = .object(o)
        XCTAssertThrowsError(try JSONValueDecoder().decode(Sample.self, from: json)) { e in
            let line = JSONValueDecoder.describe(e)
            XCTAssertTrue(line.contains("256") && line.contains("list.[0].x"), line)
        }
        o["u64"] = "1"
        XCTAssertThrowsError(try JSONValueDecoder().decode(Sample.self, from: .object(o))) { e in
            XCTAssertTrue(JSONValueDecoder.describe(e).contains("expected an integer, found a string"), JSONValueDecoder.describe(e))
        }
        o["u64"] = nil
        XCTAssertThrowsError(try JSONValueDecoder().decode(Sample.self, from: .object(o))) { e in
            XCTAssertEqual(JSONValueDecoder.describe(e), "missing \"u64\"")
        }
    }

    func testNonFiniteDoublesAreRefused() {
        struct D: Codable { var v: Double }
        XCTAssertThrowsError(try JSONValueEncoder().encode(D(v: .infinity)))
        XCTAssertThrowsError(try JSONValueEncoder().encode(D(v: .nan)))
    }
}
