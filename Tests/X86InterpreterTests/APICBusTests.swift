import CPUBackend
import Foundation
import VMMemory
import XCTest
@testable import X86Interpreter

/// The APIC bus between the interpreter's vCPUs: who an IPI or MSI reaches (physical and logical
/// destinations, shorthands, lowest priority, absent IDs), what a vCPU's inbox keeps, and INIT/SIPI
/// as the application processor sees them.
final class APICBusTests: XCTestCase {
    /// Vectors and signals each of `n` inboxes got from one message.
    func deliveries(_ m: InterruptMessage, from sender: Int? = nil, cpus n: Int = 4,
                    setup: (APICBus) -> Void = { _ in }) -> [InterruptInbox.Mail?] {
        let bus = APICBus(count: n)
        setup(bus)
        bus.send(m, from: sender)
        return bus.inboxes.map { $0.take() }
    }

    func fixed(_ v: UInt8, dest: UInt8, logical: Bool = false, shorthand: UInt8 = 0) -> InterruptMessage {
        InterruptMessage(vector: v, mode: InterruptMessage.fixed, destination: dest, logical: logical, shorthand: shorthand)
    }

    func reached(_ mails: [InterruptInbox.Mail?]) -> [Int] { mails.indices.filter { mails[$0] != nil } }

    func testPhysicalDestinationsBroadcastAndAbsentIDs() {
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 2))), [2])
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0xFF))), [0, 1, 2, 3])
        let bus = APICBus(count: 2)
        bus.send(fixed(0x40, dest: 9), from: 0)
        XCTAssertEqual(bus.inboxes.compactMap { $0.take() }.count, 0, "an absent APIC ID reaches nobody")
        XCTAssertEqual(bus.undeliverable.load(ordering: .relaxed), 1)
    }

    func testShorthands() {
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0, shorthand: 1), from: 1)), [1])
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0, shorthand: 2), from: 1)), [0, 1, 2, 3])
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0, shorthand: 3), from: 1)), [0, 2, 3])
    }

    func testLogicalFlatAndClusterModesFollowWhatEachAPICProgrammed() {
        // Flat: LDR bit n for CPU n (what Linux's flat driver writes).
        let flat: (APICBus) -> Void = { bus in
            for i in 0..<4 { bus.update(cpu: i, id: UInt32(i), ldr: UInt32(1 << i) << 24, dfr: 0xFFFF_FFFF) }
        }
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0b1010, logical: true), setup: flat)), [1, 3])
        // Cluster: cluster 1 holds CPUs 2 and 3 (bits 0 and 1).
        let cluster: (APICBus) -> Void = { bus in
            for i in 0..<4 {
                bus.update(cpu: i, id: UInt32(i), ldr: UInt32(((i / 2) << 4) | (1 << (i % 2))) << 24, dfr: 0x0FFF_FFFF)
            }
        }
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0x12, logical: true), setup: cluster)), [3])
        XCTAssertEqual(reached(deliveries(fixed(0x40, dest: 0x03, logical: true), setup: cluster)), [0, 1])
    }

    func testLowestPriorityGoesToExactlyOneTarget() {
        var m = fixed(0x41, dest: 0xFF)
        m.mode = InterruptMessage.lowestPriority
        XCTAssertEqual(reached(deliveries(m)).count, 1)
    }

    func testMSIAddressAndDataDecode() throws {
        let m = try XCTUnwrap(InterruptMessage.msi(address: 0xFEE0_3004, data: 0xC031))
        XCTAssertEqual(m.destination, 3)
        XCTAssertTrue(m.logical)
        XCTAssertEqual(m.vector, 0x31)
        XCTAssertTrue(m.level)
        XCTAssertNil(InterruptMessage.msi(address: 0xFED0_0000, data: 0x31), "outside the interrupt window")
    }

    func testInboxKeepsVectorsTriggerModesAndINITBeforeSIPI() {
        let inbox = InterruptInbox()
        var notified = 0
        inbox.notify = { notified += 1 }
        inbox.post(InterruptMessage(vector: 0x30, mode: InterruptMessage.fixed, level: true))
        inbox.post(InterruptMessage(vector: 0x31, mode: InterruptMessage.fixed))
        inbox.post(InterruptMessage(vector: 0x08, mode: InterruptMessage.startup))      // before INIT: dropped by it
        inbox.post(InterruptMessage(vector: 0, mode: InterruptMessage.initMode))
        inbox.post(InterruptMessage(vector: 0, mode: InterruptMessage.initMode, level: true, assert: false))  // de-assert: sync only
        inbox.post(InterruptMessage(vector: 0x09, mode: InterruptMessage.startup))
        inbox.post(InterruptMessage(vector: 0, mode: InterruptMessage.smi))             // not modelled
        XCTAssertEqual(notified, 5)
        let mail = try? XCTUnwrap(inbox.take())
        XCTAssertEqual(mail?.irr.word(1), 0x3 << 16, "vectors 0x30 and 0x31")
        XCTAssertEqual(mail?.tmr.word(1), 0x1 << 16, "only 0x30 was level-triggered")
        XCTAssertEqual(mail?.initSignal, true)
        XCTAssertEqual(mail?.startup, 0x09)
        XCTAssertNil(inbox.take(), "taken once")
    }

    /// An application processor waits for a start-up IPI; INIT resets a running one back to waiting;
    /// SIPI starts it in real mode at vector << 12.
    func testApplicationProcessorWaitsForSIPIAndINITResetsIt() throws {
        let mem = try GuestMemory(size: 1 << 20)
        let cpus = InterpreterCPUs(count: 2, memory: mem, clock: VirtualClock(), externalInterrupts: nil,
                                   timedDevices: [], deviceLock: nil, levelEOI: nil, translation: .off)
        let ap = cpus.cpus[1]
        XCTAssertTrue(ap.waitingForStartup)
        XCTAssertEqual(ap.apic.id, 1)
        XCTAssertEqual(ap.apic.baseMSR & 0x100, 0, "not the bootstrap processor")
        XCTAssertEqual(cpus.cpus[0].apic.baseMSR & 0x100, 0x100)
        let bus = cpus.system.bus
        bus.send(InterruptMessage(vector: 0x12, mode: InterruptMessage.startup, destination: 1), from: 0)
        ap.takeMail()
        XCTAssertFalse(ap.waitingForStartup)
        XCTAssertEqual(ap.segs[Seg.cs].selector, 0x1200)
        XCTAssertEqual(ap.segs[Seg.cs].base, 0x12000)
        XCTAssertEqual(ap.rip, 0)
        // A second SIPI to a running CPU is ignored.
        bus.send(InterruptMessage(vector: 0x34, mode: InterruptMessage.startup, destination: 1), from: 0)
        ap.takeMail()
        XCTAssertEqual(ap.segs[Seg.cs].selector, 0x1200)
        // INIT: back to waiting, APIC ID kept.
        bus.send(InterruptMessage(vector: 0, mode: InterruptMessage.initMode, destination: 1), from: 0)
        ap.takeMail()
        XCTAssertTrue(ap.waitingForStartup)
        XCTAssertEqual(ap.apic.id, 1)
    }

    /// A write by one vCPU to a page another vCPU decoded code from makes that code stale there.
    func testAWriteOnOneVCPUInvalidatesCodeDecodedByAnother() throws {
        let mem = try GuestMemory(size: 1 << 20)
        let cpus = InterpreterCPUs(count: 2, memory: mem, clock: VirtualClock(), externalInterrupts: nil,
                                   timedDevices: [], deviceLock: nil, levelEOI: nil, translation: .off)
        let (a, b) = (cpus.cpus[0], cpus.cpus[1])
        let code = cpus.system.code
        let page = 0x5000 >> 12
        // b fills a writable TLB entry for the page (real mode: linear = physical).
        try b.write(UInt64(0x5000), UInt8(0x90))
        XCTAssertEqual(b.tlbSlot(0x5000).pointee.wtag, 0x5000, "b may write the page directly")
        let gen = code.markCode(page).gen   // a decodes from it
        XCTAssertNotEqual(b.tlbSlot(0x5000).pointee.wtag, 0x5000, "marking withdrew b's write permission")
        try b.write(UInt64(0x5010), UInt8(0xC3))
        XCTAssertNotEqual(code.pageGen[page], gen, "b's write invalidated what a decoded")
        XCTAssertEqual(code.codePages[page], 0)
        _ = a
    }
}
