#!/usr/bin/env python3
"""What one `/message` write costs a durable store, counted rather than timed (counts
stay put where rates on a shared machine do not):

    python3 bench/store_writes.py                      # SQLite (the default store)
    STORE=postgres://postgres@127.0.0.1:5432/test python3 bench/store_writes.py

Starts bench/run.py's nginx mock and the service (built by `python3 bench/run.py` or
`cargo build --release`), 1,000 sessions, then `wrk -c64` on them for DURATION seconds
(8). With SQLite it counts, with `perf stat` on the service, the system calls per write
that the store makes (`pwrite`, `pread`, `fsync`, and the `futex` hand-offs to its
thread), the bytes it wrote to its files (the WAL and the checkpoints' copies: the
page-cache pages it dirtied, `write_bytes` in /proc/<pid>/io) and the CPU per write.
With Postgres it creates a fresh database next to the one named (`<name>_store_writes`,
dropped first) and reads the WAL written per write and the share of the `sessions`
updates that were heap-only (HOT: no index entry written).
Needs perf (SQLite) or psql (Postgres).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402

SESSIONS = 1000
DURATION = int(os.environ.get("DURATION", "8"))
SYSCALLS = ("pwrite64", "pread64", "fsync", "futex")


def psql(url, sql):
    return subprocess.run(["psql", url, "-Atc", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


def load(service, watch):
    """How many writes DURATION seconds of load over SESSIONS sessions made (bench/run.py's
    wrk); `watch` (a context manager) counts what the store did meanwhile."""
    paths = harness.message_paths(harness.make_sessions(service, SESSIONS))
    with watch:
        result = harness.wrk(service.url, paths, {"content": "hello"}, duration=DURATION)
    return round(result["rate"] * DURATION)


class PerfStat:
    """`perf stat` of the service's system calls and CPU time while the load runs."""

    def __init__(self, pid):
        self.pid, self.out = pid, harness.WORK / "perf-stat.csv"

    def written(self):
        """Bytes the service has written to files so far (`write_bytes`: pages it dirtied)."""
        io = Path(f"/proc/{self.pid}/io").read_text()
        return int(re.search(r"^write_bytes: (\d+)", io, re.M).group(1))

    def __enter__(self):
        self.before = self.written()
        events = ",".join(f"syscalls:sys_enter_{name}" for name in SYSCALLS) + ",task-clock"
        self.proc = subprocess.Popen(["perf", "stat", "-x,", "-o", str(self.out), "-e", events,
                                      "-p", str(self.pid), "--", "sleep", str(DURATION)])

    def __exit__(self, *_):
        self.proc.wait()
        self.counts = {"written": self.written() - self.before}
        for line in self.out.read_text().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and re.fullmatch(r"[0-9.]+", fields[0]):
                self.counts[fields[2].removeprefix("syscalls:sys_enter_")] = float(fields[0])


class WalAndHot:
    """The WAL Postgres wrote and the `sessions` updates it made HOT while the load ran."""

    def __init__(self, url):
        self.url = url

    def sample(self):
        lsn = psql(self.url, "SELECT pg_current_wal_lsn()")
        updates, hot = psql(self.url, "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                      "WHERE relname = 'sessions'").split("|")
        return lsn, int(updates), int(hot)

    def __enter__(self):
        self.before = self.sample()

    def __exit__(self, *_):
        time.sleep(1)  # statistics reach pg_stat_user_tables within a second
        lsn, updates, hot = self.sample()
        self.wal = int(psql(self.url, f"SELECT pg_current_wal_lsn() - '{self.before[0]}'::pg_lsn"))
        self.updates, self.hot = updates - self.before[1], hot - self.before[2]


def main():
    harness.WORK.mkdir(parents=True, exist_ok=True)
    nginx, _ = harness.tools()
    store = os.environ.get("STORE", "sqlite")
    mock = harness.start_mock(nginx)
    try:
        if store.startswith("postgres"):
            base, name = store.rsplit("/", 1)
            fresh = f"{base}/{name}_store_writes"
            psql(store, f"DROP DATABASE IF EXISTS {name}_store_writes WITH (FORCE)")
            psql(store, f"CREATE DATABASE {name}_store_writes")
            service = harness.start_service(mock, store=fresh)
            try:
                watch = WalAndHot(fresh)
                writes = load(service, watch)
            finally:
                service.stop()
            print(f"{writes:,} writes in {DURATION} s on Postgres: "
                  f"{watch.wal / writes:,.0f} B of WAL per write, "
                  f"{watch.hot / max(watch.updates, 1):.0%} of the sessions' updates HOT "
                  f"({watch.hot:,} of {watch.updates:,})")
        else:
            service = harness.start_service(mock, store=f"sqlite://{harness.WORK}/store-writes.db")
            try:
                watch = PerfStat(service.pid)
                writes = load(service, watch)
            finally:
                service.stop()
            per = {name: count / writes for name, count in watch.counts.items()}
            calls = ", ".join(f"{name} {per.get(name, 0):.2f}" for name in SYSCALLS)
            print(f"{writes:,} writes in {DURATION} s on SQLite, per write: {calls}; "
                  f"{per['written']:,.0f} B written ({per['written'] / 4096:.2f} pages); "
                  f"CPU {per.get('task-clock', 0) * 1000:.0f} µs")
    finally:
        mock.stop()


if __name__ == "__main__":
    main()
