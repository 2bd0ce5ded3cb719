/// `length` consecutive addresses from `base` on a port or MMIO bus.
public struct BusRange: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let base: UInt64
    public let length: UInt64
    public init(base: UInt64, length: UInt64) { self.base = base; self.length = length }

    /// The last address inside the range (`base + length - 1`; ranges never wrap).
    public var last: UInt64 { base &+ (length &- 1) }
    public func contains(_ address: UInt64) -> Bool { address >= base && address - base < length }
    public var description: String { "\(hex(base))+\(hex(length))" }
}

/// The machine's layout in one table: every port and MMIO range swhv decodes or keeps free, and
/// every interrupt line (GSI). The platform places its devices from here and the KVM backend its
/// private pages; nothing else hard-codes an address. A new device gets its range and line here.
///
/// It is a PC without an I/O APIC yet: GSI n is ISA IRQ n on the 8259 pair (on KVM the in-kernel
/// irqchip also routes GSI n to I/O APIC pin n, its default routing).
public enum PCLayout {
    /// Port I/O.
    public enum Port {
        /// 8259 master (command, data).
        public static let picMaster = BusRange(base: 0x20, length: 2)
        /// 8254 PIT counters 0-2 and control word.
        public static let pit = BusRange(base: 0x40, length: 4)
        /// i8042 data port.
        public static let i8042Data = BusRange(base: 0x60, length: 1)
        /// System control port B: PIT channel 2 gate and output, speaker enable.
        public static let systemControlB = BusRange(base: 0x61, length: 1)
        /// i8042 status/command port.
        public static let i8042Command = BusRange(base: 0x64, length: 1)
        /// MC146818 RTC and CMOS (index, data).
        public static let rtc = BusRange(base: 0x70, length: 2)
        /// POST code port; Linux's `outb_p` delay writes here.
        public static let postCode = BusRange(base: 0x80, length: 1)
        /// 8259 slave (command, data).
        public static let picSlave = BusRange(base: 0xA0, length: 2)
        /// COM1 16550 UART.
        public static let com1 = BusRange(base: 0x3F8, length: 8)
        /// swhv's boot-progress port (the test initramfs writes 1 when userspace is up).
        public static let bootTimer = BusRange(base: 0x440, length: 1)
        /// 8259 edge/level control registers (ELCR).
        public static let elcr = BusRange(base: 0x4D0, length: 2)
        /// PCI configuration mechanism #1 (CONFIG_ADDRESS, the reset control register 0xCF9,
        /// CONFIG_DATA).
        public static let pciConfig = BusRange(base: 0xCF8, length: 8)
    }

    /// Guest-physical MMIO, all inside the 32-bit hole [3 GiB, 4 GiB) that guest RAM never uses.
    public enum MMIO {
        /// Where PCI BARs are assigned.
        public static let pciWindow = BusRange(base: 0xC000_0000, length: 0x1000_0000)
        /// The boot-progress register again, for kernels without /dev/port.
        public static let bootTimer = BusRange(base: 0xD100_0000, length: 1)
        /// KVM's identity-map page (one page) and TSS (three pages), below the I/O APIC: guest RAM
        /// and devices stay clear of them (as in Firecracker and QEMU).
        public static let kvmIdentityMap = BusRange(base: 0xFFFB_C000, length: 0x1000)
        public static let kvmTSS = BusRange(base: 0xFFFB_D000, length: 0x3000)
        /// The I/O APIC (KVM's in-kernel one; no device of swhv's yet).
        public static let ioapic = BusRange(base: 0xFEC0_0000, length: 0x1000)
        /// The local APIC's default base (inside the vCPU on both backends).
        public static let localAPIC = BusRange(base: 0xFEE0_0000, length: 0x1000)
    }

    /// Interrupt lines.
    public enum GSI {
        public static let pit: UInt32 = 0
        public static let keyboard: UInt32 = 1
        /// Master IR2: the slave's output, not a device line.
        public static let cascade: UInt32 = 2
        public static let com1: UInt32 = 4
        public static let rtc: UInt32 = 8
        /// Shared INTx of every PCI function (virtio-pci devices use MSI-X; INTx is their fallback).
        public static let pciIntx: UInt32 = 11
        /// Lines of the 8259 pair.
        public static let isaCount: UInt32 = 16
    }
}
