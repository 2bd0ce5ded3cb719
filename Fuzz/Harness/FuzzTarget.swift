/// The fuzz targets, by the names `scripts/fuzz` and the corpus directories use.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// LinuxLoader.load on arbitrary kernel images, and the host-side decompressors.
    case loader
    /// virtio-blk over virtio-pci: descriptor tables and rings in guest RAM, then notifications.
    case virtio
    /// The 16550's register interface.
    case uart
    /// PCI configuration mechanism #1, config space and the virtio-pci BAR.
    case pci
    /// The interpreter's decoder and executor on arbitrary code in a sandboxed guest.
    case interp
    /// virtio-net over virtio-pci: a hostile driver on both queues and a hostile host delivering frames.
    case net
    /// The binary translator against the interpreter: the same arbitrary code run with every block
    /// translated and with none, which must end in the same state.
    case translator
    /// The API socket's HTTP parser and router (a hostile client's byte stream).
    case http
    /// The snapshot reader: state-file container, section decoders, memory-file checks.
    case snapshot
}

/// Runs inputs against one target. Stateful targets keep their expensive parts (guest RAM, the
/// interpreter, the disk image) across inputs and reset them before each.
public final class FuzzHarness {
    public let target: FuzzTarget
    private var virtio: VirtioFuzzer?
    private var interp: InterpreterFuzzer?
    private var pci: PciFuzzer?
    private var translator: TranslatorFuzzer?
    private var snapshot: SnapshotFuzzer?
    private var net: NetFuzzer?

    public init(_ target: FuzzTarget) { self.target = target }

    /// Runs one input and returns what it broke and how far it got.
    public func run(_ data: [UInt8]) -> FuzzOutcome {
        let checks = FuzzChecks()
        var outcome = FuzzOutcome()
        switch target {
        case .loader: outcome.progress = LoaderFuzzer.run(data, checks)
        case .uart: outcome.progress = UartFuzzer.run(data, checks)
        case .pci:
            if pci == nil { pci = PciFuzzer() }
            outcome.progress = pci!.run(data, checks)
        case .virtio:
            if virtio == nil { virtio = VirtioFuzzer() }
            outcome.progress = virtio!.run(data, checks)
        case .interp:
            if interp == nil { interp = InterpreterFuzzer() }
            outcome.progress = interp!.run(data, checks)
        case .net:
            if net == nil { net = NetFuzzer() }
            outcome.progress = net!.run(data, checks)
        case .translator:
            if translator == nil { translator = TranslatorFuzzer() }
            outcome.progress = translator!.run(data, checks)
        case .http: outcome.progress = APIFuzzer.run(data, checks)
        case .snapshot:
            if snapshot == nil { snapshot = SnapshotFuzzer() }
            outcome.progress = snapshot!.run(data, checks)
        }
        outcome.violations = checks.violations
        return outcome
    }
}
