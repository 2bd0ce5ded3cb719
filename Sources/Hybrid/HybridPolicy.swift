/// When guest user code runs natively. A switch between the software CPU and KVM costs tens to
/// hundreds of microseconds on kvm-pvm (docs/architecture.md, "The hybrid backend"), so user code
/// that would run only briefly before its next system call, fault or interrupt stays in software;
/// long-running user code goes native.
public struct HybridPolicyConfig: Sendable, Equatable {
    public enum Mode: String, Sendable, CaseIterable {
        /// Decide per address space from how long its user-mode episodes run.
        case adaptive
        /// Every return to user mode goes native (tests, measurements).
        case native
        /// User code always stays in software (the hybrid backend then equals the interpreter).
        case software
    }

    public var mode: Mode = .adaptive
    /// An address space goes native when its user-mode episodes are expected to take at least this
    /// long on the software CPU. Measured: see docs/architecture.md.
    public var minSoftwareEpisodeNs: Double = 400_000
    /// How many times faster native user code runs than the software CPU, to convert a native
    /// episode's length into software time.
    public var nativeSpeedup: Double = 12
    /// Weight of the newest episode in the running estimate.
    public var smoothing: Double = 0.3

    public init() {}

    /// The defaults with `SWHV_HYBRID_POLICY` (adaptive|native|software) and `SWHV_HYBRID_MIN_US`
    /// (the threshold in microseconds) applied. Returns an error line for a malformed value.
    public static func fromEnvironment(_ env: (String) -> String?) -> Result<HybridPolicyConfig, HybridConfigError> {
        var c = HybridPolicyConfig()
        if let m = env("SWHV_HYBRID_POLICY") {
            guard let mode = Mode(rawValue: m) else {
                return .failure(.invalid("SWHV_HYBRID_POLICY='\(m)' is not one of adaptive, native, software"))
            }
            c.mode = mode
        }
        if let t = env("SWHV_HYBRID_MIN_US") {
            guard let us = Double(t), us >= 0, us < 1e9 else {
                return .failure(.invalid("SWHV_HYBRID_MIN_US='\(t)' is not a number of microseconds"))
            }
            c.minSoftwareEpisodeNs = us * 1000
        }
        return .success(c)
    }
}

public enum HybridConfigError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    public var description: String {
        switch self { case .invalid(let s): return s }
    }
}

/// The per-address-space estimate behind the decision. Address spaces are keys chosen by the
/// backend (derived from CR3 and the root table).
final class HybridPolicy {
    let config: HybridPolicyConfig

    struct Space {
        /// Expected software time of the next user-mode episode, ns.
        var estimateNs: Double
        var episodes: UInt32 = 0
        /// Ran an instruction whose result depends on the CPU model: stays in software so its
        /// results are the software CPU's.
        var softwareOnly = false
    }

    private(set) var spaces: [UInt64: Space] = [:]
    /// Bound on remembered address spaces (CR3 values); the table is forgotten when it is full.
    static let maxSpaces = 4096

    init(config: HybridPolicyConfig) { self.config = config }

    /// Whether user code of address space `cr3` should run natively now.
    func prefersNative(_ space: UInt64) -> Bool {
        switch config.mode {
        case .native: return true
        case .software: return false
        case .adaptive:
            guard let s = spaces[space] else { return false }   // new processes start in software
            return !s.softwareOnly && s.estimateNs >= config.minSoftwareEpisodeNs
        }
    }

    /// A user-mode episode ran `ns` on the software CPU.
    func recordSoftware(_ cr3: UInt64, ns: UInt64) {
        update(cr3, softwareNs: Double(ns))
    }

    /// A user-mode episode ran `ns` natively (until the exit that ended it).
    func recordNative(_ cr3: UInt64, ns: UInt64) {
        update(cr3, softwareNs: Double(ns) * config.nativeSpeedup)
    }

    /// Address space `cr3` executed an instruction whose result depends on the CPU model (SSE
    /// reciprocal estimates, x87 transcendentals): native execution would give the host CPU's bits
    /// instead of the software CPU's, so it stays in software.
    func markSoftwareOnly(_ cr3: UInt64) {
        if spaces.count >= HybridPolicy.maxSpaces && spaces[cr3] == nil { spaces.removeAll(keepingCapacity: true) }
        spaces[cr3, default: Space(estimateNs: 0)].softwareOnly = true
    }

    /// Native execution failed in a way software handles (an exit KVM could not explain): keep
    /// this address space in software for a while.
    func penalize(_ cr3: UInt64) {
        spaces[cr3] = Space(estimateNs: -config.minSoftwareEpisodeNs * 8)
    }

    private func update(_ cr3: UInt64, softwareNs: Double) {
        if spaces.count >= HybridPolicy.maxSpaces && spaces[cr3] == nil { spaces.removeAll(keepingCapacity: true) }
        if var s = spaces[cr3] {
            s.estimateNs += config.smoothing * (softwareNs - s.estimateNs)
            s.episodes &+= 1
            spaces[cr3] = s
        } else {
            spaces[cr3] = Space(estimateNs: softwareNs, episodes: 1)
        }
    }
}
