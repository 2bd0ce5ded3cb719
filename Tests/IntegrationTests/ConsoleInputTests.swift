import CPUBackend
import Devices
import Foundation
import SwhvTestSupport
import VMM
import XCTest

/// Host input on its way to the guest's UART: bounded, never dropped, in order.
final class ConsoleInputTests: XCTestCase {
    /// A writer faster than the guest: while the guest does not run, swhv reads at most
    /// `Machine.maxPendingInput` ahead (plus one read buffer) and the writer blocks on the full
    /// pipe; once the guest runs, every byte arrives once and in order.
    func testInputIsHeldBackNotQueuedWithoutBoundOrDropped() throws {
        var config = MachineConfig()
        config.memorySize = 64 << 20
        config.accelerator = .interp
        config.quiet = true
        let output = SerialOutputCollector()
        let machine = try Machine(config: config, consoleOutput: output)
        try machine.loadLinux(kernel: TinyKernel.elf(TinyKernel.echoUntilEOT), initrd: nil, cmdline: "")

        // 256 KiB of bytes other than EOT (the echo guest's end mark), then EOT.
        var input = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 % 251) | 0x10 }
        input.append(0x04)
        var fds: [Int32] = [-1, -1]
        XCTAssertEqual(pipe(&fds), 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        let written = WrittenCount()
        nonisolated(unsafe) let bytes = input
        let writer = Thread {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { write(writeEnd, $0.baseAddress, min($0.count, 4096)) }
                if n <= 0 { break }
                off += n
                written.set(off)
            }
            close(writeEnd)
        }
        writer.start()
        machine.startStdinPump(fd: readEnd, handleEscape: false)

        // The guest is not running: nothing consumes. Wait until the writer makes no more progress.
        var last = -1
        for _ in 0..<100 {
            usleep(50_000)
            if written.value == last { break }
            last = written.value
        }
        let pipeCapacity = Int(fcntl(readEnd, 1032 /* F_GETPIPE_SZ */))
        XCTAssertLessThan(written.value, input.count, "the writer should be held back")
        XCTAssertLessThanOrEqual(written.value, Machine.maxPendingInput + 4096 + pipeCapacity,
                                 "swhv read further ahead than its bound")
        XCTAssertLessThanOrEqual(machine.inputBacklogCount, Machine.maxPendingInput)

        // Now the guest runs and echoes everything back; it resets at the EOT.
        let control = machine.control
        let watchdog = DispatchWorkItem { control.requestStop(.hostRequest) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 600, execute: watchdog)
        defer { watchdog.cancel() }
        XCTAssertEqual(try machine.run(), .reset, "the guest saw the EOT")
        XCTAssertEqual(output.bytes.count, input.count, "bytes echoed")
        XCTAssertTrue(output.bytes == input, "every byte once, in order")
    }
}

final class WrittenCount: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func set(_ v: Int) { lock.lock(); n = v; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
