import VMCore

/// Why a kernel, initrd or command line cannot be loaded. Each case prints as one line a user can act on.
public enum LoaderError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file is neither a bzImage (no "HdrS" setup header) nor an ELF file.
    case notAKernel(size: Int)
    /// The file ends before `what` does.
    case truncated(what: String, needed: UInt64, have: UInt64)
    /// A signature field holds the wrong value.
    case badMagic(field: String, found: UInt64, expected: UInt64)
    /// The boot protocol is older than 2.12, the first with `xloadflags` and the 64-bit entry.
    case protocolTooOld(version: UInt16)
    /// The kernel does not advertise the 64-bit entry point (`XLF_KERNEL_64`).
    case no64BitEntry(xloadflags: UInt16)
    /// `setup_sects` is beyond what Linux's build tool ever produces.
    case badSetupSects(Int)
    /// A setup-header field holds a value no real kernel has.
    case badHeader(String)
    /// The kernel needs `[loadAddress, loadAddress+needed)` but RAM below the PCI hole ends at `ramEnd`.
    case kernelDoesNotFit(loadAddress: UInt64, needed: UInt64, ramEnd: UInt64)
    /// No page-aligned place for the initrd between the kernel's end and the highest allowed address.
    case initrdDoesNotFit(size: UInt64, lowest: UInt64, highest: UInt64)
    /// An empty initrd file: almost certainly a mistake.
    case emptyInitrd
    /// The command line (without its terminating NUL) is longer than the kernel accepts.
    case cmdlineTooLong(length: Int, max: Int)
    /// The command line contains a NUL byte, which would silently cut it short.
    case cmdlineContainsNul
    /// An ELF file for another architecture or ABI.
    case elfNotX86_64(String)
    /// An x86-64 ELF file whose headers cannot be loaded.
    case badELF(String)
    /// More than 128 e820 entries (the zero page's table size).
    case tooManyE820Entries(Int)
    /// Guest RAM is too small for the loader's fixed low-memory structures.
    case memoryTooSmall(size: UInt64, needed: UInt64)
    /// The bzImage payload cannot be decompressed on the host.
    case decompression(String)

    public var description: String {
        switch self {
        case .notAKernel(let size):
            return size == 0 ? "kernel file is empty"
                : "not a Linux kernel: \(size) bytes with neither a bzImage setup header (\"HdrS\") nor an ELF header"
        case .truncated(let what, let needed, let have):
            return "kernel file is truncated: \(what) needs \(needed) bytes but the file has \(have)"
        case .badMagic(let field, let found, let expected):
            return "not a bzImage: \(field) is \(hex(found)), expected \(hex(expected))"
        case .protocolTooOld(let v):
            return "kernel boot protocol \(v >> 8).\(v & 0xFF) is too old: 2.12 or newer is required for the 64-bit entry"
        case .no64BitEntry(let x):
            return "kernel has no 64-bit entry point (xloadflags \(hex(UInt64(x))) lacks XLF_KERNEL_64): not an x86-64 kernel"
        case .badSetupSects(let n):
            return "bad setup header: setup_sects is \(n) (at most 64 for any Linux kernel)"
        case .badHeader(let s):
            return "bad setup header: \(s)"
        case .kernelDoesNotFit(let addr, let needed, let end):
            return "kernel does not fit in guest RAM: it needs \(mib(needed)) MiB at \(mib(addr)) MiB "
                + "but RAM below 3 GiB ends at \(mib(end)) MiB; give the guest more memory"
        case .initrdDoesNotFit(let size, let lo, let hi):
            return "initrd (\(mib(size)) MiB) does not fit in guest RAM: only \(mib(hi > lo ? hi - lo : 0)) MiB free "
                + "between the kernel's end (\(mib(lo)) MiB) and \(mib(hi)) MiB; give the guest more memory"
        case .emptyInitrd:
            return "initrd file is empty"
        case .cmdlineTooLong(let len, let max):
            return "kernel command line is \(len) bytes; this kernel accepts at most \(max)"
        case .cmdlineContainsNul:
            return "kernel command line contains a NUL byte"
        case .elfNotX86_64(let s):
            return "ELF kernel is not x86-64: \(s)"
        case .badELF(let s):
            return "bad ELF kernel: \(s)"
        case .tooManyE820Entries(let n):
            return "too many e820 entries: \(n) (the zero page holds at most \(BootParams.maxE820Entries))"
        case .memoryTooSmall(let size, let needed):
            return "guest RAM below 3 GiB is \(size) bytes; the boot structures need at least \(needed)"
        case .decompression(let s):
            return "cannot decompress the kernel: \(s)"
        }
    }
}

/// Mebibytes with one decimal when it matters, for messages.
func mib(_ bytes: UInt64) -> String {
    let whole = bytes >> 20
    let tenth = ((bytes & 0xFFFFF) * 10) >> 20
    return tenth == 0 ? "\(whole)" : "\(whole).\(tenth)"
}
