import JSONCoding
import Snapshot
import X86Interpreter

/// The `cpu` section: the vCPU's state between two instructions, with the local APIC.
///
/// The software CPU's state is saved and restored (`X86Interpreter.SavedCPU`); a snapshot taken on
/// KVM has no `cpu` section yet, and one taken on the interpreter is refused on KVM, each with one
/// line. HOOK(cpu-state): issue 13's architectural-state value, converted to and from both
/// backends, replaces the interpreter's own value here and lets snapshots cross backends.
public struct CPUSnapshotPart: SnapshotPart {
    public init() {}
    public var tag: String { SectionTag.cpu }

    struct Section: Codable {
        static let currentVersion: UInt32 = 1
        var version = Section.currentVersion
        /// The backend the state is in (`interpreter`).
        var backend: String
        var interpreter: X86Interpreter.SavedCPU?
    }

    public func capture(from machine: Machine) throws(SnapshotError) -> [UInt8]? {
        // One vCPU for now: a snapshot of several leaves the section out (and is not restorable).
        guard let cpus = machine.backend as? InterpreterCPUs, cpus.cpus.count == 1, let cpu = cpus.cpus.first else { return nil }
        do { return try JSONValueEncoder().encodeBytes(Section(backend: cpu.name, interpreter: cpu.savedCPU)) } catch {
            throw .badSection(tag, detail: "cannot be encoded: \(error)")
        }
    }

    public func restore(_ payload: [UInt8], into machine: Machine) throws(SnapshotError) {
        let section: Section
        do { section = try JSONValueDecoder().decode(Section.self, from: payload) } catch {
            throw .badSection(tag, detail: JSONValueDecoder.describe(error))
        }
        guard section.version == Section.currentVersion else {
            throw .badSection(tag, detail: "version \(section.version); this swhv reads version \(Section.currentVersion)")
        }
        guard let saved = section.interpreter else { throw .badSection(tag, detail: "holds no vCPU state") }
        guard let cpu = (machine.backend as? InterpreterCPUs)?.cpus.first else {
            throw .unsupported("the snapshot's vCPU state is the software CPU's; this swhv cannot load it into "
                + "\(machine.backend.name) yet: restore it with --accel interp")
        }
        do { try cpu.restoreCPU(saved) } catch { throw .badSection(tag, detail: "\(error)") }
    }
}
