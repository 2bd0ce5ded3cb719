// SSE/SSE2 and MMX instructions (0F map), operating on the XMM registers in the FXSAVE image.

extension X86Interpreter {
    func executeSSE(_ d: UnsafePointer<DecodedInsn>) throws(Fault) {
        unimplementedCount &+= 1
        lastUnimplemented = UInt32(0x0F00) | UInt32(truncatingIfNeeded: d.pointee.imm >> 8)
        throw Fault.ud
    }
}
