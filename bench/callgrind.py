#!/usr/bin/env python3
"""Instructions per `/message` write, counted by callgrind: repeatable where rates are
not (the same binary and inputs give the same count, whatever else the machine does).

    python3 bench/callgrind.py            # memory store
    STORE=sqlite python3 bench/callgrind.py
    PROVIDER=anthropic python3 bench/callgrind.py   # the mock spoken to as Anthropic

Builds like bench/run.py, starts its nginx mock, and runs the service under
`valgrind --tool=callgrind` on it: 200 sessions, then 20 writes of a short message to
each (`oha -n 20 -c 4`, session after session: histories grow to 40 messages), and the
service stopped. Prints the instructions of the whole process and per write; the profile
is left in target/bench/callgrind.out for `callgrind_annotate` (add `--inclusive=yes` for
what each function costs with what it calls). Needs valgrind (a Debian package,
installed if missing).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402

SESSIONS, WRITES, CONCURRENCY = 200, 20, 4


def main():
    if not shutil.which("valgrind"):
        harness.log("== valgrind from Debian")
        harness.apt_install("valgrind")
    harness.WORK.mkdir(parents=True, exist_ok=True)
    nginx, oha = harness.tools()
    profile = harness.WORK / "callgrind.out"
    profile.unlink(missing_ok=True)
    store = os.environ.get("STORE", "memory")
    if store == "sqlite":
        store = f"sqlite://{harness.WORK}/callgrind.db"
    provider = os.environ.get("PROVIDER", "openai")
    mock = harness.start_mock(nginx)
    service = None
    try:
        # A short drain, so that the profile is written well before `stop` gives up.
        service = harness.start_service(
            mock, store=store,
            wrap=["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}"],
            SHUTDOWN_GRACE_SECS=1, ANTHROPIC_BASE_URL=mock.url)
        client = harness.Client(service.url)
        session = {"provider": "anthropic"} if provider == "anthropic" else {}
        ids = [client.post("/text/session", session)[0]["session"]["id"]
               for _ in range(SESSIONS)]
        harness.log(f"== {SESSIONS * WRITES} writes under callgrind ({store} store)")
        for sid in ids:
            harness.sh(oha, "-n", str(WRITES), "-c", str(CONCURRENCY), "--no-tui",
                       "-m", "POST", "-H", "content-type: application/json",
                       "-d", '{"content":"hello there, how are you today?"}',
                       f"{service.url}/text/session/{sid}/message",
                       stdout=subprocess.DEVNULL)
    finally:
        if service:
            service.stop()
        mock.stop()
    total = next(int(line.split()[1]) for line in profile.read_text().splitlines()
                 if line.startswith(("summary:", "totals:")))
    writes = SESSIONS * WRITES
    print(f"{total:,} instructions in all, {total // writes:,} per write "
          f"({writes:,} writes, {SESSIONS} sessions, {store} store, {provider}); "
          f"profile: {profile}")


if __name__ == "__main__":
    main()
