#!/usr/bin/env python3
"""Two builds of the service measured in turn, so that this machine's drift over minutes
falls on both alike:

    python3 bench/compare.py BEFORE [AFTER]     # git revisions or service binaries

BEFORE and AFTER are git revisions (AFTER is the working tree's build when left out) or
paths to binaries of the service. A revision is checked out in a worktree under
target/bench/builds/ and built there in release mode, in this checkout's target directory
(so that only the service itself is rebuilt); its binary is kept there for the next
comparison, and the next `cargo build --release` here rebuilds this tree's. Then PAIRS times (3) each build is
measured, BEFORE first: by bench/run.py's cases (CASES, `relay,many` by default; one
round a run), or with WHAT=store_writes by bench/store_writes.py. Each run's output is
printed as it comes; after the last, for bench/run.py's cases, one line per run with the
figures the usual comparisons rest on: many sessions against the relay, the durable
store against the memory store, and the CPU per turn.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402

PAIRS = int(os.environ.get("PAIRS", "3"))
WHAT = os.environ.get("WHAT", "run")
BUILDS = harness.WORK / "builds"


def build(revision):
    """The service's binary at `revision` (a path to a binary is taken as it is)."""
    if Path(revision).is_file():
        return Path(revision).resolve()
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
                            cwd=harness.ROOT, check=True, capture_output=True,
                            text=True).stdout.strip()
    binary = BUILDS / f"text-session-api-{commit[:12]}"
    if binary.exists():
        return binary
    tree = BUILDS / "tree"
    # What a run stopped midway left behind.
    shutil.rmtree(tree, ignore_errors=True)
    harness.sh("git", "worktree", "prune", cwd=harness.ROOT)
    harness.log(f"== building {revision} ({commit[:12]})")
    harness.sh("git", "worktree", "add", "--detach", "--quiet", str(tree), commit,
               cwd=harness.ROOT)
    try:
        harness.sh("cargo", "build", "--release", "--locked", "--quiet", "--bin",
                   "text-session-api", "--target-dir", str(harness.ROOT / "target"), cwd=tree)
        shutil.copy(harness.ROOT / "target/release/text-session-api", binary)
    finally:
        harness.sh("git", "worktree", "remove", "--force", str(tree), cwd=harness.ROOT)
    return binary


def summary(results):
    """The figures of one bench/run.py run that compare builds."""
    ratios = results.get("round ratios", {})
    parts = []
    for name, label in (("many, memory / relay", "many/relay"),
                        ("many, sqlite / many, memory", "sqlite/memory")):
        if ratios.get(name):
            parts.append(f"{label} {ratios[name][0]:.0%}")
    for name in ("relay", "many, memory", "many, sqlite"):
        if "cpu_us" in results.get(name, {}):
            parts.append(f"CPU/turn {name} {results[name]['cpu_us']:.0f} µs")
    for name in ("relay c1", "service c1"):
        if name in results:
            parts.append(f"{name} p50 {results[name]['p50'] * 1000:.0f} µs")
    return ", ".join(parts)


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    harness.WORK.mkdir(parents=True, exist_ok=True)
    BUILDS.mkdir(parents=True, exist_ok=True)
    nginx, oha = harness.tools()  # the tools, the relay, and this tree's build
    # The tools are built once; each run then reuses them.
    harness.tools = lambda: (nginx, oha)
    # This tree's build, kept aside before a revision's build takes its place.
    tree = BUILDS / "text-session-api-tree"
    shutil.copy(harness.SERVICE_BIN, tree)
    before = build(sys.argv[1])
    after = build(sys.argv[2]) if len(sys.argv) == 3 else tree
    if WHAT == "run":
        harness.CASES = set(filter(None, os.environ.get("CASES", "relay,many").split(",")))
        harness.ROUNDS = 1
    import store_writes  # noqa: E402 (after the harness's settings are made)

    lines = []
    for pair in range(PAIRS):
        for label, binary in (("before", before), ("after", after)):
            harness.log(f"==== {label} ({binary.name}), pair {pair + 1} of {PAIRS}")
            harness.SERVICE_BIN = binary
            if WHAT == "store_writes":
                store_writes.main()
            else:
                harness.run()
                results = json.loads((harness.WORK / "results.json").read_text())
                lines.append(f"{label:6} pair {pair + 1}: {summary(results)}")
            sys.stdout.flush()
    if lines:
        print("\n".join(["", f"before: {before}", f"after:  {after}", *lines]))


if __name__ == "__main__":
    main()
