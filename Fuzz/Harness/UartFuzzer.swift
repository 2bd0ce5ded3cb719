import CPUBackend
import Devices

/// Interrupt lines and MSIs as devices drive them; checks levels only change by edges.
final class FuzzInterrupts: InterruptController, @unchecked Sendable {
    var levels: [UInt32: Bool] = [:]
    var msis = 0
    func setIRQ(_ gsi: UInt32, level: Bool) { levels[gsi] = level }
    func signalMSI(address: UInt64, data: UInt32) { msis += 1 }
}

/// Counts console bytes instead of keeping them (a long input must not grow memory).
final class CountingOutput: SerialOutput {
    var count = 0
    func write(_ byte: UInt8) { count += 1 }
}

/// Random register accesses to a 16550 (including odd sizes and offsets past its eight ports),
/// interleaved with host input fed the way the machine feeds it (refilled from `onReceiveReady`).
public enum UartFuzzer {
    public static func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var input = FuzzInput(data)
        let irq = FuzzInterrupts()
        let out = CountingOutput()
        let uart = Uart16550(irq: IRQLine(controller: irq, gsi: 4), output: out)
        var pending: [UInt8] = []
        var feeds = 0
        uart.onReceiveReady = { [unowned uart] in
            feeds += 1
            guard !pending.isEmpty else { return }
            let n = uart.enqueue(pending)
            checks.expect(n >= 0 && n <= pending.count, "enqueue accepted \(n) of \(pending.count)")
            pending.removeFirst(n)
        }
        var writes = 0
        while !input.isAtEnd {
            switch input.u8() % 4 {
            case 0:
                let offset = UInt64(input.u8() % 12)
                _ = uart.read(offset: offset, size: input.accessSize())
            case 1:
                let offset = UInt64(input.u8() % 12)
                let size = input.accessSize()
                uart.write(offset: offset, size: size, value: input.u64())
                writes += 1
            case 2:
                pending += input.take(Int(input.u8() % 80))
                if pending.count > 256 { pending.removeFirst(pending.count - 256) }
                let n = uart.enqueue(pending)
                pending.removeFirst(n)
            default:
                // A burst of the registers the 8250 driver polls.
                for reg: UInt64 in [5, 2, 0, 6] { _ = uart.read(offset: reg, size: 1) }
            }
            checks.expect(uart.receiveCount <= Uart16550.receiveCapacity, "rx FIFO holds \(uart.receiveCount)")
            checks.expect(uart.receiveSpace >= 0, "negative receive space")
            checks.expect(uart.interruptLineHigh == (irq.levels[4] ?? false), "IRQ line and UART disagree")
            // At most one byte reaches the line per register write: only the byte at offset 0
            // (THR, with DLAB clear) of a split wide access transmits (docs/security.md).
            checks.expect(out.count <= writes, "\(out.count) bytes out after \(writes) register writes")
        }
        return ["bytesOut": out.count, "received": uart.receivedBytes, "writes": writes, "feeds": feeds]
    }
}
