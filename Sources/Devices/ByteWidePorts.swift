/// Splits a wide port access into byte cycles on consecutive ports, as the ISA bus does for byte-wide
/// devices. Bytes that fall outside the device's `length` ports read as 0xFF and are dropped on write.
enum ByteWidePorts {
    static func read(offset: UInt64, size: Int, length: UInt64, byte: (UInt64) -> UInt8) -> UInt64 {
        var result: UInt64 = 0
        for i in 0..<min(max(size, 1), 8) {
            let port = offset.addingReportingOverflow(UInt64(truncatingIfNeeded: i))
            let b: UInt8 = !port.overflow && port.partialValue < length ? byte(port.partialValue) : 0xFF
            result |= UInt64(b) << (UInt64(truncatingIfNeeded: i) * 8)
        }
        return result
    }

    static func write(offset: UInt64, size: Int, value: UInt64, length: UInt64, byte: (UInt64, UInt8) -> Void) {
        for i in 0..<min(max(size, 1), 8) {
            let port = offset.addingReportingOverflow(UInt64(truncatingIfNeeded: i))
            if !port.overflow && port.partialValue < length {
                byte(port.partialValue, UInt8(truncatingIfNeeded: value >> (UInt64(truncatingIfNeeded: i) * 8)))
            }
        }
    }
}
