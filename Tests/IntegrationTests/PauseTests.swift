import APIServer
import CPUBackend
import Devices
import Foundation
import JSONCoding
import KVM
import Snapshot
import SwhvTestSupport
import VMMemory
import VMM
import XCTest

/// Console output collected from the vCPU thread and read by the test thread.
final class LockedOutput: SerialOutput, @unchecked Sendable {
    private let lock = NSLock()
    private var bytes: [UInt8] = []
    func write(_ byte: UInt8) { lock.lock(); bytes.append(byte); lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: bytes, as: UTF8.self) }
}

/// A small test guest (Tests/Guests/clock.asm) running on its own vCPU thread, driven like the API
/// drives a VM: through a `VMController`.
final class ClockGuest: @unchecked Sendable {
    let machine: Machine
    let controller: VMController
    let output = LockedOutput()
    private let finished = DispatchSemaphore(value: 0)
    private(set) var stop: Result<VcpuStop, MachineError>?

    init(accelerator: Accelerator) throws {
        let binary = try GuestHarness.assemble("clock")
        var config = MachineConfig()
        config.memorySize = 16 << 20
        config.accelerator = accelerator
        config.irqchip = false
        config.quiet = true
        machine = try Machine(config: config, consoleOutput: output)
        try machine.loadFlat(binary, at: GuestHarness.loadAddress, entry: .realMode(cs: 0, ip: UInt16(GuestHarness.loadAddress), sp: 0x8000))
        controller = VMController(machine: machine)
        let thread = Thread { [self] in
            let r: Result<VcpuStop, MachineError>
            do throws(MachineError) { r = .success(try machine.run()) } catch { r = .failure(error) }
            stop = r
            controller.vcpuStopped("\(r)")
            finished.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Asks the guest for a report and returns it: the largest step its TSC took between two reads,
    /// and how far it advanced, since the previous report.
    func report(timeout: TimeInterval = 60) throws -> (maxStep: UInt64, total: UInt64) {
        let before = output.text.components(separatedBy: "\n").count
        machine.sendInput([UInt8(ascii: "r")])
        let deadline = Date().addingTimeInterval(timeout)   // a hang watchdog only
        while Date() < deadline {
            let lines = output.text.components(separatedBy: "\n")
            if lines.count > before, let line = lines.dropLast().last, line.hasPrefix("clock ") {
                let f = line.split(separator: " ")
                guard f.count == 3, let m = UInt64(f[1], radix: 16), let t = UInt64(f[2], radix: 16) else { break }
                return (m, t)
            }
            usleep(2_000)
        }
        throw TestSetupError("the clock guest did not report; output: \(output.text.suffix(300))")
    }

    /// Ends the guest ('q': i8042 reset) and waits for the vCPU thread.
    func quit() -> Result<VcpuStop, MachineError>? {
        machine.sendInput([UInt8(ascii: "q")])
        if finished.wait(timeout: .now() + 30) == .timedOut {
            machine.control.requestStop(.hostRequest)
            _ = finished.wait(timeout: .now() + 30)
        }
        return stop
    }
}

final class PauseTests: XCTestCase {
    /// Over a window that contains a 2-second pause, the guest's clock must not show the pause:
    /// the largest step between two TSC reads stays far below the window the guest saw (which
    /// is what ran outside the pause). Without stopping the clocks, the step would be the whole
    /// pause, most of the window.
    func pauseHidesTime(_ accelerator: Accelerator, clockCanStop: Bool = true) throws {
        let guest = try ClockGuest(accelerator: accelerator)
        _ = try guest.report()   // the first window starts now
        usleep(300_000)
        try guest.controller.pause()
        let pausedInstructions = try guest.controller.vmInfo()["guest_instructions"]
        XCTAssertEqual(guest.controller.runState, .paused)
        usleep(2_000_000)
        XCTAssertEqual(try guest.controller.vmInfo()["guest_instructions"], pausedInstructions,
                       "a paused guest runs no instruction")
        XCTAssertEqual(try guest.controller.vmInfo()["state"], "Paused")
        try guest.controller.resume()
        usleep(300_000)
        let window = try guest.report()
        XCTAssertGreaterThan(window.total, 0)
        if clockCanStop {
            XCTAssertLessThan(window.maxStep * 2, window.total,
                              "the guest saw a step of \(window.maxStep) ticks in a window of \(window.total): the pause showed")
        }
        _ = try guest.report()   // and it runs on
        XCTAssertEqual(try guest.quit()?.get(), .reset)
    }

    func testPauseStopsGuestTimeOnTheInterpreter() throws {
        try pauseHidesTime(.interp)
    }

    /// On a host with hardware TSC offsetting the TSC stops too. kvm-pvm (this CI's /dev/kvm) has
    /// none: the guest reads the host's TSC, so there the test checks that pause and resume work
    /// and the guest runs on, and the time check applies where the host can offset the TSC.
    func testPauseStopsGuestTimeOnKVM() throws {
        try GuestHarness.requireKVM()
        let probe = try KVMBackend(memory: try GuestMemory(size: 2 << 20), irqchip: false)
        try pauseHidesTime(.kvm, clockCanStop: probe.vcpu.canOffsetTSC())
    }

    func testWrongStateRequestsAreRefusedAndTheGuestRunsOn() throws {
        let guest = try ClockGuest(accelerator: .interp)
        XCTAssertThrowsError(try guest.controller.resume()) { e in
            XCTAssertEqual(e as? APIFault, APIFault("the VM is not paused (it is running)"))
        }
        let dir = NSTemporaryDirectory() + "swhv-pause-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try guest.controller.createSnapshot(statePath: dir + "/state", memoryPath: dir + "/memory")) { e in
            XCTAssertTrue((e as? APIFault)?.message.contains("pause it first") ?? false, "\(e)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "no files from a refused snapshot")
        try guest.controller.pause()
        XCTAssertThrowsError(try guest.controller.pause()) { e in
            XCTAssertEqual(e as? APIFault, APIFault("the VM is already paused"))
        }
        try guest.controller.resume()
        _ = try guest.report()   // still running and answering
        XCTAssertEqual(try guest.quit()?.get(), .reset)
        XCTAssertThrowsError(try guest.controller.pause()) { e in
            XCTAssertEqual((e as? APIFault)?.status, 503, "a stopped VM answers 503")
        }
    }

    /// Ctrl-A x (a host stop request) on a paused VM ends it: the paused vCPU wakes and leaves.
    func testAStopRequestEndsAPausedVM() throws {
        let guest = try ClockGuest(accelerator: .interp)
        try guest.controller.pause()
        guest.machine.control.requestStop(.hostRequest)
        XCTAssertEqual(try guest.quit()?.get(), .hostRequest)
        XCTAssertEqual(guest.controller.runState, .stopped)
    }

    /// The whole path a user takes: the API socket, a paused snapshot, resume, and a machine
    /// restored from it with the devices, the vCPU and the clock as they were when paused.
    func testSnapshotOverTheSocket() throws {
        let guest = try ClockGuest(accelerator: .interp)
        let dir = NSTemporaryDirectory() + "swhv-snap-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try APIServer(path: dir + "/api.sock", router: APIRouter(operations: guest.controller))
        server.start()
        defer { server.stop() }
        func call(_ m: String, _ p: String, _ body: JSONValue? = nil) throws -> APIClient.Response {
            try APIClient.request(socket: server.path, method: m, path: p, body: body, timeoutSeconds: 60)
        }
        let paths = PreparedRestore.paths(directory: dir)
        let create = JSONValue.object(JSONObject([("snapshot_path", .string(paths.state)), ("mem_file_path", .string(paths.memory))]))
        XCTAssertEqual(try call("PUT", "/snapshot/create", create).status, 400)
        XCTAssertEqual(try call("PATCH", "/vm", .object(JSONObject([("state", "Paused")]))).status, 204)
        let info = try call("GET", "/vm")
        XCTAssertEqual(info.json?["state"], "Paused")
        XCTAssertEqual(info.json?["backend"], "interpreter")
        XCTAssertEqual(try call("GET", "/machine-config").json?["mem_size_mib"], 16)
        XCTAssertEqual(try call("PUT", "/snapshot/create", create).status, 204)
        XCTAssertEqual(try call("PATCH", "/vm", .object(JSONObject([("state", "Resumed")]))).status, 204)
        _ = try guest.report()

        let loaded = try LoadedSnapshot.read(statePath: paths.state)
        // The devices as they were when paused: a fresh platform takes them back.
        let devices = try XCTUnwrap(loaded.container.payload(SectionTag.devices))
        let saved = try JSONValueDecoder().decode(PlatformState.self, from: devices)
        XCTAssertEqual(saved.virtio.count, 0)
        XCTAssertNotNil(saved.pit, "the interpreter's platform has its own PIT")
        var config = MachineConfig()
        config.memorySize = 16 << 20
        config.accelerator = .interp
        config.irqchip = false
        config.quiet = true
        let fresh = try Machine(config: config, consoleOutput: LockedOutput())
        XCTAssertNoThrow(try PlatformSnapshotPart().restore(devices, into: fresh))
        XCTAssertEqual(fresh.platform.captureState().uart, saved.uart)
        XCTAssertEqual(loaded.machine.memoryBytes, 16 << 20)
        XCTAssertEqual(loaded.machine.backend, "interpreter")
        XCTAssertGreaterThan(loaded.memory.dataBytes, 0)
        XCTAssertLessThan(loaded.memory.dataBytes, 1 << 20, "a 16 MiB guest that touched a few pages writes a few pages")
        let fd = try GuestMemorySnapshot.open(path: paths.memory, section: loaded.memory, verifyContents: true)
        let code = try GuestHarness.assemble("clock")
        var head = [UInt8](repeating: 0, count: code.count)
        _ = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(4096 + GuestHarness.loadAddress)) }
        close(fd)
        XCTAssertEqual(Array(head.prefix(64)), Array(code.prefix(64)), "the guest's code is in the memory file where it ran")

        // The vCPU as it was when paused: a restored machine's software CPU holds exactly that state.
        let cpu = try XCTUnwrap(loaded.container.payload(SectionTag.cpu))
        let prepared = try PreparedRestore.check(statePath: paths.state, memoryPath: paths.memory,
                                                 memoryLimit: nil, verifyMemory: true)
        let restored = try Machine.restore(prepared, accelerator: .interp, quiet: true, verbose: false,
                                           consoleOutput: LockedOutput())
        XCTAssertEqual(try CPUSnapshotPart().capture(from: restored), cpu)
        XCTAssertGreaterThanOrEqual(restored.clock.nowNs, loaded.machine.clockNs, "the VM clock reads on from the pause")
        XCTAssertThrowsError(try PreparedRestore.check(statePath: paths.state, memoryPath: paths.memory,
                                                       memoryLimit: 8 << 20, verifyMemory: true)) { e in
            XCTAssertTrue("\(e)".contains("more than --memory allows"), "\(e)")
        }
        XCTAssertEqual(try guest.quit()?.get(), .reset)
    }
}
