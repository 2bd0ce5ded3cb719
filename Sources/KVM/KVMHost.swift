import Glibc

/// How this host's /dev/kvm runs guest code, which decides the backend `auto` picks, the CPUID the
/// guest sees and the workarounds the run loop applies.
public enum KVMHostKind: Equatable, Sendable {
    /// Hardware virtualization (VMX or SVM): guest kernels run natively. `module` is the vendor module
    /// backing /dev/kvm (kvm_intel, kvm_amd) when /sys/module shows it.
    case hardware(module: String?)
    /// kvm-pvm (nested, no VMX/SVM): guest user code runs natively, guest kernel code in the host's
    /// instruction emulator, orders of magnitude slower.
    case pvm
    /// Neither VMX/SVM on this CPU nor a known software vendor module: whatever serves /dev/kvm here
    /// cannot run guest kernel code on hardware either.
    case noHardwareVirtualization

    /// Guest kernel code runs on the hardware (not in an instruction emulator).
    public var runsGuestKernelsNatively: Bool {
        if case .hardware = self { return true }
        return false
    }

    /// The decision, from the KVM modules under /sys/module and the CPU's /proc/cpuinfo flags. A CPU
    /// with VMX/SVM and kvm_intel/kvm_amd loaded backs /dev/kvm with hardware, even where kvm_pvm
    /// is loaded too; kvm_pvm alone, or no VMX/SVM at all, means guest kernels are emulated.
    public static func classify(modules: Set<String>, cpuFlags: Set<String>) -> KVMHostKind {
        let hardware = cpuFlags.contains("vmx") || cpuFlags.contains("svm")
        let vendor = ["kvm_intel", "kvm_amd"].first { modules.contains($0) }
        if hardware && (vendor != nil || !modules.contains("kvm_pvm")) { return .hardware(module: vendor) }
        return modules.contains("kvm_pvm") ? .pvm : .noHardwareVirtualization
    }

    /// This host, read once.
    public static let thisHost: KVMHostKind = {
        let modules = Set(["kvm_intel", "kvm_amd", "kvm_pvm"].filter { access("/sys/module/\($0)", F_OK) == 0 })
        return classify(modules: modules, cpuFlags: cpuFlags(cpuinfo: readSmallFile("/proc/cpuinfo") ?? ""))
    }()

    /// The flags of the first processor in /proc/cpuinfo text.
    static func cpuFlags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("flags") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
        }
        return []
    }

    /// A /proc or /sys text file (their sizes read as 0, so read until EOF, up to 1 MiB).
    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while bytes.count < 1 << 20 {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
