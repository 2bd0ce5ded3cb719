import CPUBackend
import Devices
import Foundation
import KVM
import SwhvTestSupport
import VMM
import XCTest


/// The test MMIO device of Tests/Guests: records writes, answers reads with a fixed pattern.
final class TestMMIODevice: BusDevice {
    static let base: UInt64 = 0xD000_0000
    static let readValue: UInt64 = 0x1234_5678
    var writes: [(offset: UInt64, size: Int, value: UInt64)] = []
    var reads: [UInt64] = []
    func read(offset: UInt64, size: Int) -> UInt64 { reads.append(offset); return offset == 4 ? Self.readValue : 0 }
    func write(offset: UInt64, size: Int, value: UInt64) { writes.append((offset, size, value)) }
}

/// Builds and runs the small purpose-built guests in Tests/Guests.
enum GuestHarness {
    static let guestsDir = Repository.guests
    static let loadAddress: UInt64 = 0x1000

    /// Skips only when this host has no usable /dev/kvm (missing or not openable). When it opens,
    /// KVM tests run: a VM swhv's own KVM layer cannot create is a failure, not a skip.
    static func requireKVM() throws {
        let fd = open("/dev/kvm", O_RDWR | O_CLOEXEC)
        guard fd >= 0 else {
            throw XCTSkip("no /dev/kvm on this host (\(String(cString: strerror(errno)))): KVM tests skipped")
        }
        close(fd)
        do {
            let sys = try KVMSystem()
            _ = try sys.createVM()
        } catch {
            XCTFail("/dev/kvm opens but swhv cannot create a VM: \(error)")
            throw error
        }
    }

    /// Assembles Tests/Guests/NAME.asm with nasm into a flat binary.
    static func assemble(_ name: String, defines: [String] = []) throws -> [UInt8] {
        try TestGuests.bytes(name, defines: defines)
    }

    static func expected(_ name: String) throws -> [UInt8] {
        Array(try Data(contentsOf: guestsDir.appendingPathComponent("\(name).expected")))
    }

    static func expectedStop(_ name: String) throws -> VcpuStop {
        let text = String(decoding: try Data(contentsOf: guestsDir.appendingPathComponent("\(name).stop")), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        switch text {
        case "reset": return .reset
        case "shutdown": return .shutdown
        case "haltedForever": return .haltedForever
        case "poweroff": return .poweroff
        default: XCTFail("unknown stop '\(text)' in \(name).stop"); return .hostRequest
        }
    }

    struct Run {
        let stop: Result<VcpuStop, MachineError>
        let output: SerialOutputCollector
        let mmio: TestMMIODevice
        let machine: Machine
    }

    /// Runs a guest on `accelerator` with a watchdog: a guest that does not stop within `timeout`
    /// seconds is stopped and reported as a host request. `irqchip`: KVM's in-kernel interrupt
    /// controllers (then HLT with interrupts on waits in the kernel instead of ending the run).
    static func run(_ name: String, accelerator: Accelerator, timeout: Double = 300, memory: UInt64 = 16 << 20,
                    irqchip: Bool = false, defines: [String] = [], configure: ((inout MachineConfig) -> Void)? = nil,
                    prepare: ((Machine) throws -> Void)? = nil) throws -> Run {
        let binary = try assemble(name, defines: defines)
        var config = MachineConfig()
        configure?(&config)
        config.memorySize = memory
        config.accelerator = accelerator
        config.irqchip = irqchip
        config.quiet = true
        let output = SerialOutputCollector()
        let machine = try Machine(config: config, consoleOutput: output)
        let dev = TestMMIODevice()
        try machine.mmio.register(dev, name: "test-mmio", base: TestMMIODevice.base, length: 0x1000)
        try machine.loadFlat(binary, at: loadAddress,
                             entry: .realMode(cs: 0, ip: UInt16(loadAddress), sp: 0x8000))
        try prepare?(machine)
        let control = machine.control
        let watchdog = DispatchWorkItem { control.requestStop(.hostRequest) }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        defer { watchdog.cancel() }
        let stop: Result<VcpuStop, MachineError>
        do { stop = .success(try machine.run()) } catch { stop = .failure(error) }
        return Run(stop: stop, output: output, mmio: dev, machine: machine)
    }
}
