import CPUBackend
import Dispatch
import VMMemory
import X86Interpreter
import XCTest
import SwhvTestSupport

/// A fake 8259: a pending vector until acknowledged.
final class FakePIC: ExternalInterrupts {
    var pendingVector: UInt8?
    var acknowledged: [UInt8] = []
    var interruptPending: Bool { pendingVector != nil }
    func acknowledge() -> UInt8 {
        let v = pendingVector ?? 0xFF
        acknowledged.append(v)
        pendingVector = nil
        return v
    }
}

/// A fake timed device: raises the PIC line once its deadline passes.
final class FakeTimer: TimedDevice {
    let pic: FakePIC
    var deadline: UInt64
    var advances = 0
    init(pic: FakePIC, deadline: UInt64) { self.pic = pic; self.deadline = deadline }
    func advance(to now: UInt64) -> UInt64? {
        advances += 1
        if now >= deadline && deadline != .max {
            pic.pendingVector = 0x30
            deadline = .max
            return nil
        }
        return deadline == .max ? nil : deadline
    }
}

final class InterruptTests: XCTestCase {
    func kernelGuest(pic: FakePIC?, devices: [TimedDevice]) throws -> (GuestMemory, X86Interpreter) {
        let mem = try LongModeGuest.makeMemory()
        for p in [GuestPrograms.waitForInterrupt, GuestPrograms.countingHandler] {
            try mem.write(bytes: p.code, at: p.address)
        }
        for v in [0x30, 0x41] {
            try LongModeGuest.setGate(mem, vector: v, handler: GuestPrograms.countingHandler.address)
        }
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock(), externalInterrupts: pic, timedDevices: devices)
        cpu.setEntryState(LongModeGuest.entryState(rip: GuestPrograms.waitForInterrupt.address, rsp: 0x7F000))
        return (mem, cpu)
    }

    func testRealModeSoftwareInterruptUsesIVT() throws {
        let mem = try GuestMemory(size: 1 << 20)
        for p in [GuestPrograms.realModeInt, GuestPrograms.realModeHandler] { try mem.write(bytes: p.code, at: p.address) }
        try mem.write(UInt32(0x0000_0900), at: 0x21 * 4)   // 0000:0900
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(.realMode(cs: 0, ip: 0x800))
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 100), .haltedForever)
        XCTAssertEqual(cpu[.rbx] & 0xFFFF, 0x1235, "handler ran and IRET returned")
        XCTAssertEqual(cpu[.rcx] & 0xFFFF, 0x7000 - 6, "FLAGS, CS, IP pushed as 16-bit words")
        XCTAssertEqual(cpu[.rsp] & 0xFFFF, 0x7000)
    }

    func testProtectedModeInterruptGate() throws {
        let mem = try GuestMemory(size: 1 << 20)
        for p in [GuestPrograms.protectedInt, GuestPrograms.protectedHandler] { try mem.write(bytes: p.code, at: p.address) }
        let gdt: [UInt64] = [0, 0x00CF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF]
        for (i, d) in gdt.enumerated() { try mem.write(d, at: 0x8000 + UInt64(i * 8)) }
        let handler = GuestPrograms.protectedHandler.address
        let gate = (handler & 0xFFFF) | 0x08 << 16 | UInt64(0x8E) << 40 | ((handler >> 16) & 0xFFFF) << 48
        try mem.write(gate, at: 0x9000 + 0x20 * 8)
        var s = CPUEntryState()
        s.cr0 = 0x11
        s.rip = GuestPrograms.protectedInt.address
        s.rflags = 0x2   // IF clear, so the final HLT ends the run
        s.cs = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, db: true, g: true)
        let data = Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, db: true, g: true)
        s.ds = data; s.es = data; s.ss = data; s.fs = data; s.gs = data
        s.gdt = DescriptorTable(base: 0x8000, limit: 0x17)
        s.idt = DescriptorTable(base: 0x9000, limit: 0x7FF)
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        cpu.setEntryState(s)
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: VMControl(), maxInstructions: 100), .haltedForever)
        XCTAssertEqual(cpu[.rbx], 0xABCD, "handler ran and IRETD returned")
        XCTAssertEqual(cpu[.rcx], GuestPrograms.protectedInt.address + 7, "return EIP after INT")
        XCTAssertEqual(cpu[.rdx], 0x08, "CS in the frame")
        XCTAssertEqual(cpu[.rsi] & 0xFFFF_FFFF, 0x2, "EFLAGS in the frame")
        XCTAssertEqual(cpu[.rsp], 0x30000, "stack balanced after IRETD")
    }

    func testPICInterruptThroughLINT0WakesHLTFromTimedDevice() throws {
        let pic = FakePIC()
        let clock = VirtualClock()
        let timer = FakeTimer(pic: pic, deadline: clock.nowNs + 300_000)
        let (_, cpu) = try kernelGuest(pic: pic, devices: [timer])
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: VMControl()), .haltedForever)
        XCTAssertEqual(cpu[.r15], 1, "vector 0x30 handled once")
        XCTAssertEqual(pic.acknowledged, [0x30], "INTA cycle on the PIC")
        XCTAssertEqual(cpu[.r11], GuestPrograms.waitForInterrupt.address + 2, "interrupt returned after HLT")
        XCTAssertGreaterThan(timer.advances, 0)
    }

    func testMaskedInterruptsStayPendingUntilSTI() throws {
        let pic = FakePIC()
        pic.pendingVector = 0x30
        let (_, cpu) = try kernelGuest(pic: pic, devices: [])
        // IF is clear at entry: the first instruction (STI) must run before delivery, and the STI
        // shadow delays it by one more instruction (HLT), so the return address follows HLT.
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: VMControl()), .haltedForever)
        XCTAssertEqual(cpu[.r15], 1)
        XCTAssertEqual(cpu[.r11], GuestPrograms.waitForInterrupt.address + 2)
    }

    func testMSIToLocalAPIC() throws {
        let (_, cpu) = try kernelGuest(pic: nil, devices: [])
        // Software-enabling the APIC is the guest's job; fixed MSIs are accepted either way.
        cpu.deliverMSI(address: 0xFEE0_0000, data: 0x41)
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: VMControl()), .haltedForever)
        XCTAssertEqual(cpu[.r15], 1, "MSI vector 0x41 delivered")
    }

    func testMSIForAnotherCPUIsIgnored() throws {
        let (_, cpu) = try kernelGuest(pic: nil, devices: [])
        cpu.deliverMSI(address: 0xFEE0_5000, data: 0x41)   // destination APIC ID 5
        let control = VMControl()
        // Nothing can wake the CPU: stop it from another thread after a moment.
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(50)) { control.requestStop(.hostRequest) }
        XCTAssertEqual(cpu.run(io: RecordingIO(), control: control), .hostRequest)
        XCTAssertEqual(cpu[.r15], 0)
        XCTAssertTrue(cpu.isHalted)
    }
}
