import VMCore

/// The PS/2 controller (i8042) with a keyboard that never types: enough for Linux to probe it
/// quickly, find no mouse, and reboot through it (`reboot=k`).
///
/// Like Firecracker's, the keyboard answers what the kernel sends it (ACK 0xFA), and the device can
/// inject Ctrl+Alt+Del so the host can ask the guest to reboot cleanly. Unlike Firecracker's it
/// also answers the controller self-tests and the keyboard's reset/identify commands, so the
/// kernel's probe does not sit through timeouts, and it makes the AUX (mouse) probe fail at once.
///
/// Two byte-wide ports: data at 0x60 and status/command at 0x64. Port 0x61 (PC speaker / NMI
/// status) sits between them and belongs to the PIT, so the ports are two bus devices,
/// `dataPortDevice` and `commandPortDevice`.
public final class I8042 {
    /// Output buffer depth. Real controllers hold one byte and the keyboard holds the rest; the
    /// longest sequence we produce (Ctrl+Alt+Del press and release in set 2) is 11 bytes.
    public static let outputCapacity = 16

    // Status register bits.
    private static let stOutputFull: UInt8 = 0x01
    private static let stSystemFlag: UInt8 = 0x04
    private static let stLastWasCommand: UInt8 = 0x08
    private static let stKeyboardUnlocked: UInt8 = 0x10
    // Controller configuration byte ("command byte", CTR) bits.
    private static let ctrKeyboardInterrupt: UInt8 = 0x01
    private static let ctrSystemFlag: UInt8 = 0x04
    private static let ctrKeyboardDisabled: UInt8 = 0x10
    private static let ctrAuxDisabled: UInt8 = 0x20
    private static let ctrTranslate: UInt8 = 0x40

    /// Controller commands that take a parameter byte through port 0x60.
    public enum PendingParameter: Codable, Equatable, Sendable {
        case none
        case writeConfiguration             // 0x60
        case writeOutputPort                // 0xD1
        case writeKeyboardOutput            // 0xD2: echo the byte as if the keyboard sent it
        case auxLoopback                    // 0xD3
        case writeAux                       // 0xD4: to the (absent) mouse
        case keyboardParameter(UInt8)       // second byte of a keyboard command (0xED, 0xF0, 0xF3)
    }

    private let onReset: () -> Void
    private let irq: IRQLine?

    /// The controller configuration byte: keyboard interrupt on, system flag (POST passed), mouse
    /// port disabled, no scancode translation (like Firecracker's). Seeing translation off, Linux
    /// switches to direct mode and reads the keyboard's set 2 codes untranslated.
    public private(set) var configuration: UInt8 = 0x25
    /// The output port (bit 0 is the CPU reset line, active low; bit 1 the A20 gate).
    public private(set) var outputPort: UInt8 = 0x03
    private var lastWasCommand = false
    private var pending = PendingParameter.none
    /// Bytes waiting for the guest at port 0x60; `fromKeyboard` bytes raise IRQ 1.
    private var output: [(byte: UInt8, fromKeyboard: Bool)] = []
    private var lineLevel = false

    // Counters, for tests and statistics.
    /// CPU reset requests delivered to `onReset`.
    public private(set) var resetRequests = 0
    /// Controller commands and keyboard bytes this model ignores.
    public private(set) var unhandledCommands = 0
    /// Port accesses wider than a byte (ignored; reads return all-ones).
    public private(set) var wideAccesses = 0

    /// - Parameters:
    ///   - onReset: called (on the vCPU thread) when the guest pulses the CPU reset line; the machine
    ///     passes `{ control.requestStop(.reset) }`.
    ///   - keyboardIRQ: IRQ 1. Without it the kernel's keyboard commands go unanswered (they are
    ///     interrupt driven) and atkbd waits out its timeouts.
    public init(onReset: @escaping () -> Void, keyboardIRQ: IRQLine? = nil) {
        self.onReset = onReset
        self.irq = keyboardIRQ
    }

    /// The data port (0x60) as a one-byte bus device.
    public var dataPortDevice: BusDevice { PortView(self, isData: true) }
    /// The status/command port (0x64) as a one-byte bus device.
    public var commandPortDevice: BusDevice { PortView(self, isData: false) }

    /// True while the keyboard interrupt line is high.
    public var interruptLineHigh: Bool { lineLevel }

    // MARK: Ports

    /// Port 0x64 read.
    public func readStatus() -> UInt8 {
        var status = Self.stKeyboardUnlocked
        if !output.isEmpty { status |= Self.stOutputFull }
        if configuration & Self.ctrSystemFlag != 0 { status |= Self.stSystemFlag }
        if lastWasCommand { status |= Self.stLastWasCommand }
        // The input buffer is always empty (bit 1 clear): we consume every write at once.
        return status
    }

    /// Port 0x60 read: the oldest pending byte, or 0 when there is none.
    public func readData() -> UInt8 {
        guard !output.isEmpty else { return 0 }
        let byte = output.removeFirst().byte
        // Drop the line so the next keyboard byte is a fresh edge (ISA IRQ 1 is edge-triggered).
        setLine(false)
        updateInterrupt()
        return byte
    }

    /// Port 0x64 write: a controller command.
    public func writeCommand(_ command: UInt8) {
        lastWasCommand = true
        pending = .none
        // A new command replaces whatever answer the guest did not collect.
        clearOutput()
        switch command {
        case 0x20:                                      // read configuration byte
            respond(configuration)
        case 0x60: pending = .writeConfiguration
        case 0xA7: configuration |= Self.ctrAuxDisabled
        case 0xA8: configuration &= ~Self.ctrAuxDisabled
        case 0xA9:                                      // test mouse port
            respond(0x01)                               // "clock line stuck low": no mouse here
        case 0xAA:                                      // controller self-test
            respond(0x55)
        case 0xAB:                                      // test keyboard port
            respond(0x00)
        case 0xAD: configuration |= Self.ctrKeyboardDisabled
        case 0xAE: configuration &= ~Self.ctrKeyboardDisabled
        case 0xC0: respond(0x00)                        // read input port
        case 0xD0: respond(outputPort)                  // read output port
        case 0xD1: pending = .writeOutputPort
        case 0xD2: pending = .writeKeyboardOutput
        case 0xD3: pending = .auxLoopback
        case 0xD4: pending = .writeAux
        case 0xF0...0xFF:
            // Pulse output port bits 0-3 low where the command's low nibble is 0. Bit 0 is the CPU
            // reset line; 0xFE is the classic "reset the machine".
            if command & 0x01 == 0 { requestReset() }
        default:
            unhandledCommands += 1
        }
        updateInterrupt()
    }

    /// Port 0x60 write: a parameter for the last controller command, or a byte for the keyboard.
    public func writeData(_ value: UInt8) {
        lastWasCommand = false
        let parameterFor = pending
        pending = .none
        switch parameterFor {
        case .writeConfiguration:
            configuration = value
        case .writeOutputPort:
            outputPort = value
            if value & 0x01 == 0 { requestReset() }
        case .writeKeyboardOutput:
            clearOutput()
            push(value, fromKeyboard: true)
        case .auxLoopback:
            // A real controller returns the byte flagged as mouse data (status bit 5). We return it
            // unflagged: Linux's i8042 then fails its mux and AUX probes immediately instead of
            // after half-second timeouts, and carries on without a mouse.
            respond(value)
        case .writeAux:
            break   // no mouse: nothing answers
        case .keyboardParameter(let command):
            keyboardParameter(value, for: command)
        case .none:
            keyboardCommand(value)
        }
        updateInterrupt()
    }

    /// Queues Ctrl+Alt+Del (press and release) from the keyboard, in the scancode set the guest reads
    /// (set 1 when the controller translates, else set 2). Returns false if the guest has not drained
    /// earlier keyboard output or has disabled the keyboard.
    @discardableResult
    public func injectCtrlAltDel() -> Bool {
        guard configuration & Self.ctrKeyboardDisabled == 0 else { return false }
        let codes: [UInt8] = configuration & Self.ctrTranslate != 0
            ? [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D]
            : [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14]
        guard Self.outputCapacity - output.count >= codes.count else { return false }
        for c in codes { push(c, fromKeyboard: true) }
        updateInterrupt()
        return true
    }

    // MARK: Keyboard

    private func keyboardCommand(_ command: UInt8) {
        // A command to the keyboard cancels whatever it was still sending.
        clearOutput()
        switch command {
        case 0xED, 0xF0, 0xF3:              // set LEDs, scancode set, typematic rate: parameter follows
            push(0xFA, fromKeyboard: true)
            pending = .keyboardParameter(command)
        case 0xEE:                          // echo
            push(0xEE, fromKeyboard: true)
        case 0xF2:                          // identify: an MF2 keyboard
            push(0xFA, fromKeyboard: true)
            push(0xAB, fromKeyboard: true)
            push(configuration & Self.ctrTranslate != 0 ? 0x41 : 0x83, fromKeyboard: true)
        case 0xFF:                          // reset: ACK, then self-test passed
            push(0xFA, fromKeyboard: true)
            push(0xAA, fromKeyboard: true)
        default:                            // enable, disable, defaults, resend, ...: ACK
            push(0xFA, fromKeyboard: true)
        }
    }

    private func keyboardParameter(_ value: UInt8, for command: UInt8) {
        clearOutput()
        push(0xFA, fromKeyboard: true)
        if command == 0xF0 && value == 0 {
            // "Which scancode set?": set 2 (0x41 once translated).
            push(configuration & Self.ctrTranslate != 0 ? 0x41 : 0x02, fromKeyboard: true)
        }
    }

    // MARK: Plumbing

    private func respond(_ byte: UInt8) { push(byte, fromKeyboard: false) }

    private func push(_ byte: UInt8, fromKeyboard: Bool) {
        guard output.count < Self.outputCapacity else { return }
        output.append((byte, fromKeyboard))
    }

    private func clearOutput() {
        output.removeAll()
        updateInterrupt()
    }

    private func requestReset() {
        resetRequests += 1
        onReset()
    }

    /// IRQ 1 follows "a keyboard byte is waiting and the keyboard interrupt is enabled". Controller
    /// answers do not interrupt: the kernel polls for them with interrupts off.
    private func updateInterrupt() {
        let level = output.first?.fromKeyboard == true && configuration & Self.ctrKeyboardInterrupt != 0
        setLine(level)
    }

    private func setLine(_ level: Bool) {
        guard level != lineLevel else { return }
        lineLevel = level
        if level { irq?.raise() } else { irq?.lower() }
    }

    fileprivate func busRead(isData: Bool, size: Int) -> UInt64 {
        guard size == 1 else {
            wideAccesses += 1
            return allOnes(size: size)
        }
        return UInt64(isData ? readData() : readStatus())
    }

    fileprivate func busWrite(isData: Bool, size: Int, value: UInt64) {
        guard size == 1 else { wideAccesses += 1; return }
        let byte = UInt8(truncatingIfNeeded: value)
        if isData { writeData(byte) } else { writeCommand(byte) }
    }
}

// MARK: State

extension I8042: StatefulDevice {
    /// The configuration byte, output port, the parameter a command waits for, the bytes waiting at
    /// port 0x60 and the keyboard interrupt line level.
    public struct State: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = State.currentVersion
        public var configuration: UInt8
        public var outputPort: UInt8
        public var lastWasCommand: Bool
        public var pending: PendingParameter
        public var output: [OutputByte]
        public var interruptLine: Bool
    }

    public struct OutputByte: Codable, Equatable, Sendable {
        public var byte: UInt8
        /// Keyboard bytes raise IRQ 1; controller answers do not.
        public var fromKeyboard: Bool
    }

    public func captureState() -> State {
        State(configuration: configuration, outputPort: outputPort, lastWasCommand: lastWasCommand, pending: pending,
              output: output.map { OutputByte(byte: $0.byte, fromKeyboard: $0.fromKeyboard) }, interruptLine: lineLevel)
    }

    public func restoreState(_ s: State) throws(DeviceStateError) {
        try s.checkVersion(device: "i8042")
        guard s.output.count <= Self.outputCapacity else {
            throw .invalid(device: "i8042", reason: "\(s.output.count) output bytes (at most \(Self.outputCapacity))")
        }
        (configuration, outputPort, lastWasCommand, pending) = (s.configuration, s.outputPort, s.lastWasCommand, s.pending)
        output = s.output.map { ($0.byte, $0.fromKeyboard) }
        lineLevel = s.interruptLine
    }
}

/// One of the i8042's two ports as a bus device.
private final class PortView: BusDevice {
    let controller: I8042
    let isData: Bool
    init(_ controller: I8042, isData: Bool) { self.controller = controller; self.isData = isData }
    func read(offset: UInt64, size: Int) -> UInt64 { controller.busRead(isData: isData, size: size) }
    func write(offset: UInt64, size: Int, value: UInt64) {
        controller.busWrite(isData: isData, size: size, value: value)
    }
}
