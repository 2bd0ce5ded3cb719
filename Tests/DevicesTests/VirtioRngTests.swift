import XCTest
import VMMemory
import VMCore
@testable import Devices

/// virtio-rng: requests filled from the entropy source, and the rate limit on the VM clock.
final class VirtioRngTests: XCTestCase {
    /// A deterministic "entropy source" so tests can check exactly which bytes landed.
    final class CountingSource {
        var next: UInt8 = 1
        var calls = 0
        func fill(_ b: UnsafeMutableRawBufferPointer) -> Bool {
            calls += 1
            for i in 0..<b.count { b[i] = next; next &+= 1 }
            return true
        }
    }

    /// VM time the test moves by hand.
    final class ManualClock {
        var ns: UInt64 = 1_000_000_000
    }

    final class Rig {
        let clock = ManualClock()
        let source = CountingSource()
        let rng: VirtioRng
        let harness: VirtioPciHarness
        init() throws {
            let s = source, c = clock
            rng = VirtioRng(now: { c.ns }, source: { s.fill($0) })
            harness = try VirtioPciHarness(device: rng, memorySize: 4 << 20)
            XCTAssertTrue(harness.setUp())
        }
        /// Publishes one device-writable buffer of `length` at `address` as chain `head`, kicks.
        func request(head: UInt16, address: UInt64, length: UInt32) {
            harness.ring.setDescriptor(head, address: address, length: length, flags: 2)
            harness.ring.publish(head)
            harness.kick()
        }
    }

    func testRequestIsFilledFromTheSourceAndInterrupts() throws {
        let rig = try Rig()
        rig.harness.ring.setUsedEvent(0)
        rig.request(head: 0, address: 0x40000, length: 64)
        XCTAssertEqual(rig.harness.ring.usedIdx, 1)
        XCTAssertEqual(rig.harness.ring.usedElement(0).length, 64)
        XCTAssertEqual(try rig.harness.memory.readBytes(at: 0x40000, count: 64), (1...64).map { UInt8($0) })
        XCTAssertEqual(rig.harness.interrupts.msis.count, 1)
        XCTAssertEqual(rig.rng.bytesServed, 64)
    }

    func testHostRandomReallyFills() {
        var a = [UInt8](repeating: 0, count: 256), b = a
        XCTAssertTrue(a.withUnsafeMutableBytes { VirtioRng.hostRandom($0) })
        XCTAssertTrue(b.withUnsafeMutableBytes { VirtioRng.hostRandom($0) })
        XCTAssertNotEqual(a, b)
        XCTAssertNotEqual(a, [UInt8](repeating: 0, count: 256))
    }

    /// Past the burst the request waits in the ring; time (here: `advance` with a later VM time)
    /// lets it through with what the bucket earned at 1 MiB/s.
    func testRateLimitHoldsARequestUntilTokensAccumulate() throws {
        let rig = try Rig()
        let burst = UInt32(VirtioRng.burstBytes)
        rig.request(head: 0, address: 0x40000, length: burst)
        XCTAssertEqual(rig.harness.ring.usedElement(0).length, burst, "the burst is served at once")
        rig.request(head: 1, address: 0x60000, length: 4096)
        XCTAssertEqual(rig.harness.ring.usedIdx, 1, "the bucket is empty: the request waits")
        XCTAssertTrue(rig.rng.isWaiting)
        let now = rig.clock.ns
        let deadline = try XCTUnwrap(rig.rng.advance(to: now))
        XCTAssertGreaterThan(deadline, now, "a timer is armed")
        XCTAssertLessThanOrEqual(deadline, now + 1_000_000, "for when 1 KiB has been earned")
        // 2 ms later: ~2 KiB earned (1 MiB/s), enough to resume.
        rig.clock.ns = now + 2_000_000
        XCTAssertNil(rig.rng.advance(to: rig.clock.ns))
        XCTAssertEqual(rig.harness.ring.usedIdx, 2)
        let served = rig.harness.ring.usedElement(1).length
        XCTAssertGreaterThanOrEqual(served, UInt32(VirtioRng.resumeBytes))
        XCTAssertLessThanOrEqual(served, 4096)
    }

    /// A guest reading in a loop gets at most the burst plus the rate over any stretch of VM time.
    func testAGreedyGuestGetsNoMoreThanTheRate() throws {
        let rig = try Rig()
        let start = rig.clock.ns
        var head: UInt16 = 0
        let end = start + 500_000_000   // half a second of VM time
        while rig.clock.ns < end {
            // Keep two big requests outstanding, as a greedy driver would, asking again at once.
            while rig.harness.ring.availIdx &- rig.harness.ring.usedIdx < 2 {
                rig.request(head: head % 16, address: 0x40000 + UInt64(head % 16) * 0x10000, length: 0x10000)
                head &+= 1
            }
            rig.clock.ns = max(rig.clock.ns + 1000, rig.rng.advance(to: rig.clock.ns) ?? 0)
        }
        let limit = VirtioRng.burstBytes + VirtioRng.bytesPerSecond / 2 + VirtioRng.resumeBytes
        XCTAssertLessThanOrEqual(rig.rng.bytesServed, limit)
        XCTAssertGreaterThan(rig.rng.bytesServed, VirtioRng.burstBytes + VirtioRng.bytesPerSecond / 4, "it does progress")
    }

    func testChainWithoutWritableSpaceCompletesEmpty() throws {
        let rig = try Rig()
        rig.harness.ring.setDescriptor(0, address: 0x40000, length: 64, flags: 0)
        rig.harness.ring.publish(0)
        rig.harness.kick()
        XCTAssertEqual(rig.harness.ring.usedIdx, 1)
        XCTAssertEqual(rig.harness.ring.usedElement(0).length, 0)
        XCTAssertEqual(rig.source.calls, 0)
    }

    func testRestoredDeviceServesARequestLeftWaitingInTheRing() throws {
        let rig = try Rig()
        rig.request(head: 0, address: 0x40000, length: UInt32(VirtioRng.burstBytes))
        rig.request(head: 1, address: 0x60000, length: 64)
        XCTAssertEqual(rig.harness.ring.usedIdx, 1)
        let c = rig.clock
        let fresh = VirtioRng(now: { c.ns })
        fresh.attach(to: rig.harness.transport)
        try fresh.restoreDeviceState(VirtioDeviceState.none)
        XCTAssertNil(fresh.advance(to: c.ns))
        XCTAssertEqual(rig.harness.ring.usedIdx, 2)
    }
}
