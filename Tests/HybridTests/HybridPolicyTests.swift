@testable import Hybrid
import XCTest

/// The adaptive policy: which user-mode episodes go native.
final class HybridPolicyTests: XCTestCase {
    func testNewAddressSpacesStartInSoftware() {
        let p = HybridPolicy(config: HybridPolicyConfig())
        XCTAssertFalse(p.prefersNative(1))
    }

    func testLongSoftwareEpisodesGoNativeAndShortNativeOnesComeBack() {
        var c = HybridPolicyConfig()
        c.minEpisodeInstructions = 50_000
        c.nativeInstructionsPerMicrosecond = 1000
        let p = HybridPolicy(config: c)
        p.recordSoftware(7, instructions: 10_000)
        XCTAssertFalse(p.prefersNative(7), "a short episode stays in software")
        p.recordSoftware(7, instructions: 1_000_000)
        XCTAssertTrue(p.prefersNative(7), "a long one makes the next go native")
        XCTAssertFalse(p.prefersNative(8), "per address space")
        for _ in 0..<20 { p.recordNative(7, workNs: 1_000) }   // 1 us of native work = 1000 instructions
        XCTAssertFalse(p.prefersNative(7), "native episodes that only hit system calls go back to software")
        for _ in 0..<20 { p.recordNative(7, workNs: 5_000_000) }
        XCTAssertTrue(p.prefersNative(7))
    }

    func testModelSpecificCodeStaysInSoftware() {
        let p = HybridPolicy(config: HybridPolicyConfig())
        p.recordSoftware(3, instructions: 10_000_000)
        XCTAssertTrue(p.prefersNative(3))
        p.markSoftwareOnly(3)
        XCTAssertFalse(p.prefersNative(3))
        p.recordSoftware(3, instructions: 10_000_000)
        XCTAssertFalse(p.prefersNative(3), "for good")
    }

    func testPenaltyKeepsAnAddressSpaceInSoftwareForAWhile() {
        let p = HybridPolicy(config: HybridPolicyConfig())
        p.recordSoftware(5, instructions: 10_000_000)
        p.penalize(5)
        XCTAssertFalse(p.prefersNative(5))
        p.recordSoftware(5, instructions: 10_000_000)
        XCTAssertFalse(p.prefersNative(5), "one long episode is not enough after a failure")
        for _ in 0..<HybridPolicy.penaltyEpisodes { p.recordSoftware(5, instructions: 10_000_000) }
        XCTAssertTrue(p.prefersNative(5))
    }

    func testForcedModes() {
        var c = HybridPolicyConfig()
        c.mode = .native
        XCTAssertTrue(HybridPolicy(config: c).prefersNative(9))
        c.mode = .software
        let p = HybridPolicy(config: c)
        p.recordSoftware(9, instructions: 1 << 40)
        XCTAssertFalse(p.prefersNative(9))
    }

    func testEnvironmentOverridesAndTheirErrors() {
        func parse(_ env: [String: String]) -> Result<HybridPolicyConfig, HybridConfigError> {
            HybridPolicyConfig.fromEnvironment { env[$0] }
        }
        XCTAssertEqual(try parse([:]).get(), HybridPolicyConfig())
        XCTAssertEqual(try parse(["SWHV_HYBRID_POLICY": "native"]).get().mode, .native)
        XCTAssertEqual(try parse(["SWHV_HYBRID_MIN_INSNS": "12345"]).get().minEpisodeInstructions, 12345)
        XCTAssertEqual(parse(["SWHV_HYBRID_POLICY": "fast"]),
                       .failure(.invalid("SWHV_HYBRID_POLICY='fast' is not one of adaptive, native, software")))
        XCTAssertEqual(parse(["SWHV_HYBRID_MIN_INSNS": "-3"]),
                       .failure(.invalid("SWHV_HYBRID_MIN_INSNS='-3' is not a number of instructions")))
    }
}
