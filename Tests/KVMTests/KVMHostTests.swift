import CKVM
import Foundation
import XCTest
@testable import KVM

final class KVMHostKindTests: XCTestCase {
    func testClassifiesFromModulesAndCPUFlags() {
        typealias K = KVMHostKind
        XCTAssertEqual(K.classify(modules: ["kvm_intel"], cpuFlags: ["fpu", "vmx"]), .hardware(module: "kvm_intel"))
        XCTAssertEqual(K.classify(modules: ["kvm_amd"], cpuFlags: ["svm"]), .hardware(module: "kvm_amd"))
        XCTAssertEqual(K.classify(modules: [], cpuFlags: ["vmx"]), .hardware(module: nil), "built-in vendor module")
        XCTAssertEqual(K.classify(modules: ["kvm_pvm"], cpuFlags: ["fpu", "hypervisor"]), .pvm)
        XCTAssertEqual(K.classify(modules: ["kvm_pvm", "kvm_intel"], cpuFlags: ["vmx"]), .hardware(module: "kvm_intel"),
                       "with VMX and its module, /dev/kvm is the hardware one")
        XCTAssertEqual(K.classify(modules: ["kvm_pvm"], cpuFlags: ["vmx"]), .pvm, "VMX present but unused by KVM")
        XCTAssertEqual(K.classify(modules: [], cpuFlags: ["fpu"]), .noHardwareVirtualization)
        XCTAssertTrue(K.hardware(module: nil).runsGuestKernelsNatively)
        XCTAssertFalse(K.pvm.runsGuestKernelsNatively)
    }

    func testReadsTheFlagsOfTheFirstProcessor() {
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu vme sse2 vmx\nbugs\t: x\n\nprocessor\t: 1\nflags\t\t: fpu\n"
        XCTAssertEqual(KVMHostKind.cpuFlags(cpuinfo: cpuinfo), ["fpu", "vme", "sse2", "vmx"])
        XCTAssertEqual(KVMHostKind.cpuFlags(cpuinfo: ""), [])
    }

    func testThisHostMatchesWhatSysAndProcSay() {
        let flags = KVMHostKind.cpuFlags(cpuinfo: KVMHostKind.readSmallFile("/proc/cpuinfo") ?? "")
        if !flags.contains("vmx") && !flags.contains("svm") {
            XCTAssertFalse(KVMHostKind.thisHost.runsGuestKernelsNatively, "no VMX/SVM: nothing runs guest kernels natively")
        }
        if FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm") && !flags.contains("vmx") && !flags.contains("svm") {
            XCTAssertEqual(KVMHostKind.thisHost, .pvm)
        }
    }
}

final class CPUIDPolicyTests: XCTestCase {
    /// Leaf 1 with XSAVE, OSXSAVE, AVX, FMA and F16C, leaf 7 with AVX2, and the XSAVE leaf 0xD.
    func hostLeaves() -> [kvm_cpuid_entry2] {
        var l1 = kvm_cpuid_entry2(); l1.function = 1
        l1.ecx = (1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 0)
        var l7 = kvm_cpuid_entry2(); l7.function = 7; l7.ebx = 1 << 5
        var l13 = kvm_cpuid_entry2(); l13.function = 0xD; l13.eax = 0x7
        return [l1, l7, l13]
    }

    func testHardwareHostsKeepXSAVEAndAVX() {
        let out = CPUIDPolicy().filter(hostLeaves(), vcpuID: 0)
        XCTAssertEqual(out.map(\.function), [1, 7, 0xD])
        XCTAssertEqual(out[0].ecx & (1 << 28), 1 << 28, "AVX")
        XCTAssertEqual(out[0].ecx & (1 << 26), 1 << 26, "XSAVE")
        XCTAssertEqual(out[1].ebx & (1 << 5), 1 << 5, "AVX2")
    }

    func testEmulatingHostsHideXSAVEAndEverythingThatNeedsIt() {
        let out = CPUIDPolicy(hideXSAVE: true).filter(hostLeaves(), vcpuID: 0)
        XCTAssertEqual(out.map(\.function), [1, 7], "no XSAVE state leaf")
        XCTAssertEqual(out[0].ecx & ((1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29)), 0)
        XCTAssertEqual(out[0].ecx & 1, 1, "SSE3 stays")
        XCTAssertEqual(out[1].ebx & (1 << 5), 0, "AVX2")
    }

    func testThePolicyForThisHostFollowsItsKind() {
        let p = CPUIDPolicy.forThisHost
        XCTAssertEqual(p.hideXSAVE, !KVMHostKind.thisHost.runsGuestKernelsNatively)
        XCTAssertEqual(p.minimal, !KVMHostKind.thisHost.runsGuestKernelsNatively)
    }
}
