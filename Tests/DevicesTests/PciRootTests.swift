import VMCore
import XCTest
import VMMemory
@testable import Devices

final class PciRootTests: XCTestCase {
    func makeRoot() throws -> (PciRoot, Bus, VirtioPciDevice, PciPlacement) {
        let mem = try GuestMemory(size: 1 << 20)
        let root = PciRoot()
        let dev = try VirtioPciDevice(device: VirtioNullDevice(), memory: mem, interrupts: VirtioFakeInterrupts())
        let placement = try root.add(dev)
        let ports = Bus(name: "pio")
        try ports.register(root, name: "pci", at: PCLayout.Port.pciConfig)
        return (root, ports, dev, placement)
    }

    func cfg(_ ports: Bus, bus: UInt32 = 0, slot: UInt32, fn: UInt32 = 0, reg: UInt32, size: Int = 4) -> UInt64 {
        ports.write(0xCF8, size: 4, value: UInt64(0x8000_0000 | bus << 16 | slot << 11 | fn << 8 | (reg & 0xFC)))
        return ports.read(0xCFC + UInt64(reg & 3), size: size)
    }

    /// arch/x86/pci/direct.c: pci_check_type1 + pci_sanity_check, step by step.
    func testLinuxType1ProbeFindsTheHostBridge() throws {
        let (_, ports, _, _) = try makeRoot()
        ports.write(0xCFB, size: 1, value: 0x01)
        let saved = ports.read(0xCF8, size: 4)
        ports.write(0xCF8, size: 4, value: 0x8000_0000)
        XCTAssertEqual(ports.read(0xCF8, size: 4), 0x8000_0000)
        ports.write(0xCF8, size: 4, value: saved)
        XCTAssertEqual(cfg(ports, slot: 0, reg: 0x0A, size: 2), 0x0600, "PCI_CLASS_BRIDGE_HOST")
        XCTAssertEqual(cfg(ports, slot: 0, reg: 0x00, size: 2), 0x8086)
        XCTAssertEqual(cfg(ports, slot: 0, reg: 0x02, size: 2), 0x1237)
        XCTAssertEqual(cfg(ports, slot: 0, reg: 0x0E, size: 1), 0, "single-function, type 0 header")
    }

    func testVirtioBlockIdentityInConfigSpace() throws {
        let mem = try GuestMemory(size: 1 << 20)
        let disk = VirtioTempDisk(sectors: 8)
        let root = PciRoot()
        let dev = try VirtioPciDevice(device: try VirtioBlock(path: disk.path), memory: mem,
                                      interrupts: VirtioFakeInterrupts())
        let placement = try root.add(dev)
        let a = placement.address
        XCTAssertEqual(a, PciAddress(device: 1))
        XCTAssertEqual(a.description, "0000:00:01.0")
        XCTAssertEqual(root.configRead(a, offset: 0, size: 4), 0x1042_1AF4)
        XCTAssertEqual(root.configRead(a, offset: 0x08, size: 1), 1, "revision 1: modern only")
        XCTAssertEqual(root.configRead(a, offset: 0x2C, size: 4), 0x1100_1AF4, "subsystem ids")
        XCTAssertEqual(root.configRead(a, offset: 0x0B, size: 1), 0x01, "mass storage")
        XCTAssertEqual(root.configRead(a, offset: 0x06, size: 2) & 0x10, 0x10, "capability list present")
    }

    func testAbsentFunctionsAndDisabledAddressReadAllOnes() throws {
        let (_, ports, _, _) = try makeRoot()
        XCTAssertEqual(cfg(ports, slot: 7, reg: 0), 0xFFFF_FFFF)
        XCTAssertEqual(cfg(ports, slot: 31, reg: 0, size: 2), 0xFFFF)
        XCTAssertEqual(cfg(ports, bus: 1, slot: 0, reg: 0), 0xFFFF_FFFF, "no bus 1")
        XCTAssertEqual(cfg(ports, slot: 1, fn: 1, reg: 0), 0xFFFF_FFFF, "no function 1")
        ports.write(0xCF8, size: 4, value: 0x0000_0800)   // enable bit clear
        XCTAssertEqual(ports.read(0xCFC, size: 4), 0xFFFF_FFFF)
        XCTAssertEqual(cfg(ports, slot: 1, reg: 0), 0x1044_1AF4, "slot 1 is there")
    }

    func testDataPortByteAndWordLanes() throws {
        let (_, ports, _, _) = try makeRoot()
        ports.write(0xCF8, size: 4, value: UInt64(0x8000_0000 | 1 << 11))
        XCTAssertEqual(ports.read(0xCFC, size: 2), 0x1AF4)
        XCTAssertEqual(ports.read(0xCFE, size: 2), 0x1044)
        XCTAssertEqual(ports.read(0xCFD, size: 1), 0x1A)
        XCTAssertEqual(ports.read(0xCFE, size: 4), 0xFFFF_FFFF, "dword crossing the data port is refused")
        // Byte writes to CONFIG_ADDRESS do not move it.
        ports.write(0xCF9, size: 1, value: 0x55)
        XCTAssertEqual(ports.read(0xCF8, size: 4), UInt64(0x8000_0000 | 1 << 11))
    }

    func testResetControlRegisterAt0xCF9() throws {
        let (root, ports, _, _) = try makeRoot()
        var resets = 0
        root.onResetRequest = { resets += 1 }
        ports.write(0xCF8, size: 4, value: 0x8000_0800)
        ports.write(0xCF9, size: 1, value: 0x02)     // Linux: select hard reset first
        XCTAssertEqual(resets, 0)
        ports.write(0xCF9, size: 1, value: 0x06)     // then set "reset CPU"
        XCTAssertEqual(resets, 1)
        XCTAssertEqual(ports.read(0xCF8, size: 4), 0x8000_0800, "CONFIG_ADDRESS unaffected")
        ports.write(0xCF8, size: 4, value: 0x8000_0000)
        XCTAssertEqual(resets, 1, "dword writes to 0xCF8 never reset")
    }

    func testReadOnlyRegistersIgnoreWritesAndWritableOnesStick() throws {
        let (root, _, _, p) = try makeRoot()
        let a = p.address
        root.configWrite(a, offset: 0, size: 4, value: 0xDEAD_BEEF)
        XCTAssertEqual(root.configRead(a, offset: 0, size: 4), 0x1044_1AF4)
        root.configWrite(a, offset: 0x08, size: 4, value: 0)
        XCTAssertEqual(root.configRead(a, offset: 0x0B, size: 1), 0xFF)
        root.configWrite(a, offset: 0x3C, size: 1, value: 10)
        XCTAssertEqual(root.configRead(a, offset: 0x3C, size: 1), 10, "interrupt line is storage")
        root.configWrite(a, offset: 0x30, size: 4, value: 0xFFFF_F800)
        XCTAssertEqual(root.configRead(a, offset: 0x30, size: 4), 0, "no expansion ROM")
        root.configWrite(a, offset: 0x14, size: 4, value: 0xFFFF_FFFF)
        XCTAssertEqual(root.configRead(a, offset: 0x14, size: 4), 0, "unused BAR 1 reads 0 when sized")
    }

    func testBarSizingAndMemoryEnableAndReprogramming() throws {
        let (root, _, dev, p) = try makeRoot()
        let a = p.address
        let window = root.mmioWindow
        let mmio = Bus(name: "mmio")
        try mmio.register(window, name: "pci", base: root.mmioBase, length: root.mmioSize)
        XCTAssertEqual(p.barAddresses, [0: 0xC000_0000])
        XCTAssertEqual(root.configRead(a, offset: 0x10, size: 4), 0xC000_0000, "32-bit, non-prefetchable")
        XCTAssertEqual(root.configRead(a, offset: 0x04, size: 2) & 2, 2, "firmware enabled decoding")

        let numQueues = 0xC000_0000 + VirtioPciDevice.commonOffset + VirtioPciCommonConfig.numQueues
        XCTAssertEqual(mmio.read(numQueues, size: 2), 1)

        // Sizing: decoding off, all-ones, read the mask.
        root.configWrite(a, offset: 0x04, size: 2, value: 0)
        XCTAssertEqual(mmio.read(numQueues, size: 2), 0xFFFF, "memory decoding off: BAR is gone")
        root.configWrite(a, offset: 0x10, size: 4, value: 0xFFFF_FFFF)
        XCTAssertEqual(root.configRead(a, offset: 0x10, size: 4), UInt32(truncatingIfNeeded: ~(VirtioPciDevice.barSize - 1)))

        // The guest moves the BAR within the window and turns decoding back on.
        root.configWrite(a, offset: 0x10, size: 4, value: 0xC010_0000)
        root.configWrite(a, offset: 0x04, size: 2, value: 2)
        XCTAssertEqual(mmio.read(numQueues, size: 2), 0xFFFF, "old address no longer decodes")
        XCTAssertEqual(mmio.read(numQueues + 0x10_0000, size: 2), 1)
        XCTAssertEqual(dev.config.barAddress(0), 0xC010_0000)
        // A misaligned address is rounded down by the read-only low bits.
        root.configWrite(a, offset: 0x10, size: 4, value: 0xC010_0123)
        XCTAssertEqual(root.configRead(a, offset: 0x10, size: 4), 0xC010_0000)
    }

    func testDevicesGetDistinctSlotsAndAlignedNonOverlappingBars() throws {
        let mem = try GuestMemory(size: 1 << 20)
        let root = PciRoot()
        var bases: [UInt64] = []
        for i in 0..<3 {
            let d = try VirtioPciDevice(device: VirtioNullDevice(), memory: mem, interrupts: VirtioFakeInterrupts())
            let p = try root.add(d)
            XCTAssertEqual(p.address.device, UInt8(i + 1))
            let b = try XCTUnwrap(p.barAddresses[0])
            XCTAssertEqual(b % VirtioPciDevice.barSize, 0)
            XCTAssertGreaterThanOrEqual(b, root.mmioBase)
            bases.append(b)
        }
        XCTAssertEqual(Set(bases).count, 3)
        XCTAssertEqual(bases.sorted(), [0xC000_0000, 0xC000_8000, 0xC001_0000])
    }

    func testFullWindowAndFullBusAreErrors() throws {
        let mem = try GuestMemory(size: 1 << 20)
        let small = PciRoot(mmioBase: 0xC000_0000, mmioSize: 0x8000)
        XCTAssertNoThrow(try small.add(VirtioPciDevice(device: VirtioNullDevice(), memory: mem,
                                                       interrupts: VirtioFakeInterrupts())))
        XCTAssertThrowsError(try small.add(VirtioPciDevice(device: VirtioNullDevice(), memory: mem,
                                                           interrupts: VirtioFakeInterrupts()))) {
            XCTAssertEqual($0 as? PciError, .mmioWindowFull(device: "virtio-rng", needed: 0x8000))
        }
        let root = PciRoot()
        final class Empty: PciDevice {
            let config = PciConfigSpace(vendorID: 0x1234, deviceID: 1, classCode: 0xFF, subclass: 0)
            var pciName: String { "empty" }
            func barRead(_ bar: Int, offset: UInt64, size: Int) -> UInt64 { 0 }
            func barWrite(_ bar: Int, offset: UInt64, size: Int, value: UInt64) {}
        }
        for _ in 1..<32 { XCTAssertNoThrow(try root.add(Empty())) }
        XCTAssertThrowsError(try root.add(Empty())) { XCTAssertEqual($0 as? PciError, .noFreeSlot) }
    }

    func testCapabilityListIsWellFormed() throws {
        let (root, _, _, p) = try makeRoot()
        var seen: [UInt8] = []
        var ptr = Int(root.configRead(p.address, offset: 0x34, size: 1))
        var ttl = 48
        while ptr != 0 && ttl > 0 {
            ttl -= 1
            XCTAssertGreaterThanOrEqual(ptr, 0x40)
            XCTAssertEqual(ptr & 3, 0, "dword aligned")
            let id = UInt8(root.configRead(p.address, offset: ptr, size: 1))
            if id == PciCapabilityID.vendorSpecific {
                seen.append(UInt8(root.configRead(p.address, offset: ptr + 3, size: 1)))
            } else {
                seen.append(0x80 | id)
            }
            ptr = Int(root.configRead(p.address, offset: ptr + 1, size: 1))
        }
        XCTAssertGreaterThan(ttl, 0, "list terminates")
        XCTAssertEqual(Set(seen), [0x80 | 0x11, 1, 2, 3, 4, 5], "MSI-X + common, notify, ISR, device, PCI cfg")
    }

    func testBarDeclarationRulesAreEnforced() {
        let c = PciConfigSpace(vendorID: 1, deviceID: 2, classCode: 0, subclass: 0)
        XCTAssertThrowsError(try c.addBar(index: 0, size: 3000, kind: .memory32))
        XCTAssertThrowsError(try c.addBar(index: 5, size: 4096, kind: .memory64))
        XCTAssertThrowsError(try c.addBar(index: 6, size: 4096, kind: .memory32))
        XCTAssertNoThrow(try c.addBar(index: 2, size: 1 << 32, kind: .memory64, prefetchable: true))
        XCTAssertThrowsError(try c.addBar(index: 3, size: 4096, kind: .memory32), "upper half of BAR 2")
        c.write(offset: 0x18, size: 4, value: 0xFFFF_FFFF)
        c.write(offset: 0x1C, size: 4, value: 0xFFFF_FFFF)
        XCTAssertEqual(c.read(offset: 0x18, size: 4), 0x0000_000C, "64-bit prefetchable, 4 GiB: low dword all size")
        XCTAssertEqual(c.read(offset: 0x1C, size: 4), 0xFFFF_FFFF)
        c.setBarAddress(2, 0x80_0000_0000)
        XCTAssertEqual(c.barAddress(2), 0x80_0000_0000)
    }
}
