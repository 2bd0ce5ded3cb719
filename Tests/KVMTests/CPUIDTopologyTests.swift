import CKVM
import XCTest
@testable import KVM

/// Per-vCPU CPUID as Firecracker normalises it: the vCPU's APIC ID in leaves 1, 0xB and 0x1F, one
/// package whose cores are the vCPUs (leaf 1's count and HTT, leaf 4's cores and cache sharing, leaf
/// 0xB's two levels). No /dev/kvm needed: the input is a synthetic supported-CPUID list.
final class CPUIDTopologyTests: XCTestCase {
    func entry(_ function: UInt32, _ index: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0,
               edx: UInt32 = 0) -> kvm_cpuid_entry2 {
        var e = kvm_cpuid_entry2()
        e.function = function; e.index = index; e.eax = eax; e.ebx = ebx; e.ecx = ecx; e.edx = edx
        return e
    }

    var host: [kvm_cpuid_entry2] {
        [entry(0, eax: 0x1F), entry(1, eax: 0x906EA, ebx: 0x0110_0800, edx: 1 << 28),
         entry(4, 0, eax: 0x1C00_4121), entry(4, 3, eax: 0x1C03_C163),   // L1d (level 1), L3 (level 3)
         entry(0xB, 0, eax: 1, ebx: 2, ecx: 0x100, edx: 7), entry(0xB, 1, eax: 4, ebx: 8, ecx: 0x201, edx: 7),
         entry(0x1F, 0, eax: 1, ebx: 2, ecx: 0x100, edx: 7), entry(0x8000_0008, ecx: 0x7)]
    }

    func leaf(_ out: [kvm_cpuid_entry2], _ f: UInt32, _ i: UInt32 = 0) -> kvm_cpuid_entry2? {
        out.first { $0.function == f && $0.index == i }
    }

    func testEachVCPUGetsItsAPICIDAndTheSharedTopology() throws {
        for id: UInt32 in [0, 3, 5] {
            let out = CPUIDPolicy().filter(host, vcpuID: id, cpuCount: 6)
            let l1 = try XCTUnwrap(leaf(out, 1))
            XCTAssertEqual(l1.ebx >> 24, id, "initial APIC ID")
            XCTAssertEqual((l1.ebx >> 16) & 0xFF, 8, "APIC IDs per package: 6 cores take 3 bits")
            XCTAssertEqual(l1.ebx & 0xFFFF, 0x0800, "CLFLUSH size kept")
            XCTAssertEqual(l1.edx & (1 << 28), 1 << 28, "HTT")
            for sub: UInt32 in [0, 1, 2] { XCTAssertEqual(leaf(out, 0xB, sub)?.edx, id, "x2APIC ID, 0xB.\(sub)") }
            XCTAssertEqual(leaf(out, 0x1F, 1)?.edx, id)
        }
        let out = CPUIDPolicy().filter(host, vcpuID: 1, cpuCount: 6)
        let smt = try XCTUnwrap(leaf(out, 0xB, 0)), core = try XCTUnwrap(leaf(out, 0xB, 1)), end = try XCTUnwrap(leaf(out, 0xB, 2))
        XCTAssertEqual([smt.eax, smt.ebx, smt.ecx], [0, 1, 0x100], "one thread per core")
        XCTAssertEqual([core.eax, core.ebx, core.ecx], [3, 6, 0x201], "six cores, three ID bits")
        XCTAssertEqual([end.eax, end.ebx, end.ecx & 0xFF00], [0, 0, 0], "no third level")
        XCTAssertEqual(out.filter { $0.function == 0xB }.count, 3, "the host's own 0xB entries are replaced")
        let l1d = try XCTUnwrap(leaf(out, 4, 0)), l3 = try XCTUnwrap(leaf(out, 4, 3))
        XCTAssertEqual(l1d.eax >> 26, 5, "cores per package - 1")
        XCTAssertEqual((l1d.eax >> 14) & 0xFFF, 0, "L1 per core")
        XCTAssertEqual((l3.eax >> 14) & 0xFFF, 5, "L3 shared by all six")
        XCTAssertEqual(l1d.eax & 0x3FFF, 0x0121, "cache type and level kept")
        XCTAssertEqual(leaf(out, 0x8000_0008)?.ecx, 5, "AMD core count - 1")
    }

    func testOneVCPUHasNoHTTAndAOneCorePackage() throws {
        let out = CPUIDPolicy().filter(host, vcpuID: 0, cpuCount: 1)
        let l1 = try XCTUnwrap(leaf(out, 1))
        XCTAssertEqual(l1.edx & (1 << 28), 0)
        XCTAssertEqual((l1.ebx >> 16) & 0xFF, 1)
        XCTAssertEqual(leaf(out, 0xB, 1).map { [$0.eax, $0.ebx] }, [0, 1])
    }

    func testTheRoutingTableSendsTheTimerToPin2AndSkipsTheCascade() {
        let routes = KVMVirtualMachine.pcRouting
        XCTAssertTrue(routes.contains(.init(gsi: 0, chip: .ioapic, pin: 2)))
        XCTAssertTrue(routes.contains(.init(gsi: 0, chip: .picMaster, pin: 0)))
        XCTAssertFalse(routes.contains { $0.gsi == 2 }, "IRQ 2 is the cascade: no route")
        XCTAssertTrue(routes.contains(.init(gsi: 11, chip: .picSlave, pin: 3)))
        XCTAssertTrue(routes.contains(.init(gsi: 23, chip: .ioapic, pin: 23)))
        XCTAssertFalse(routes.contains { $0.gsi >= 16 && $0.chip != .ioapic }, "GSIs 16-23 reach the I/O APIC only")
    }
}
