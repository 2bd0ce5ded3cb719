import ACPI
import Foundation
import XCTest

/// The tables swhv builds, checked byte by byte (lengths, checksums, pointers) and decoded by ACPICA's
/// own disassembler (`iasl -d`, from acpica-tools, which scripts/test installs): what a guest kernel's
/// ACPICA will parse.
final class ACPITableTests: XCTestCase {
    static let machine = ACPIMachine(
        cpuCount: 4,
        ioapic: .init(id: 0, address: 0xFEC0_0000, gsiBase: 0),
        interruptOverrides: [
            .init(isaIRQ: 0, gsi: 2),
            .init(isaIRQ: 9, gsi: 9, polarity: .activeHigh, trigger: .level),
        ],
        power: .init(pm1aEvent: 0x600, pm1aControl: 0x604, sciInterrupt: 9, resetPort: 0xCF9, resetValue: 6,
                     s5SleepType: 5),
        pci: .init(configPort: 0xCF8, mmioWindow: 0xC000_0000...0xCFFF_FFFF, intxGSI: 11))

    func build(_ m: ACPIMachine = machine) throws -> ACPITables {
        try ACPITableBuilder.build(m, base: 0xE0000, capacity: 0x20000)
    }

    func u32(_ b: ArraySlice<UInt8>, _ off: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[b.startIndex + off + $1]) << UInt32(8 * $1) }
    }
    func u64(_ b: ArraySlice<UInt8>, _ off: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[b.startIndex + off + $1]) << UInt64(8 * $1) }
    }
    func sum(_ b: ArraySlice<UInt8>) -> UInt8 { b.reduce(0, &+) }

    func testEveryTableHasItsLengthAndAZeroChecksum() throws {
        let t = try build()
        for sig in ["RSDT", "XSDT", "FACP", "DSDT", "APIC"] {
            let b = try XCTUnwrap(t.table(sig), sig)
            XCTAssertEqual(String(decoding: b.prefix(4), as: UTF8.self), sig)
            XCTAssertEqual(Int(u32(b, 4)), b.count, "\(sig) length field")
            XCTAssertEqual(sum(b), 0, "\(sig) checksum")
        }
        let rsdp = try XCTUnwrap(t.table("RSD PTR "))
        XCTAssertEqual(t.rsdpAddress & 0xF, 0, "the RSDP sits on a 16-byte boundary (the guest scans for it)")
        XCTAssertEqual(sum(rsdp.prefix(20)), 0, "ACPI 1.0 checksum")
        XCTAssertEqual(sum(rsdp), 0, "extended checksum")
        XCTAssertEqual(rsdp[rsdp.startIndex + 15], 2, "revision 2: the XSDT is valid")
        XCTAssertEqual(UInt64(u32(rsdp, 16)), t.tables["RSDT"]!.address)
        XCTAssertEqual(u64(rsdp, 24), t.tables["XSDT"]!.address)
        let facs = try XCTUnwrap(t.table("FACS"))
        XCTAssertEqual(t.tables["FACS"]!.address % 64, 0, "the FACS is 64-byte aligned")
        XCTAssertEqual(u32(facs, 4), 64)
    }

    func testRootTablesPointAtTheFADTAndMADTAndTheFADTAtTheDSDTAndFACS() throws {
        let t = try build()
        let xsdt = try XCTUnwrap(t.table("XSDT"))
        XCTAssertEqual([u64(xsdt, 36), u64(xsdt, 44)], [t.tables["FACP"]!.address, t.tables["APIC"]!.address])
        let rsdt = try XCTUnwrap(t.table("RSDT"))
        XCTAssertEqual([UInt64(u32(rsdt, 36)), UInt64(u32(rsdt, 40))], [t.tables["FACP"]!.address, t.tables["APIC"]!.address])
        let fadt = try XCTUnwrap(t.table("FACP"))
        XCTAssertEqual(UInt64(u32(fadt, 36)), t.tables["FACS"]!.address)
        XCTAssertEqual(UInt64(u32(fadt, 40)), t.tables["DSDT"]!.address)
        XCTAssertEqual(u64(fadt, 140), t.tables["DSDT"]!.address, "X_DSDT")
        XCTAssertEqual(fadt.count, 276, "FADT revision 6 size")
    }

    func testTooManyCPUsOrTooSmallAnAreaIsRefused() {
        var m = Self.machine
        m.cpuCount = 0
        XCTAssertThrowsError(try build(m)) { XCTAssertEqual($0 as? ACPIError, .badCPUCount(0)) }
        m.cpuCount = 256
        XCTAssertThrowsError(try build(m)) { XCTAssertEqual($0 as? ACPIError, .badCPUCount(256)) }
        XCTAssertThrowsError(try ACPITableBuilder.build(Self.machine, base: 0xE0000, capacity: 100)) {
            guard case .doesNotFit = $0 as? ACPIError else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try ACPITableBuilder.build(Self.machine, base: 0xE0008, capacity: 0x1000))
    }

    func testPackageLengthsUseOneToFourBytes() {
        XCTAssertEqual(AML.package([]).bytes, [0x12, 0x02, 0x00])
        // 62 bytes of body + 1 length byte = 63: still one byte.
        let body61 = [AML](repeating: .integer(0), count: 61)
        XCTAssertEqual(AML.package(body61).bytes[1], 63)
        // 63 bytes of body needs two length bytes: lead 0x40 | low nibble, then the rest.
        let body62 = [AML](repeating: .integer(0), count: 62)
        let enc = AML.package(body62).bytes
        XCTAssertEqual(enc[1] >> 6, 1)
        XCTAssertEqual(Int(enc[1] & 0xF) | Int(enc[2]) << 4, 63 + 2)
        XCTAssertEqual(AML.eisaID("PNP0A03"), AML.integer(0x030A_D041))
    }

    // MARK: iasl

    /// Disassembles one table with `iasl -d` and returns the listing.
    func disassemble(_ bytes: ArraySlice<UInt8>, name: String) throws -> String {
        guard let iasl = ["/usr/bin/iasl", "/usr/local/bin/iasl"].first(where: FileManager.default.isExecutableFile) else {
            XCTFail("iasl is missing: scripts/test installs acpica-tools (apt-get install acpica-tools)")
            return ""
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swhv-acpi-\(getpid())-\(name)")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { if ProcessInfo.processInfo.environment["SWHV_KEEP_ACPI"] == nil { try? FileManager.default.removeItem(at: dir) } }
        let input = dir.appendingPathComponent("\(name).dat")
        try Data(bytes).write(to: input)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: iasl)
        p.arguments = ["-d", input.path]
        p.currentDirectoryURL = dir
        let out = Pipe()
        p.standardOutput = out
        p.standardError = out
        try p.run()
        let log = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, "iasl -d \(name): \(log)")
        let listing = (try? String(contentsOf: dir.appendingPathComponent("\(name).dsl"), encoding: .utf8)) ?? ""
        XCTAssertFalse(listing.isEmpty, "iasl wrote no listing: \(log)")
        return listing
    }

    /// The values iasl prints for a field: its lines read `[offset len]   Field Name : value`.
    func field(_ listing: String, _ name: String) -> [String] {
        listing.split(separator: "\n").compactMap { line in
            guard let r = line.range(of: " : ") else { return nil }
            var left = line[..<r.lowerBound]
            if let b = left.lastIndex(of: "]") { left = left[left.index(after: b)...] }
            guard left.trimmingCharacters(in: .whitespaces) == name else { return nil }
            return line[r.upperBound...].trimmingCharacters(in: .whitespaces)
        }
    }

    func testIaslDecodesTheMADTWithOneLocalAPICPerCPUTheIOAPICAndTheOverrides() throws {
        let l = try disassemble(try XCTUnwrap(build().table("APIC")), name: "apic")
        XCTAssertEqual(field(l, "Local Apic Address"), ["FEE00000"])
        XCTAssertEqual(field(l, "Local Apic ID"), ["00", "01", "02", "03"])
        XCTAssertEqual(field(l, "Processor Enabled"), ["1", "1", "1", "1"])
        XCTAssertEqual(field(l, "Address"), ["FEC00000"])
        XCTAssertEqual(field(l, "Interrupt"), ["00000000", "00000002", "00000009"], "I/O APIC GSI base, then the overrides")
        XCTAssertEqual(field(l, "Source"), ["00", "09"])
        XCTAssertEqual(field(l, "Trigger Mode"), ["0", "3", "0"])
        XCTAssertEqual(field(l, "Polarity"), ["0", "1", "0"])
        XCTAssertEqual(field(l, "Interrupt Input LINT"), ["01"])
        XCTAssertFalse(l.contains("Incorrect checksum"), l)
    }

    func testIaslDecodesTheFADTPowerBlockAndResetRegister() throws {
        let l = try disassemble(try XCTUnwrap(build().table("FACP")), name: "facp")
        XCTAssertEqual(field(l, "PM1A Event Block Address"), ["00000600"])
        XCTAssertEqual(field(l, "PM1A Control Block Address"), ["00000604"])
        XCTAssertEqual(field(l, "SCI Interrupt"), ["0009"])
        XCTAssertEqual(field(l, "Value to cause reset"), ["06"])
        XCTAssertEqual(field(l, "Reset Register Supported (V2)"), ["1"])
        XCTAssertEqual(field(l, "Hardware Reduced (V5)"), ["0"])
        XCTAssertTrue(field(l, "Address").contains("0000000000000CF9"), "the reset register is port 0xCF9: \(l)")
        XCTAssertFalse(l.contains("Incorrect checksum"), l)
        XCTAssertFalse(l.lowercased().contains("warning"), l)
    }

    func testIaslDisassemblesTheDSDT() throws {
        let l = try disassemble(try XCTUnwrap(build().table("DSDT")), name: "dsdt")
        XCTAssertTrue(l.contains("Name (\\_S5, Package (0x04)"), l)
        XCTAssertTrue(l.contains("EisaId (\"PNP0A03\")"), l)
        for cpu in ["C000", "C001", "C002", "C003"] { XCTAssertTrue(l.contains("Device (\(cpu))"), cpu) }
        XCTAssertTrue(l.contains("\"ACPI0007\""), l)
        XCTAssertTrue(l.contains("WordBusNumber"), l)
        XCTAssertTrue(l.contains("0xC0000000,         // Range Minimum"), l)
        XCTAssertTrue(l.contains("0xCFFFFFFF,         // Range Maximum"), l)
        XCTAssertTrue(l.contains("Name (_PRT, Package (0x7C)"), "31 slots x 4 pins: \(l)")
        XCTAssertEqual(l.components(separatedBy: "0x0B\n").count - 1, 124, "every route goes to GSI 11")
        XCTAssertFalse(l.contains("Error") || l.contains("Warning"), l)
    }

    func testThirtyTwoCPUsFit() throws {
        var m = Self.machine
        m.cpuCount = 32
        let t = try build(m)
        let l = try disassemble(try XCTUnwrap(t.table("APIC")), name: "apic32")
        XCTAssertEqual(field(l, "Local Apic ID").count, 32)
        XCTAssertEqual(field(l, "Local Apic ID").last, "1F")
        let d = try disassemble(try XCTUnwrap(t.table("DSDT")), name: "dsdt32")
        XCTAssertTrue(d.contains("Device (C01F)"), d)
    }
}
