import CPUBackend
import Devices
import Glibc
import JSONCoding
import Snapshot
import X86Interpreter
import VMMemory

/// One piece of machine state that goes into a snapshot beyond guest RAM, the machine section
/// and the disks: the vCPU (`CPUSnapshotPart`, `SectionTag.cpu`) and the devices
/// (`PlatformSnapshotPart`, `SectionTag.devices`), listed in `Machine.snapshotParts`. `capture`
/// runs on the vCPU thread while the guest is paused; `restore` runs before the restored guest's
/// first instruction, after guest RAM is mapped and the clock is set.
public protocol SnapshotPart: Sendable {
    var tag: String { get }
    /// nil: this backend's state of this kind cannot be captured yet; the section is left out.
    func capture(from machine: Machine) throws(SnapshotError) -> [UInt8]?
    func restore(_ payload: [UInt8], into machine: Machine) throws(SnapshotError)
}

/// The `devices` section: the platform's `PlatformState` (every device's guest-visible state, issue
/// 11), as JSON. Restored into a platform built from the snapshot's configuration (same disks in
/// the same order); a platform whose interrupt controllers live elsewhere (a KVM snapshot restored
/// on the interpreter or the reverse) is refused by `Platform.restoreState` for now.
public struct PlatformSnapshotPart: SnapshotPart {
    public init() {}
    public var tag: String { SectionTag.devices }

    public func capture(from machine: Machine) throws(SnapshotError) -> [UInt8]? {
        do { return try JSONValueEncoder().encodeBytes(machine.platform.captureState()) } catch {
            throw .badSection(tag, detail: "cannot be encoded: \(error)")
        }
    }

    public func restore(_ payload: [UInt8], into machine: Machine) throws(SnapshotError) {
        let state: PlatformState
        do { state = try JSONValueDecoder().decode(PlatformState.self, from: payload) } catch {
            throw .badSection(tag, detail: JSONValueDecoder.describe(error))
        }
        do { try machine.platform.restoreState(state) } catch { throw .badSection(tag, detail: "\(error)") }
    }
}

extension Machine {
    /// The snapshot parts this build can save and restore.
    public static var snapshotParts: [any SnapshotPart] { [CPUSnapshotPart(), PlatformSnapshotPart()] }

    /// Sections a snapshot must have, each with a part that restores it, before a guest can
    /// resume from it: without them it would start from a reset CPU over a running kernel's RAM.
    public static let requiredSections = [SectionTag.cpu, SectionTag.devices]

    /// Captures what the snapshot needs from the vCPU thread while paused (disks and guest RAM
    /// are read afterwards on the API thread).
    func captureSnapshotContents(parts: [any SnapshotPart]) throws(SnapshotError) -> SnapshotContents {
        var wall = timespec()
        clock_gettime(CLOCK_REALTIME, &wall)
        let section = MachineSection(memoryBytes: memory.size, backend: backend.name, irqchip: config.irqchip, acpi: config.acpi,
                                     clockNs: clock.nowNs,
                                     createdUnixNs: UInt64(clamping: wall.tv_sec) &* 1_000_000_000 &+ UInt64(clamping: wall.tv_nsec))
        var extra: [SnapshotSection] = []
        for p in parts {
            if let payload = try p.capture(from: self) { extra.append(SnapshotSection(tag: p.tag, payload: payload)) }
        }
        return SnapshotContents(machine: section, disks: [], extraSections: extra)
    }
}

/// A snapshot whose every file is checked, ready to become a machine: the state file verified,
/// its sections decoded, the memory file matched to it (and its contents verified on request),
/// every disk present and unchanged, and each required section restorable by this build.
public final class PreparedRestore: @unchecked Sendable {
    public let snapshot: LoadedSnapshot
    public let memoryPath: String
    let memoryFD: Int32

    init(snapshot: LoadedSnapshot, memoryPath: String, memoryFD: Int32) {
        self.snapshot = snapshot; self.memoryPath = memoryPath; self.memoryFD = memoryFD
    }

    deinit { close(memoryFD) }

    /// `DIR/state` and `DIR/memory`, the layout `swhv snapshot` writes.
    public static func paths(directory: String) -> (state: String, memory: String) {
        let d = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        return (d + "/state", d + "/memory")
    }

    /// Checks everything that can be checked before a machine exists. `memoryLimit`: the
    /// restore's --memory, if given.
    public static func check(statePath: String, memoryPath: String, memoryLimit: UInt64?, verifyMemory: Bool,
                             parts: [any SnapshotPart] = Machine.snapshotParts) throws(MachineError) -> PreparedRestore {
        do throws(SnapshotError) {
            let snapshot = try LoadedSnapshot.read(statePath: statePath)
            try snapshot.checkMemory(limit: memoryLimit, layout: GuestMemory.regionLayout(size: snapshot.memory.bytes))
            try snapshot.checkDisks()
            let fd = try GuestMemorySnapshot.open(path: memoryPath, section: snapshot.memory, verifyContents: verifyMemory)
            // Last, so that every problem with the files is reported first.
            for tag in Machine.requiredSections {
                guard snapshot.container.payload(tag) != nil else {
                    close(fd)
                    throw SnapshotError.unsupported("snapshot '\(statePath)' has no '\(tag)' section: the swhv that wrote it "
                        + "could not capture \(tag == SectionTag.cpu ? "vCPU" : "device") state, so it cannot be resumed")
                }
                guard parts.contains(where: { $0.tag == tag }) else {
                    close(fd)
                    throw SnapshotError.unsupported("this swhv cannot restore the snapshot's '\(tag)' section yet")
                }
            }
            return PreparedRestore(snapshot: snapshot, memoryPath: memoryPath, memoryFD: fd)
        } catch {
            throw .snapshot(error)
        }
    }
}

extension Machine {
    /// Builds the machine a snapshot describes (on `accelerator`, which may differ from the one
    /// it was taken on), maps guest RAM from the memory file, sets the VM clock, and restores the
    /// parts. The guest has not run when this returns; `run()` resumes it.
    public static func restore(_ prepared: PreparedRestore, accelerator: Accelerator,
                               translation: TranslationPolicy = .standard, quiet: Bool, verbose: Bool,
                               consoleOutput: SerialOutput,
                               parts: [any SnapshotPart] = Machine.snapshotParts) throws(MachineError) -> Machine {
        let s = prepared.snapshot
        var config = MachineConfig()
        config.memorySize = s.machine.memoryBytes
        config.accelerator = accelerator
        config.translation = translation
        config.irqchip = s.machine.irqchip
        config.acpi = s.machine.acpi ?? true
        config.quiet = quiet
        config.verbose = verbose
        config.disks = s.disks.map { DiskConfig(path: $0.path, readOnly: $0.readOnly, serial: $0.serial) }
        let machine = try Machine(config: config, consoleOutput: consoleOutput)
        do throws(MemoryError) { try machine.memory.mapPrivately(fileDescriptor: prepared.memoryFD, offset: GuestMemorySnapshot.headerBytes) } catch {
            throw .memory(error)
        }
        machine.clock.reset(to: s.machine.clockNs)
        for p in parts {
            guard let payload = s.container.payload(p.tag) else { continue }
            do throws(SnapshotError) { try p.restore(payload, into: machine) } catch { throw .snapshot(error) }
        }
        return machine
    }
}
