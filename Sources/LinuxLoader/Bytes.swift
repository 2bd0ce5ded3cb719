// Little-endian field access on byte arrays. Reads past the end yield 0 so a parser can never trap;
// callers check lengths first wherever a short file must be an error.

@inline(__always)
func readLE<T: FixedWidthInteger & UnsignedInteger>(_ bytes: [UInt8], _ offset: Int, as: T.Type = T.self) -> T {
    let n = MemoryLayout<T>.size
    guard offset >= 0, offset <= bytes.count, n <= bytes.count - offset else { return 0 }
    var v: T = 0
    for i in 0..<n { v |= T(bytes[offset + i]) << (8 * i) }
    return v
}

@inline(__always)
func writeLE<T: FixedWidthInteger & UnsignedInteger>(_ value: T, _ offset: Int, into bytes: inout [UInt8]) {
    let n = MemoryLayout<T>.size
    guard offset >= 0, offset <= bytes.count, n <= bytes.count - offset else { return }
    for i in 0..<n { bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
}
