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
    /// An address space goes native when its user-mode episodes (from a return to user mode to the
    /// next system call, exception or interrupt) are expected to retire at least this many guest
    /// instructions. Counted in instructions, not time, so a loaded host does not make short
    /// episodes look long. Measured: see docs/architecture.md.
    public var minEpisodeInstructions: Double = 50_000
    /// Guest instructions native user code retires per microsecond of KVM_RUN beyond the exit
    /// cost, to express a native episode in instructions.
    public var nativeInstructionsPerMicrosecond: Double = 2000
    /// Weight of the newest episode in the running estimate.
    public var smoothing: Double = 0.3

    public init() {}

    /// The defaults with `SWHV_HYBRID_POLICY` (adaptive|native|software) and
    /// `SWHV_HYBRID_MIN_INSNS` (the threshold in instructions) applied. Returns an error line for a
    /// malformed value.
    public static func fromEnvironment(_ env: (String) -> String?) -> Result<HybridPolicyConfig, HybridConfigError> {
        var c = HybridPolicyConfig()
        if let m = env("SWHV_HYBRID_POLICY") {
            guard let mode = Mode(rawValue: m) else {
                return .failure(.invalid("SWHV_HYBRID_POLICY='\(m)' is not one of adaptive, native, software"))
            }
            c.mode = mode
        }
        if let t = env("SWHV_HYBRID_MIN_INSNS") {
            guard let n = Double(t), n >= 0, n < 1e15 else {
                return .failure(.invalid("SWHV_HYBRID_MIN_INSNS='\(t)' is not a number of instructions"))
            }
            c.minEpisodeInstructions = n
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
        /// Expected length of the next user-mode episode, in guest instructions.
        var estimate: Double
        var episodes: UInt32 = 0
        /// Ran an instruction whose result depends on the CPU model: stays in software so its
        /// results are the software CPU's.
        var softwareOnly = false
        /// Episodes left to run in software after native execution failed.
        var cooldown = 0
    }

    /// Episodes an address space stays in software after native execution failed for it.
    static let penaltyEpisodes = 16

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
            return !s.softwareOnly && s.cooldown == 0 && s.estimate >= config.minEpisodeInstructions
        }
    }

    /// A user-mode episode retired `instructions` on the software CPU.
    func recordSoftware(_ space: UInt64, instructions: UInt64) {
        update(space, instructions: Double(instructions))
    }

    /// A user-mode episode ran natively for `workNs` (time in KVM_RUN less the exit costs).
    func recordNative(_ space: UInt64, workNs: UInt64) {
        update(space, instructions: Double(workNs) / 1000 * config.nativeInstructionsPerMicrosecond)
    }

    /// Address space `cr3` executed an instruction whose result depends on the CPU model (SSE
    /// reciprocal estimates, x87 transcendentals): native execution would give the host CPU's bits
    /// instead of the software CPU's, so it stays in software.
    func markSoftwareOnly(_ cr3: UInt64) {
        if spaces.count >= HybridPolicy.maxSpaces && spaces[cr3] == nil { spaces.removeAll(keepingCapacity: true) }
        spaces[cr3, default: Space(estimate: 0)].softwareOnly = true
    }

    /// Native execution failed in a way software handles (an exit KVM could not explain): keep
    /// this address space in software for a while.
    func penalize(_ cr3: UInt64) {
        if spaces.count >= HybridPolicy.maxSpaces && spaces[cr3] == nil { spaces.removeAll(keepingCapacity: true) }
        spaces[cr3, default: Space(estimate: 0)].cooldown = HybridPolicy.penaltyEpisodes
    }

    private func update(_ space: UInt64, instructions: Double) {
        if spaces.count >= HybridPolicy.maxSpaces && spaces[space] == nil { spaces.removeAll(keepingCapacity: true) }
        if var s = spaces[space] {
            s.estimate += config.smoothing * (instructions - s.estimate)
            s.episodes &+= 1
            if s.cooldown > 0 { s.cooldown -= 1 }
            spaces[space] = s
        } else {
            spaces[space] = Space(estimate: instructions, episodes: 1)
        }
    }
}
