/// The bzImage setup header (`struct setup_header`, Documentation/arch/x86/boot.rst). It sits at file
/// offset 0x1F1 and is copied to the same offset of the zero page. Field offsets below are absolute
/// (file / zero-page) offsets, as boot.rst lists them.
public struct SetupHeader: Equatable, Sendable {
    public var setupSects: UInt8 = 0          // 0x1F1
    public var rootFlags: UInt16 = 0          // 0x1F2
    public var syssize: UInt32 = 0            // 0x1F4, protected-mode size in 16-byte units
    public var ramSize: UInt16 = 0            // 0x1F8
    public var vidMode: UInt16 = 0            // 0x1FA
    public var rootDev: UInt16 = 0            // 0x1FC
    public var bootFlag: UInt16 = 0           // 0x1FE, 0xAA55
    public var jump: UInt16 = 0               // 0x200, jmp short; its 2nd byte gives the header's end
    public var header: UInt32 = 0             // 0x202, "HdrS"
    public var version: UInt16 = 0            // 0x206
    public var realmodeSwtch: UInt32 = 0      // 0x208
    public var startSysSeg: UInt16 = 0        // 0x20C
    public var kernelVersion: UInt16 = 0      // 0x20E
    public var typeOfLoader: UInt8 = 0        // 0x210
    public var loadflags: UInt8 = 0           // 0x211
    public var setupMoveSize: UInt16 = 0      // 0x212
    public var code32Start: UInt32 = 0        // 0x214
    public var ramdiskImage: UInt32 = 0       // 0x218
    public var ramdiskSize: UInt32 = 0        // 0x21C
    public var bootsectKludge: UInt32 = 0     // 0x220
    public var heapEndPtr: UInt16 = 0         // 0x224
    public var extLoaderVer: UInt8 = 0        // 0x226
    public var extLoaderType: UInt8 = 0       // 0x227
    public var cmdLinePtr: UInt32 = 0         // 0x228
    public var initrdAddrMax: UInt32 = 0      // 0x22C
    public var kernelAlignment: UInt32 = 0    // 0x230
    public var relocatableKernel: UInt8 = 0   // 0x234
    public var minAlignment: UInt8 = 0        // 0x235
    public var xloadflags: UInt16 = 0         // 0x236
    public var cmdlineSize: UInt32 = 0        // 0x238
    public var hardwareSubarch: UInt32 = 0    // 0x23C
    public var hardwareSubarchData: UInt64 = 0 // 0x240
    public var payloadOffset: UInt32 = 0      // 0x248, from the start of the protected-mode code
    public var payloadLength: UInt32 = 0      // 0x24C
    public var setupData: UInt64 = 0          // 0x250
    public var prefAddress: UInt64 = 0        // 0x258
    public var initSize: UInt32 = 0           // 0x260
    public var handoverOffset: UInt32 = 0     // 0x264
    public var kernelInfoOffset: UInt32 = 0   // 0x268

    /// First byte of the header (zero page and file offset).
    public static let offset = 0x1F1
    /// One past the last byte of the newest header we know (protocol 2.15).
    public static let end = 0x26C

    // The "HdrS" signature and boot sector flag.
    public static let magic: UInt32 = 0x5372_6448
    public static let bootFlagMagic: UInt16 = 0xAA55

    // loadflags
    public static let loadedHigh: UInt8 = 0x01
    public static let kaslrFlag: UInt8 = 0x02
    public static let quietFlag: UInt8 = 0x20
    public static let keepSegments: UInt8 = 0x40
    public static let canUseHeap: UInt8 = 0x80

    // xloadflags
    public static let xlfKernel64: UInt16 = 1 << 0
    public static let xlfCanBeLoadedAbove4G: UInt16 = 1 << 1
    public static let xlfEFIHandover32: UInt16 = 1 << 2
    public static let xlfEFIHandover64: UInt16 = 1 << 3
    public static let xlfEFIKexec: UInt16 = 1 << 4
    public static let xlf5Level: UInt16 = 1 << 5
    public static let xlf5LevelEnabled: UInt16 = 1 << 6

    public init() {}

    /// Decodes the header from a bzImage (or a zero page). Only bytes before `min(headerEnd, end)`
    /// are read, as boot.rst says (0x202 + the jump's offset byte): on older kernels the bytes past
    /// it are setup code, not header fields. Missing fields stay 0. Never traps on short input.
    public init(parsing image: [UInt8]) {
        let limit = min(SetupHeader.headerEnd(image), SetupHeader.end, image.count)
        // Each field is read only if it lies entirely before `limit`.
        func f<T: FixedWidthInteger & UnsignedInteger>(_ off: Int, _: T.Type = T.self) -> T {
            off + MemoryLayout<T>.size <= limit ? readLE(image, off) : 0
        }
        setupSects = f(0x1F1); rootFlags = f(0x1F2); syssize = f(0x1F4); ramSize = f(0x1F8)
        vidMode = f(0x1FA); rootDev = f(0x1FC); bootFlag = f(0x1FE); jump = f(0x200); header = f(0x202)
        version = f(0x206); realmodeSwtch = f(0x208); startSysSeg = f(0x20C); kernelVersion = f(0x20E)
        typeOfLoader = f(0x210); loadflags = f(0x211); setupMoveSize = f(0x212); code32Start = f(0x214)
        ramdiskImage = f(0x218); ramdiskSize = f(0x21C); bootsectKludge = f(0x220); heapEndPtr = f(0x224)
        extLoaderVer = f(0x226); extLoaderType = f(0x227); cmdLinePtr = f(0x228); initrdAddrMax = f(0x22C)
        kernelAlignment = f(0x230); relocatableKernel = f(0x234); minAlignment = f(0x235)
        xloadflags = f(0x236); cmdlineSize = f(0x238); hardwareSubarch = f(0x23C)
        hardwareSubarchData = f(0x240); payloadOffset = f(0x248); payloadLength = f(0x24C)
        setupData = f(0x250); prefAddress = f(0x258); initSize = f(0x260); handoverOffset = f(0x264)
        kernelInfoOffset = f(0x268)
    }

    /// Where the header ends according to the image: 0x202 + the byte at 0x201 (the jump's displacement).
    public static func headerEnd(_ image: [UInt8]) -> Int {
        image.count > 0x201 ? 0x202 + Int(image[0x201]) : 0x202
    }

    /// Writes every field at its absolute offset into `page` (a zero page or header-sized buffer).
    public func serialize(into page: inout [UInt8]) {
        func p<T: FixedWidthInteger & UnsignedInteger>(_ v: T, _ off: Int) { writeLE(v, off, into: &page) }
        p(setupSects, 0x1F1); p(rootFlags, 0x1F2); p(syssize, 0x1F4); p(ramSize, 0x1F8)
        p(vidMode, 0x1FA); p(rootDev, 0x1FC); p(bootFlag, 0x1FE); p(jump, 0x200); p(header, 0x202)
        p(version, 0x206); p(realmodeSwtch, 0x208); p(startSysSeg, 0x20C); p(kernelVersion, 0x20E)
        p(typeOfLoader, 0x210); p(loadflags, 0x211); p(setupMoveSize, 0x212); p(code32Start, 0x214)
        p(ramdiskImage, 0x218); p(ramdiskSize, 0x21C); p(bootsectKludge, 0x220); p(heapEndPtr, 0x224)
        p(extLoaderVer, 0x226); p(extLoaderType, 0x227); p(cmdLinePtr, 0x228); p(initrdAddrMax, 0x22C)
        p(kernelAlignment, 0x230); p(relocatableKernel, 0x234); p(minAlignment, 0x235)
        p(xloadflags, 0x236); p(cmdlineSize, 0x238); p(hardwareSubarch, 0x23C)
        p(hardwareSubarchData, 0x240); p(payloadOffset, 0x248); p(payloadLength, 0x24C)
        p(setupData, 0x250); p(prefAddress, 0x258); p(initSize, 0x260); p(handoverOffset, 0x264)
        p(kernelInfoOffset, 0x268)
    }

    /// `setup_sects` with the historical rule applied: 0 means 4.
    public var effectiveSetupSects: Int { setupSects == 0 ? 4 : Int(setupSects) }
    /// Bytes of real-mode code (boot sector + setup) before the protected-mode kernel in the file.
    public var setupBytes: Int { (effectiveSetupSects + 1) * 512 }
    /// Bytes of protected-mode kernel in the file.
    public var protectedModeBytes: UInt64 { UInt64(syssize) * 16 }
    /// Longest command line the kernel takes, without the NUL (255 before cmdline_size existed).
    public var cmdlineMax: Int { cmdlineSize == 0 ? 255 : Int(min(cmdlineSize, UInt32(Int32.max))) }
    /// Highest address the initrd may occupy (0x37FFFFFF when the header leaves it 0).
    public var initrdMax: UInt64 { initrdAddrMax == 0 ? 0x37FF_FFFF : UInt64(initrdAddrMax) }
    /// "2.15" style protocol version.
    public var versionString: String { "\(version >> 8).\(version & 0xFF)" }
}
