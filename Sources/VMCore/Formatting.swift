/// `0x` and lowercase hex digits: how swhv prints addresses, sizes and register values in messages.
@inlinable
public func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

/// Lowercase hex digits padded with zeros to at least `width`, no prefix (byte dumps, PCI addresses).
@inlinable
public func hexDigits<T: BinaryInteger>(_ value: T, width: Int) -> String {
    let digits = String(value, radix: 16)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}

/// What an access of `size` bytes reads where nothing answers (an unclaimed port or MMIO address,
/// a register outside a window): every bit of that width set. Sizes above 8 count as 8.
@inlinable
public func allOnes(size: Int) -> UInt64 {
    size >= 8 ? UInt64.max : (size <= 0 ? 0 : (UInt64(1) << (UInt64(truncatingIfNeeded: size) * 8)) - 1)
}
