import Foundation
import XCTest
import CPUBackend
import VMMemory
@testable import Devices

/// As a snapshot file would carry it: encoded and decoded again (JSON here; any Codable encoder).
func throughJSON<T: Codable>(_ value: T) throws -> T {
    try JSONDecoder().decode(T.self, from: JSONEncoder().encode(value))
}

/// Device state captured mid-operation, carried through an encoder and restored into a freshly built
/// device: the copy must then behave exactly as the original does under the same guest accesses.
final class DeviceStateTests: XCTestCase {
    // MARK: UART

    final class UartRig {
        let irqs = RecordingInterruptController()
        let out = SerialOutputCollector()
        let uart: Uart16550
        init() { uart = Uart16550(irq: IRQLine(controller: irqs, gsi: 4), output: out) }
        func read(_ r: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: uart.read(offset: r, size: 1)) }
        func write(_ r: UInt64, _ v: UInt8) { uart.write(offset: r, size: 1, value: UInt64(v)) }
        /// What the guest sees over a fixed sequence: IIR, LSR, every RBR byte, then a transmit.
        func drain() -> [UInt8] {
            var seen = [read(2), read(5)]
            for _ in 0..<12 { seen += [read(0), read(5), read(2)] }
            write(0, 0x21)
            return seen + [read(2), read(5), irqs.level(4) ? 1 : 0]
        }
    }

    func testUARTWithBytesInItsFIFOContinuesIdentically() throws {
        let a = UartRig()
        a.write(3, 0x80); a.write(0, 0x01); a.write(1, 0x00); a.write(3, 0x03)    // 115200 8N1
        a.write(2, 0xC7)                                                          // FIFOs on
        a.write(4, 0x0B)                                                          // DTR RTS OUT2
        a.write(1, 0x03)                                                          // RDI + THRI
        a.uart.enqueue(Array("hello, fifo".utf8))
        XCTAssertEqual([a.read(0), a.read(0), a.read(0)], Array("hel".utf8))
        let state = try throughJSON(a.uart.captureState())
        XCTAssertEqual(state.receiveFIFO, Array("lo, fifo".utf8))

        let b = UartRig()
        try b.uart.restoreState(state)
        XCTAssertEqual(b.uart.captureState(), a.uart.captureState())
        XCTAssertTrue(b.irqs.events.isEmpty, "restoring drives no interrupt line")
        XCTAssertEqual(b.drain(), a.drain())
        XCTAssertEqual(b.out.bytes, [0x21])
    }

    func testUARTStateThatCannotBeIsRefused() throws {
        var state = UartRig().uart.captureState()
        state.receiveFIFO = [UInt8](repeating: 0x41, count: Uart16550.receiveCapacity + 1)
        let rig = UartRig()
        XCTAssertThrowsError(try rig.uart.restoreState(state)) {
            guard case .invalid = $0 as? DeviceStateError else { return XCTFail("\($0)") }
        }
        XCTAssertEqual(rig.uart.receiveCount, 0, "nothing restored")
        state = UartRig().uart.captureState()
        state.version = 99
        XCTAssertThrowsError(try rig.uart.restoreState(state)) {
            XCTAssertEqual($0 as? DeviceStateError,
                           .unsupportedVersion(device: "16550 UART", found: 99, supported: 1))
        }
    }

    // MARK: i8042

    func testI8042WaitingForACommandParameterContinuesIdentically() throws {
        func make() -> (I8042, RecordingInterruptController) {
            let irqs = RecordingInterruptController()
            return (I8042(onReset: {}, keyboardIRQ: IRQLine(controller: irqs, gsi: 1)), irqs)
        }
        let (a, _) = make()
        a.writeData(0xFF)                 // keyboard reset: ACK and self-test result queued
        _ = a.readData()                  // guest took the ACK; 0xAA still waiting
        a.writeCommand(0xD1)              // write output port: the parameter comes next
        let state = try throughJSON(a.captureState())
        let (b, bIRQs) = make()
        try b.restoreState(state)
        XCTAssertTrue(bIRQs.events.isEmpty)
        for device in [a, b] { device.writeData(0x03) }   // the parameter
        XCTAssertEqual(b.outputPort, a.outputPort)
        XCTAssertEqual([b.readStatus(), b.readData(), b.readStatus()], [a.readStatus(), a.readData(), a.readStatus()])
        XCTAssertEqual(b.captureState(), a.captureState())
    }

    // MARK: 8259 pair

    func testPICWithAnInterruptInServiceAndAnotherPendingContinuesIdentically() throws {
        let a = try PlatformPicRig()
        a.initLikeLinux()
        a.pulse(8)                        // RTC: slave IR0 via master IR2
        a.pulse(4)
        _ = a.pic.acknowledge()           // the RTC's (IR2 outranks IR4); COM1 stays pending
        let state = try throughJSON(a.pic.captureState())
        let b = try PlatformPicRig()
        try b.pic.restoreState(state)
        XCTAssertEqual(b.pic.interruptPending, a.pic.interruptPending)
        for rig in [a, b] { rig.eoiMaster() }
        XCTAssertEqual(b.pic.acknowledge(), a.pic.acknowledge())
        XCTAssertEqual([b.readISR(), b.readISR(slave: true), b.readIRR()], [a.readISR(), a.readISR(slave: true), a.readIRR()])
        XCTAssertEqual(b.pic.captureState(), a.pic.captureState())
    }

    func testPICStateWithChipsSwappedIsRefused() throws {
        var state = try PlatformPicRig().pic.captureState()
        swap(&state.master, &state.slave)
        XCTAssertThrowsError(try PlatformPicRig().pic.restoreState(state))
    }

    // MARK: 8254 PIT

    func testPITMidCountContinuesIdentically() throws {
        let a = try PlatformPitRig()
        a.program(channel: 0, control: 0x34, count: 11932)      // mode 2, ~100 Hz
        a.program(channel: 2, control: 0xB0, count: 5000)       // mode 0 one-shot on the speaker channel
        a.outb(0x61, 0x01)                                      // gate 2 high
        a.clock.ns = 25_000_000
        _ = a.pit.advance(to: a.clock.ns)
        a.outb(0x43, 0x00)                                      // latch channel 0; LSB read, MSB not yet
        _ = a.inb(0x40)
        let ticksBefore = a.irq0Count
        let state = try throughJSON(a.pit.captureState())

        let b = try PlatformPitRig()
        b.clock.ns = a.clock.ns                                 // the VM clock continues from the capture
        try b.pit.restoreState(state)
        XCTAssertEqual(b.inb(0x40), a.inb(0x40), "the latched MSB survived")
        for t: UInt64 in [26_000_000, 31_000_000, 47_500_000, 90_000_000] {
            a.clock.ns = t; b.clock.ns = t
            XCTAssertEqual(b.pit.advance(to: t), a.pit.advance(to: t), "next deadline at \(t)")
            XCTAssertEqual(b.latchedCount(channel: 0), a.latchedCount(channel: 0))
            XCTAssertEqual(b.latchedCount(channel: 2), a.latchedCount(channel: 2))
            XCTAssertEqual(b.inb(0x61) & 0x20, a.inb(0x61) & 0x20, "channel 2 OUT")
        }
        XCTAssertGreaterThan(b.irq0Count, 0)
        XCTAssertEqual(b.irq0Count, a.irq0Count - ticksBefore, "the copy fires the same ticks after the capture")
    }

    func testPITStateThatWouldDivideByZeroIsRefused() throws {
        var state = try PlatformPitRig().pit.captureState()
        state.channels[0].reload = 0
        XCTAssertThrowsError(try PlatformPitRig().pit.restoreState(state)) {
            guard case .invalid = $0 as? DeviceStateError else { return XCTFail("\($0)") }
        }
    }

    // MARK: CMOS RTC

    func testRTCWithPeriodicInterruptsAndPendingFlagsContinuesIdentically() throws {
        let a = try PlatformRtcRig()
        a.write(0x0A, 0x2A)                                     // 64 Hz
        a.write(0x0B, 0x42)                                     // PIE, 24 h
        a.write(0x01, 0xFF); a.write(0x03, 0xFF); a.write(0x05, 0xFF)   // alarm every second
        a.clock.ns = 40_000_000
        _ = a.rtc.advance(to: a.clock.ns)
        a.write(0x40, 0x77)                                     // a CMOS RAM byte
        let state = try throughJSON(a.rtc.captureState())

        let b = try PlatformRtcRig()
        b.clock.ns = a.clock.ns
        try b.rtc.restoreState(state)
        XCTAssertEqual(b.read(0x0C), a.read(0x0C), "pending flags")
        for t: UInt64 in [41_000_000, 60_000_000, 1_500_000_000, 2_100_000_000] {
            a.clock.ns = t; b.clock.ns = t
            XCTAssertEqual(b.rtc.advance(to: t), a.rtc.advance(to: t), "next deadline at \(t)")
            XCTAssertEqual(b.read(0x0C), a.read(0x0C))
            XCTAssertEqual(b.timeRegisters(), a.timeRegisters())
        }
        XCTAssertEqual(b.read(0x40), 0x77)
    }

    func testRTCHeldTimeThatIsNoDateIsRefused() throws {
        let rig = try PlatformRtcRig()
        var state = rig.rtc.captureState()
        state.heldTime = RtcDateTime(year: Int.max, month: 1, day: 1, hour: 0, minute: 0, second: 0)
        XCTAssertThrowsError(try rig.rtc.restoreState(state))
    }

    // MARK: virtio-pci and virtio-blk

    /// A guest-memory copy: the restored device runs on the RAM as it was at the capture.
    func copy(_ memory: GuestMemory, into other: GuestMemory) throws {
        try other.write(bytes: try memory.readBytes(at: 0, count: Int(memory.size)), at: 0)
    }

    func testVirtioQueueWithRequestsInFlightContinuesIdentically() throws {
        typealias H = VirtioPciHarness
        let disk = VirtioTempDisk(sectors: 64)
        let a = try H(device: try VirtioBlock(path: disk.path, readOnly: true))
        XCTAssertTrue(a.setUp())
        XCTAssertEqual(a.blockRequest(type: VirtioBlock.requestIn, sector: 1, inLength: 512).status, VirtioBlock.statusOK)
        // Two reads made available but not yet notified: in flight at the capture.
        for (i, sector) in [(0, 7), (1, 12)] {
            let base = UInt64(0x50000 + 0x2000 * i)
            let head = UInt16(8 + 3 * i)
            a.writeHeader(type: VirtioBlock.requestIn, sector: UInt64(sector), at: base)
            a.ring.setDescriptor(head, address: base, length: 16, flags: 1, next: head + 1)
            a.ring.setDescriptor(head + 1, address: base + 0x100, length: 1024, flags: 3, next: head + 2)
            a.ring.setDescriptor(head + 2, address: base + 0x80, length: 1, flags: 2)
            a.ring.publish(head)
        }
        a.ring.setUsedEvent(1)            // interrupt me once they complete (EVENT_IDX)
        let state = try throughJSON(a.transport.captureState())
        guard case .block(let blk) = state.device else { return XCTFail("virtio-blk saves its own part") }
        XCTAssertEqual(blk.capacity, 64)

        let b = try H(device: try VirtioBlock(path: disk.path, readOnly: true))
        b.ring = VirtioDriverRing(memory: b.memory, size: a.ring.size, desc: H.descAddr, avail: H.availAddr, used: H.usedAddr)
        try copy(a.memory, into: b.memory)
        try b.transport.restoreState(state)
        XCTAssertEqual(b.transport.captureState(), a.transport.captureState())
        XCTAssertTrue(b.interrupts.msis.isEmpty, "restoring sends nothing")
        a.interrupts.clear()
        for h in [a, b] {
            h.bar0 = a.bar0; h.caps = a.caps; h.notifyMultiplier = a.notifyMultiplier
            h.kick()
        }
        XCTAssertEqual(b.ring.usedIdx, 3)
        XCTAssertEqual(try b.memory.readBytes(at: 0x50000, count: 0x4000), try a.memory.readBytes(at: 0x50000, count: 0x4000))
        XCTAssertEqual(try b.memory.readBytes(at: H.usedAddr, count: 64), try a.memory.readBytes(at: H.usedAddr, count: 64))
        XCTAssertEqual(try b.memory.readBytes(at: 0x50100, count: 1024), virtioSectorPattern(7, count: 2))
        XCTAssertEqual(b.interrupts.msis, a.interrupts.msis, "completions signalled through the restored MSI-X table")
        XCTAssertEqual(b.interrupts.msis, [VirtioRecordedMSI(address: H.msiAddress, data: 0x41)])
    }

    func testVirtioBlockStateFromAnotherDiskIsRefused() throws {
        let small = VirtioTempDisk(sectors: 64), big = VirtioTempDisk(sectors: 128)
        let a = try VirtioPciHarness(device: try VirtioBlock(path: small.path))
        XCTAssertTrue(a.setUp())
        let b = try VirtioPciHarness(device: try VirtioBlock(path: big.path))
        XCTAssertThrowsError(try b.transport.restoreState(a.transport.captureState())) {
            guard case .mismatch = $0 as? DeviceStateError else { return XCTFail("\($0)") }
        }
    }

    func testConfigSpaceOfAnotherDeviceIsRefused() throws {
        let a = try VirtioPciHarness(device: VirtioNullDevice())
        var state = a.transport.captureState()
        state.config.bytes[PciConfigRegister.deviceID] ^= 1
        XCTAssertThrowsError(try VirtioPciHarness(device: VirtioNullDevice()).transport.restoreState(state)) {
            guard case .mismatch = $0 as? DeviceStateError else { return XCTFail("\($0)") }
        }
    }

    func testReadyQueueWithRingsOutsideRAMIsRefused() throws {
        let a = try VirtioPciHarness(device: VirtioNullDevice())
        XCTAssertTrue(a.setUp())
        var state = a.transport.captureState()
        state.queues[0].usedRing = 1 << 40
        XCTAssertThrowsError(try VirtioPciHarness(device: VirtioNullDevice()).transport.restoreState(state))
    }

    // MARK: The whole platform

    func makePlatform(_ chip: InterruptChip = .emulated, disks: [VirtioTempDisk] = []) throws -> Platform {
        let p = try Platform(PlatformConfig(memory: try GuestMemory(size: 16 << 20), clock: VirtualClock(),
                                            interruptChip: chip, console: SerialOutputCollector(), onReset: {}))
        for d in disks { try p.addVirtio(try VirtioBlock(path: d.path, readOnly: true)) }
        return p
    }

    func testPlatformStateRoundTripsThroughAnEncoder() throws {
        let disk = VirtioTempDisk(sectors: 16)
        let a = try makePlatform(disks: [disk])
        a.ports.write(0x3FB, size: 1, value: 0x03)                  // UART LCR
        a.ports.write(0x3FC, size: 1, value: 0x0B)                  // MCR
        a.uart.enqueue(Array("typed".utf8))
        a.ports.write(0x21, size: 1, value: 0xFB)                   // PIC mask
        a.ports.write(0x43, size: 1, value: 0x34)                   // PIT channel 0 mode 2
        a.ports.write(0x40, size: 1, value: 0x9C)
        a.ports.write(0x40, size: 1, value: 0x2E)
        a.ports.write(0xCF8, size: 4, value: 0x8000_0804)           // CONFIG_ADDRESS: 00:01.0 command
        let state = try throughJSON(a.captureState())
        XCTAssertNotNil(state.pic)
        XCTAssertEqual(state.virtio.count, 1)

        let b = try makePlatform(disks: [disk])
        try b.restoreState(state)
        XCTAssertEqual(b.captureState().uart, state.uart)
        XCTAssertEqual(b.captureState().pci, state.pci)
        XCTAssertEqual(b.ports.read(0xCFC, size: 2), a.ports.read(0xCFC, size: 2))
        XCTAssertEqual(b.ports.read(0x21, size: 1), 0xFB)
        XCTAssertEqual((0..<5).map { _ in b.ports.read(0x3F8, size: 1) }, Array("typed".utf8).map(UInt64.init))
    }

    func testPlatformStateOfTheOtherInterruptChipIsRefused() throws {
        let emulated = try makePlatform().captureState()
        let hypervisor = try makePlatform(.hypervisor(RecordingInterruptController()))
        XCTAssertNil(hypervisor.captureState().pic)
        XCTAssertThrowsError(try hypervisor.restoreState(emulated)) {
            guard case .mismatch = $0 as? DeviceStateError else { return XCTFail("\($0)") }
        }
    }
}
