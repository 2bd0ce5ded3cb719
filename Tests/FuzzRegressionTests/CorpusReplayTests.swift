import FuzzHarness
import Foundation
import XCTest

/// Replays every committed fuzz input (the seed corpus in Fuzz/corpus/TARGET and the inputs that
/// once crashed swhv, in Fuzz/regressions/TARGET) through the same harness the fuzzer runs.
/// A regression crashes this test process or trips a harness check, which aborts it.
final class CorpusReplayTests: XCTestCase {
    static let fuzzRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz")

    func inputs(_ kind: String, _ target: FuzzTarget) -> [URL] {
        let dir = Self.fuzzRoot.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { dir.appendingPathComponent($0) }
    }

    func replay(_ target: FuzzTarget, file: StaticString = #filePath, line: UInt = #line) throws {
        let harness = FuzzHarness(target)
        let seeds = inputs("corpus", target), crashes = inputs("regressions", target)
        XCTAssertFalse(seeds.isEmpty, "no seed corpus for \(target) in Fuzz/corpus", file: file, line: line)
        for url in seeds + crashes {
            harness.run(Array(try Data(contentsOf: url)))
        }
    }

    func testLoaderCorpus() throws { try replay(.loader) }
    func testVirtioCorpus() throws { try replay(.virtio) }
    func testUartCorpus() throws { try replay(.uart) }
    func testPciCorpus() throws { try replay(.pci) }
    func testInterpreterCorpus() throws { try replay(.interp) }
    func testTranslatorCorpus() throws { try replay(.translator) }
    func testHTTPCorpus() throws { try replay(.http) }
    func testSnapshotCorpus() throws { try replay(.snapshot) }
}
