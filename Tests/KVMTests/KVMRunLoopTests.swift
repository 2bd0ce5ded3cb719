import CPUBackend
import Foundation
import VMMemory
import XCTest
@testable import KVM

/// A VM whose guest is `cli; hlt` in real mode (skips without a usable /dev/kvm).
func makeHaltingVM() throws -> KVMBackend {
    guard FileManager.default.fileExists(atPath: "/dev/kvm") else { throw XCTSkip("/dev/kvm is missing") }
    let memory = try GuestMemory(size: 16 << 20)
    try memory.write(bytes: [0xFA, 0xF4], at: 0x1000)                 // cli; hlt
    let kvm: KVMBackend
    do { kvm = try KVMBackend(memory: memory, irqchip: false) } catch {
        throw XCTSkip("cannot create a KVM VM (\(error))")
    }
    try kvm.setEntryState(.realMode(cs: 0, ip: 0x1000, sp: 0x8000))
    return kvm
}

/// The run loop on a real VM: what it leaves behind between runs.
final class KVMRunLoopTests: XCTestCase {
    func testEachRunRemovesTheKickerItAdded() throws {
        let kvm = try makeHaltingVM()
        let control = VMControl()
        for _ in 0..<3 {
            XCTAssertEqual(try kvm.run(io: RecordingIO(), control: control), .haltedForever)
            XCTAssertEqual(control.kickerCount, 0)
        }
    }
}

/// What a new vCPU starts with, read back from KVM.
final class KVMVcpuSetupTests: XCTestCase {
    func testMTRRsAreOnWithWriteBackAsTheDefaultType() throws {
        let kvm = try makeHaltingVM()
        XCTAssertEqual(try kvm.vcpu.getMSRs([0x2FF]), [0x806], "IA32_MTRR_DEF_TYPE: enabled, write-back")
    }
}
