import JSONCoding
import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// The `machine` section: what the machine was, so a restore builds the same one.
public struct MachineSection: Codable, Equatable, Sendable {
    public static let currentVersion = 1
    public var version = MachineSection.currentVersion
    public var memoryBytes: UInt64
    public var vcpuCount: Int = 1
    /// The backend the snapshot was taken on ("kvm" or "interpreter"); a restore may pick another.
    public var backend: String
    /// KVM's in-kernel irqchip (always true for Linux guests).
    public var irqchip: Bool
    /// ACPI tables and devices (nil in snapshots of builds before ACPI: it was on for Linux).
    public var acpi: Bool?
    /// The VM clock (VirtualClock ns) when the snapshot was taken: the guest's time resumes from it.
    public var clockNs: UInt64
    /// Host wall-clock time of the snapshot (informational).
    public var createdUnixNs: UInt64

    public init(memoryBytes: UInt64, backend: String, irqchip: Bool, acpi: Bool = true, clockNs: UInt64, createdUnixNs: UInt64) {
        self.memoryBytes = memoryBytes; self.backend = backend; self.irqchip = irqchip; self.acpi = acpi
        self.clockNs = clockNs; self.createdUnixNs = createdUnixNs
    }

    enum CodingKeys: String, CodingKey {
        case version, memoryBytes = "memory_bytes", vcpuCount = "vcpu_count", backend, irqchip, acpi
        case clockNs = "clock_ns", createdUnixNs = "created_unix_ns"
    }
}

/// Section tags of the state file.
public enum SectionTag {
    public static let machine = "machine"
    public static let memory = "memory"
    public static let disks = "disks"
    /// The vCPU's state (the software CPU's today; HOOK(cpu-state): issue 13's architectural-state
    /// value, so that snapshots cross backends).
    public static let cpu = "cpu"
    /// Every device's guest-visible state (issue 11's values).
    public static let devices = "devices"
}

/// Everything captured on the vCPU thread while the guest is paused, ready to be written by
/// another thread: guest RAM is read directly from `GuestMemory` (still paused) while writing.
public struct SnapshotContents: Sendable {
    public var machine: MachineSection
    public var disks: [DiskIdentity]
    /// The cpu and devices sections (and any later ones), already encoded.
    public var extraSections: [SnapshotSection]

    public init(machine: MachineSection, disks: [DiskIdentity], extraSections: [SnapshotSection] = []) {
        self.machine = machine; self.disks = disks; self.extraSections = extraSections
    }
}

/// What a written snapshot holds, for the API's answer and the benchmark.
public struct SnapshotSummary: Sendable, Equatable {
    public var memoryBytes: UInt64
    public var memoryDataBytes: UInt64
    public var stateBytes: UInt64
}

public enum SnapshotWriter {
    /// Encodes a section payload as JSON.
    public static func section<T: Encodable>(_ tag: String, _ value: T) throws(SnapshotError) -> SnapshotSection {
        do { return SnapshotSection(tag: tag, payload: try JSONValueEncoder().encodeBytes(value)) } catch {
            throw .badSection(tag, detail: "cannot be encoded: \(error)")
        }
    }

    /// Writes the memory file and the state file. Both appear at their paths only when both are
    /// complete and synced; on any error neither path is touched.
    public static func write(statePath: String, memoryPath: String, contents: SnapshotContents, memory: GuestMemory,
                             residency: PageResidency?) throws(SnapshotError) -> SnapshotSummary {
        guard !statePath.isEmpty, !memoryPath.isEmpty else { throw .mismatch("snapshot paths must not be empty") }
        guard statePath != memoryPath else { throw .mismatch("the state and memory files must be different paths") }
        let id = SnapshotFile.newSnapshotID()
        let memoryFile = try PendingFile(path: memoryPath)
        let memorySection = try GuestMemorySnapshot.write(memory, to: memoryFile, snapshotID: id, residency: residency)
        var container = SnapshotContainer()
        container.add(try section(SectionTag.machine, contents.machine))
        container.add(try section(SectionTag.memory, memorySection))
        container.add(try section(SectionTag.disks, contents.disks))
        for s in contents.extraSections { container.add(s) }
        let bytes = container.serialized()
        let stateFile = try PendingFile(path: statePath)
        try stateFile.write(bytes)
        try memoryFile.commit()
        try stateFile.commit()
        return SnapshotSummary(memoryBytes: memorySection.bytes, memoryDataBytes: memorySection.dataBytes,
                               stateBytes: UInt64(truncatingIfNeeded: bytes.count))
    }
}

/// A verified state file with its standard sections decoded.
public struct LoadedSnapshot: Sendable {
    public let statePath: String
    public let container: SnapshotContainer
    public let machine: MachineSection
    public let memory: MemorySection
    public let disks: [DiskIdentity]

    /// Reads and checks the state file (checksums, versions, section shapes). Nothing about the
    /// memory file or the disks yet: see `checkDisks` and `GuestMemorySnapshot.open`.
    public static func read(statePath: String) throws(SnapshotError) -> LoadedSnapshot {
        try decode(SnapshotContainer.read(path: statePath), statePath: statePath)
    }

    /// Decodes and checks the standard sections of a verified container.
    public static func decode(_ container: SnapshotContainer, statePath: String) throws(SnapshotError) -> LoadedSnapshot {
        let machine = try decode(MachineSection.self, SectionTag.machine, from: container)
        guard machine.version == MachineSection.currentVersion else {
            throw .badSection(SectionTag.machine, detail: "version \(machine.version) is not the one this swhv reads (\(MachineSection.currentVersion))")
        }
        guard machine.vcpuCount == 1 else {
            throw .badSection(SectionTag.machine, detail: "\(machine.vcpuCount) vCPUs; this swhv runs one")
        }
        let memory = try decode(MemorySection.self, SectionTag.memory, from: container)
        guard memory.bytes == machine.memoryBytes else {
            throw .badSection(SectionTag.memory, detail: "\(memory.bytes) bytes of RAM, the machine section says \(machine.memoryBytes)")
        }
        let disks = try decode([DiskIdentity].self, SectionTag.disks, from: container)
        return LoadedSnapshot(statePath: statePath, container: container, machine: machine, memory: memory, disks: disks)
    }

    public static func decode<T: Decodable>(_ type: T.Type, _ tag: String, from container: SnapshotContainer) throws(SnapshotError) -> T {
        guard let payload = container.payload(tag) else { throw .missingSection(tag) }
        do { return try JSONValueDecoder().decode(type, from: payload) } catch {
            throw .badSection(tag, detail: JSONValueDecoder.describe(error))
        }
    }

    /// A section the caller decodes itself (the cpu and devices hooks); nil when absent.
    public func decodeIfPresent<T: Decodable>(_ type: T.Type, _ tag: String) throws(SnapshotError) -> T? {
        guard container.payload(tag) != nil else { return nil }
        return try LoadedSnapshot.decode(type, tag, from: container)
    }

    /// Every disk still there, the same size, the same file, unmodified.
    public func checkDisks() throws(SnapshotError) {
        for d in disks { try d.checkUnchanged() }
    }

    /// Refuses a snapshot whose RAM exceeds `limit` (the restore's --memory), or whose region
    /// layout is not the one `GuestMemory` builds for that size.
    public func checkMemory(limit: UInt64?, layout: [(guestBase: UInt64, size: UInt64)]?) throws(SnapshotError) {
        if let limit, memory.bytes > limit { throw .memoryTooLarge(needed: memory.bytes, allowed: limit) }
        if let layout {
            let expected = layout.map { MemorySection.Region(guestBase: $0.guestBase, bytes: $0.size) }
            guard expected == memory.regions else {
                throw .badSection(SectionTag.memory, detail: "RAM regions do not match a \(memory.bytes >> 20) MiB machine")
            }
        }
    }
}
