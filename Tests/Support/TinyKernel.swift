/// Tiny x86-64 "kernels" for `swhv boot`: an ELF vmlinux with one PT_LOAD at 16 MiB whose entry
/// runs a few instructions of 64-bit code. They get past every file and format check in
/// milliseconds, so CLI and console tests can exercise `boot` (raw terminal, signals, exit
/// statuses) without a Linux boot. The loader enters them as it enters Linux: long mode, paging
/// on, interrupts off, an empty IDT.
public enum TinyKernel {
    public static let loadAddress: UInt64 = 0x100_0000

    /// A vmlinux-style ELF whose code is `code`.
    public static func elf(_ code: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 0x1000)
        func p<T: FixedWidthInteger>(_ v: T, _ off: Int) {
            for i in 0..<MemoryLayout<T>.size { b[off + i] = UInt8(truncatingIfNeeded: v >> (8 * i)) }
        }
        b[0] = 0x7F; b[1] = 0x45; b[2] = 0x4C; b[3] = 0x46; b[4] = 2; b[5] = 1; b[6] = 1   // ELF64 LSB v1
        p(UInt16(2), 0x10); p(UInt16(62), 0x12); p(UInt32(1), 0x14)        // ET_EXEC, EM_X86_64
        p(loadAddress, 0x18); p(UInt64(64), 0x20)                           // entry, phoff
        p(UInt16(64), 0x34); p(UInt16(56), 0x36); p(UInt16(1), 0x38)        // ehsize, phentsize, phnum
        let size = UInt64(max(code.count, 16))
        p(UInt32(1), 64); p(UInt32(7), 68); p(UInt64(0x1000), 72)            // PT_LOAD RWX at file 0x1000
        p(loadAddress, 80); p(loadAddress, 88); p(size, 96); p(size, 104)   // vaddr, paddr, filesz, memsz
        return b + code + [UInt8](repeating: 0xF4, count: Int(size) - code.count)
    }

    // MARK: Programs

    /// Writes `text` to COM1 (port 0x3F8), one `out` per byte.
    public static func print(_ text: String) -> [UInt8] {
        [0x66, 0xBA, 0xF8, 0x03] + text.utf8.flatMap { [0xB0, $0, 0xEE] }   // mov dx, 0x3f8; (mov al, b; out dx, al)*
    }

    /// Pulses reset through the i8042, as Linux's `reboot=k` does: swhv ends with status 0.
    public static let reset: [UInt8] = [0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD]   // mov al, 0xfe; out 0x64, al; hlt; jmp $-1

    /// `ud2` with an empty IDT: #UD cannot be delivered, nor the double fault: a triple fault.
    public static let tripleFault: [UInt8] = [0x0F, 0x0B]

    /// Spins forever without halting: only the host can end it.
    public static let spin: [UInt8] = [0xEB, 0xFE]

    /// Raises DTR and RTS (the UART's "ready to receive"), then echoes every byte received on COM1
    /// back to it until it has echoed an EOT (0x04), then resets.
    public static let echoUntilEOT: [UInt8] = [
        0x66, 0xBA, 0xFC, 0x03, 0xB0, 0x03, 0xEE,  // mov dx, 0x3fc; mov al, DTR|RTS; out dx, al
        0x66, 0xBA, 0xFD, 0x03,                    // poll: mov dx, 0x3fd
        0xEC, 0xA8, 0x01, 0x74, 0xF7,              //   in al, dx; test al, 1 (DR); jz poll
        0x66, 0xBA, 0xF8, 0x03, 0xEC, 0xEE,        //   mov dx, 0x3f8; in al, dx; out dx, al
        0x3C, 0x04, 0x75, 0xED,                    //   cmp al, 4; jne poll
    ] + reset

    /// Prints `text`, then resets.
    public static func printAndReset(_ text: String) -> [UInt8] { print(text) + reset }
}
