// swift-tools-version:6.0
import PackageDescription
import Foundation

// Hot interpreter and device code avoids dynamic exclusivity checks in release builds
// (measured 4x on a dispatch loop); debug builds keep them as a safety net.
let fastRelease: [SwiftSetting] = [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "swhv",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "swhv", targets: ["swhv"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // The C shim: linux/kvm.h plus the ioctl request numbers Swift cannot import.
        .systemLibrary(name: "CKVM", path: "Modules/CKVM"),
        // Typed Swift over the KVM ioctls.
        .target(name: "KVM", dependencies: ["CKVM", "VMCore", "CPUBackend", "VMMemory"]),
        // What devices, the platform and both backends share: interrupt lines and controllers, the VM
        // clock and timed devices, the PC layout, device-state values, hex and access-size helpers.
        .target(name: "VMCore", swiftSettings: fastRelease),
        // Guest RAM: one bounds-checked view shared by loader, devices and both CPU backends.
        .target(name: "VMMemory", dependencies: ["VMCore"], swiftSettings: fastRelease),
        // Linux x86 boot protocol: bzImage, vmlinux ELF, initrd, boot_params, e820, page tables, GDT.
        .target(name: "LinuxLoader", dependencies: ["VMCore", "VMMemory", "CPUBackend", "CCompress"]),
        // zlib + liblzma headers, for decompressing bzImage payloads on the host.
        .systemLibrary(name: "CCompress", path: "Modules/CCompress"),
        // What a vCPU backend is: the protocol, its entry state, stop reasons, I/O seam and VM control.
        .target(name: "CPUBackend", dependencies: ["VMCore"]),
        // Buses, devices and the platform that wires them. Know nothing of KVM or the interpreter.
        .target(name: "Devices", dependencies: ["VMCore", "VMMemory", "ACPI"], swiftSettings: fastRelease),
        // ACPI tables (RSDP, RSDT/XSDT, FADT, FACS, DSDT, MADT) as bytes: plain values in, bytes out.
        .target(name: "ACPI"),
        // Host calls Swift's Glibc module lacks (memfd_create for the code cache).
        .target(name: "CHost"),
        // The x86-64 interpreter backend and its binary translator.
        .target(name: "X86Interpreter", dependencies: ["VMCore", "VMMemory", "CPUBackend", "CHost"],
                swiftSettings: fastRelease),
        // Guest kernel on the software CPU, guest user code natively on KVM (kvm-pvm hosts).
        .target(name: "Hybrid", dependencies: ["KVM", "CKVM", "CHostCPU", "CPUBackend", "VMMemory", "X86Interpreter"]),
        // RDTSC for Swift (the hybrid backend's software CPU counts the host TSC).
        .systemLibrary(name: "CHostCPU", path: "Modules/CHostCPU"),
        // JSON without Foundation: values, a strict bounded parser, Codable encoder/decoder.
        .target(name: "JSONCoding"),
        // The snapshot files: checksummed container, sparse guest-memory file, disk identities.
        .target(name: "Snapshot", dependencies: ["VMMemory", "JSONCoding"]),
        // The API socket: HTTP/1.1 parser, Firecracker-style routes, Unix socket server and client.
        .target(name: "APIServer", dependencies: ["JSONCoding"]),
        // The machine: assembles memory, loader, devices and a backend; owns the run loop.
        .target(name: "VMM", dependencies: ["KVM", "VMMemory", "LinuxLoader", "CPUBackend", "Devices",
                                            "X86Interpreter", "Hybrid", "CKVM", "CSeccomp", "Snapshot", "APIServer",
                                            "JSONCoding", "CNet"]),
        // linux/if_tun.h and rtnetlink, for the TAP backend of virtio-net.
        .systemLibrary(name: "CNet", path: "Modules/CNet"),
        // linux/seccomp.h and linux/filter.h, for the VMM's system-call filter.
        .systemLibrary(name: "CSeccomp", path: "Modules/CSeccomp"),
        // The command line: argument parsing only.
        .executableTarget(name: "swhv", dependencies: [
            "VMM", "X86Interpreter", "APIServer", "JSONCoding", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Replays differential fuzz cases on the interpreter (driven by scripts/oracle/fuzz.py).
        .executableTarget(name: "swhv-cpu-runner", dependencies: ["X86Interpreter", "VMMemory", "CPUBackend",
                                                                  "SwhvTestSupport"],
                          swiftSettings: fastRelease),

        // The one home of test helpers (process runner, console and terminal sessions, guest
        // builders, the long-mode guest, the virtio driver bring-up, differential fuzz cases),
        // shared by the test targets, the fuzz harness and swhv-cpu-runner. No XCTest in it: the
        // libFuzzer driver links it too.
        .target(name: "SwhvTestSupport", dependencies: ["X86Interpreter", "VMMemory", "CPUBackend", "Devices"],
                path: "Tests/Support"),

        .testTarget(name: "VMMemoryTests", dependencies: ["VMMemory"]),
        .testTarget(name: "LinuxLoaderTests", dependencies: ["LinuxLoader", "VMMemory", "CPUBackend", "SwhvTestSupport"]),
        .testTarget(name: "DevicesTests", dependencies: ["Devices", "VMCore", "VMMemory", "CPUBackend", "SwhvTestSupport"]),
        .testTarget(name: "X86InterpreterTests", dependencies: ["X86Interpreter", "VMMemory", "CPUBackend",
                                                                "SwhvTestSupport"],
                    exclude: ["Vectors", "FuzzCorpus"]),   // oracle vectors and fuzz corpus: read at run time from the source tree
        .testTarget(name: "IntegrationTests", dependencies: ["KVM", "VMM", "VMMemory", "LinuxLoader", "CPUBackend", "Devices",
                                                             "Hybrid", "X86Interpreter", "APIServer", "Snapshot", "JSONCoding",
                                                             "SwhvTestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["SwhvTestSupport"]),
        .testTarget(name: "KVMTests", dependencies: ["KVM", "CKVM", "CPUBackend"]),
        .testTarget(name: "CPUBackendTests", dependencies: ["CPUBackend"]),
        .testTarget(name: "HybridTests", dependencies: ["Hybrid", "KVM", "X86Interpreter", "VMMemory", "CPUBackend"]),
        .testTarget(name: "SnapshotTests", dependencies: ["Snapshot", "JSONCoding", "VMMemory"]),
        .testTarget(name: "APIServerTests", dependencies: ["APIServer", "JSONCoding"]),
        .testTarget(name: "ACPITests", dependencies: ["ACPI"]),

        // Fuzz harnesses (docs/security.md): plain library code, replayed by FuzzRegressionTests.
        .target(name: "FuzzHarness", dependencies: ["LinuxLoader", "VMMemory", "CPUBackend", "Devices",
                                                    "X86Interpreter", "SwhvTestSupport", "APIServer", "Snapshot",
                                                    "JSONCoding"], path: "Fuzz/Harness"),
        .testTarget(name: "FuzzRegressionTests", dependencies: ["FuzzHarness"]),
    ]
)

// The libFuzzer driver needs -sanitize=fuzzer to link, so it exists only for scripts/fuzz
// (SWHV_FUZZ=1, its own scratch path); a plain `swift build` never sees it.
if ProcessInfo.processInfo.environment["SWHV_FUZZ"] != nil {
    package.targets += [
        .systemLibrary(name: "CFuzzer", path: "Fuzz/CFuzzer"),
        .executableTarget(name: "swhv-fuzz", dependencies: ["FuzzHarness", "CFuzzer"], path: "Fuzz/Driver"),
    ]
}
