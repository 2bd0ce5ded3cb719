import CKVM
import CPUBackend
import XCTest
@testable import KVM

/// Records what the exit handler asked of the machine, and answers reads from a script.
final class RecordingIO: IOHandler {
    enum Access: Equatable {
        case portRead(UInt16, Int), portWrite(UInt16, Int, UInt32)
        case mmioRead(UInt64, Int), mmioWrite(UInt64, Int, UInt64)
    }
    var accesses: [Access] = []
    var portValues: [UInt32] = []
    var mmioValue: UInt64 = 0

    func portRead(_ port: UInt16, size: Int) -> UInt32 {
        accesses.append(.portRead(port, size))
        return portValues.isEmpty ? 0xFFFF_FFFF : portValues.removeFirst()
    }
    func portWrite(_ port: UInt16, size: Int, value: UInt32) { accesses.append(.portWrite(port, size, value)) }
    func mmioRead(_ address: UInt64, size: Int) -> UInt64 {
        accesses.append(.mmioRead(address, size))
        return mmioValue
    }
    func mmioWrite(_ address: UInt64, size: Int, value: UInt64) { accesses.append(.mmioWrite(address, size, value)) }
}

/// A synthetic `kvm_run` page, filled through the C struct's fields the way KVM fills it; the exit is
/// then decoded through the raw offsets (so the two views are checked against each other).
final class RunPage {
    static let size = 4096
    let raw = UnsafeMutableRawPointer.allocate(byteCount: RunPage.size, alignment: 64)
    var run: UnsafeMutablePointer<kvm_run> { raw.assumingMemoryBound(to: kvm_run.self) }

    init(reason: Int32) {
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: RunPage.size)
        run.pointee.exit_reason = UInt32(reason)
    }
    deinit { raw.deallocate() }

    var exit: KVMExit { KVMExit(run: raw, pageSize: RunPage.size) }
    func handle(_ io: IOHandler) throws(KVMRunError) -> KVMExitAction { try KVMExitHandler.handle(exit, io: io) }

    /// A port access with its data area at offset 0x800 of the page.
    static func portIO(port: UInt16, size: Int, count: Int, out: Bool, data: [UInt8] = []) -> RunPage {
        let page = RunPage(reason: KVM_EXIT_IO)
        page.run.pointee.io.port = port
        page.run.pointee.io.size = UInt8(size)
        page.run.pointee.io.count = UInt32(count)
        page.run.pointee.io.direction = UInt8(out ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN)
        page.run.pointee.io.data_offset = 0x800
        for (i, b) in data.enumerated() { page.raw.storeBytes(of: b, toByteOffset: 0x800 + i, as: UInt8.self) }
        return page
    }

    func bytes(at offset: Int, count: Int) -> [UInt8] {
        (0..<count).map { raw.load(fromByteOffset: offset + $0, as: UInt8.self) }
    }

    static func mmio(address: UInt64, size: Int, write: Bool, value: UInt64 = 0) -> RunPage {
        let page = RunPage(reason: KVM_EXIT_MMIO)
        page.run.pointee.mmio.phys_addr = address
        page.run.pointee.mmio.len = UInt32(size)
        page.run.pointee.mmio.is_write = write ? 1 : 0
        withUnsafeMutableBytes(of: &page.run.pointee.mmio.data) { d in
            for i in 0..<8 { d[i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
        }
        return page
    }

    var mmioData: [UInt8] { withUnsafeBytes(of: run.pointee.mmio.data) { Array($0) } }
}

final class KVMExitTests: XCTestCase {
    // MARK: Port I/O

    func testPortWritesOfEverySizeReachTheMachineWithTheirValue() throws {
        for (size, bytes, value) in [(1, [0x41], 0x41), (2, [0x34, 0x12], 0x1234),
                                     (4, [0x78, 0x56, 0x34, 0x12], 0x1234_5678)] as [(Int, [UInt8], UInt32)] {
            let io = RecordingIO()
            let page = RunPage.portIO(port: 0x3F8, size: size, count: 1, out: true, data: bytes)
            XCTAssertEqual(try page.handle(io), .resume)
            XCTAssertEqual(io.accesses, [.portWrite(0x3F8, size, value)], "size \(size)")
        }
    }

    func testPortReadsOfEverySizeStoreTheMachinesAnswerInThePage() throws {
        for size in [1, 2, 4] {
            let io = RecordingIO()
            io.portValues = [0xAABB_CCDD]
            let page = RunPage.portIO(port: 0x71, size: size, count: 1, out: false)
            XCTAssertEqual(try page.handle(io), .resume)
            XCTAssertEqual(io.accesses, [.portRead(0x71, size)])
            XCTAssertEqual(page.bytes(at: 0x800, count: size), Array([0xDD, 0xCC, 0xBB, 0xAA].prefix(size)))
            // Nothing past the access is touched.
            XCTAssertEqual(page.bytes(at: 0x800 + size, count: 4), [0, 0, 0, 0])
        }
    }

    func testStringOutputIsOneWritePerElementInOrder() throws {
        let io = RecordingIO()
        let page = RunPage.portIO(port: 0x80, size: 2, count: 3, out: true, data: [1, 0, 2, 0, 3, 0])
        XCTAssertEqual(try page.handle(io), .resume)
        XCTAssertEqual(io.accesses, [.portWrite(0x80, 2, 1), .portWrite(0x80, 2, 2), .portWrite(0x80, 2, 3)])
    }

    func testStringInputFillsEachElement() throws {
        let io = RecordingIO()
        io.portValues = [0x11, 0x22, 0x33, 0x44]
        let page = RunPage.portIO(port: 0x60, size: 1, count: 4, out: false)
        XCTAssertEqual(try page.handle(io), .resume)
        XCTAssertEqual(io.accesses, Array(repeating: .portRead(0x60, 1), count: 4))
        XCTAssertEqual(page.bytes(at: 0x800, count: 4), [0x11, 0x22, 0x33, 0x44])
    }

    func testPortDataOutsideThePageIsRefusedNotRead() {
        let io = RecordingIO()
        let page = RunPage.portIO(port: 0x3F8, size: 4, count: 1024, out: true)   // 4 KiB from 0x800
        XCTAssertThrowsError(try page.handle(io)) { error in
            guard case .unhandledExit(let reason, _) = error as? KVMRunError else { return XCTFail("\(error)") }
            XCTAssertEqual(reason, UInt32(KVM_EXIT_IO))
        }
        XCTAssertTrue(io.accesses.isEmpty)
        let odd = RunPage.portIO(port: 0x3F8, size: 3, count: 1, out: true)
        XCTAssertThrowsError(try odd.handle(io))
    }

    // MARK: MMIO

    func testMMIOWritesOfEverySize() throws {
        for size in [1, 2, 4, 8] {
            let io = RecordingIO()
            let page = RunPage.mmio(address: 0xD000_0004, size: size, write: true, value: 0x1122_3344_5566_7788)
            XCTAssertEqual(try page.handle(io), .resume)
            let mask: UInt64 = size == 8 ? .max : (1 << (8 * UInt64(size))) - 1
            XCTAssertEqual(io.accesses, [.mmioWrite(0xD000_0004, size, 0x1122_3344_5566_7788 & mask)])
        }
    }

    func testMMIOReadsOfEverySizeFillOnlyTheirBytes() throws {
        for size in [1, 2, 4, 8] {
            let io = RecordingIO()
            io.mmioValue = 0x0807_0605_0403_0201
            let page = RunPage.mmio(address: 0xFEE0_0030, size: size, write: false)
            XCTAssertEqual(try page.handle(io), .resume)
            XCTAssertEqual(io.accesses, [.mmioRead(0xFEE0_0030, size)])
            XCTAssertEqual(page.mmioData, Array([1, 2, 3, 4, 5, 6, 7, 8].prefix(size)) + Array(repeating: 0, count: 8 - size))
        }
    }

    func testMMIOOfImpossibleLengthIsRefused() {
        for size in [0, 9, 16] {
            XCTAssertThrowsError(try RunPage.mmio(address: 0, size: size, write: true).handle(RecordingIO()))
        }
    }

    // MARK: Stops and failures

    func testGuestStopsBecomeStopReasons() throws {
        XCTAssertEqual(try RunPage(reason: KVM_EXIT_HLT).handle(RecordingIO()), .stop(.haltedForever))
        XCTAssertEqual(try RunPage(reason: KVM_EXIT_SHUTDOWN).handle(RecordingIO()), .stop(.shutdown))
        XCTAssertEqual(try RunPage(reason: KVM_EXIT_INTR).handle(RecordingIO()), .resume)
        for (type, stop) in [(KVM_SYSTEM_EVENT_RESET, VcpuStop.reset), (KVM_SYSTEM_EVENT_SHUTDOWN, .poweroff),
                             (KVM_SYSTEM_EVENT_CRASH, .shutdown)] {
            let page = RunPage(reason: KVM_EXIT_SYSTEM_EVENT)
            page.run.pointee.system_event.type = UInt32(type)
            XCTAssertEqual(try page.handle(RecordingIO()), .stop(stop), "system event \(type)")
        }
    }

    func testFailedEntryKeepsTheHardwareReason() {
        let page = RunPage(reason: KVM_EXIT_FAIL_ENTRY)
        page.run.pointee.fail_entry.hardware_entry_failure_reason = 0x8000_0021
        page.run.pointee.fail_entry.cpu = 3
        XCTAssertThrowsError(try page.handle(RecordingIO())) { error in
            XCTAssertEqual(error as? KVMRunError, .entryFailed(reason: 0x8000_0021, cpu: 3))
            XCTAssertEqual("\(error)", "vCPU 3 entry failed (hardware reason 0x80000021)")
        }
    }

    func testEmulationFailureCarriesTheInstructionBytes() {
        let page = RunPage(reason: KVM_EXIT_INTERNAL_ERROR)
        page.run.pointee.emulation_failure.suberror = UInt32(KVM_INTERNAL_ERROR_EMULATION)
        page.run.pointee.emulation_failure.ndata = 4
        page.run.pointee.emulation_failure.flags = UInt64(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)
        page.run.pointee.emulation_failure.insn_size = 3
        withUnsafeMutableBytes(of: &page.run.pointee.emulation_failure.insn_bytes) { $0.copyBytes(from: [0x0F, 0x01, 0xCA]) }
        guard case .internalError(let e) = page.exit else { return XCTFail("not decoded as an internal error") }
        XCTAssertEqual(e.instructionBytes, [0x0F, 0x01, 0xCA])
        XCTAssertThrowsError(try page.handle(RecordingIO())) { error in
            XCTAssertEqual(error as? KVMRunError, .internalError(e))
            XCTAssertEqual("\(error)", "KVM internal error: the host could not emulate a guest instruction "
                           + "(instruction bytes 0f 01 ca)")
        }
    }

    func testOtherInternalErrorsCarryTheirDataWords() {
        let page = RunPage(reason: KVM_EXIT_INTERNAL_ERROR)
        page.run.pointee.internal.suberror = 3   // KVM_INTERNAL_ERROR_DELIVERY_EV
        page.run.pointee.internal.ndata = 2
        withUnsafeMutableBytes(of: &page.run.pointee.internal.data) { d in
            d.storeBytes(of: UInt64(0x80000b0e), toByteOffset: 0, as: UInt64.self)
            d.storeBytes(of: UInt64(0x1234), toByteOffset: 8, as: UInt64.self)
        }
        guard case .internalError(let e) = page.exit else { return XCTFail("not decoded as an internal error") }
        XCTAssertEqual(e, KVMInternalError(suberror: 3, data: [0x80000b0e, 0x1234], instructionBytes: nil))
        XCTAssertEqual(e.description, "KVM internal error: suberror 3 (data 0x80000b0e 0x1234)")
    }

    func testUnknownExitReasonIsAnErrorNamingIt() {
        XCTAssertThrowsError(try RunPage(reason: 0x7777).handle(RecordingIO())) { error in
            XCTAssertEqual(error as? KVMRunError, .unhandledExit(reason: 0x7777, detail: ""))
        }
    }
}
