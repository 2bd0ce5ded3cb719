// swhv-cpu-runner: replays differential fuzz cases (FuzzCase.swift format) on the x86 interpreter.
//
//   swhv-cpu-runner [--translated] [FILE]   reads cases from FILE or standard input
//
// --translated: every block is translated to host code before it runs, so the whole-stream pass of
// each case checks the binary translator against the oracle (the step-by-step pass stays on the
// interpreter).
//
// Prints one line per case, in input order:
//   PASS <id> <steps>
//   FAIL <id> <step index> <rip> <problem> | <problem> ...
// and a closing summary line. Exit status 0 when every case passed, 1 on divergences, 2 on bad input.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SwhvTestSupport

func hex(_ v: UInt64) -> String { String(v, radix: 16) }

/// Writes to standard error (the C `stderr` global is not usable from Swift 6 strict concurrency).
func complain(_ message: String) {
    var m = "swhv-cpu-runner: " + message + "\n"
    m.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

func mainRunner() -> Int32 {
    var args = Array(CommandLine.arguments.dropFirst())
    let translated = args.first == "--translated"
    if translated { args.removeFirst() }
    let input: UnsafeMutablePointer<FILE>?
    if let path = args.first {
        input = fopen(path, "r")
        if input == nil { complain("cannot open \(path)"); return 2 }
    } else {
        input = fdopen(0, "r")
    }
    let machine: FuzzMachine
    do { machine = try FuzzMachine(translated: translated) } catch {
        complain("\(error)")
        return 2
    }
    var reader = FuzzCaseReader()
    var cases = 0, steps = 0, failed = 0
    var line: UnsafeMutablePointer<CChar>? = nil
    var cap = 0
    while getline(&line, &cap, input) > 0 {
        guard let line else { break }
        var text = String(cString: line)
        if text.hasSuffix("\n") { text.removeLast() }
        if text.isEmpty || text.hasPrefix("#") { continue }
        let c: FuzzCase?
        do { c = try reader.feed(Substring(text)) } catch {
            complain("\(error)")
            return 2
        }
        guard let c else { continue }
        cases += 1
        steps += c.steps.count
        do {
            if let d = try machine.run(c) {
                failed += 1
                print("FAIL \(c.id) \(d.step) \(hex(d.rip)) " + d.problems.joined(separator: " | "))
            } else {
                print("PASS \(c.id) \(c.steps.count)")
            }
        } catch {
            complain("case \(c.id): \(error)")
            return 2
        }
        fflush(nil)
    }
    print("runner: \(cases) cases, \(steps) instructions, \(failed) diverged")
    return failed == 0 ? 0 : 1
}

exit(mainRunner())
