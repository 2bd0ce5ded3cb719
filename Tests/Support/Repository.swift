import Foundation

/// A test cannot run because something it needs is missing. Thrown (not skipped): everything a
/// test needs is made by `scripts/test`, so a missing piece is a failure with a hint.
public struct TestSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where things are: the repository, its fixtures and test guests, the swhv binary under test.
public enum Repository {
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
    public static let guests = root.appendingPathComponent("Tests/Guests")

    public static func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

    /// `fixtures/NAME`, or an error naming the script that makes it.
    public static func fixture(_ name: String) throws -> String {
        let p = path("fixtures/\(name)")
        guard FileManager.default.fileExists(atPath: p) else {
            let script = name.contains("small") ? "scripts/build-small-kernel"
                : name.contains("generic") ? "scripts/fetch-guest generic"
                : name.contains("-rt") ? "scripts/fetch-guest rt" : "scripts/fetch-guest"
            throw TestSetupError("fixtures/\(name) is missing: run \(script) (scripts/test does)")
        }
        return p
    }

    /// The release binary scripts/test builds and names in SWHV_RELEASE_BINARY. Linux boots need
    /// it (a debug build runs the interpreter 10-50x slower than the tests' watchdogs allow).
    public static func releaseBinary() throws -> String {
        guard let p = ProcessInfo.processInfo.environment["SWHV_RELEASE_BINARY"],
              FileManager.default.isExecutableFile(atPath: p) else {
            throw TestSetupError("SWHV_RELEASE_BINARY is not set to a built swhv: run scripts/test")
        }
        return p
    }

    /// The binary under test for quick runs: SWHV_RELEASE_BINARY, else the debug build.
    public static func swhvBinary() throws -> String {
        if let p = try? releaseBinary() { return p }
        for dir in [".build/debug", ".build/x86_64-unknown-linux-gnu/debug"] {
            let p = path("\(dir)/swhv")
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw TestSetupError("no swhv binary: run `swift build` or scripts/test")
    }

    /// An installed host tool, or an error naming the Debian package (scripts/test installs them).
    public static func tool(_ name: String, package: String) throws -> String {
        for dir in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
            let p = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw TestSetupError("\(name) is not installed: apt-get install \(package) (scripts/test does)")
    }

    /// A fresh directory under the system's temporary directory; the caller removes it.
    public static func scratchDirectory(_ prefix: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}
