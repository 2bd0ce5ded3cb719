import CFuzzer
import FuzzHarness
#if canImport(Glibc)
import Glibc
#endif

// `swhv-fuzz TARGET [libFuzzer options and corpus directories]`, built only by scripts/fuzz with
// -sanitize=fuzzer. SwiftPM links executables with `main` aliased to `swhv_fuzz_main`, which keeps
// libFuzzer's own main out; this one picks the target and hands the rest of argv to libFuzzer.

/// libFuzzer's callback is a C function pointer and cannot capture: the harness is a global.
nonisolated(unsafe) var harness: FuzzHarness?

@_cdecl("swhv_fuzz_main")
func swhvFuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> CInt {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")
    guard argc >= 2, let name = argv[1].map({ String(cString: $0) }), let target = FuzzTarget(rawValue: name) else {
        let usage = "usage: swhv-fuzz \(names) [libFuzzer options] [corpus dirs]\n"
        _ = usage.withCString { write(STDERR_FILENO, $0, strlen($0)) }
        return 2
    }
    harness = FuzzHarness(target)
    // Drop the target name so libFuzzer sees its usual argv.
    argv[1] = argv[0]
    var c = argc - 1
    var v: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv + 1
    return LLVMFuzzerRunDriver(&c, &v) { data, size in
        let bytes = size == 0 ? [] : Array(UnsafeBufferPointer(start: data, count: size))
        let outcome = harness!.run(bytes)
        if !outcome.violations.isEmpty {
            // libFuzzer records the input as a crash.
            let text = outcome.violations.map { "fuzz check failed: \($0)\n" }.joined()
            _ = text.withCString { write(STDERR_FILENO, $0, strlen($0)) }
            abort()
        }
        return 0
    }
}
