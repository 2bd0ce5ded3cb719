import Synchronization

// Interrupt messages between the local APICs of one VM: IPIs from an ICR write, MSIs from devices
// and the I/O APIC's messages (which arrive in MSI form). The bus finds the destination APICs (by the
// IDs, logical IDs and destination formats their owners last programmed) and posts the message in
// each one's inbox; the owning vCPU takes its mail on its own thread between instructions. No vCPU
// ever touches another's APIC registers.

/// One interrupt message as the APIC bus carries it (SDM 10.6.1, the ICR fields).
struct InterruptMessage: Equatable, Sendable {
    var vector: UInt8
    /// Delivery mode: 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 start-up, 7 ExtINT.
    var mode: UInt8
    /// Level-triggered (the vector goes into TMR, and its EOI is broadcast to the I/O APIC).
    var level: Bool = false
    /// The level of an INIT: an INIT with level de-assert only synchronises arbitration IDs.
    var assert: Bool = true
    var destination: UInt8 = 0
    var logical: Bool = false
    /// 0 the destination field, 1 self, 2 all including self, 3 all excluding self.
    var shorthand: UInt8 = 0

    static let fixed: UInt8 = 0, lowestPriority: UInt8 = 1, smi: UInt8 = 2, nmi: UInt8 = 4, initMode: UInt8 = 5
    static let startup: UInt8 = 6, extINT: UInt8 = 7

    /// The message an MSI write (or an I/O APIC redirection) carries: address 0xFEExxxxx with the
    /// destination in bits 12-19 and the destination mode in bit 2; data with vector, delivery mode
    /// and trigger. Nil for an address outside the interrupt window.
    static func msi(address: UInt64, data: UInt32) -> InterruptMessage? {
        guard address >> 20 == 0xFEE else { return nil }
        return InterruptMessage(vector: UInt8(truncatingIfNeeded: data), mode: UInt8((data >> 8) & 7),
                                level: data & 0x8000 != 0, assert: data & 0x4000 != 0 || data & 0x8000 == 0,
                                destination: UInt8(truncatingIfNeeded: address >> 12), logical: address & 4 != 0)
    }
}

/// What a vCPU has been sent and not yet taken: guarded by its own lock, filled by any thread, emptied
/// by the owner.
final class InterruptInbox: @unchecked Sendable {
    struct Mail: Equatable {
        /// Fixed and lowest-priority vectors (IRR bits) and which of them are level-triggered.
        var irr = VectorSet()
        var tmr = VectorSet()
        var nmi = false
        /// An INIT arrived (before `startup`, if both are set: a later INIT clears an earlier SIPI).
        var initSignal = false
        var startup: UInt8?
        var isEmpty: Bool { self == Mail() }
    }

    private let mail = Mutex(Mail())
    /// Set after every post; cleared by the owner before it takes the mail.
    let hasMail = Atomic<Bool>(false)
    /// The owner is (about to be) asleep in HLT or waiting for a start-up: posts must wake it.
    let sleeping = Atomic<Bool>(false)
    /// Makes the owner look at its mail: sets its event flag and wakes it if asleep.
    var notify: () -> Void = {}
    /// Posts that found the owner asleep and woke it (each a futex wake and a host thread switch).
    let wakeups = Atomic<Int>(0)

    func post(_ m: InterruptMessage) {
        let accepted = mail.withLock { box -> Bool in
            switch m.mode {
            case InterruptMessage.fixed, InterruptMessage.lowestPriority:
                box.irr.insert(m.vector)
                if m.level { box.tmr.insert(m.vector) } else { box.tmr.remove(m.vector) }
            case InterruptMessage.nmi:
                box.nmi = true
            case InterruptMessage.initMode:
                // INIT level de-assert (level-triggered, de-asserted) is only an arbitration sync.
                if m.level && !m.assert { return false }
                box.initSignal = true
                box.startup = nil
            case InterruptMessage.startup:
                box.startup = m.vector
            default:
                return false   // SMI, ExtINT and reserved modes: not modelled, dropped
            }
            return true
        }
        guard accepted else { return }
        hasMail.store(true, ordering: .sequentiallyConsistent)
        notify()
    }

    /// The mail so far (nil if none), leaving the inbox empty.
    func take() -> Mail? {
        guard hasMail.load(ordering: .relaxed) else { return nil }
        hasMail.store(false, ordering: .sequentiallyConsistent)
        let m = mail.withLock { box -> Mail in
            let m = box
            box = Mail()
            return m
        }
        return m.isEmpty ? nil : m
    }
}

/// 256 interrupt vectors as bits (no heap: the inbox is filled on every interrupt).
struct VectorSet: Equatable {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    static func == (a: VectorSet, b: VectorSet) -> Bool { a.words == b.words }

    mutating func insert(_ v: UInt8) {
        let bit = UInt64(1) << UInt64(v & 63)
        switch v >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    mutating func remove(_ v: UInt8) {
        let bit = ~(UInt64(1) << UInt64(v & 63))
        switch v >> 6 {
        case 0: words.0 &= bit
        case 1: words.1 &= bit
        case 2: words.2 &= bit
        default: words.3 &= bit
        }
    }

    /// The 32-bit register word `i` (0...7) of an APIC's IRR/ISR/TMR layout.
    func word(_ i: Int) -> UInt32 {
        let w: UInt64
        switch i >> 1 {
        case 0: w = words.0
        case 1: w = words.1
        case 2: w = words.2
        default: w = words.3
        }
        return UInt32(truncatingIfNeeded: i & 1 == 0 ? w : w >> 32)
    }
}

/// The bus between the local APICs of one VM.
final class APICBus: @unchecked Sendable {
    /// Routing state of each APIC, by vCPU index: mirrored from its registers by its owner.
    private struct Route {
        var id: UInt8
        /// Logical APIC ID (LDR bits 31-24).
        var logicalID: UInt8 = 0
        /// Destination format model (DFR bits 31-28): 0xF flat, 0x0 cluster.
        var model: UInt8 = 0xF
    }

    private let routes: Mutex<[Route]>
    let inboxes: [InterruptInbox]
    /// Messages for APIC IDs no CPU has (dropped), for diagnostics and tests.
    let undeliverable = Atomic<Int>(0)
    /// Messages sent (IPIs and device interrupts), for `--boot-timer`.
    let sent = Atomic<Int>(0)

    init(count: Int) {
        precondition(count <= 64, "the APIC bus routes by a 64-bit mask")
        routes = Mutex((0..<count).map { Route(id: UInt8(truncatingIfNeeded: $0)) })
        inboxes = (0..<count).map { _ in InterruptInbox() }
    }

    var count: Int { inboxes.count }

    /// vCPU `cpu`'s APIC now has these ID, LDR and DFR values.
    func update(cpu: Int, id: UInt32, ldr: UInt32, dfr: UInt32) {
        routes.withLock {
            $0[cpu] = Route(id: UInt8(truncatingIfNeeded: id), logicalID: UInt8(truncatingIfNeeded: ldr >> 24),
                            model: UInt8(truncatingIfNeeded: dfr >> 28))
        }
    }

    /// Sends `m` (from vCPU `sender`, for the self and all-excluding-self shorthands).
    func send(_ m: InterruptMessage, from sender: Int?) {
        sent.add(1, ordering: .relaxed)
        var targets = routes.withLock { APICBus.targets(of: m, sender: sender, routes: $0) }
        if targets == 0 {
            undeliverable.add(1, ordering: .relaxed)
            return
        }
        // Lowest priority: any one of them will do (as KVM may); the first keeps it deterministic.
        if m.mode == InterruptMessage.lowestPriority { targets &= ~(targets - 1) }
        while targets != 0 {
            inboxes[targets.trailingZeroBitCount].post(m)
            targets &= targets - 1
        }
    }

    /// A device's MSI (or an I/O APIC message).
    func deliverMSI(address: UInt64, data: UInt32) {
        guard let m = InterruptMessage.msi(address: address, data: data) else {
            undeliverable.add(1, ordering: .relaxed)
            return
        }
        send(m, from: nil)
    }

    /// The vCPUs `m` goes to, as a bit mask by vCPU index.
    private static func targets(of m: InterruptMessage, sender: Int?, routes: [Route]) -> UInt64 {
        let all: UInt64 = routes.count >= 64 ? ~0 : (1 << UInt64(truncatingIfNeeded: routes.count)) - 1
        let me: UInt64 = sender.map { 1 << UInt64(truncatingIfNeeded: $0) } ?? 0
        switch m.shorthand {
        case 1: return me
        case 2: return all
        case 3: return all & ~me
        default: break
        }
        let dest = m.destination
        if dest == 0xFF { return all }
        var mask: UInt64 = 0
        for (i, r) in routes.enumerated() {
            let hit: Bool
            if !m.logical {
                hit = r.id == dest
            } else if r.model == 0xF {
                hit = r.logicalID & dest != 0                                         // flat: a bit per APIC
            } else {
                hit = r.logicalID >> 4 == dest >> 4 && (r.logicalID & dest & 0xF) != 0 // cluster
            }
            if hit { mask |= 1 << UInt64(truncatingIfNeeded: i) }
        }
        return mask
    }
}
