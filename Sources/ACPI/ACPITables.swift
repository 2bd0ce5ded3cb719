// The ACPI tables swhv hands its guests: RSDP → RSDT/XSDT → FADT (with FACS and DSDT) and MADT.
// A stock Linux kernel has no MP-table parser and no virtio-mmio command-line devices; the MADT is
// how it finds the other CPUs and the I/O APIC, the DSDT how it finds the PCI host bridge, and the
// FADT how it powers the machine off (PM1a control, SLP_TYP from \_S5) and resets it (RESET_REG).

/// What the tables describe. Plain values: the caller (the platform) supplies its own layout.
public struct ACPIMachine: Equatable, Sendable {
    /// Local APIC ids 0..<cpuCount; ACPI processor UIDs are the same numbers.
    public var cpuCount: Int
    public var localAPICAddress: UInt32 = 0xFEE0_0000
    public var ioapic: IOAPIC
    /// ISA IRQ → GSI overrides (a PC's IRQ 0 on GSI 2, the SCI level-triggered).
    public var interruptOverrides: [InterruptOverride]
    public var power: PowerManagement
    public var pci: PCIHostBridge

    public init(cpuCount: Int, ioapic: IOAPIC, interruptOverrides: [InterruptOverride], power: PowerManagement,
                pci: PCIHostBridge) {
        self.cpuCount = cpuCount; self.ioapic = ioapic; self.interruptOverrides = interruptOverrides
        self.power = power; self.pci = pci
    }

    public struct IOAPIC: Equatable, Sendable {
        public var id: UInt8
        public var address: UInt32
        public var gsiBase: UInt32
        public init(id: UInt8, address: UInt32, gsiBase: UInt32) { self.id = id; self.address = address; self.gsiBase = gsiBase }
    }

    /// An Interrupt Source Override (MADT type 2).
    public struct InterruptOverride: Equatable, Sendable {
        public enum Polarity: UInt16, Sendable { case conforming = 0, activeHigh = 1, activeLow = 3 }
        public enum Trigger: UInt16, Sendable { case conforming = 0, edge = 1, level = 3 }
        public var isaIRQ: UInt8
        public var gsi: UInt32
        public var polarity: Polarity
        public var trigger: Trigger
        public init(isaIRQ: UInt8, gsi: UInt32, polarity: Polarity = .conforming, trigger: Trigger = .conforming) {
            self.isaIRQ = isaIRQ; self.gsi = gsi; self.polarity = polarity; self.trigger = trigger
        }
        var flags: UInt16 { polarity.rawValue | trigger.rawValue << 2 }
    }

    /// The fixed-hardware power-management block: PM1a event (status + enable) and control
    /// registers, the SCI, and the reset register.
    public struct PowerManagement: Equatable, Sendable {
        public var pm1aEvent: UInt16
        public var pm1aControl: UInt16
        public var sciInterrupt: UInt16
        public var resetPort: UInt16
        public var resetValue: UInt8
        /// SLP_TYP for S5 (soft off), as \_S5 in the DSDT says.
        public var s5SleepType: UInt8
        public init(pm1aEvent: UInt16, pm1aControl: UInt16, sciInterrupt: UInt16, resetPort: UInt16, resetValue: UInt8,
                    s5SleepType: UInt8) {
            self.pm1aEvent = pm1aEvent; self.pm1aControl = pm1aControl; self.sciInterrupt = sciInterrupt
            self.resetPort = resetPort; self.resetValue = resetValue; self.s5SleepType = s5SleepType
        }
        /// PM1_EVT_LEN and PM1_CNT_LEN.
        public static let eventLength = 4, controlLength = 2
    }

    /// PCI bus 0 behind configuration mechanism #1, a 32-bit memory window for BARs, and INTx of
    /// every slot's pins on one GSI (virtio-pci uses MSI-X; INTx is its fallback).
    public struct PCIHostBridge: Equatable, Sendable {
        public var configPort: UInt16
        public var mmioWindow: ClosedRange<UInt32>
        public var intxGSI: UInt32
        public init(configPort: UInt16, mmioWindow: ClosedRange<UInt32>, intxGSI: UInt32) {
            self.configPort = configPort; self.mmioWindow = mmioWindow; self.intxGSI = intxGSI
        }
    }

    /// Largest vCPU count the tables are laid out for (one byte of APIC id, well inside the area).
    public static let maxCPUs = 255
}

/// Built tables: one blob to copy into guest memory at `base`, and where each table is.
public struct ACPITables: Sendable {
    public let base: UInt64
    public let bytes: [UInt8]
    /// Address of the RSDP (the guest finds it by scanning 0xE0000-0xFFFFF, or in boot_params).
    public var rsdpAddress: UInt64 { base }
    /// Signature → (address, length) of every table, the RSDP included.
    public let tables: [String: (address: UInt64, length: Int)]

    /// The bytes of one table.
    public func table(_ signature: String) -> ArraySlice<UInt8>? {
        guard let t = tables[signature] else { return nil }
        let off = Int(truncatingIfNeeded: t.address - base)
        return bytes[off..<off + t.length]
    }
}

public enum ACPIError: Error, Equatable, CustomStringConvertible {
    case badCPUCount(Int)
    case doesNotFit(needed: Int, available: Int)
    case areaNotAddressable(base: UInt64)

    public var description: String {
        switch self {
        case .badCPUCount(let n): return "ACPI tables: \(n) CPUs cannot be described (1...\(ACPIMachine.maxCPUs))"
        case .doesNotFit(let n, let a): return "ACPI tables need \(n) bytes; the area holds \(a)"
        case .areaNotAddressable(let b): return "ACPI tables at \(b) are above 4 GiB (RSDT and FADT hold 32-bit pointers)"
        }
    }
}

public enum ACPITableBuilder {
    /// FADT flags (ACPI 6.4, table 5.10).
    static let fadtWBINVD: UInt32 = 1 << 0, fadtProcC1: UInt32 = 1 << 2, fadtPowerButton: UInt32 = 1 << 4
    static let fadtSleepButton: UInt32 = 1 << 5, fadtResetRegSup: UInt32 = 1 << 10
    /// IA-PC boot architecture flags: legacy (ISA) devices, an 8042, no VGA.
    static let bootLegacyDevices: UInt16 = 1 << 0, boot8042: UInt16 = 1 << 1, bootNoVGA: UInt16 = 1 << 2

    /// Builds every table into one blob for `base` (16-byte aligned, below 4 GiB) of at most
    /// `capacity` bytes.
    public static func build(_ m: ACPIMachine, base: UInt64, capacity: Int) throws(ACPIError) -> ACPITables {
        guard (1...ACPIMachine.maxCPUs).contains(m.cpuCount) else { throw .badCPUCount(m.cpuCount) }
        guard base & 0xF == 0, base <= 0xFFFF_FFFF - UInt64(truncatingIfNeeded: capacity) else { throw .areaNotAddressable(base: base) }
        var blob = [UInt8]()
        var tables: [String: (UInt64, Int)] = [:]
        func place(_ sig: String, _ bytes: [UInt8], align: Int = 16) -> UInt64 {
            while blob.count % align != 0 { blob.append(0) }
            let at = base + UInt64(truncatingIfNeeded: blob.count)
            blob += bytes
            tables[sig] = (at, bytes.count)
            return at
        }
        // Sizes are fixed, so addresses can be computed in order: RSDP, FACS, DSDT, FADT, MADT, RSDT, XSDT.
        blob = [UInt8](repeating: 0, count: 36)   // the RSDP, written last
        tables["RSD PTR "] = (base, 36)
        let facs = place("FACS", facsBytes(), align: 64)
        let dsdt = place("DSDT", dsdtBytes(m))
        let fadt = place("FACP", fadtBytes(m, facs: facs, dsdt: dsdt))
        let madt = place("APIC", madtBytes(m))
        let rsdt = place("RSDT", rootTable("RSDT", [fadt, madt], width: 4))
        let xsdt = place("XSDT", rootTable("XSDT", [fadt, madt], width: 8))
        blob.replaceSubrange(0..<36, with: rsdpBytes(rsdt: rsdt, xsdt: xsdt))
        guard blob.count <= capacity else { throw .doesNotFit(needed: blob.count, available: capacity) }
        return ACPITables(base: base, bytes: blob, tables: tables.mapValues { (address: $0.0, length: $0.1) })
    }

    /// RSDP, ACPI 2.0+ form (5.2.5.3).
    static func rsdpBytes(rsdt: UInt64, xsdt: UInt64) -> [UInt8] {
        var b = Array("RSD PTR ".utf8) + [0] + ascii(SystemDescriptionTable.oemID, 6) + [2]
        b += le(rsdt, 4)
        b += le(36, 4) + le(xsdt, 8) + [0, 0, 0, 0]
        b[8] = checksum(b[0..<20])
        b[32] = checksum(b)
        return b
    }

    static func rootTable(_ sig: String, _ entries: [UInt64], width: Int) -> [UInt8] {
        var t = SystemDescriptionTable(signature: sig, revision: 1)
        for e in entries { t.body += le(e, width) }
        return t.bytes
    }

    /// FACS (5.2.10): no checksum; swhv has no global lock owner and no waking vector.
    static func facsBytes() -> [UInt8] {
        var b = Array("FACS".utf8) + le(64, 4) + le(0, 4) + le(0, 4) + le(0, 4) + le(0, 4) + le(0, 8)
        b.append(2)   // version
        b += [UInt8](repeating: 0, count: 64 - b.count)
        return b
    }

    /// FADT revision 6 (5.2.9), with a PM1a block rather than hardware-reduced ACPI: Linux treats a
    /// hardware-reduced machine as having no 8259 and no PIT, which both backends provide.
    static func fadtBytes(_ m: ACPIMachine, facs: UInt64, dsdt: UInt64) -> [UInt8] {
        let p = m.power
        var t = SystemDescriptionTable(signature: "FACP", revision: 6)
        t.u32(UInt32(truncatingIfNeeded: facs))               // FIRMWARE_CTRL
        t.u32(UInt32(truncatingIfNeeded: dsdt))               // DSDT
        t.u8(0)                           // reserved
        t.u8(0)                           // preferred PM profile: unspecified
        t.u16(p.sciInterrupt)
        t.u32(0)                          // SMI_CMD: none, the machine is always in ACPI mode
        t.u8(0); t.u8(0); t.u8(0); t.u8(0) // ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
        t.u32(UInt32(p.pm1aEvent)); t.u32(0)
        t.u32(UInt32(p.pm1aControl)); t.u32(0)
        t.u32(0); t.u32(0)                // PM2_CNT_BLK, PM_TMR_BLK
        t.u32(0); t.u32(0)                // GPE0_BLK, GPE1_BLK
        t.u8(UInt8(truncatingIfNeeded: ACPIMachine.PowerManagement.eventLength))
        t.u8(UInt8(truncatingIfNeeded: ACPIMachine.PowerManagement.controlLength))
        t.u8(0); t.u8(0); t.u8(0); t.u8(0); t.u8(0); t.u8(0) // PM2/TMR/GPE0/GPE1 lengths, GPE1_BASE, CST_CNT
        t.u16(101); t.u16(1001)           // P_LVL2_LAT/P_LVL3_LAT: C2 and C3 not supported
        t.u16(0); t.u16(0)                // FLUSH_SIZE, FLUSH_STRIDE
        t.u8(0); t.u8(0)                  // DUTY_OFFSET, DUTY_WIDTH
        t.u8(0); t.u8(0); t.u8(0)         // DAY_ALRM, MON_ALRM, CENTURY
        t.u16(bootLegacyDevices | boot8042 | bootNoVGA)
        t.u8(0)
        t.u32(fadtWBINVD | fadtProcC1 | fadtPowerButton | fadtSleepButton | fadtResetRegSup)
        t.gas(.port(p.resetPort, bytes: 1))
        t.u8(p.resetValue)
        t.u16(0)                          // ARM boot architecture
        t.u8(0)                           // FADT minor version
        t.u64(0)                          // X_FIRMWARE_CTRL (FIRMWARE_CTRL is set)
        t.u64(dsdt)                       // X_DSDT
        t.gas(.port(p.pm1aEvent, bytes: UInt8(truncatingIfNeeded: ACPIMachine.PowerManagement.eventLength)))
        t.gas(.none)
        t.gas(.port(p.pm1aControl, bytes: UInt8(truncatingIfNeeded: ACPIMachine.PowerManagement.controlLength)))
        t.gas(.none)
        t.gas(.none); t.gas(.none)        // X_PM2_CNT_BLK, X_PM_TMR_BLK
        t.gas(.none); t.gas(.none)        // X_GPE0_BLK, X_GPE1_BLK
        t.gas(.none); t.gas(.none)        // SLEEP_CONTROL_REG, SLEEP_STATUS_REG (hardware-reduced only)
        t.u64(0)                          // hypervisor vendor identity
        return t.bytes
    }

    /// MADT (5.2.12): one enabled local APIC per vCPU, the I/O APIC, the interrupt source overrides,
    /// and LINT1 as NMI on every processor.
    static func madtBytes(_ m: ACPIMachine) -> [UInt8] {
        var t = SystemDescriptionTable(signature: "APIC", revision: 5)
        t.u32(m.localAPICAddress)
        t.u32(1)   // PCAT_COMPAT: dual 8259s are present
        for cpu in 0..<m.cpuCount {
            t.u8(0); t.u8(8); t.u8(UInt8(truncatingIfNeeded: cpu)); t.u8(UInt8(truncatingIfNeeded: cpu)); t.u32(1)   // enabled
        }
        t.u8(1); t.u8(12); t.u8(m.ioapic.id); t.u8(0); t.u32(m.ioapic.address); t.u32(m.ioapic.gsiBase)
        for o in m.interruptOverrides {
            t.u8(2); t.u8(10); t.u8(0); t.u8(o.isaIRQ); t.u32(o.gsi); t.u16(o.flags)
        }
        // Local APIC NMI: all processors (UID 0xFF), conforming polarity/trigger, LINT1.
        t.u8(4); t.u8(6); t.u8(0xFF); t.u16(0); t.u8(1)
        return t.bytes
    }

    /// DSDT: \_S5 for soft-off, a processor device per vCPU, and the PCI host bridge with its
    /// resources and INTx routing.
    static func dsdtBytes(_ m: ACPIMachine) -> [UInt8] {
        var t = SystemDescriptionTable(signature: "DSDT", revision: 2)   // revision 2: 64-bit integers
        let s5 = UInt64(m.power.s5SleepType)
        var terms: [AML] = [
            AML.name("\\_S5", AML.package([.integer(s5), .integer(s5), .integer(0), .integer(0)])),
        ]
        var sb: [AML] = []
        for cpu in 0..<m.cpuCount {
            sb.append(AML.device(processorName(cpu), [
                AML.name("_HID", AML.string("ACPI0007")),
                AML.name("_UID", AML.integer(UInt64(truncatingIfNeeded: cpu))),
            ]))
        }
        let pci = m.pci
        let io = pci.configPort
        let routes = (1..<32).flatMap { slot in
            (0..<4).map { pin in
                AML.package([.integer(UInt64(truncatingIfNeeded: slot) << 16 | 0xFFFF), .integer(UInt64(truncatingIfNeeded: pin)), .integer(0),
                             .integer(UInt64(pci.intxGSI))])
            }
        }
        sb.append(AML.device("PCI0", [
            AML.name("_HID", AML.eisaID("PNP0A03")),
            AML.name("_ADR", AML.integer(0)),
            AML.name("_SEG", AML.integer(0)),
            AML.name("_UID", AML.integer(0)),
            AML.name("_BBN", AML.integer(0)),
            AML.name("_CRS", ResourceDescriptor.template([
                .busNumbers(min: 0, max: 0),
                .io(min: io, max: io, alignment: 1, length: 8),
                .ioWindow(min: 0, max: io - 1),
                .ioWindow(min: io + 8, max: 0xFFFF),
                .memoryWindow(min: pci.mmioWindow.lowerBound, max: pci.mmioWindow.upperBound),
            ])),
            // A package holds at most 255 entries: 31 slots x 4 pins is 124.
            AML.name("_PRT", AML.package(routes)),
        ]))
        terms.append(AML.scope("\\_SB", sb))
        t.body = terms.flatMap(\.bytes)
        return t.bytes
    }

    /// `C000`, `C001`, ... (hexadecimal, four characters: a valid NameSeg).
    static func processorName(_ cpu: Int) -> String {
        let h = String(cpu, radix: 16, uppercase: true)
        return "C" + String(repeating: "0", count: max(0, 3 - h.count)) + h
    }
}
