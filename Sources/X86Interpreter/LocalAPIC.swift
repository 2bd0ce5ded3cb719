// The local APIC (xAPIC, MMIO at APIC_BASE): priority registers, IRR/ISR/TMR, EOI, IPIs, LVT
// timer (one-shot and periodic) counting from the VM clock at 1 tick per ns before the divider,
// and LINT0 as the ExtINT virtual wire from the 8259. Owned by its vCPU's thread: other APICs and
// devices reach it only through the APIC bus (SMP/APICBus.swift), which posts to the vCPU's inbox.

import VMCore

final class LocalAPIC {
    static let defaultBase: UInt64 = 0xFEE0_0000
    /// APIC_BASE MSR: base | enable (bit 11) | BSP (bit 8).
    var baseMSR: UInt64 = LocalAPIC.defaultBase | 0x900

    var id: UInt32 = 0
    var tpr: UInt32 = 0
    var svr: UInt32 = 0xFF
    var ldr: UInt32 = 0
    var dfr: UInt32 = 0xFFFF_FFFF
    var esr: UInt32 = 0
    var isr = [UInt32](repeating: 0, count: 8)
    var irr = [UInt32](repeating: 0, count: 8)
    var tmr = [UInt32](repeating: 0, count: 8)
    var icrLow: UInt32 = 0
    var icrHigh: UInt32 = 0
    // LVT: CMCI, timer, thermal, perf, LINT0, LINT1, error.
    var lvtTimer: UInt32 = 0x10000
    var lvtThermal: UInt32 = 0x10000
    var lvtPerf: UInt32 = 0x10000
    /// The BSP's LINT0 starts as an unmasked ExtINT wire (what firmware leaves), like QEMU.
    var lvtLint0: UInt32 = 0x700
    var lvtLint1: UInt32 = 0x10000
    var lvtError: UInt32 = 0x10000
    var lvtCMCI: UInt32 = 0x10000
    var divideConfig: UInt32 = 0
    var initialCount: UInt32 = 0
    /// VM-clock time the current count was loaded.
    var timerStart: UInt64 = 0
    /// When the timer next fires (nil: not armed).
    var timerDeadline: UInt64?

    /// Where an ICR write sends its IPI (the APIC bus; nil: only self-IPIs are delivered).
    var onIPI: ((InterruptMessage) -> Void)?
    /// The EOI of a vector that was accepted level-triggered (TMR set): broadcast to the I/O APIC.
    var onLevelEOI: ((UInt8) -> Void)?
    /// ID, LDR or DFR changed: the APIC bus routes by them.
    var onRoutingChange: (() -> Void)?

    /// A local APIC at reset: the bootstrap processor's keeps LINT0 as the 8259's virtual wire (what
    /// firmware leaves); an application processor's LVT entries are all masked.
    init(id: UInt32 = 0, bootstrap: Bool = true) {
        self.id = id
        baseMSR = LocalAPIC.defaultBase | 0x800 | (bootstrap ? 0x100 : 0)
        if !bootstrap { lvtLint0 = 0x10000 }
    }

    /// INIT (SDM 10.4.7.3): every register back to its reset value except the ID and APIC_BASE.
    func resetForINIT() {
        tpr = 0; svr = 0xFF; ldr = 0; dfr = 0xFFFF_FFFF; esr = 0
        isr = Array(repeating: 0, count: 8); irr = isr; tmr = isr
        icrLow = 0; icrHigh = 0
        lvtTimer = 0x10000; lvtThermal = 0x10000; lvtPerf = 0x10000; lvtLint0 = 0x10000; lvtLint1 = 0x10000
        lvtError = 0x10000; lvtCMCI = 0x10000
        divideConfig = 0; initialCount = 0; timerStart = 0; timerDeadline = nil
        onRoutingChange?()
    }

    var hardwareEnabled: Bool { baseMSR & 0x800 != 0 }
    var softwareEnabled: Bool { svr & 0x100 != 0 }
    var base: UInt64 { baseMSR & 0xF_FFFF_F000 }

    @inline(__always)
    func covers(_ pa: UInt64) -> Bool { hardwareEnabled && pa & ~0xFFF == base }

    var divisor: UInt64 {
        let v = (divideConfig & 3) | ((divideConfig >> 1) & 4)
        return v == 7 ? 1 : UInt64(2) << UInt64(v)
    }

    // MARK: Priorities

    static func highestBit(_ regs: [UInt32]) -> Int? {
        for i in stride(from: 7, through: 0, by: -1) where regs[i] != 0 {
            return i * 32 + (31 - regs[i].leadingZeroBitCount)
        }
        return nil
    }

    var ppr: UInt32 {
        let isrv = UInt32(LocalAPIC.highestBit(isr) ?? 0)
        return (tpr & 0xF0) >= (isrv & 0xF0) ? tpr & 0xFF : isrv & 0xF0
    }

    /// The vector the APIC would deliver now (highest IRR above the processor priority).
    func pendingVector() -> Int? {
        guard let v = LocalAPIC.highestBit(irr) else { return nil }
        if UInt32(v) & 0xF0 <= ppr & 0xF0 { return nil }
        return v
    }

    /// INTA: the vector moves from IRR to ISR.
    func acknowledge(_ v: Int) {
        irr[v >> 5] &= ~(1 << UInt32(v & 31))
        isr[v >> 5] |= 1 << UInt32(v & 31)
    }

    /// Accepts a fixed interrupt.
    func setIRR(_ v: Int, level: Bool = false) {
        guard v >= 16 && v < 256 else {
            esr |= 0x40   // received illegal vector
            return
        }
        irr[v >> 5] |= 1 << UInt32(v & 31)
        if level { tmr[v >> 5] |= 1 << UInt32(v & 31) } else { tmr[v >> 5] &= ~(1 << UInt32(v & 31)) }
    }

    /// Whether LINT0 passes the 8259's INTR through (ExtINT, unmasked), or the APIC is disabled.
    var acceptsExtINT: Bool {
        if !hardwareEnabled { return true }
        return lvtLint0 & 0x10000 == 0 && (lvtLint0 >> 8) & 7 == 7
    }

    // MARK: Timer

    func currentCount(now: UInt64) -> UInt32 {
        guard initialCount != 0, timerDeadline != nil || lvtTimer & 0x20000 != 0 else { return 0 }
        let ticks = (now &- timerStart) / divisor
        if lvtTimer & 0x20000 != 0 {
            return initialCount - UInt32(ticks % UInt64(initialCount))
        }
        return ticks >= UInt64(initialCount) ? 0 : initialCount - UInt32(ticks)
    }

    func armTimer(now: UInt64) {
        timerStart = now
        timerDeadline = initialCount == 0 ? nil : now &+ UInt64(initialCount) &* divisor
    }

    /// Fires the timer if due. Returns true if an interrupt was raised.
    func advanceTimer(now: UInt64) -> Bool {
        guard let d = timerDeadline, now >= d else { return false }
        if lvtTimer & 0x20000 != 0 {
            // Periodic: next period from the nominal expiry, skipping missed ones.
            let period = UInt64(initialCount) &* divisor
            let missed = (now - d) / max(period, 1)
            timerStart = d &+ missed &* period
            timerDeadline = timerStart &+ period
        } else {
            timerDeadline = nil
        }
        if lvtTimer & 0x10000 == 0 && softwareEnabled {
            setIRR(Int(lvtTimer & 0xFF))
            return true
        }
        return false
    }

    // MARK: Registers

    func read(offset: Int, size: Int, now: UInt64) -> UInt64 {
        let reg = offset & ~0xF
        let v: UInt32
        switch reg {
        case 0x20: v = id << 24
        case 0x30: v = 0x0005_0014   // version 0x14, 6 LVT entries
        case 0x80: v = tpr
        case 0x90: v = 0
        case 0xA0: v = ppr
        case 0xD0: v = ldr
        case 0xE0: v = dfr
        case 0xF0: v = svr
        case 0x100...0x170: v = isr[(reg - 0x100) >> 4]
        case 0x180...0x1F0: v = tmr[(reg - 0x180) >> 4]
        case 0x200...0x270: v = irr[(reg - 0x200) >> 4]
        case 0x280: v = esr
        case 0x2F0: v = lvtCMCI
        case 0x300: v = icrLow
        case 0x310: v = icrHigh
        case 0x320: v = lvtTimer
        case 0x330: v = lvtThermal
        case 0x340: v = lvtPerf
        case 0x350: v = lvtLint0
        case 0x360: v = lvtLint1
        case 0x370: v = lvtError
        case 0x380: v = initialCount
        case 0x390: v = currentCount(now: now)
        case 0x3E0: v = divideConfig
        default: v = 0
        }
        let shifted = UInt64(v) >> UInt64((offset & 3) * 8)
        return shifted & allOnes(size: size)
    }

    /// Returns true when the write may have made an interrupt deliverable.
    @discardableResult
    func write(offset: Int, value: UInt32, now: UInt64) -> Bool {
        switch offset & ~0xF {
        case 0x20: id = value >> 24; onRoutingChange?()
        case 0x80: tpr = value & 0xFF
        case 0xB0:
            // EOI: retire the highest in-service vector; a level-triggered one is also broadcast.
            if let v = LocalAPIC.highestBit(isr) {
                let bit = UInt32(1) << UInt32(v & 31)
                isr[v >> 5] &= ~bit
                if tmr[v >> 5] & bit != 0 { onLevelEOI?(UInt8(truncatingIfNeeded: v)) }
            }
        case 0xD0: ldr = value & 0xFF00_0000; onRoutingChange?()
        case 0xE0: dfr = value | 0x0FFF_FFFF; onRoutingChange?()
        case 0xF0:
            svr = value & 0x13FF
            if !softwareEnabled {
                lvtTimer |= 0x10000; lvtThermal |= 0x10000; lvtPerf |= 0x10000
                lvtLint0 |= 0x10000; lvtLint1 |= 0x10000; lvtError |= 0x10000; lvtCMCI |= 0x10000
            }
        case 0x280: esr = 0
        case 0x2F0: lvtCMCI = maskLVT(value & 0x117FF)
        case 0x300:
            icrLow = value & ~0x1000   // delivery always completes at once
            sendIPI()
        case 0x310: icrHigh = value & 0xFF00_0000
        case 0x320:
            let wasPeriodic = lvtTimer & 0x20000 != 0
            lvtTimer = maskLVT(value & 0x300FF)
            if wasPeriodic != (lvtTimer & 0x20000 != 0) && initialCount != 0 { armTimer(now: now) }
        case 0x330: lvtThermal = maskLVT(value & 0x107FF)
        case 0x340: lvtPerf = maskLVT(value & 0x107FF)
        case 0x350: lvtLint0 = maskLVT(value & 0x1E7FF)
        case 0x360: lvtLint1 = maskLVT(value & 0x1E7FF)
        case 0x370: lvtError = maskLVT(value & 0x100FF)
        case 0x380:
            initialCount = value
            armTimer(now: now)
        case 0x3E0:
            divideConfig = value & 0xB
        default: break
        }
        return true
    }

    private func maskLVT(_ v: UInt32) -> UInt32 { softwareEnabled ? v : v | 0x10000 }

    /// The ICR's message goes to the APIC bus; without one (a lone interpreter) only this CPU exists,
    /// and only fixed IPIs that include it are delivered.
    private func sendIPI() {
        let shorthand = (icrLow >> 18) & 3
        let mode = (icrLow >> 8) & 7
        if let onIPI {
            onIPI(InterruptMessage(vector: UInt8(truncatingIfNeeded: icrLow), mode: UInt8(truncatingIfNeeded: mode),
                                   level: icrLow & 0x8000 != 0, assert: icrLow & 0x4000 != 0,
                                   destination: UInt8(truncatingIfNeeded: icrHigh >> 24), logical: icrLow & 0x800 != 0,
                                   shorthand: UInt8(truncatingIfNeeded: shorthand)))
            return
        }
        let toSelf: Bool
        switch shorthand {
        case 1, 2: toSelf = true
        case 3: toSelf = false
        default:
            let dest = icrHigh >> 24
            toSelf = icrLow & 0x800 == 0 ? (dest == id || dest == 0xFF) : (dest & (ldr >> 24)) != 0
        }
        if toSelf && mode == 0 { setIRR(Int(icrLow & 0xFF)) }
    }

    /// Takes fixed and lowest-priority vectors the bus delivered (IRR bits, TMR bits for level ones).
    func accept(irr newIRR: VectorSet, tmr newTMR: VectorSet) {
        for i in 0..<8 {
            let w = newIRR.word(i)
            if w == 0 { continue }
            // Vectors 0-15 are illegal (SDM 10.5.3): reported in ESR, never accepted.
            let legal = i == 0 ? w & 0xFFFF_0000 : w
            if legal != w { esr |= 0x40 }
            irr[i] |= legal
            tmr[i] = (tmr[i] & ~legal) | (newTMR.word(i) & legal)
        }
    }

    /// An MSI write (address 0xFEExxxxx). Fixed and lowest-priority messages for this CPU are accepted.
    func deliverMSI(address: UInt64, data: UInt32) {
        guard address >> 20 == 0xFEE else { return }
        let dest = UInt32((address >> 12) & 0xFF)
        let logical = address & 4 != 0
        let forUs = logical ? (dest & (ldr >> 24)) != 0 || dest == 0xFF : (dest == id || dest == 0xFF)
        let mode = (data >> 8) & 7
        guard forUs, mode == 0 || mode == 1 else { return }
        setIRR(Int(data & 0xFF), level: data & 0x8000 != 0)
    }
}
