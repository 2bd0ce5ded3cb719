/// What the attack guests must observe, case by case, stated from the virtio 1.2 specification
/// (section numbers below), the PCI Local Bus specification, PC hardware, or QEMU's device code
/// where the specification leaves the device's reaction open — not recorded from swhv's output.
/// Each case builds the exact line the guest prints, so a change in any field fails the test with
/// the case's name and reason.
enum AttackExpectations {
    /// One case of attack-virtio's output.
    struct Case {
        let name: String
        let expect: Observation
        let why: String
    }

    /// virtio status bytes (5.2.6) and device status bits (2.1).
    static let statusOK: UInt8 = 0, statusIOErr: UInt8 = 1, statusUnsupp: UInt8 = 2
    /// Untouched: the guest fills the status byte with 0xEE before each request.
    static let untouched: UInt8 = 0xEE
    /// ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK: a running device.
    static let running: UInt8 = 0x0F
    static let needsReset: UInt8 = 0x40

    enum Observation {
        /// One chain completed: used length `written` (2.7.8: the bytes the device wrote into the
        /// device-writable part, data and status byte) and status byte `status`; the device runs on.
        case completed(written: UInt32, status: UInt8)
        /// Nothing completed, DEVICE_NEEDS_RESET set (2.1.2); after a reset a good read works.
        case needsReset
        /// The queue or feature setup is refused: device status `device` (with DEVICE_NEEDS_RESET),
        /// and after a reset a good read works.
        case setupRefused(device: UInt8)
        /// A line the guest prints as it is.
        case line(String)
    }

    static func render(_ c: Case) -> String {
        func h2(_ v: UInt8) -> String { String(format: "%02x", v) }
        switch c.expect {
        case .completed(let written, let status):
            return "\(c.name): used=01 id=0000 len=\(String(format: "%08x", written)) st=\(h2(status)) dev=\(h2(running))"
        case .needsReset:
            return "\(c.name): used=00 st=\(h2(untouched)) dev=\(h2(running | needsReset)) -> reset, good read st=00"
        case .setupRefused(let device):
            return "\(c.name): dev=\(h2(device)) -> reset, good read st=00"
        case .line(let text):
            return text
        }
    }

    static let sector: UInt32 = 512

    /// attack-virtio, in the order the guest runs them (Tests/Guests/attack-virtio.asm).
    static let virtio: [Case] = [
        Case(name: "pci", expect: .line("pci 00:01.0 id 10421af4 bar0 c0000000"),
             why: "4.1.2: vendor 0x1AF4, device 0x1040 + 2 (block); BAR0 preassigned at the start of the PCI window (run-image)"),
        Case(name: "caps", expect: .line(" cap01@00000000 cap02@00003000*04 cap03@00001000 cap04@00002000 cap05@00000000"),
             why: "4.1.4: common, notify (multiplier 4), ISR, device config and the PCI-config window, all in BAR0"),
        Case(name: "ro disk", expect: .line("ro disk status 0f features 30000264 capacity 0000000000000080"),
             why: "5.2.3: SEG_MAX, BLK_SIZE, RO (read-only disk), FLUSH, VERSION_1 and ACCESS_PLATFORM-free; 128 sectors; DRIVER_OK reached"),
        Case(name: "pci cfg window", expect: .line("pci cfg window: status, length 3, offset 2^32-4, bar 5: 0000000f 00000000 00000000 00000000"),
             why: "4.1.4.9: the window reads the BAR at the offset given; an unsupported length, an offset outside the BAR or another BAR read 0"),
        Case(name: "bar moves", expect: .line("bar0 moves: new, old, over 00:02.0, sizing, over ram, restored, decode off, on: 0f ff 0f ffff8000 00005afe 0f ff 0f"),
             why: "PCI 3.0 6.2.5.1: a moved BAR answers at its new address only; sizing reads the size mask (32 KiB); RAM stays RAM under a BAR; memory decode off reads all-ones"),
        Case(name: "good read s0", expect: .completed(written: sector + 1, status: statusOK),
             why: "5.2.6: a one-sector read writes 512 data bytes and the status byte (2.7.8: len counts both)"),
        Case(name: "data s0", expect: .line("  data 'ROSEC000'"), why: "the host file's sector 0"),
        Case(name: "read s127 x2 (past end)", expect: .completed(written: 1, status: statusIOErr),
             why: "5.2.6.1: no read beyond capacity; IOERR as QEMU's virtio_blk_sect_range_ok; no data written, so len 1 (2.7.8.2: at least len bytes written)"),
        Case(name: "read s128", expect: .completed(written: 1, status: statusIOErr), why: "the first sector past capacity: IOERR as above"),
        Case(name: "read s2^64-1", expect: .completed(written: 1, status: statusIOErr), why: "a sector whose byte offset overflows: IOERR, not a wrapped read"),
        Case(name: "write to read-only disk", expect: .completed(written: 1, status: statusIOErr),
             why: "5.2.6.2: with VIRTIO_BLK_F_RO the device MUST set IOERR for writes and MUST NOT write any data"),
        Case(name: "flush", expect: .completed(written: 1, status: statusOK), why: "5.2.6: VIRTIO_BLK_T_FLUSH (FLUSH offered) completes OK, status only"),
        Case(name: "get id", expect: .completed(written: 20 + 1, status: statusOK),
             why: "5.2.6: VIRTIO_BLK_T_GET_ID writes the 20-byte id string (zero-padded) and the status byte"),
        Case(name: "id data", expect: .line("  data 'swhv-dis'"), why: "the default serial swhv-disk0"),
        Case(name: "type 0x55", expect: .completed(written: 1, status: statusUnsupp),
             why: "5.2.6.2: the device MUST set VIRTIO_BLK_S_UNSUPP for request types it does not support"),
        Case(name: "no status byte", expect: .completed(written: 0, status: untouched),
             why: "driver error (5.2.6.1: the last byte must be the device-writable status); swhv completes the chain with len 0 and writes nothing. QEMU instead marks the device broken ('missing headers'); the spec leaves the reaction open"),
        Case(name: "zero-length data", expect: .completed(written: 1, status: statusOK), why: "a read of 0 bytes is a valid request: status only"),
        Case(name: "header in writable buffer", expect: .completed(written: 1, status: statusIOErr),
             why: "driver error (5.2.6.1: the header is device-readable); swhv reports IOERR and carries on (QEMU: broken device)"),
        Case(name: "short header", expect: .completed(written: 1, status: statusIOErr),
             why: "driver error (a 16-byte header is required); IOERR as above"),
        Case(name: "length 0xffffffff", expect: .needsReset,
             why: "a buffer longer than any RAM: the chain cannot be mapped; the device needs a reset (2.1.2; QEMU's virtio_error does the same for unmappable chains)"),
        Case(name: "loop 0->1->0", expect: .needsReset, why: "2.7.5.3.1: a chain longer than the queue size (a loop); QEMU: 'Looped descriptor', NEEDS_RESET"),
        Case(name: "self loop", expect: .needsReset, why: "as above"),
        Case(name: "next out of range", expect: .needsReset, why: "2.7.5: next must index the table; QEMU: 'Desc next is N', NEEDS_RESET"),
        Case(name: "head out of range", expect: .needsReset, why: "2.7.6: the head must index the table; QEMU: 'Guest says index N is available', NEEDS_RESET"),
        Case(name: "buffer in the pci hole", expect: .needsReset, why: "a buffer that is not RAM cannot be mapped (QEMU: 'virtio: bogus descriptor or out of resources')"),
        Case(name: "buffer past ram", expect: .needsReset, why: "as above"),
        Case(name: "buffer across end of ram", expect: .needsReset, why: "as above: only part of it is RAM"),
        Case(name: "buffer near 2^64", expect: .needsReset, why: "as above"),
        Case(name: "buffer wrapping 2^64", expect: .needsReset, why: "as above: address + length overflows"),
        Case(name: "writable over used ring", expect: .needsReset,
             why: "a device-writable buffer over the used ring would let the device corrupt its own ring; refused"),
        Case(name: "status over descriptor table", expect: .needsReset, why: "as above, over the descriptor table"),
        Case(name: "header over avail ring", expect: .completed(written: 1, status: statusUnsupp),
             why: "a device-readable header may overlap anything: the ring bytes read as an unknown type, UNSUPP (5.2.6.2)"),
        Case(name: "readable after writable", expect: .needsReset, why: "2.7.4.2: device-readable descriptors MUST precede device-writable ones; QEMU: 'Incorrect order for descriptors', NEEDS_RESET"),
        Case(name: "indirect good read", expect: .completed(written: sector + 1, status: statusOK), why: "2.7.5.3: an indirect table (INDIRECT_DESC negotiated) works as a chain"),
        Case(name: "indirect length 17", expect: .needsReset, why: "2.7.5.3.1: the table length must be a multiple of 16; QEMU: 'Invalid size for indirect buffer table'"),
        Case(name: "indirect length 0", expect: .needsReset, why: "as above (QEMU: same message)"),
        Case(name: "indirect 4096 entries", expect: .needsReset, why: "2.7.5.3.1: an indirect table may not hold more descriptors than the queue size (swhv's bound)"),
        Case(name: "indirect table past ram", expect: .needsReset, why: "the table cannot be mapped"),
        Case(name: "indirect nested", expect: .needsReset, why: "2.7.5.3.1: the driver MUST NOT set INDIRECT inside an indirect table; QEMU: 'Nested indirect descriptor'"),
        Case(name: "indirect with next", expect: .needsReset, why: "2.7.5.3.1: the driver MUST NOT set INDIRECT and NEXT together; treated as malformed"),
        Case(name: "indirect loop", expect: .needsReset, why: "a loop inside the table: longer than the table; QEMU: 'Looped descriptor'"),
        Case(name: "avail idx +60000", expect: .needsReset, why: "the driver claims more chains than the ring holds (2.7.6); QEMU: 'Guest moved avail index from N to M', NEEDS_RESET"),
        Case(name: "notify bogus queues", expect: .line("notify bogus queues: used=00 st=ee dev=0f"),
             why: "4.1.5.2: notifications for queues that do not exist are ignored; nothing completes and the device stays running"),
        Case(name: "then queue 0", expect: .line("  then queue 0 notify: used=01 id=0000 len=00000201 st=00 dev=0f"), why: "the pending good read then completes on queue 0's notification"),
        Case(name: "queue size 3", expect: .setupRefused(device: running | needsReset), why: "2.7: a split queue's size is a power of 2; enabling such a queue breaks the device"),
        Case(name: "descriptor table past ram", expect: .setupRefused(device: running | needsReset), why: "the rings must be RAM"),
        Case(name: "misaligned descriptor table", expect: .setupRefused(device: running | needsReset), why: "2.7.1: the descriptor table is 16-byte aligned"),
        Case(name: "unoffered feature", expect: .setupRefused(device: 0x47),
             why: "2.2.2: the device MUST fail to set FEATURES_OK when it cannot accept the driver's subset; DRIVER_OK without FEATURES_OK then needs a reset"),
        Case(name: "legacy driver (no VERSION_1)", expect: .setupRefused(device: 0x47),
             why: "6.1: a device MAY fail to operate if VERSION_1 is not accepted; swhv is modern-only, so FEATURES_OK is refused"),
        Case(name: "msi-x storm", expect: .line("msi-x storm (cap at 40): 200 rounds, then good read st=00 dev=0f"),
             why: "MSI-X enable/mask changes while the device interrupts (PCI 6.8.2) leave it working"),
        Case(name: "dma over executed code", expect: .completed(written: sector + 1, status: statusOK), why: "a read into code the CPU ran"),
        Case(name: "dma code", expect: .line("  code returns 600dc0de"), why: "the CPU runs the bytes the disk delivered (sector 2 holds mov eax, 0x600dc0de; ret), as hardware would"),
        Case(name: "status byte over executed code", expect: .completed(written: 1, status: untouched),
             why: "the status byte lands on an instruction's immediate: the guest's own status variable stays 0xEE, the code byte becomes 0"),
        Case(name: "status code", expect: .line("  code returns al=00"), why: "the CPU sees the status byte (VIRTIO_BLK_S_OK = 0) written over its code"),
        Case(name: "serial over executed code", expect: .completed(written: 2, status: statusOK),
             why: "GET_ID into a 1-byte buffer: the device writes what fits (1 byte of id) and the status"),
        Case(name: "serial code", expect: .line("  code returns al=73"), why: "'s', the first byte of swhv-disk0, written over the code"),
        Case(name: "rw disk", expect: .line("rw disk status 0f"), why: "the writable disk comes up (no RO feature)"),
        Case(name: "rw write s1", expect: .completed(written: 1, status: statusOK), why: "5.2.6: a write writes only the status byte"),
        Case(name: "rw read s1", expect: .completed(written: sector + 1, status: statusOK), why: "reads back what was written"),
        Case(name: "rw data s1", expect: .line("  data 'ATTACKED'"), why: "the guest's own write"),
        Case(name: "rw write s3 in two pieces", expect: .completed(written: 1, status: statusOK), why: "a sector from two data descriptors"),
        Case(name: "rw write s16 (past end)", expect: .completed(written: 1, status: statusIOErr), why: "past capacity: IOERR, nothing written (the host file is checked too)"),
        Case(name: "rw write s15 x2 (across end)", expect: .completed(written: 1, status: statusIOErr), why: "partly past capacity: IOERR, not a partial write"),
        Case(name: "rw write 100 bytes", expect: .completed(written: 1, status: statusIOErr),
             why: "5.2.6.1: data is a multiple of 512 bytes; IOERR as QEMU (size % BDRV_SECTOR_SIZE)"),
        Case(name: "rw write from past ram", expect: .needsReset, why: "the data buffer cannot be mapped"),
        Case(name: "rw write with data in writable part", expect: .completed(written: 1, status: statusIOErr),
             why: "a write's data must be device-readable; IOERR, nothing written"),
        Case(name: "rw flush", expect: .completed(written: 1, status: statusOK), why: "FLUSH completes OK"),
        Case(name: "done", expect: .line("virtio attack done"), why: "the guest got to its end"),
    ]

    /// attack-io: what a PC's buses and a 16550 show a hostile guest.
    static let io: [Case] = [
        Case(name: "port reads", expect: .line("port reads: 00011fcd checked, not all-ones 00000000"),
             why: "ISA: a port no device decodes reads all-ones (0x11fcd reads over the unclaimed ports)"),
        Case(name: "after write storm", expect: .line("after write storm: 00011fcd checked, not all-ones 00000000"),
             why: "writes to unclaimed ports and garbage to the platform devices claim nothing new"),
        Case(name: "odd-size", expect: .line("odd-size accesses to claimed ports ok"),
             why: "word and dword accesses split into byte accesses at consecutive ports (ISA); bytes past a device read all-ones"),
        Case(name: "mmio", expect: .line("mmio: 00006f12 checked, not all-ones 00000000"),
             why: "memory that is neither RAM nor a device reads all-ones and ignores writes (PC bus behaviour), every MiB from RAM's end to the IOAPIC and at 4/8/64 GiB"),
        Case(name: "mmio string", expect: .line("mmio string/locked/xchg/page-crossing ok"),
             why: "string, locked, xchg and page-crossing accesses to such memory behave the same"),
        Case(name: "across end of ram (read)", expect: .line("across end of ram: ffffffff11223344"),
             why: "a quadword read straddling RAM's end: the RAM half reads RAM, the rest all-ones"),
        Case(name: "across end of ram (write)", expect: .line("across end of ram: 0000000055667788"),
             why: "a straddling write lands in the RAM half only"),
        Case(name: "uart", expect: .line("uart after abuse: lsr 63 rx fifo gave 0040 scratch a5 iir c1"),
             why: "16550 datasheet after 4000 random register writes: loopback echo works, the 64-byte RX FIFO overruns (LSR DR|OE|THRE|TEMT = 0x63), scratch holds a value, IIR shows FIFOs on and no interrupt (0xC1)"),
        Case(name: "done", expect: .line("io attack done"), why: "the guest got to its end"),
    ]

    /// The whole expected serial output of `name`, or nil when the guest has no table here.
    static func expectedOutput(_ name: String) -> [Case]? {
        switch name {
        case "attack-virtio": virtio
        case "attack-io": io
        default: nil
        }
    }
}
