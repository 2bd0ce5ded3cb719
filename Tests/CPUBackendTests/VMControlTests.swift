import CPUBackend
import Dispatch
import Synchronization
import XCTest

final class VMControlTests: XCTestCase {
    func testRemovedKickersAreNoLongerCalled() {
        let control = VMControl()
        let calls = Mutex<[Int]>([])
        let a = control.addKicker { calls.withLock { $0.append(1) } }
        _ = control.addKicker { calls.withLock { $0.append(2) } }
        control.kick()
        control.removeKicker(a)
        XCTAssertEqual(control.kickerCount, 1)
        control.requestStop(.hostRequest)
        control.post {}
        XCTAssertEqual(calls.withLock { $0 }, [1, 2, 2, 2])
    }
}

final class DeadlineKickerTests: XCTestCase {
    /// Generous hang watchdog, not a timing assertion.
    static let watchdog = DispatchTimeInterval.seconds(20)

    func testKicksOnceAtTheDeadline() {
        let clock = VirtualClock()
        let kicked = DispatchSemaphore(value: 0)
        let kicker = DeadlineKicker(clock: clock) { kicked.signal() }
        kicker.arm(clock.nowNs + 20_000_000)
        XCTAssertEqual(kicked.wait(timeout: .now() + Self.watchdog), .success)
        XCTAssertGreaterThanOrEqual(clock.nowNs, 20_000_000, "not before the deadline")
        XCTAssertEqual(kicker.kicks, 1)
    }

    func testALaterRequestReplacesAnEarlierOneAndNilCancels() {
        let clock = VirtualClock()
        let kicked = DispatchSemaphore(value: 0)
        let kicker = DeadlineKicker(clock: clock) { kicked.signal() }
        kicker.arm(clock.nowNs + 10_000_000_000)      // far away ...
        kicker.arm(clock.nowNs + 1_000_000)           // ... replaced by a near one
        XCTAssertEqual(kicked.wait(timeout: .now() + Self.watchdog), .success)
        kicker.arm(clock.nowNs + 1_000_000)
        kicker.arm(nil)
        XCTAssertEqual(kicked.wait(timeout: .now() + .milliseconds(200)), .timedOut, "cancelled")
        XCTAssertEqual(kicker.kicks, 1)
    }

    func testADeadlineAtTheEndOfTimeNeverFires() {
        let clock = VirtualClock()
        let kicked = DispatchSemaphore(value: 0)
        let kicker = DeadlineKicker(clock: clock) { kicked.signal() }
        kicker.arm(.max)
        XCTAssertEqual(kicked.wait(timeout: .now() + .milliseconds(100)), .timedOut)
        XCTAssertEqual(kicker.kicks, 0)
    }
}
