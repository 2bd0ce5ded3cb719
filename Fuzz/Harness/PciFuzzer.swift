import CPUBackend
import Devices
import VMMemory

/// A hostile guest probing PCI: configuration mechanism #1 at 0xCF8/0xCFC (any size, any offset,
/// bus/device/function), BAR reprogramming, capabilities including VIRTIO_PCI_CAP_PCI_CFG, the
/// MSI-X table, and the virtio-pci BAR through the MMIO window, all through the machine's buses.
public final class PciFuzzer {
    let disk = FuzzDisk(sectors: 16, fill: 0x33)

    public init() {}

    public func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var input = FuzzInput(data)
        let irq = FuzzInterrupts()
        let ports = Bus(name: "ports"), mmio = Bus(name: "mmio")
        let root = PciRoot()
        var resets = 0
        root.onResetRequest = { resets += 1 }
        guard let memory = try? GuestMemory(size: 1 << 20) else { fuzzSetupFailure("1 MiB of guest RAM") }
        do {
            let blk = try VirtioBlock(path: disk.path, readOnly: input.u8() & 1 == 1)
            _ = try root.add(try VirtioPciDevice(device: blk, memory: memory, interrupts: irq,
                                                 intx: IRQLine(controller: irq, gsi: 11)))
            try ports.register(root, name: "pci-config", at: PCLayout.Port.pciConfig)
            try mmio.register(root.mmioWindow, name: "pci-mmio", at: root.window)
        } catch {
            // The previous input's device must have been released (closing the image, dropping its lock).
            checks.expect(false, "cannot build the PCI topology: \(error)")
            return [:]
        }
        var configHits = 0
        let bar = root.mmioBase
        while !input.isAtEnd {
            switch input.u8() % 8 {
            case 0:  // CONFIG_ADDRESS with the enable bit, a device and a register
                let dev = UInt32(input.u8() % 4), fn = UInt32(input.u8() & 1 == 0 ? 0 : 1)
                let bus = UInt32(input.u8() & 0x80 == 0 ? 0 : 1)
                let reg = UInt32(input.u8())
                ports.write(0xCF8, size: 4, value: UInt64(0x8000_0000 | bus << 16 | dev << 11 | fn << 8 | reg))
            case 1:  // CONFIG_DATA write at any of its four bytes
                let at = 0xCFC + UInt64(input.u8() % 4)
                ports.write(at, size: input.accessSize(), value: UInt64(input.u32()))
            case 2:
                let at = 0xCFC + UInt64(input.u8() % 4)
                let size = input.accessSize()
                let v = ports.read(at, size: size)
                // A read that found a function (not the all-ones of an empty slot).
                if size > 0 && size <= 8 && v != (size == 8 ? ~0 : (1 << UInt64(size * 8)) - 1) { configHits += 1 }
            case 3:  // anything in 0xCF8..0xCFF, including the 0xCF9 reset register
                let at = 0xCF8 + UInt64(input.u8() % 8)
                if input.u8() & 1 == 0 {
                    ports.write(at, size: input.accessSize(), value: UInt64(input.u32()))
                } else {
                    _ = ports.read(at, size: input.accessSize())
                }
            case 4:  // the device's BAR (common config, ISR, device config, notify, MSI-X table/PBA)
                let off = UInt64(input.u16()) & 0x7FFF
                _ = mmio.read(bar + off, size: input.accessSize())
            case 5:
                let off = UInt64(input.u16()) & 0x7FFF
                mmio.write(bar + off, size: input.accessSize(), value: input.u64())
            case 6:  // anywhere in the 256 MiB window (BARs may have moved)
                let off = UInt64(input.u32()) % root.mmioSize
                if input.u8() & 1 == 0 {
                    mmio.write(bar + off, size: input.accessSize(), value: input.u64())
                } else {
                    _ = mmio.read(bar + off, size: input.accessSize())
                }
            default:  // direct config access, as the machine would never issue but a bus might
                let off = Int(Int8(bitPattern: input.u8())) * 2 + 128
                let size = input.accessSize()
                let addr = PciAddress(device: input.u8() % 3)
                if input.u8() & 1 == 0 {
                    root.configWrite(addr, offset: off, size: size, value: input.u32())
                } else {
                    _ = root.configRead(addr, offset: off, size: size)
                }
            }
        }
        checks.expect(disk.currentSize == disk.size, "image size changed")
        return ["configHits": configHits, "resets": resets]
    }
}
