import CPUBackend
import Devices
import SwhvTestSupport
import VMMemory

/// A hostile virtio-blk driver: it negotiates through the virtio-pci common configuration (with
/// fuzzer-chosen features and queue size), then writes descriptors, ring entries, request headers
/// and raw bytes anywhere in guest RAM and notifies. The device must never touch memory outside
/// guest RAM (ASan), trap, loop forever, change a read-only image, or grow/shrink the image file.
public final class VirtioFuzzer {
    static let ramSize: UInt64 = 1 << 20
    static let desc: UInt64 = 0x0000, avail: UInt64 = 0x1000, used: UInt64 = 0x2000
    let memory: GuestMemory
    let writable = FuzzDisk(sectors: 64, fill: 0x11)
    let readOnly = FuzzDisk(sectors: 8, fill: 0x22)
    let readOnlySum: UInt64

    public init() {
        do { memory = try GuestMemory(size: VirtioFuzzer.ramSize) } catch { fuzzSetupFailure("guest RAM: \(error)") }
        readOnlySum = readOnly.checksum
    }

    public func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var input = FuzzInput(data)
        try? memory.fill(0, at: 0, length: VirtioFuzzer.ramSize)
        let flags = input.u8()
        let ro = flags & 4 != 0
        let disk = ro ? readOnly : writable
        let irq = FuzzInterrupts()
        let blk: VirtioBlock
        let dev: VirtioPciDevice
        do {
            blk = try VirtioBlock(path: disk.path, readOnly: ro, serial: "fuzz")
            dev = try VirtioPciDevice(device: blk, memory: memory, interrupts: irq,
                                      intx: IRQLine(controller: irq, gsi: 11))
        } catch {
            // The previous input's device must have been released (closing the image, dropping its lock).
            checks.expect(false, "cannot create the device: \(error)")
            return [:]
        }
        if flags & 0x40 != 0 {
            // MSI-X enable bit in the capability's message control word.
            let ctl = dev.msix.capabilityOffset + 2
            dev.configWrite(offset: ctl, size: 2, value: 0x8000)
        }
        let sizes: [UInt16] = [256, 128, 8, 1, 2, 0, 3, 512]
        let queueSize = sizes[Int(flags >> 3) & 7]
        handshake(dev, flags: flags, queueSize: queueSize)
        let n = max(UInt16(1), min(queueSize, 256))
        var availIdx: UInt16 = 0
        var pushed = 0, completions = 0

        func common(_ off: UInt64, _ size: Int, _ v: UInt64) {
            dev.barWrite(0, offset: VirtioPciDevice.commonOffset + off, size: size, value: v)
        }
        while !input.isAtEnd {
            switch input.u8() % 8 {
            case 0:  // raw bytes anywhere in RAM
                let addr = UInt64(input.u16()) << 4
                try? memory.write(bytes: input.take(Int(input.u8())), at: addr)
            case 1:  // one descriptor
                let i = UInt64(input.u8()) % UInt64(n)
                let base = VirtioFuzzer.desc + 16 * i
                let addrSel = input.u8()
                // Mostly buffers inside RAM; sometimes any 64-bit address.
                let addr = addrSel & 0x80 != 0 ? input.u64() : 0x3000 + UInt64(input.u16()) * 8
                try? memory.write(addr, at: base)
                try? memory.write(input.u8() & 1 == 0 ? UInt32(input.u16()) : input.u32(), at: base + 8)
                try? memory.write(input.u16() & 7, at: base + 12)        // NEXT | WRITE | INDIRECT
                try? memory.write(input.u16() % (n &* 2), at: base + 14)
            case 2:  // make a chain available
                let head = input.u16() % (n &* 2)
                try? memory.write(head, at: VirtioFuzzer.avail + 4 + 2 * UInt64(availIdx % n))
                availIdx &+= 1
                pushed += 1
                try? memory.write(availIdx, at: VirtioFuzzer.avail + 2)
            case 3:  // notify
                let q = Int(input.u8() % 3)
                let before = dev.queues[0].nextUsed
                dev.barWrite(0, offset: VirtioPciDevice.notifyOffset + UInt64(q) * 4, size: 2, value: UInt64(q))
                // One notification completes at most a ring's worth of chains, however the driver lies.
                let completed = dev.queues[0].nextUsed &- before
                checks.expect(completed <= dev.queues[0].size, "\(completed) chains completed with queue size \(dev.queues[0].size)")
                completions += Int(completed)
            case 4:  // a request header (type, sector) where descriptors usually point
                let at = 0x3000 + UInt64(input.u16()) * 8
                let types: [UInt32] = [0, 1, 4, 8, 0, 1, 0xFFFF_FFFF, 2]
                try? memory.write(types[Int(input.u8()) % types.count], at: at)
                try? memory.write(input.u8() & 1 == 0 ? UInt64(input.u8()) : input.u64(), at: at + 8)
            case 5:  // any common-config or device-config register
                let region = input.u8() & 1 == 0 ? VirtioPciDevice.commonOffset : VirtioPciDevice.deviceConfigOffset
                let off = UInt64(input.u8() % 0x40)
                let size = input.accessSize()
                let v = input.u64()
                if input.u8() & 1 == 0 {
                    dev.barWrite(0, offset: region + off, size: size, value: v)
                } else {
                    _ = dev.barRead(0, offset: region + off, size: size)
                }
            case 6:  // the avail index itself (a driver lying about how much it published)
                availIdx = input.u16()
                try? memory.write(availIdx, at: VirtioFuzzer.avail + 2)
                try? memory.write(input.u16(), at: VirtioFuzzer.avail)   // flags
            default:  // reset and start over, or re-read the ISR
                if input.u8() & 1 == 0 {
                    common(VirtioPciCommonConfig.deviceStatus, 1, 0)
                    handshake(dev, flags: flags, queueSize: queueSize)
                    availIdx = 0
                } else {
                    _ = dev.barRead(0, offset: VirtioPciDevice.isrOffset, size: 1)
                }
            }
        }
        checks.expect(disk.currentSize == disk.size, "image size changed to \(disk.currentSize)")
        if ro { checks.expect(readOnly.checksum == readOnlySum, "read-only image was modified") }
        return ["published": pushed, "completions": completions]
    }

    /// What Linux's virtio_pci_modern does (`VirtioDriver`), with the fuzzer's features and queue size.
    func handshake(_ dev: VirtioPciDevice, flags: UInt8, queueSize: UInt16) {
        let driver = VirtioDriver(
            read: { dev.barRead(0, offset: VirtioPciDevice.commonOffset + $0, size: $1) },
            write: { dev.barWrite(0, offset: VirtioPciDevice.commonOffset + $0, size: $1, value: $2) })
        driver.bringUp(accept: { _ in
            var features = VirtioFeature.version1 | VirtioBlock.featureFlush | VirtioBlock.featureBlockSize
                | VirtioBlock.featureSegMax
            if flags & 1 != 0 { features |= VirtioFeature.eventIndex }
            if flags & 2 != 0 { features |= VirtioFeature.indirectDescriptors }
            if flags & 4 != 0 { features |= VirtioBlock.featureReadOnly }
            // Discard and write-zeroes ranges (refused at FEATURES_OK on the read-only disk).
            if flags & 0x80 != 0 { features |= VirtioBlock.featureDiscard | VirtioBlock.featureWriteZeroes }
            return features
        }, queue: .init(desc: VirtioFuzzer.desc, avail: VirtioFuzzer.avail, used: VirtioFuzzer.used,
                        size: queueSize, msixVector: 0), configVector: 1)
    }
}
