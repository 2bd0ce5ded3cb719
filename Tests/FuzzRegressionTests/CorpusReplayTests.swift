import FuzzHarness
import Foundation
import XCTest

/// Replays every committed fuzz input (the seed corpus in Fuzz/corpus/TARGET and the inputs that
/// once crashed or hung swhv, in Fuzz/regressions/TARGET) through the same harness the fuzzer
/// runs. Each input must break none of the harness's properties and finish under a watchdog (a
/// regressed hang fails the test instead of hanging it); each corpus must still reach what it
/// was written to reach (kernels load, requests complete, instructions run, bytes go out).
final class CorpusReplayTests: XCTestCase {
    static let fuzzRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz")
    /// Far above what any input takes (the slowest, a 64 MiB loader input, takes well under a
    /// second): only a hang reaches it.
    static let watchdogSeconds = 120.0

    func inputs(_ kind: String, _ target: FuzzTarget) -> [URL] {
        let dir = Self.fuzzRoot.appendingPathComponent(kind).appendingPathComponent(target.rawValue)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { dir.appendingPathComponent($0) }
    }

    /// Runs one input on its own thread; nil (and a failure) when it does not finish in time.
    func runWatched(_ harness: FuzzHarness, _ url: URL) throws -> FuzzOutcome? {
        let bytes = Array(try Data(contentsOf: url))
        let done = DispatchSemaphore(value: 0)
        let result = OutcomeBox()
        nonisolated(unsafe) let h = harness
        Thread { result.value = h.run(bytes); done.signal() }.start()
        guard done.wait(timeout: .now() + Self.watchdogSeconds) == .success else {
            XCTFail("\(url.lastPathComponent) did not finish in \(Int(Self.watchdogSeconds)) s: a hang")
            return nil
        }
        return result.value
    }

    /// Replays `target`'s inputs; returns the progress counters summed over the seed corpus.
    @discardableResult
    func replay(_ target: FuzzTarget, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Int] {
        let harness = FuzzHarness(target)
        let seeds = inputs("corpus", target), regressions = inputs("regressions", target)
        XCTAssertFalse(seeds.isEmpty, "no seed corpus for \(target) in Fuzz/corpus", file: file, line: line)
        var total: [String: Int] = [:]
        for url in seeds + regressions {
            // A hung harness is still busy on its thread: the rest of this target cannot run.
            guard let outcome = try runWatched(harness, url) else { break }
            XCTAssertEqual(outcome.violations, [], "\(target)/\(url.lastPathComponent)", file: file, line: line)
            if seeds.contains(url) { total.merge(outcome.progress, uniquingKeysWith: +) }
        }
        return total
    }

    func testLoaderCorpus() throws {
        let p = try replay(.loader)
        XCTAssertGreaterThan(p["loaded"] ?? 0, 0, "no seed kernel loads: the corpus no longer reaches the loader's success path")
        XCTAssertGreaterThan(p["extracted"] ?? 0, 0, "no wrapped payload decompresses")
    }

    func testVirtioCorpus() throws {
        let p = try replay(.virtio)
        XCTAssertGreaterThan(p["completions"] ?? 0, 0, "no seed completes a request")
    }

    func testNetCorpus() throws {
        let p = try replay(.net)
        XCTAssertGreaterThan(p["delivered"] ?? 0, 0, "no seed delivers a host frame to the guest")
        XCTAssertGreaterThan(p["sent"] ?? 0, 0, "no seed sends a frame to the host")
    }

    func testUartCorpus() throws {
        let p = try replay(.uart)
        XCTAssertGreaterThan(p["bytesOut"] ?? 0, 0, "no seed transmits")
        XCTAssertGreaterThan(p["received"] ?? 0, 0, "no seed receives")
    }

    func testPciCorpus() throws {
        let p = try replay(.pci)
        XCTAssertGreaterThan(p["configHits"] ?? 0, 0, "no seed finds the virtio function in config space")
    }

    func testInterpreterCorpus() throws {
        let p = try replay(.interp)
        XCTAssertGreaterThan(p["instructions"] ?? 0, 1000, "the seeds barely run")
    }

    func testTranslatorCorpus() throws {
        let p = try replay(.translator)
        XCTAssertGreaterThan(p["instructions"] ?? 0, 1000, "the seeds barely run")
        XCTAssertGreaterThan(p["translated"] ?? 0, 1000, "the seeds barely run translated code")
    }

    func testHTTPCorpus() throws {
        let p = try replay(.http)
        XCTAssertGreaterThan(p["operations"] ?? 0, 3, "no seed request reaches a VM operation")
        XCTAssertGreaterThan(p["closed"] ?? 0, 0, "no seed is refused by the parser")
    }

    func testSnapshotCorpus() throws {
        let p = try replay(.snapshot)
        XCTAssertGreaterThan(p["loaded"] ?? 0, 1, "no seed state file is accepted whole")
        XCTAssertGreaterThan(p["containers"] ?? 0, 0, "no seed container parses")
    }

    /// The harness's checks can fail: a violated property is reported, not swallowed.
    func testAViolationIsReported() {
        let checks = FuzzChecks()
        checks.expect(true, "fine")
        checks.expect(1 + 1 == 3, "arithmetic")
        XCTAssertEqual(checks.violations, ["arithmetic"])
    }
}

final class OutcomeBox: @unchecked Sendable {
    var value: FuzzOutcome?
}
