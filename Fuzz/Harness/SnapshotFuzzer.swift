import JSONCoding
import Snapshot
import VMMemory
#if canImport(Glibc)
import Glibc
#endif

/// A hostile snapshot. The first byte picks what the rest is:
/// - 0: a whole state file (the container reader: magic, version, table, checksums);
/// - 1: section payloads wrapped in a valid container (the checksums are right, so the section
///   decoders and their checks see the fuzzer's JSON): length-prefixed machine, memory, disks;
/// - 2: a memory section (JSON) checked against a small valid memory file, with verification:
///   hostile chunk sizes, region lists and tables must be refused, not trusted.
public final class SnapshotFuzzer {
    let memoryPath: String
    let memorySection: MemorySection

    init() {
        let dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        memoryPath = "\(dir)/swhv-fuzz-mem-\(getpid())"
        // A 1 MiB guest's memory file with a little data, written by the real writer.
        do {
            let memory = try GuestMemory(size: 1 << 20)
            try memory.write(bytes: Array("fuzz".utf8), at: 0x1000)
            try memory.write(bytes: [UInt8](repeating: 0xA5, count: 4096), at: 0x80000)
            let file = try PendingFile(path: memoryPath)
            memorySection = try GuestMemorySnapshot.write(memory, to: file, snapshotID: Array(repeating: 1, count: 16),
                                                          residency: nil)
            try file.commit()
        } catch {
            fuzzSetupFailure("cannot write the fuzz memory file: \(error)")
        }
    }

    deinit { unlink(memoryPath) }

    public func run(_ data: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        guard let mode = data.first else { return [:] }
        let rest = Array(data.dropFirst())
        switch mode % 3 {
        case 0: return container(rest, checks)
        case 1: return sections(rest, checks)
        default: return memory(rest, checks)
        }
    }

    func container(_ bytes: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        guard let c = try? SnapshotContainer.parse(bytes, path: "fuzz") else { return ["containers": 0] }
        checks.expect(c.serialized() == bytes, "an accepted state file does not serialize back to itself")
        let loaded = (try? LoadedSnapshot.decode(c, statePath: "fuzz")) != nil
        return ["containers": 1, "loaded": loaded ? 1 : 0]
    }

    func sections(_ bytes: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var input = FuzzInput(bytes)
        var c = SnapshotContainer()
        for tag in [SectionTag.machine, SectionTag.memory, SectionTag.disks] {
            let n = Int(input.u16())
            c.add(SnapshotSection(tag: tag, payload: Array(input.take(n))))
        }
        let serialized = c.serialized()
        guard let parsed = try? SnapshotContainer.parse(serialized, path: "fuzz") else {
            checks.expect(false, "a container the writer made was refused")
            return [:]
        }
        guard let loaded = try? LoadedSnapshot.decode(parsed, statePath: "fuzz") else { return ["loaded": 0] }
        checks.expect(loaded.memory.bytes == loaded.machine.memoryBytes, "memory and machine sizes disagree")
        _ = try? loaded.checkMemory(limit: 1 << 30, layout: [(guestBase: 0, size: loaded.memory.bytes)])
        return ["loaded": 1]
    }

    func memory(_ bytes: [UInt8], _ checks: FuzzChecks) -> [String: Int] {
        var section = memorySection
        if let s = try? JSONValueDecoder().decode(MemorySection.self, from: bytes) {
            section = s
        } else if bytes.count >= 24 {
            // Perturb the real section's numbers directly (JSON the fuzzer rarely gets right).
            var input = FuzzInput(bytes)
            section.chunkBytes = input.u64()
            section.bytes = input.u8() & 1 == 0 ? section.bytes : input.u64()
            let regionCount = Int(input.u8() % 4)
            section.regions = (0..<regionCount).map { _ in .init(guestBase: input.u64(), bytes: input.u64() >> 40) }
            section.chunks = (0..<Int(input.u8() % 8)).map { _ in input.u64() }
        }
        guard let fd = try? GuestMemorySnapshot.open(path: memoryPath, section: section, verifyContents: true) else {
            return ["memoryAccepted": 0]
        }
        close(fd)
        checks.expect(section.bytes == memorySection.bytes, "a memory file accepted for a different RAM size")
        return ["memoryAccepted": 1]
    }
}
