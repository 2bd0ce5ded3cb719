import Foundation

/// The flat test guests of Tests/Guests, assembled with nasm (scripts/test installs it).
public enum TestGuests {
    /// `nasm -f bin -Werror -i Tests/Guests/ NAME.asm` into `directory`; returns the image's path.
    public static func assemble(_ name: String, into directory: URL, defines: [String] = []) throws -> URL {
        let nasm = try Repository.tool("nasm", package: "nasm")
        let out = directory.appendingPathComponent("\(name).bin")
        let r = try Subprocess.run(nasm, ["-f", "bin", "-Werror", "-i", Repository.guests.path + "/"]
                                   + defines.map { "-D\($0)" }
                                   + ["-o", out.path, Repository.guests.appendingPathComponent("\(name).asm").path],
                                   timeout: 120)
        guard r.status == 0, !r.signalled else { throw TestSetupError("nasm failed for \(name).asm: \(r.stderr)") }
        return out
    }

    /// The assembled bytes of guest `name`.
    public static func bytes(_ name: String, defines: [String] = []) throws -> [UInt8] {
        let dir = try Repository.scratchDirectory("swhv-guest-\(name)")
        defer { try? FileManager.default.removeItem(at: dir) }
        return Array(try Data(contentsOf: assemble(name, into: dir, defines: defines)))
    }

    /// `Tests/Guests/NAME.EXT` as text.
    public static func text(_ file: String) throws -> String {
        try String(contentsOf: Repository.guests.appendingPathComponent(file), encoding: .utf8)
    }
}
