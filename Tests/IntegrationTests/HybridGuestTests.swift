import CPUBackend
import Devices
import Foundation
import Hybrid
import KVM
import VMM
import VMMemory
import X86Interpreter
import XCTest

/// KVM must work where /dev/kvm exists: these tests fail (not skip) when a VM cannot be created.
enum KVMRequirement {
    static func require() throws {
        guard FileManager.default.fileExists(atPath: "/dev/kvm") else {
            throw XCTSkip("/dev/kvm is missing: KVM tests skipped")
        }
        do { _ = try KVMSystem().createVM() } catch {
            XCTFail("/dev/kvm exists but a VM cannot be created: \(error)")
            throw error
        }
    }
}

/// The hybrid backend on the small guests: user code runs natively, the rest on the interpreter,
/// and the guest sees exactly what it sees on the interpreter alone.
final class HybridGuestTests: XCTestCase {
    override func setUpWithError() throws { try KVMRequirement.require() }

    func config(_ mode: HybridPolicyConfig.Mode) -> (inout MachineConfig) -> Void {
        { c in
            var p = HybridPolicyConfig()
            p.mode = mode
            c.hybridPolicy = p
        }
    }

    /// On hosts that are not kvm-pvm the backend is not offered, with one line saying why.
    func requirePVMOrCheckRefusal() throws -> Bool {
        guard let why = Machine.hybridUnavailableReason() else { return true }
        var c = MachineConfig()
        c.accelerator = .hybrid
        XCTAssertThrowsError(try Machine(config: c, consoleOutput: SerialOutputCollector())) { e in
            XCTAssertEqual("\(e)", "--accel hybrid: \(why)")
        }
        return false
    }

    func testUserCodeOfTheGatesGuestRunsNatively() throws {
        guard try requirePVMOrCheckRefusal() else { return }
        let r = try GuestHarness.run("userspace", accelerator: .hybrid, defines: ["PRIV_GATES"], configure: config(.native)) { m in
            try m.memory.write(UInt32(2000), at: 0x500)
        }
        XCTAssertEqual(r.output.text, String(decoding: try GuestHarness.expected("userspace-gates"), as: UTF8.self))
        XCTAssertEqual(try r.stop.get(), .reset)
        let stats = try XCTUnwrap((r.machine.backend as? HybridBackend)?.statistics)
        XCTAssertGreaterThan(stats.nativeEntries, 0)
        XCTAssertGreaterThanOrEqual(stats.portIO, 2000, "the CPL3 loop's port writes were completed without leaving KVM")
        XCTAssertEqual(stats.syscalls, 1, "SYSCALL went back to the interpreter, which took it to CPL0")
        XCTAssertGreaterThanOrEqual(stats.faults + stats.deniedIO, 2, "int 0x40 and the denied port")
        XCTAssertNil(stats.disabledReason)
    }

    /// User code rewrites a code page natively (KVM writes RAM behind the software CPU's back) and
    /// the guest kernel, on the software CPU with translation on, runs it often enough to translate
    /// it: every round must run the new code, not a stale decoded or translated copy.
    func testCodeWrittenNativelyIsRunFreshByTheTranslatingSoftwareCPU() throws {
        guard try requirePVMOrCheckRefusal() else { return }
        let native = config(.native)
        let r = try GuestHarness.run("userspace", accelerator: .hybrid, defines: ["PRIV_GATES", "SELFMOD"],
                                     configure: { c in native(&c); c.translation = .standard }) { m in
            try m.memory.write(UInt32(100), at: 0x500)
        }
        XCTAssertEqual(r.output.text, String(decoding: try GuestHarness.expected("userspace-selfmod"), as: UTF8.self))
        XCTAssertEqual(try r.stop.get(), .reset)
        let hybrid = try XCTUnwrap(r.machine.backend as? HybridBackend)
        XCTAssertGreaterThanOrEqual(hybrid.statistics.codeInvalidations, 39,
                                    "each of the 40 rounds after the first found its native write to the code page")
        XCTAssertGreaterThanOrEqual(hybrid.statistics.syscalls, 41)
        let translated = try XCTUnwrap(hybrid.interpreter.translationStatistics).instructionsTranslated
        XCTAssertGreaterThan(translated, 0, "the kernel side ran translated code")
    }

    func testSoftwarePolicyIsTheInterpreter() throws {
        guard try requirePVMOrCheckRefusal() else { return }
        let r = try GuestHarness.run("userspace", accelerator: .hybrid, configure: config(.software)) { m in
            try m.memory.write(UInt32(500), at: 0x500)
        }
        XCTAssertEqual(r.output.text, String(decoding: try GuestHarness.expected("userspace"), as: UTF8.self))
        XCTAssertEqual((r.machine.backend as? HybridBackend)?.statistics.nativeEntries, 0)
    }
}

/// X86ArchState to and from a KVM vCPU, and a running guest moved between the interpreter and KVM.
final class KVMArchStateTests: XCTestCase {
    override func setUpWithError() throws { try KVMRequirement.require() }

    /// Serial output and nothing else (the small guests need no more).
    final class SerialIO: IOHandler {
        var text = ""
        var stopAfterLine: (() -> Void)?
        func portRead(_ port: UInt16, size: Int) -> UInt32 { port == 0x3FD ? 0x60 : 0xFF }
        func portWrite(_ port: UInt16, size: Int, value: UInt32) {
            guard port == 0x3F8 else { return }
            text.unicodeScalars.append(Unicode.Scalar(UInt8(truncatingIfNeeded: value)))
            if value == 10, let stop = stopAfterLine { stopAfterLine = nil; stop() }
        }
        func mmioRead(_ address: UInt64, size: Int) -> UInt64 { ~0 }
        func mmioWrite(_ address: UInt64, size: Int, value: UInt64) {}
    }

    func testStateSetIsStateRead() throws {
        let mem = try GuestMemory(size: 16 << 20)
        let kvm = try KVMBackend(memory: mem, irqchip: false)
        var s = X86ArchState()
        s.gpr = (0..<16).map { UInt64($0) &* 0x0101_0101_0101_0101 &+ 7 }
        s.rip = 0x40_1234
        s.rflags = 0x246
        s.cr0 = 0x8005_0033
        s.cr3 = 0x1000
        s.cr4 = 0x6A0   // PAE PGE OSFXSR OSXMMEXCPT
        s.efer = 0xD01
        s.cs = SegmentState(selector: 0x33, base: 0, limit: 0xFFFF_FFFF, type: 0xB, dpl: 3, l: true, g: true)
        let data = SegmentState(selector: 0x2B, base: 0, limit: 0xFFFF_FFFF, type: 0x3, dpl: 3, db: true, g: true)
        s.ss = data; s.ds = data; s.es = data
        s.fs = SegmentState(selector: 0, base: 0x7F00_0000_1000, limit: 0, type: 0, present: false, unusable: true)
        s.gs = SegmentState(selector: 0, base: 0x7F00_0000_2000, limit: 0, type: 0, present: false, unusable: true)
        s.tr = SegmentState(selector: 0x40, base: 0xFFFF_FE00_0000_3000, limit: 0x4087, type: 0xB, s: false)
        s.ldtr = SegmentState(selector: 0, base: 0, limit: 0, type: 2, present: false, s: false, unusable: true)
        s.gdt = DescriptorTableState(base: 0xFFFF_FE00_0000_1000, limit: 0x7F)
        s.idt = DescriptorTableState(base: 0xFFFF_FE00_0000_0000, limit: 0xFFF)
        for (i, v) in [(0x174, 0x10), (0x175, 0xFFFF_8000_0000_1000), (0x176, 0xFFFF_8000_0000_2000),
                       (0x277, 0x0007_0406_0007_0406), (0xC000_0081, 0x0023_0010_0000_0000),
                       (0xC000_0082, 0xFFFF_FFFF_8100_0000), (0xC000_0083, 0xFFFF_FFFF_8100_1000),
                       (0xC000_0084, 0x4_7700), (0xC000_0102, 0xFFFF_8880_1F40_0000)] as [(UInt32, UInt64)] {
            s.setMSR(i, v)
        }
        for i in 0..<256 { s.fxsave[160 + i] = UInt8(truncatingIfNeeded: i &* 37) }      // XMM0-15
        s.setFXWord(UInt32(0x1FA0), at: 24)                                              // MXCSR
        s.setFXWord(UInt16(0x27F), at: 0)                                                // FCW
        s.dr = [0x1000, 0x2000, 0x3000, 0x4000]
        s.dr7 = 0x455
        s.events.interruptShadow = true
        try kvm.vcpu.setArchState(s)
        let back = try kvm.vcpu.archState()
        XCTAssertEqual(back.gpr, s.gpr)
        XCTAssertEqual(back.rip, s.rip)
        XCTAssertEqual(back.rflags, s.rflags)
        XCTAssertEqual([back.cr0, back.cr3, back.cr4, back.efer], [s.cr0, s.cr3, s.cr4, s.efer])
        for i in 0..<6 {
            XCTAssertEqual(back[segment: i].selector, s[segment: i].selector, "segment \(i)")
            XCTAssertEqual(back[segment: i].base, s[segment: i].base, "segment \(i)")
        }
        XCTAssertEqual(back.cs.l, true)
        XCTAssertEqual(back.tr.base, s.tr.base)
        XCTAssertEqual(back.gdt, s.gdt)
        XCTAssertEqual(back.idt, s.idt)
        for m in s.msrs { XCTAssertEqual(back.msr(m.index), m.value, "MSR 0x\(String(m.index, radix: 16))") }
        XCTAssertEqual(Array(back.fxsave[160..<416]), Array(s.fxsave[160..<416]), "XMM registers")
        XCTAssertEqual(back.mxcsr, 0x1FA0)
        XCTAssertEqual(back.fcw, 0x27F)
        XCTAssertEqual(back.dr, s.dr)
        XCTAssertEqual(back.dr7 & 0xFF, 0x55)
        XCTAssertTrue(back.events.interruptShadow)
    }

    /// Runs the `long` guest (real -> protected -> long mode, a checksum loop) partly on the
    /// interpreter and the rest on KVM: the output is what either prints alone.
    func testGuestMovesFromTheInterpreterToKVM() throws {
        let mem = try GuestMemory(size: 16 << 20)
        try mem.write(bytes: try GuestHarness.assemble("long"), at: GuestHarness.loadAddress)
        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        try cpu.setEntryState(.realMode(cs: 0, ip: UInt16(GuestHarness.loadAddress), sp: 0x8000))
        let io = SerialIO()
        // Up to the first line ("long mode ok"): the checksum loop is still ahead.
        var steps = 0
        while !io.text.contains("\n") && steps < 1_000_000 { _ = cpu.step(io: io); steps += 1 }
        XCTAssertEqual(io.text, "long mode ok\n")
        XCTAssertNotEqual(cpu.efer & 0x400, 0, "in long mode")
        let state = cpu.exportArchState()

        let kvm = try KVMBackend(memory: mem, irqchip: false)
        try kvm.vcpu.setArchState(state)
        let stop = try kvm.run(io: io, control: VMControl())
        XCTAssertEqual(stop, try GuestHarness.expectedStop("long"))
        XCTAssertEqual(io.text, String(decoding: try GuestHarness.expected("long"), as: UTF8.self))
    }

    /// The other way: KVM runs the start, the interpreter the rest.
    func testGuestMovesFromKVMToTheInterpreter() throws {
        let mem = try GuestMemory(size: 16 << 20)
        try mem.write(bytes: try GuestHarness.assemble("long"), at: GuestHarness.loadAddress)
        let kvm = try KVMBackend(memory: mem, irqchip: false)
        try kvm.setEntryState(.realMode(cs: 0, ip: UInt16(GuestHarness.loadAddress), sp: 0x8000))
        let io = SerialIO()
        let control = VMControl()
        io.stopAfterLine = { control.requestStop(.hostRequest) }
        XCTAssertEqual(try kvm.run(io: io, control: control), .hostRequest)
        XCTAssertEqual(io.text, "long mode ok\n")
        // Finish the exit KVM has in progress (the OUT) before reading the state.
        kvm.vcpu.run.pointee.immediate_exit = 1
        _ = try kvm.vcpu.runOnce()
        kvm.vcpu.run.pointee.immediate_exit = 0
        let state = try kvm.vcpu.archState()

        let cpu = X86Interpreter(memory: mem, clock: VirtualClock())
        try cpu.importArchState(state)
        let stop = cpu.run(io: io, control: VMControl(), maxInstructions: 50_000_000)
        XCTAssertEqual(stop, try GuestHarness.expectedStop("long"))
        XCTAssertEqual(io.text, String(decoding: try GuestHarness.expected("long"), as: UTF8.self))
    }
}
