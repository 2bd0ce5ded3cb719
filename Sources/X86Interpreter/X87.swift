// x87 floating point (D8-DF), using the host's 80-bit Float80 for arithmetic.

extension X86Interpreter {
    func executeX87(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        try checkFPUAvailable()
        unimplementedCount &+= 1
        lastUnimplemented = UInt32(truncatingIfNeeded: d.pointee.imm)
        throw Fault.ud
    }
}
