import CPUBackend
import Devices
import Synchronization

/// An `InterruptController` that records every line change and MSI, for device tests.
/// Thread-safe (the protocol requires `Sendable`), though device tests call it from one thread.
final class RecordingInterruptController: InterruptController {
    enum Event: Equatable {
        case level(gsi: UInt32, high: Bool)
        case msi(address: UInt64, data: UInt32)
    }

    private struct State {
        var events: [Event] = []
        var levels: [UInt32: Bool] = [:]
        var risingEdges: [UInt32: Int] = [:]
    }

    private let state = Mutex(State())

    init() {}

    func setIRQ(_ gsi: UInt32, level: Bool) {
        state.withLock { s in
            s.events.append(.level(gsi: gsi, high: level))
            if level && s.levels[gsi] != true { s.risingEdges[gsi, default: 0] += 1 }
            s.levels[gsi] = level
        }
    }

    func signalMSI(address: UInt64, data: UInt32) {
        state.withLock { $0.events.append(.msi(address: address, data: data)) }
    }

    /// An `IRQLine` on this controller.
    func line(_ gsi: UInt32) -> IRQLine { IRQLine(controller: self, gsi: gsi) }

    /// Every call, in order.
    var events: [Event] { state.withLock { $0.events } }

    /// The current level of `gsi` (low if never set).
    func level(_ gsi: UInt32) -> Bool { state.withLock { $0.levels[gsi] ?? false } }

    /// Low-to-high transitions of `gsi` seen so far (what an edge-triggered controller would latch).
    func risingEdges(_ gsi: UInt32) -> Int { state.withLock { $0.risingEdges[gsi] ?? 0 } }

    /// The MSIs delivered, in order.
    var msis: [(address: UInt64, data: UInt32)] {
        state.withLock { s in
            s.events.compactMap { e -> (address: UInt64, data: UInt32)? in
                if case .msi(let a, let d) = e { return (a, d) }
                return nil
            }
        }
    }

    /// Forgets events and edge counts (levels are kept: they are the lines' state).
    func clearEvents() {
        state.withLock { s in
            s.events.removeAll()
            s.risingEdges.removeAll()
        }
    }
}

/// A `BusDevice` that records accesses and answers reads from a fixed pattern, for bus tests.
final class RecordingBusDevice: BusDevice {
    struct Access: Equatable {
        let offset: UInt64
        let size: Int
        let value: UInt64?   // nil for reads
    }
    private(set) var accesses: [Access] = []
    let readValue: UInt64

    init(readValue: UInt64 = 0) { self.readValue = readValue }

    func read(offset: UInt64, size: Int) -> UInt64 {
        accesses.append(Access(offset: offset, size: size, value: nil))
        return readValue
    }

    func write(offset: UInt64, size: Int, value: UInt64) {
        accesses.append(Access(offset: offset, size: size, value: value))
    }
}
