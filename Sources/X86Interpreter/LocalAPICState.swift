import VMCore

extension X86Interpreter {
    /// The local APIC as a value: the interpreter models the APIC that KVM keeps in the kernel, so
    /// its state is saved with the vCPU's, not the platform's. Times are VM clock ns.
    public struct LocalAPICState: DeviceState {
        public static let currentVersion: UInt32 = 1
        public var version = LocalAPICState.currentVersion
        public var baseMSR: UInt64
        public var id: UInt32, tpr: UInt32, svr: UInt32, ldr: UInt32, dfr: UInt32, esr: UInt32
        public var isr: [UInt32], irr: [UInt32], tmr: [UInt32]
        public var icrLow: UInt32, icrHigh: UInt32
        public var lvtTimer: UInt32, lvtThermal: UInt32, lvtPerf: UInt32, lvtLint0: UInt32, lvtLint1: UInt32
        public var lvtError: UInt32, lvtCMCI: UInt32
        public var divideConfig: UInt32, initialCount: UInt32
        public var timerStart: UInt64
        public var timerDeadline: UInt64?
    }

    public var localAPICState: LocalAPICState {
        let a = apic
        return LocalAPICState(
            baseMSR: a.baseMSR, id: a.id, tpr: a.tpr, svr: a.svr, ldr: a.ldr, dfr: a.dfr, esr: a.esr,
            isr: a.isr, irr: a.irr, tmr: a.tmr, icrLow: a.icrLow, icrHigh: a.icrHigh,
            lvtTimer: a.lvtTimer, lvtThermal: a.lvtThermal, lvtPerf: a.lvtPerf, lvtLint0: a.lvtLint0,
            lvtLint1: a.lvtLint1, lvtError: a.lvtError, lvtCMCI: a.lvtCMCI, divideConfig: a.divideConfig,
            initialCount: a.initialCount, timerStart: a.timerStart, timerDeadline: a.timerDeadline)
    }

    /// Restores the local APIC; pending interrupts are looked at again before the next instruction.
    public func restoreLocalAPIC(_ s: LocalAPICState) throws(DeviceStateError) {
        try s.checkVersion(device: "local APIC")
        guard s.isr.count == 8, s.irr.count == 8, s.tmr.count == 8 else {
            throw .invalid(device: "local APIC", reason: "ISR/IRR/TMR must have 8 words each")
        }
        let a = apic
        (a.baseMSR, a.id, a.tpr, a.svr, a.ldr, a.dfr, a.esr) = (s.baseMSR, s.id, s.tpr, s.svr, s.ldr, s.dfr, s.esr)
        (a.isr, a.irr, a.tmr, a.icrLow, a.icrHigh) = (s.isr, s.irr, s.tmr, s.icrLow, s.icrHigh)
        (a.lvtTimer, a.lvtThermal, a.lvtPerf, a.lvtLint0) = (s.lvtTimer, s.lvtThermal, s.lvtPerf, s.lvtLint0)
        (a.lvtLint1, a.lvtError, a.lvtCMCI) = (s.lvtLint1, s.lvtError, s.lvtCMCI)
        (a.divideConfig, a.initialCount, a.timerStart, a.timerDeadline) =
            (s.divideConfig, s.initialCount, s.timerStart, s.timerDeadline)
        a.onRoutingChange?()
        st.pointee.eventCheck = true
    }
}
