import VMCore

/// The ACPI fixed-hardware PM1a registers the FADT points at (ACPI 6.4, 4.8.3): the event block
/// (PM1_STS, PM1_EN; 2 bytes each) and the control block (PM1_CNT). Linux's `poweroff` writes
/// SLP_TYP (the \_S5 value of the DSDT) with SLP_EN to PM1_CNT: that calls `onPowerOff`.
///
/// The machine is always in ACPI mode (the FADT has no SMI command port), so SCI_EN reads as 1. The
/// SCI is asserted while a status bit and its enable bit are both set; swhv raises no events of its
/// own yet (no power button), so it only follows what the guest writes. A sleep state other than
/// S5 (the DSDT offers none) is not entered: WAK_STS is set at once, so a guest trying one wakes up.
public final class ACPIPowerManagement: StatefulDevice {
    public static let eventLength: UInt64 = 4, controlLength: UInt64 = 2

    /// PM1_STS bits (write 1 to clear).
    public static let timerStatus: UInt16 = 1 << 0, busMasterStatus: UInt16 = 1 << 4, globalStatus: UInt16 = 1 << 5
    public static let powerButtonStatus: UInt16 = 1 << 8, sleepButtonStatus: UInt16 = 1 << 9
    public static let rtcStatus: UInt16 = 1 << 10, wakeStatus: UInt16 = 1 << 15
    static let statusBits: UInt16 = timerStatus | busMasterStatus | globalStatus | powerButtonStatus
        | sleepButtonStatus | rtcStatus | wakeStatus
    /// PM1_EN bits.
    static let enableBits: UInt16 = (1 << 0) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10)
    /// PM1_CNT: SCI_EN (0), BM_RLD (1), GBL_RLS (2, write-only), SLP_TYP (10-12), SLP_EN (13, write-only).
    static let sciEnable: UInt16 = 1 << 0, sleepEnable: UInt16 = 1 << 13
    static let controlKept: UInt16 = (1 << 1) | (7 << 10)

    public private(set) var status: UInt16 = 0
    public private(set) var enable: UInt16 = 0
    public private(set) var control: UInt16 = ACPIPowerManagement.sciEnable
    public let s5SleepType: UInt8
    private let sci: IRQLine
    /// Called on the vCPU thread when the guest enters S5.
    public var onPowerOff: () -> Void

    /// The event block (status, enable) and the control block, for the bus.
    public private(set) var eventBlock: BusDevice! = nil
    public private(set) var controlBlock: BusDevice! = nil

    public init(sci: IRQLine, s5SleepType: UInt8, onPowerOff: @escaping () -> Void) {
        self.sci = sci
        self.s5SleepType = s5SleepType
        self.onPowerOff = onPowerOff
        eventBlock = Block(self, length: ACPIPowerManagement.eventLength, read: { $0.readEvent($1) },
                           write: { $0.writeEvent($1, $2) })
        controlBlock = Block(self, length: ACPIPowerManagement.controlLength, read: { $0.readControl($1) },
                             write: { $0.writeControl($1, $2) })
    }

    // Byte-wise register access (wider accesses are split into bytes by `Block`).

    func readEvent(_ offset: UInt64) -> UInt8 {
        let v = offset < 2 ? status : enable
        return UInt8(truncatingIfNeeded: v >> (8 * (offset & 1)))
    }

    func writeEvent(_ offset: UInt64, _ b: UInt8) {
        let shifted = UInt16(b) << (8 * (offset & 1))
        if offset < 2 {
            status &= ~(shifted & ACPIPowerManagement.statusBits)
        } else {
            let mask: UInt16 = offset & 1 == 0 ? 0x00FF : 0xFF00
            enable = (enable & ~mask) | (shifted & ACPIPowerManagement.enableBits)
        }
        updateSCI()
    }

    func readControl(_ offset: UInt64) -> UInt8 {
        UInt8(truncatingIfNeeded: control >> (8 * (offset & 1)))
    }

    func writeControl(_ offset: UInt64, _ b: UInt8) {
        let shift = 8 * UInt16(offset & 1)
        writeControlWord((control & ~(0xFF << shift)) | UInt16(b) << shift)
    }

    private func updateSCI() {
        if status & enable != 0 { sci.raise() } else { sci.lower() }
    }

    /// One register block on the port bus; byte-wide, as the spec allows any access width.
    private final class Block: BusDevice {
        unowned let pm: ACPIPowerManagement
        let length: UInt64
        let readByte: (ACPIPowerManagement, UInt64) -> UInt8
        let writeByte: (ACPIPowerManagement, UInt64, UInt8) -> Void
        init(_ pm: ACPIPowerManagement, length: UInt64, read: @escaping (ACPIPowerManagement, UInt64) -> UInt8,
             write: @escaping (ACPIPowerManagement, UInt64, UInt8) -> Void) {
            self.pm = pm; self.length = length; readByte = read; writeByte = write
        }
        func read(offset: UInt64, size: Int) -> UInt64 {
            ByteWidePorts.read(offset: offset, size: size, length: length) { readByte(pm, $0) }
        }
        func write(offset: UInt64, size: Int, value: UInt64) {
            // A word write to PM1_CNT must see both bytes at once (SLP_TYP and SLP_EN straddle them).
            if length == ACPIPowerManagement.controlLength && offset == 0 && size >= 2 {
                pm.writeControlWord(UInt16(truncatingIfNeeded: value))
                return
            }
            ByteWidePorts.write(offset: offset, size: size, value: value, length: length) { writeByte(pm, $0, $1) }
        }
    }

    /// A write of the whole PM1_CNT: SLP_EN with the \_S5 type powers off.
    func writeControlWord(_ v: UInt16) {
        control = (v & ACPIPowerManagement.controlKept) | ACPIPowerManagement.sciEnable
        guard v & ACPIPowerManagement.sleepEnable != 0 else { return }
        if UInt8((v >> 10) & 7) == s5SleepType {
            onPowerOff()
        } else {
            status |= ACPIPowerManagement.wakeStatus
            updateSCI()
        }
    }

    // MARK: State

    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var status: UInt16
        public var enable: UInt16
        public var control: UInt16
    }

    public func captureState() -> State { State(status: status, enable: enable, control: control) }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "acpi-pm")
        guard s.status & ~ACPIPowerManagement.statusBits == 0, s.enable & ~ACPIPowerManagement.enableBits == 0,
              s.control & ~(ACPIPowerManagement.controlKept | ACPIPowerManagement.sciEnable) == 0 else {
            throw .invalid(device: "acpi-pm", reason: "reserved bits set")
        }
        status = s.status; enable = s.enable; control = s.control | ACPIPowerManagement.sciEnable
    }
}
