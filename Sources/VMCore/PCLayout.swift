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
/// Interrupt lines are numbered as KVM numbers GSIs: GSI n (n < 16) is ISA IRQ n, wired to 8259
/// input n and to I/O APIC pin n, except that ISA IRQ 0 (the PIT) reaches I/O APIC pin 2, as on every
/// PC (the MADT says so with an interrupt source override); GSIs 16-23 reach I/O APIC pins 16-23 only.
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
        /// ACPI PM1a event block (PM1_STS, PM1_EN) and control block (PM1_CNT), where the FADT points
        /// (the ICH9's PMBASE 0x600 layout).
        public static let acpiPM1aEvent = BusRange(base: 0x600, length: 4)
        public static let acpiPM1aControl = BusRange(base: 0x604, length: 2)
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
        /// The I/O APIC (KVM's in-kernel one, or swhv's `IOAPIC` on the interpreter).
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
        /// The ACPI system control interrupt (level-triggered, active high: a MADT override says so).
        public static let sci: UInt32 = 9
        /// Lines of the 8259 pair.
        public static let isaCount: UInt32 = 16
        /// Pins of the I/O APIC (GSIs 0-23).
        public static let ioapicPins: UInt32 = 24

        /// The I/O APIC pin a GSI reaches: ISA IRQ 0 is on pin 2 (IRQ 2, the cascade, reaches none),
        /// every other line its own pin.
        public static func ioapicPin(_ gsi: UInt32) -> UInt32? {
            guard gsi < ioapicPins, gsi != cascade else { return nil }
            return gsi == pit ? cascade : gsi
        }
    }

    /// Guest RAM that firmware would own.
    public enum Firmware {
        /// The ACPI tables, RSDP first: inside the BIOS area the guest scans for the RSDP
        /// (0xE0000-0xFFFFF), reserved in the e820 map.
        public static let acpiTables = BusRange(base: 0xE_0000, length: 0x2_0000)
        /// SLP_TYP for S5 that the DSDT's \_S5 names and the PM1 control register acts on.
        public static let s5SleepType: UInt8 = 5
        /// The ACPI reset register: the PCI reset control register at 0xCF9, and the value that resets.
        public static let resetPort: UInt16 = 0xCF9
        public static let resetValue: UInt8 = 0x06
    }
}
