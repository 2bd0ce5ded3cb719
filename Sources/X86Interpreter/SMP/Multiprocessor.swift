import CHost

// A vCPU's side of multiprocessing: its APIC wired to the bus, its mail (interrupts, NMI, INIT,
// start-up) taken on its own thread, and the INIT / wait-for-SIPI / start-up states.

extension X86Interpreter {
    static let eventCheckOffset = MemoryLayout<CPUState>.offset(of: \CPUState.eventCheck)!

    /// Connects the APIC to the bus: IPIs out, level EOIs to the I/O APIC, routing changes, and the
    /// inbox's way to get this vCPU's attention from another thread.
    func wireAPIC() {
        apic.onIPI = { [unowned self] m in system.bus.send(m, from: index) }
        apic.onLevelEOI = { [unowned self] v in system.devices.endOfInterrupt(v) }
        apic.onRoutingChange = { [unowned self] in
            system.bus.update(cpu: index, id: apic.id, ldr: apic.ldr, dfr: apic.dfr)
        }
        let st = UnsafeMutableRawPointer(self.st), inbox = self.inbox, wakeup = self.wakeup
        inbox.notify = {
            // The event flag is read by the vCPU's block loop (and translated code) without
            // synchronisation; the poll every few thousand instructions catches a late one anyway.
            chost_store8(st + X86Interpreter.eventCheckOffset, 1)
            if inbox.sleeping.load(ordering: .sequentiallyConsistent) {
                inbox.wakeups.add(1, ordering: .relaxed)
                wakeup.signal()
            }
        }
    }

    /// Takes what other threads sent: INIT first (it resets the vCPU), then a start-up, an NMI and
    /// fixed interrupts.
    func takeMail() {
        guard let m = inbox.take() else { return }
        st.pointee.eventCheck = true
        if m.initSignal { enterWaitForStartup() }
        if let v = m.startup, waitingForStartup { startUp(at: v) }
        if m.nmi { nmiPending = true }
        apic.accept(irr: m.irr, tmr: m.tmr)
    }

    /// INIT: the CPU goes to its reset state (the APIC keeps its ID) and waits for a start-up IPI.
    /// Decoded code and translations stay: they are keyed by physical address and page generation.
    func enterWaitForStartup() {
        let epoch = chainEpoch
        reset()
        // Chain links recorded before the INIT must not match again: the epoch only moves forward.
        chainEpoch = epoch
        bumpChainEpoch()
        apic.resetForINIT()
        nmiPending = false
        nmiBlocked = false
        waitingForStartup = true
    }

    /// Start-up IPI with vector VV: real mode at VV00:0000.
    func startUp(at vector: UInt8) {
        segs[Seg.cs] = SegmentCache(selector: UInt16(vector) << 8, base: UInt64(vector) << 12, limit: 0xFFFF, attr: 0x9B)
        rip = 0
        st.pointee.halted = false
        waitingForStartup = false
        updateMode()
    }
}

extension SharedCode {
    /// Invalidates every page holding code in a guest-physical range (device DMA bypasses the CPUs).
    func invalidate(physicalAddress: UInt64, length: UInt64) {
        guard length > 0, physPages > 0 else { return }
        let first = Int(truncatingIfNeeded: min(physicalAddress >> 12, UInt64(truncatingIfNeeded: physPages)))
        let (endAddr, overflow) = physicalAddress.addingReportingOverflow(length - 1)
        let last = overflow ? physPages - 1 : Int(truncatingIfNeeded: min(endAddr >> 12, UInt64(truncatingIfNeeded: physPages - 1)))
        guard first <= last else { return }
        for p in first...last where codePages[p] != 0 { invalidate(p) }
    }
}
