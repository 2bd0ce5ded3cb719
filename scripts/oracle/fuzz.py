#!/usr/bin/env python3
"""Differential fuzzer: random x86-64 instruction streams on unicorn (oracle) vs the swhv interpreter.

    swift build -c release --product swhv-cpu-runner
    python3 scripts/oracle/fuzz.py --instructions 1000000 --seed 1

Worker processes generate cases (fuzz_gen.py: instruction by instruction against unicorn, iced-x86
for validation and undefined flags); .build/release/swhv-cpu-runner replays each case step by step
on the interpreter and reports the first divergence, which is printed here with the disassembly.
Diverging cases, cut after the diverging step, go to --failures in the corpus format read by
FuzzRegressionTests. The run ends with a summary and an `N passed, N failed` line (cases).

Unless --no-native, every case also runs on the host CPU (fuzz_native.c, single-stepped at CPL3)
against the same unicorn expectations, and each divergence is classified:
  interpreter   the host CPU agrees with unicorn: an interpreter bug
  unicorn       the host CPU shows what the interpreter shows: a unicorn quirk (not a failure)
  three-way     interpreter, unicorn and host CPU all differ
and cases where only the host CPU differs (interpreter and unicorn agree) are counted apart.

    --write-corpus FILE --cases N   writes N cases with disassembly comments instead of running
    --show SEED:INDEX               regenerates one case and prints it with disassembly
    --code HEX,HEX,...              a hand-made case running these instructions
    --x87 / --fp-modes / --mxcsr-flags   opt-in areas (see --help)

Which oracle decides what. Unicorn (QEMU 5's CPU model) gives the expected state; the host CPU
(an AMD EPYC here, single-stepped at CPL3) decides whenever the two disagree. Unicorn quirks the
host CPU showed, and how they are handled:
  - SHLD/SHRD imm8 with a RIP-relative operand address the wrong byte: not generated.
  - LOCK NEG computes SF/ZF/PF from the wrong value: NEG is not locked.
  - A null segment prefix (26/2E/36/3E) after FS/GS cancels the override: FS/GS is placed last.
  - CMPXCHG r32 rewrites RAX even when the comparison succeeds; packed-single NaN propagation,
    x87 C1/FCOMI flags, FPREM in double precision, +QNaN for the x87 indefinite: classified
    "unicorn quirk" (the interpreter agrees with the host CPU), not failures.
  - No MXCSR or x87 exception flags: not compared unless --mxcsr-flags (then the host judges);
    STMXCSR and FNSTSW are not generated against unicorn.
  - No canonical-address or SSE alignment checks: fault cases take their vector from the
    architecture, confirmed by the host CPU.
  - MMX: a written MMX register keeps its old bits 79:64 (hardware: all ones), EMMS keeps TOP
    (hardware: 0), CVTPI2PS/PD from memory make the x87-to-MMX transition (hardware: no MMX
    register, no transition): fuzz_gen.py corrects unicorn's state after each MMX instruction
    (Emu.hardware_mmx). Without the correction every MMX case is a "unicorn quirk" here.
Vendor differences (AMD host vs the Intel behaviour QEMU implements) in CMPXCHG r32 and
BSF/BSR of 0 are counted apart. Undefined flags (iced-x86) are never compared.
"""
import argparse
import collections
import multiprocessing
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_gen as F  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

_emu = None
_cfg = None


def _init_worker(cfg, fp_modes, mxcsr_compared):
    global _emu, _cfg
    _emu = F.Emu()
    _cfg = cfg
    F.FP_MODES = fp_modes
    F.MXCSR_COMPARED = mxcsr_compared


def case_seed(seed, index):
    return f"{seed}:{index}"


def case_length(seed, index, lo, hi):
    import random
    return random.Random(f"len:{seed}:{index}").randint(lo, hi)


def _make(index):
    seed, lo, hi, weights = _cfg
    c = F.generate_case(_emu, case_seed(seed, index), case_length(seed, index, lo, hi), weights)
    return index, F.serialize(c, f"{seed}:{index}"), len(c.steps), c.stop, c.kinds


def parse_case_text(text):
    """(code bytes, [step rips]) from a serialized case."""
    code = b""
    rips = []
    for line in text.splitlines():
        if line.startswith("X "):
            code = bytes.fromhex(line[2:].strip())
        elif line.startswith("S "):
            rips.append(int(line.split()[1], 16))
    return code, rips


def describe(text, step):
    """Disassembly of the diverging instruction and the few before it."""
    code, rips = parse_case_text(text)
    starts = [F.CODE] + rips
    out = []
    for k in range(max(0, step - 3), min(step + 1, len(rips))):
        b, asm = F.disassemble_step(code, starts[k])
        mark = "=>" if k == step else "  "
        out.append(f"   {mark} step {k:4d}  {starts[k]:x}: {b:<30} {asm}")
    return out


def mnemonic_at(text, step):
    code, rips = parse_case_text(text)
    starts = [F.CODE] + rips
    if step >= len(rips):
        return "(end of case)"
    _, asm = F.disassemble_step(code, starts[step])
    return asm.split()[0] if asm else "?"


def truncated_with_disasm(seed_str, length, weights, step, case_id):
    """The case regenerated with disassembly comments, cut after the diverging step."""
    emu = F.Emu()
    c = F.generate_case(emu, seed_str, length, weights)
    c.steps = c.steps[:step + 1]
    return F.serialize(c, case_id, disasm=True)


def build_native(path):
    """Compiles fuzz_native.c when the binary is missing or older than the source."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_native.c")
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(src):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    subprocess.run(["cc", "-O2", "-fno-stack-protector", "-o", path, src], check=True)


def problem_items(problems):
    """{what: observed value} from a runner's problem list, for comparing two runners' reports."""
    items = {}
    for p in problems.split(" | "):
        if p == "...":
            continue
        if p.startswith("rflags = "):
            d = p.split("differing ")[1].split(",")[0] if "differing " in p else "?"
            bits = int(d, 16) & F.NATIVE_FLAGS if d != "?" else -1
            if bits:
                items["rflags"] = bits
        elif p.startswith("x87 = "):
            # "x87 = fsw A vs B (compared M), st0 ... vs ... (got vs expected)": one item each.
            for d in p[len("x87 = "):].replace(" (got vs expected)", "").split(", "):
                words = d.split()
                if words[0] == "fsw" and "(compared" in d:
                    m = int(d.split("(compared ")[1].rstrip(")"), 16)
                    items["x87 fsw"] = int(words[1], 16) & m
                else:
                    items["x87 " + words[0]] = words[1]
        elif " = " in p:
            k, v = p.split(" = ", 1)
            v = v.split(",")[0]
            items[k] = int(v, 16) if v.startswith("0x") else v
        else:
            items[p] = ""
    return items


# Register results that differ between CPU vendors and QEMU, counted apart when only registers
# differ: CMPXCHG r32 (AMD leaves the destination alone when the comparison fails and RAX alone
# when it succeeds; Intel writes the destination back, zero-extended; QEMU also rewrites RAX) and
# BSF/BSR with a zero source (AMD leaves the destination alone; QEMU clears the upper half of a
# 32-bit destination; Intel documents it as undefined).
VENDOR_SPECIFIC = {"cmpxchg", "bsf", "bsr"}


def nan_lanes_only(problems):
    """Whether every difference is an XMM lane that is a NaN on both sides (differing payloads:
    unicorn's NaN propagation, which the host CPU has always sided against the interpreter on)."""
    items = [p for p in problems.split(" | ") if p != "..."]
    for p in items:
        if not p.startswith("xmm") or ", expected " not in p:
            return False
        got, exp = (int(x.split()[0], 16) for x in p.split(" = ", 1)[1].split(", expected "))
        for lane in range(4):
            a, b = (got >> (32 * lane)) & 0xFFFFFFFF, (exp >> (32 * lane)) & 0xFFFFFFFF
            if a == b:
                continue
            nan32 = lambda v: (v >> 23) & 0xFF == 0xFF and v & 0x7FFFFF
            q = lane // 2
            a64, b64 = (got >> (64 * q)) & (2**64 - 1), (exp >> (64 * q)) & (2**64 - 1)
            nan64 = lambda v: (v >> 52) & 0x7FF == 0x7FF and v & (2**52 - 1)
            if not ((nan32(a) and nan32(b)) or (nan64(a64) and nan64(b64))):
                return False
    return bool(items)


def classify(interp, native):
    """interp/native: None (pass) or (step, problems)."""
    if native is ...:
        if interp is not None and nan_lanes_only(interp[1]):
            return "nan-unconfirmed"
        return "pass" if interp is None else "unconfirmed"
    if interp is None:
        return "pass" if native is None else "hardware-only"
    if native is None:
        return "interpreter"
    if interp[0] == native[0] and problem_items(interp[1]) == problem_items(native[1]):
        return "unicorn"
    return "three-way"


# Families left out unless asked for: x87 (--x87) still differs in ways the report lists (FPREM
# partial remainders, FXTRACT/FSCALE edge cases, C1 after rounding up) and unicorn has x87 quirks.
OPT_IN = {"x87"}


def build_weights(args):
    weights = {k: w for k, (_, w) in F.FAMILIES.items() if k not in OPT_IN or getattr(args, k, False)
               or (args.only and k in args.only.split(","))}
    if args.only:
        keep = set(args.only.split(","))
        weights = {k: w for k, w in weights.items() if k in keep}
    if args.exclude:
        for k in args.exclude.split(","):
            weights.pop(k, None)
    unknown = set((args.only or "").split(",") + (args.exclude or "").split(",")) - set(F.FAMILIES) - {""}
    if unknown:
        sys.exit(f"unknown families: {', '.join(sorted(unknown))}; known: {', '.join(F.FAMILIES)}")
    return weights


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instructions", type=int, default=1_000_000, help="stop after this many instructions")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="generator processes")
    ap.add_argument("--min-length", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--runner", default=os.path.join(ROOT, ".build", "release", "swhv-cpu-runner"))
    ap.add_argument("--no-native", action="store_true", help="skip the host-CPU cross-check")
    ap.add_argument("--translated", action="store_true",
                    help="the runner translates every block to host code (checks the binary translator)")
    ap.add_argument("--native-bin", default=os.path.join(ROOT, ".build", "fuzz_native"))
    ap.add_argument("--failures", default="fuzz-failures.txt", help="diverging cases are written here")
    ap.add_argument("--report", type=int, default=20, help="divergences printed in detail")
    ap.add_argument("--only", help="comma-separated instruction families to use")
    ap.add_argument("--exclude", help="comma-separated instruction families to leave out")
    ap.add_argument("--write-corpus", metavar="FILE")
    ap.add_argument("--cases", type=int, default=300, help="with --write-corpus: number of cases")
    ap.add_argument("--show", metavar="SEED:INDEX")
    ap.add_argument("--code", metavar="HEX,HEX,...", help="print a case running these instructions (regression cases)")
    ap.add_argument("--code-id", default="code", help="with --code: the case id")
    ap.add_argument("--fp-modes", nargs="?", const="all", default="", choices=("rc", "ftz-daz", "all"),
                    help="also MXCSR rounding modes other than nearest (rc), FTZ and DAZ (ftz-daz), or both "
                         "(all, the default with the flag): known interpreter gaps")
    ap.add_argument("--x87", action="store_true", help="also x87 instructions (opt-in, see OPT_IN)")
    ap.add_argument("--mxcsr-flags", action="store_true",
                    help="compare MXCSR exception flags (and generate STMXCSR): unicorn raises none, so a "
                         "difference is an interpreter bug only where the host CPU agrees with unicorn")
    args = ap.parse_args()
    F.FP_MODES = args.fp_modes
    if args.mxcsr_flags:
        F.MXCSR_COMPARED = 0xFFFF
    weights = build_weights(args)

    if args.show:
        s, i = args.show.split(":")
        emu = F.Emu()
        c = F.generate_case(emu, case_seed(int(s), int(i)), case_length(int(s), int(i), args.min_length,
                                                                         args.max_length), weights)
        sys.stdout.write(F.serialize(c, args.show, disasm=True))
        return 0

    if args.code:
        emu = F.Emu()
        c = F.case_from_code(emu, [bytes.fromhex(x) for x in args.code.split(",")])
        sys.stdout.write(F.serialize(c, args.code_id, disasm=True))
        return 0

    if args.write_corpus:
        # Only cases the interpreter passes go in (the corpus is a regression test): cases that hit
        # a unicorn quirk or a vendor difference are dropped and counted.
        if not os.path.exists(args.runner):
            sys.exit(f"no runner at {args.runner}: swift build -c release --product swhv-cpu-runner")
        emu = F.Emu()
        kept, total, dropped, i = [], 0, [], 0
        while len(kept) < args.cases:
            batch = []
            for _ in range(args.cases - len(kept)):
                c = F.generate_case(emu, case_seed(args.seed, i),
                                    case_length(args.seed, i, args.min_length, args.max_length), weights)
                batch.append((f"{args.seed}:{i}", F.serialize(c, f"{args.seed}:{i}", disasm=True), len(c.steps)))
                i += 1
            out = subprocess.run([args.runner] + (["--translated"] if args.translated else []), input="".join(t for _, t, _ in batch), capture_output=True,
                                 text=True).stdout
            passed = {line.split()[1] for line in out.splitlines() if line.startswith("PASS ")}
            for cid, text, n in batch:
                if cid in passed:
                    kept.append(text)
                    total += n
                else:
                    dropped.append(cid)
        with open(args.write_corpus, "w") as f:
            f.write(f"# Differential fuzz corpus: scripts/oracle/fuzz.py --write-corpus FILE --seed {args.seed} "
                    f"--cases {args.cases} --min-length {args.min_length} --max-length {args.max_length}\n")
            f.write("".join(kept))
        print(f"wrote {len(kept)} cases, {total} instructions to {args.write_corpus}; "
              f"dropped {len(dropped)} the interpreter does not pass: {' '.join(dropped)}")
        return 0

    if not os.path.exists(args.runner):
        sys.exit(f"no runner at {args.runner}: swift build -c release --product swhv-cpu-runner")

    runner = subprocess.Popen([args.runner] + (["--translated"] if args.translated else []), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              bufsize=1 << 20)
    native = None
    if not args.no_native:
        build_native(args.native_bin)
        native = subprocess.Popen([args.native_bin], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1 << 20)
    pending = {}
    sent = {"cases": 0, "steps": 0}
    stops = collections.Counter()
    kind_counts = collections.Counter()
    lock = threading.Lock()
    cfg = (args.seed, args.min_length, args.max_length, weights)
    start = time.time()

    def feed():
        with multiprocessing.Pool(args.jobs, initializer=_init_worker, initargs=(cfg, args.fp_modes, F.MXCSR_COMPARED)) as pool:
            def indices():
                i = 0
                while True:
                    yield i
                    i += 1
            for index, text, n, stop, kinds in pool.imap(_make, indices(), chunksize=4):
                if sent["steps"] >= args.instructions:
                    break
                stops[stop.split(" (")[0] if not stop.startswith("unicorn") else stop] += 1
                kind_counts.update(kinds)
                with lock:
                    pending[f"{args.seed}:{index}"] = (text, n)
                try:
                    runner.stdin.write(text)
                    if native:
                        native.stdin.write(text)
                except BrokenPipeError:
                    break   # a runner died; the main loop reports it
                sent["cases"] += 1
                sent["steps"] += n
            pool.terminate()
        for p in (runner, native):
            if p:
                try:
                    p.stdin.close()
                except BrokenPipeError:
                    pass

    t = threading.Thread(target=feed, daemon=True)
    t.start()

    def results(proc):
        for line in proc.stdout:
            parts = line.rstrip("\n").split(" ", 4)
            if parts[0] == "PASS":
                yield parts[1], None
            elif parts[0] == "FAIL":
                yield parts[1], (int(parts[2]), parts[4] if len(parts) > 4 else "")
            elif parts[0] == "SKIP":
                yield parts[1], ...
            elif parts[0] in ("runner:", "native:"):
                continue
            else:
                print(line.rstrip())

    native_results = results(native) if native else None
    counts = collections.Counter()
    steps_checked = 0
    by_mnemonic = collections.defaultdict(collections.Counter)
    reported = 0
    last_progress = start
    fail_out = None
    for cid, interp in results(runner):
        nat = ...
        if native_results is not None:
            ncid, nat = next(native_results, (cid, (0, "native runner ended early")))
            if ncid != cid:
                sys.exit(f"runners out of step: {cid} vs {ncid}")
        with lock:
            text, n = pending.pop(cid, ("", 0))
        steps_checked += n
        if native_results is not None and nat is ...:
            counts["native-skipped"] += 1
        kind = classify(interp, nat)
        if (kind == "three-way" and nat[0] < interp[0] and mnemonic_at(text, nat[0]) in VENDOR_SPECIFIC
                and all(k in F.REG_NAMES_LOWER for k in problem_items(nat[1]))):
            # The host CPU stopped earlier at a vendor difference: no verdict on this one.
            kind = classify(interp, ...)
        if kind in ("hardware-only", "unicorn", "unconfirmed"):
            step, problems = interp if interp is not None else nat
            if mnemonic_at(text, step) in VENDOR_SPECIFIC and all(
                    k in F.REG_NAMES_LOWER for k in problem_items(problems)):
                kind = "vendor"
        counts[kind] += 1
        if kind != "pass":
            step, problems = interp if interp is not None else nat
            by_mnemonic[kind][mnemonic_at(text, step)] += 1
            if reported < args.report and kind not in ("vendor", "nan-unconfirmed"):
                reported += 1
                who = "host CPU" if kind == "hardware-only" else "interpreter"
                print(f"DIVERGENCE ({kind}) case {cid} step {step}: {who}: {problems}")
                if kind in ("three-way", "unicorn") and nat is not ...:
                    print(f"    host CPU: step {nat[0]}: {nat[1]}")
                for d in describe(text, step):
                    print(d)
            if kind not in ("unicorn", "vendor", "nan-unconfirmed"):
                if fail_out is None:
                    fail_out = open(args.failures, "w")
                    fail_out.write(f"# Diverging cases from fuzz.py --seed {args.seed} (cut after the diverging step)\n")
                s_, i_ = cid.split(":")
                fail_out.write(f"# {kind}: {problems}\n")
                fail_out.write(truncated_with_disasm(case_seed(int(s_), int(i_)),
                                                     case_length(int(s_), int(i_), args.min_length, args.max_length),
                                                     weights, step, cid))
                fail_out.flush()
        now = time.time()
        if now - last_progress > 10:
            last_progress = now
            rate = steps_checked / (now - start)
            done = sum(counts.values()) - counts["native-skipped"]
            print(f"  ... {done} cases, {steps_checked} instructions, "
                  f"{done - counts['pass']} diverged ({rate:,.0f} instr/s)", file=sys.stderr)
    rc = runner.wait()
    if native and rc not in (0, 1):
        native.kill()
    nrc = native.wait() if native else 0
    t.join(timeout=5)
    elapsed = time.time() - start
    if fail_out:
        fail_out.close()
    if rc not in (0, 1):
        print(f"runner exited with status {rc} (a crash: the case after the last reported one; "
              f"see its standard error above)")
    if nrc not in (0, 1):
        print(f"native runner exited with status {nrc}")
    labels = {"interpreter": "interpreter bugs (host CPU agrees with unicorn)",
              "unconfirmed": "interpreter divergences (no host-CPU check)",
              "three-way": "three-way differences",
              "unicorn": "unicorn quirks (interpreter agrees with host CPU; not failures)",
              "nan-unconfirmed": "NaN payloads only, host check skipped (as the unicorn quirks above; not failures)",
              "vendor": "register results where CPU vendors differ (CMPXCHG r32, BSF/BSR of 0; not failures)",
              "hardware-only": "host CPU alone differs (interpreter agrees with unicorn; not failures)"}
    for kind, label in labels.items():
        if counts[kind]:
            print(f"{label}: {counts[kind]}: " + ", ".join(f"{m} {c}" for m, c in by_mnemonic[kind].most_common(12)))
    if fail_out:
        print(f"diverging cases written to {args.failures}")
    print("instructions by kind: " + ", ".join(f"{k} {v}" for k, v in kind_counts.most_common()))
    print("cases ended by: " + ", ".join(f"{k} {v}" for k, v in stops.most_common(12)))
    skipped = counts.pop("native-skipped", 0)
    if skipped:
        print(f"host-CPU check skipped for {skipped} cases (kernel-half FS/GS base)")
    total = sum(counts.values())
    failed = counts["interpreter"] + counts["unconfirmed"] + counts["three-way"]
    hw_only = counts["hardware-only"] + counts["vendor"]
    divergences = total - counts["pass"] - hw_only
    print(f"fuzz: seed {args.seed}: {total} cases, {steps_checked} instructions, {divergences} divergences from "
          f"unicorn ({failed} interpreter failures, {counts['unicorn'] + counts['nan-unconfirmed']} unicorn quirks), "
          f"{hw_only} host-CPU-only differences ({counts['vendor']} vendor-specific), {elapsed:.0f} s")
    print(f"{total - failed} passed, {failed} failed")
    return 0 if failed == 0 and rc in (0, 1) and nrc in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
