#!/usr/bin/env python3
"""Random-sequence differential fuzzing of the interpreter against unicorn.

Generates N random straight-line sequences of 25 instructions (see gen_vectors.gen_sequences),
runs them through the Swift test OracleVectorTests.testExternalVectors, and reports mismatches.

    python3 scripts/oracle/fuzz.py [sequences=40000] [seed=1]     # 40000 x 25 = 1M instructions
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
n = int(sys.argv[1]) if len(sys.argv) > 1 else 40000
seed = sys.argv[2] if len(sys.argv) > 2 else "1"
out = "/tmp/swhv-fuzz-%s.json" % seed
subprocess.run([sys.executable, os.path.join(here, "gen_vectors.py"), "--sequences", str(n), out, seed], check=True)
env = dict(os.environ, SWHV_ORACLE_VECTORS=out)
r = subprocess.run(["swift", "test", "--filter", "OracleVectorTests.testExternalVectors"], env=env,
                   capture_output=True, text=True)
lines = [l for l in (r.stdout + r.stderr).splitlines() if "oracle vectors" in l or "MISMATCH" in l]
print("\n".join(lines[:60]))
sys.exit(r.returncode)
