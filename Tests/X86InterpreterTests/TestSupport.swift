import CPUBackend
import VMMemory
import X86Interpreter
import XCTest

/// Port and MMIO accesses recorded for assertions.
final class RecordingIO: IOHandler {
    var portWrites: [(port: UInt16, size: Int, value: UInt32)] = []
    var portReads: [UInt16] = []
    var mmioWrites: [(address: UInt64, size: Int, value: UInt64)] = []
    var portReadValue: UInt32 = 0x5A
    var mmioReadValue: UInt64 = 0x1234_5678_9ABC_DEF0

    func portRead(_ port: UInt16, size: Int) -> UInt32 {
        portReads.append(port)
        return size == 4 ? portReadValue : portReadValue & ((1 << UInt32(size * 8)) - 1)
    }
    func portWrite(_ port: UInt16, size: Int, value: UInt32) { portWrites.append((port, size, value)) }
    func mmioRead(_ address: UInt64, size: Int) -> UInt64 {
        size == 8 ? mmioReadValue : mmioReadValue & ((1 << UInt64(size * 8)) - 1)
    }
    func mmioWrite(_ address: UInt64, size: Int, value: UInt64) { mmioWrites.append((address, size, value)) }
}

func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
