import VMCore
/// One entry of the BIOS e820 memory map as the zero page holds it (`struct boot_e820_entry`, packed, 20 bytes).
public struct E820Entry: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var addr: UInt64
    public var size: UInt64
    public var type: UInt32

    public static let ram: UInt32 = 1
    public static let reserved: UInt32 = 2
    public static let acpi: UInt32 = 3
    public static let nvs: UInt32 = 4
    public static let unusable: UInt32 = 5
    public static let pmem: UInt32 = 7
    public static let pram: UInt32 = 12
    public static let softReserved: UInt32 = 0xEFFF_FFFF

    public init(addr: UInt64, size: UInt64, type: UInt32) {
        self.addr = addr; self.size = size; self.type = type
    }

    /// One past the last byte, saturating (a malformed entry must not trap).
    public var end: UInt64 {
        let (e, o) = addr.addingReportingOverflow(size)
        return o ? UInt64.max : e
    }

    public var description: String {
        let name: String
        switch type {
        case E820Entry.ram: name = "usable"
        case E820Entry.reserved: name = "reserved"
        case E820Entry.acpi: name = "ACPI data"
        case E820Entry.nvs: name = "ACPI NVS"
        case E820Entry.unusable: name = "unusable"
        default: name = "type \(type)"
        }
        return "[\(hex(addr))-\(hex(end &- 1))] \(name)"
    }

    public static let byteSize = 20
}

/// The zero page (`struct boot_params`, arch/x86/include/uapi/asm/bootparam.h): what a boot loader
/// tells the kernel. Only the fields a VMM fills are modelled; everything else serialises as zero.
public struct BootParams: Equatable, Sendable {
    public var acpiRsdpAddr: UInt64 = 0      // 0x070
    public var extRamdiskImage: UInt32 = 0   // 0x0C0, bits 32..63 of the initrd address
    public var extRamdiskSize: UInt32 = 0    // 0x0C4
    public var extCmdLinePtr: UInt32 = 0     // 0x0C8
    public var hdr = SetupHeader()           // 0x1F1
    public var e820Table: [E820Entry] = []   // count at 0x1E8, table at 0x2D0

    public static let size = 4096
    public static let maxE820Entries = 128

    static let acpiRsdpAddrOffset = 0x070
    static let extRamdiskImageOffset = 0x0C0
    static let extRamdiskSizeOffset = 0x0C4
    static let extCmdLinePtrOffset = 0x0C8
    static let e820EntriesOffset = 0x1E8
    static let e820TableOffset = 0x2D0

    public init() {}

    /// The 4096 bytes to place in guest memory. At most `maxE820Entries` e820 entries are written
    /// (the loader refuses more before it gets here).
    public func serialized() -> [UInt8] {
        var page = [UInt8](repeating: 0, count: BootParams.size)
        writeLE(acpiRsdpAddr, BootParams.acpiRsdpAddrOffset, into: &page)
        writeLE(extRamdiskImage, BootParams.extRamdiskImageOffset, into: &page)
        writeLE(extRamdiskSize, BootParams.extRamdiskSizeOffset, into: &page)
        writeLE(extCmdLinePtr, BootParams.extCmdLinePtrOffset, into: &page)
        hdr.serialize(into: &page)
        let entries = e820Table.prefix(BootParams.maxE820Entries)
        page[BootParams.e820EntriesOffset] = UInt8(entries.count)
        for (i, e) in entries.enumerated() {
            let o = BootParams.e820TableOffset + i * E820Entry.byteSize
            writeLE(e.addr, o, into: &page)
            writeLE(e.size, o + 8, into: &page)
            writeLE(e.type, o + 16, into: &page)
        }
        return page
    }

    /// Decodes a zero page (e.g. read back from guest memory). Short input decodes as zeros.
    public init(bytes page: [UInt8]) {
        acpiRsdpAddr = readLE(page, BootParams.acpiRsdpAddrOffset)
        extRamdiskImage = readLE(page, BootParams.extRamdiskImageOffset)
        extRamdiskSize = readLE(page, BootParams.extRamdiskSizeOffset)
        extCmdLinePtr = readLE(page, BootParams.extCmdLinePtrOffset)
        // The zero page always carries the full header; the jump-based end applies to files only.
        var padded = page
        if padded.count > 0x201 { padded[0x201] = UInt8(SetupHeader.end - 0x202) }
        hdr = SetupHeader(parsing: padded)
        hdr.jump = readLE(page, 0x200)
        let n = min(Int(readLE(page, BootParams.e820EntriesOffset, as: UInt8.self)), BootParams.maxE820Entries)
        e820Table = (0..<n).map { i in
            let o = BootParams.e820TableOffset + i * E820Entry.byteSize
            return E820Entry(addr: readLE(page, o), size: readLE(page, o + 8), type: readLE(page, o + 16))
        }
    }

    /// The initrd address with its high bits (ext_ramdisk_image).
    public var ramdiskAddress: UInt64 { UInt64(extRamdiskImage) << 32 | UInt64(hdr.ramdiskImage) }
    public var ramdiskSize: UInt64 { UInt64(extRamdiskSize) << 32 | UInt64(hdr.ramdiskSize) }
    public var cmdlineAddress: UInt64 { UInt64(extCmdLinePtr) << 32 | UInt64(hdr.cmdLinePtr) }
}
