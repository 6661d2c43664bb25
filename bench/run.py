#!/usr/bin/env python3
"""The benchmark, one command: `python3 bench/run.py` (see bench/README.md).

Builds the service and the bare relay (bench/relay.rs), starts an nginx mock of Chat
Completions (a fixed small reply, keep-alive), and measures, in one run and on this
machine: the mock straight, the relay, and the service with `STORE=memory` and with the
default store (SQLite), each case on a fresh process. The load generator (wrk for
throughput and concurrency-1 latency, oha for a fixed rate with coordinated-omission
correction) and the mock are pinned to one core, the service (or the relay) to the
other. Prints one table, with every figure beside the one it is compared with.

Needs: python3 (stdlib only), nginx, wrk (Debian packages: installed when missing),
oha (`cargo install oha` into target/bench-tools when missing), taskset.

Settings (environment): DURATION seconds per case (10), CONNECTIONS (64), SESSIONS (1000),
RUNS of the concurrency-1 latency cases, whose median is shown (5), ROUNDS of the relay
and many-sessions cases, taken in turn, whose medians are shown (3), SOAK seconds of the
soak (120), CASES (comma list of case names to run; all by default: mock, relay, many,
hot, growth, latency, rate, memory, soak), SERVICE_BIN (the service's binary to measure;
the one this checkout builds by default: bench/compare.py sets it to measure two builds
in turn).
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
TOOLS = ROOT / "target" / "bench-tools"
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
SESSIONS = int(os.environ.get("SESSIONS", "1000"))
RUNS = int(os.environ.get("RUNS", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SOAK = int(os.environ.get("SOAK", "120"))
CASES = set(filter(None, os.environ.get("CASES", "").split(","))) or {
    "mock", "relay", "many", "hot", "growth", "latency", "rate", "memory", "soak"}
LOAD_CPU, SERVICE_CPU = "0", "1"
SERVICE_BIN = Path(os.environ.get("SERVICE_BIN", ROOT / "target/release/text-session-api"))
MESSAGE_500 = "x" * 490 + " 500 bytes"  # one stored message of the growth cases
MOCK_REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "mock-1",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Hello from the mock."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
})

# The same reply as Anthropic Messages words it (bench/callgrind.py with PROVIDER=anthropic).
MOCK_ANTHROPIC_REPLY = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "mock-1",
    "content": [{"type": "text", "text": "Hello from the mock."}],
    "stop_reason": "end_turn", "usage": {"input_tokens": 12, "output_tokens": 4},
})


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def sh(*args, **kwargs):
    return subprocess.run(args, check=True, **kwargs)


# ------------------------------------------------------------------ tools

def apt_install(package):
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    if subprocess.run(["apt-get", "install", "-y", "-q", package], env=env, **quiet).returncode:
        subprocess.run(["apt-get", "update", "-q"], env=env, **quiet)
        sh("apt-get", "install", "-y", "-q", package, env=env, **quiet)


def tools():
    if not shutil.which("wrk"):
        log("== wrk from Debian")
        apt_install("wrk")
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        log("== nginx from Debian")
        apt_install("nginx-light")
    oha = TOOLS / "bin" / "oha"
    if not oha.exists():
        log("== oha from crates.io (once)")
        sh("cargo", "install", "--locked", "--quiet", "--root", str(TOOLS), "oha")
    log("== cargo build --release (the relay and the soak's client, then the service)")
    # Two builds: the examples turn on the crate's test-only features, the service's
    # binary must be built without them.
    sh("cargo", "build", "--release", "--locked", "--quiet", "--example", "relay",
       "--example", "soak", cwd=ROOT)
    sh("cargo", "build", "--release", "--locked", "--quiet", "--bin", "text-session-api", cwd=ROOT)
    return shutil.which("nginx") or "/usr/sbin/nginx", str(oha)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ processes

class Process:
    """A child pinned to a core; `url` is read from its first line naming one."""

    def __init__(self, name, args, cpu, env=None, url=None):
        self.name = name
        out = open(WORK / f"{name}.out", "w+")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpu, *args], stdout=out, stderr=subprocess.STDOUT,
            env=env, cwd=WORK, start_new_session=True)
        self.url = url
        deadline = time.time() + 30
        while self.url is None:
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited: {Path(out.name).read_text()}")
            out.seek(0)
            found = re.search(r"http://[0-9.]+:[0-9]+", out.read())
            if found:
                self.url = found.group(0)
            elif time.time() > deadline:
                raise SystemExit(f"{name}: no URL printed")
            else:
                time.sleep(0.05)
        wait_for_port(self.url)

    @property
    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        # taskset execs the program: the child's pid is the program's.
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """User and system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_for_port(url):
    host, port = url.removeprefix("http://").split(":")
    for _ in range(200):
        try:
            socket.create_connection((host, int(port)), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} does not accept connections")


def start_mock(nginx):
    port = free_port()
    conf = WORK / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {WORK}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_max_body_size 0;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{MOCK_REPLY}';
        }}
        location = /v1/messages {{
            default_type application/json;
            return 200 '{MOCK_ANTHROPIC_REPLY}';
        }}
    }}
}}
""")
    (WORK / "nginx-tmp").mkdir(exist_ok=True)
    return Process("mock", [nginx, "-c", str(conf), "-p", str(WORK / "nginx-tmp")], LOAD_CPU,
                   url=f"http://127.0.0.1:{port}")


def start_service(mock, store="memory", wrap=(), **settings):
    """The service on the mock; `wrap` is a command it runs under (valgrind, say)."""
    if store.startswith("sqlite://"):
        for suffix in ("", "-wal", "-shm"):
            Path(store.removeprefix("sqlite://") + suffix).unlink(missing_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "STORE": store,
        "DEFAULT_PROVIDER": "mock",
        "OPENAI_COMPATIBLE": f"mock={mock.url}/v1",
        "MOCK_DEFAULT_MODEL": "mock-1",
        "RUST_LOG": "warn",
        "MAX_MESSAGES_PER_SESSION": "100000",
        "MAX_SESSIONS_PER_KEY": "100000",
        **{k: str(v) for k, v in settings.items()},
    }
    return Process("service", [*wrap, str(SERVICE_BIN),
                               "--bind", "127.0.0.1:0"], SERVICE_CPU, env=env)


def start_relay(mock):
    return Process("relay", [str(ROOT / "target/release/examples/relay"), "127.0.0.1:0",
                             f"{mock.url}/v1"], SERVICE_CPU)


# ------------------------------------------------------------------ sessions

class Client:
    """Keep-alive JSON over one connection (for setting up, not for measuring)."""

    def __init__(self, url):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=600)

    def post(self, path, body):
        self.conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            raise SystemExit(f"POST {path}: {response.status} {data[:300]!r}")
        return json.loads(data), len(data)


def make_sessions(service, count, history=0):
    """`count` sessions, each with `history` stored messages of 500 bytes (instructions
    appended in batches, each batch one turn: its reply is one more message)."""
    client = Client(service.url)
    ids = []
    batch = 1500
    for _ in range(count):
        session, _ = client.post("/text/session", {})
        sid = session["session"]["id"]
        stored = 0
        while stored < history:
            n = min(batch, history - stored - 1) or 1
            client.post(f"/text/session/{sid}/instructions?view=delta", [MESSAGE_500] * n)
            stored += n + 1
        ids.append(sid)
    return ids


# ------------------------------------------------------------------ load

WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local file = io.open(os.getenv("BENCH_BODY"))
local body = file:read("*a")
file:close()
local headers = { ["content-type"] = "application/json" }
local i = 0
request = function()
  i = i + 1
  return wrk.format("POST", paths[(i % #paths) + 1], headers, body)
end
"""


def to_ms(value):
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def core_busy_seconds(cpu):
    """Seconds core `cpu` has spent on anything but idling (its processes, the kernel's
    work for them, interrupts), from /proc/stat; the hypervisor's steal left out."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            user, nice, system, _idle, _iowait, irq, softirq = map(int, line.split()[1:8])
            return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
    raise SystemExit(f"no cpu{cpu} in /proc/stat")


def wrk(url, paths, body, connections=CONNECTIONS, duration=DURATION, cpu=LOAD_CPU):
    """Requests/s and latency percentiles (ms) of POSTs to `paths` (taken in turn), from
    wrk on `cpu` (the load generator's core unless told), and what a request cost the
    service's core: `core_us`, its busy time (whatever ran there) per request."""
    (WORK / "paths.txt").write_text("\n".join(paths) + "\n")
    (WORK / "wrk.lua").write_text(WRK_SCRIPT)
    # In a file, not the environment: one variable holds 128 KiB at most.
    (WORK / "body.json").write_text(json.dumps(body))
    env = dict(os.environ, BENCH_PATHS=str(WORK / "paths.txt"), BENCH_BODY=str(WORK / "body.json"))
    busy = core_busy_seconds(SERVICE_CPU)
    out = subprocess.run(
        ["taskset", "-c", cpu, "wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "--latency", "-s", str(WORK / "wrk.lua"), url],
        check=True, capture_output=True, text=True, env=env).stdout
    busy = core_busy_seconds(SERVICE_CPU) - busy
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    pct = {p: to_ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.M)}
    result = {"rate": rate, "p50": pct["50"], "p99": pct["99"]}
    return result | {"core_us": per_request(busy, result, duration)}


def oha(oha_bin, url, paths, body, rate, duration=DURATION):
    """Latency percentiles (ms) at a fixed rate, corrected for coordinated omission."""
    (WORK / "urls.txt").write_text("\n".join(url + p for p in paths) + "\n")
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, oha_bin, "--no-tui", "--output-format", "json",
         "-q", str(rate), "--latency-correction", "-z", f"{duration}s", "-c", str(CONNECTIONS),
         "-m", "POST", "-H", "content-type: application/json", "-d", json.dumps(body),
         "--urls-from-file", str(WORK / "urls.txt")],
        check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    codes = report.get("statusCodeDistribution", {})
    if any(not code.startswith("2") for code in codes):
        raise SystemExit(f"oha saw errors: {codes}")
    pct = report["latencyPercentiles"]
    return {k: pct[k] * 1000 for k in ("p50", "p90", "p99", "p99.9")} | {
        "rate": report["summary"]["requestsPerSec"]}


# ------------------------------------------------------------------ the cases

def provider_request(history):
    """A Chat Completions request as the service sends it for a session that
    `make_sessions` made with `history` messages, on its next write."""
    stored = [{"role": "system", "content": MESSAGE_500}] * (history - 1) + [
        {"role": "assistant", "content": "Hello from the mock."}]
    return {"model": "mock-1", "messages": [*stored, {"role": "user", "content": "hello"}]}


def message_paths(ids, query=""):
    return [f"/text/session/{sid}/message{query}" for sid in ids]


def load_average():
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def run():
    WORK.mkdir(parents=True, exist_ok=True)
    nginx, oha_bin = tools()
    started_load = load_average()
    log(f"load average at the start: {started_load}")
    rows = []  # (case, figure, compared with, ratio / note)
    results = {}
    mock = start_mock(nginx)
    short = {"content": "hello"}
    try:
        if "mock" in CASES:
            log("== the mock straight")
            results["mock"] = wrk(mock.url, ["/v1/chat/completions"], {"model": "m"})

        def relay_case():
            relay = start_relay(mock)
            try:
                cpu = relay.cpu_seconds()
                result = wrk(relay.url, ["/relay"], short)
                result["cpu_us"] = per_request(relay.cpu_seconds() - cpu, result)
                if "latency" in CASES and "relay c1" not in results:
                    runs = [wrk(relay.url, ["/relay"], short, connections=1)
                            for _ in range(RUNS)]
                    results["relay c1"] = median_of(runs)
                return result
            finally:
                relay.stop()

        def service_case(name, store="memory", sessions=SESSIONS, history=0, query="",
                         connections=CONNECTIONS):
            log(f"== service: {name}")
            service = start_service(mock, store=store)
            try:
                ids = make_sessions(service, sessions, history)
                if history:
                    # The size of one write's answer, full view against delta.
                    client = Client(service.url)
                    sizes = {view: client.post(f"/text/session/{ids[0]}/message?view={view}",
                                               short)[1] for view in ("full", "delta")}
                cpu = service.cpu_seconds()
                result = wrk(service.url, message_paths(ids, query), short,
                             connections=connections)
                result["cpu_us"] = per_request(service.cpu_seconds() - cpu, result)
                if history:
                    result |= {"full_bytes": sizes["full"], "delta_bytes": sizes["delta"]}
                results[name] = result
                return result
            finally:
                service.stop()

        # The relay and the many-sessions cases take turns, ROUNDS times: this machine's
        # speed drifts over minutes, and each round's ratios compare runs a few seconds
        # apart. Each figure is the median over the rounds, each ratio the median of
        # the rounds' ratios.
        if CASES & {"relay", "many", "latency", "rate"}:
            rounds = []
            for n in range(ROUNDS):
                log(f"== round {n + 1} of {ROUNDS}: the bare relay" +
                    (", then the service on many sessions" if "many" in CASES else ""))
                this = {"relay": relay_case()}
                if "many" in CASES:
                    this["many, memory"] = service_case("many, memory")
                    this["many, sqlite"] = service_case(
                        "many, sqlite", store=f"sqlite://{WORK}/bench.db")
                rounds.append(this)
                if "many" not in CASES and not CASES & {"relay"}:
                    break  # only the latency or rate cases asked for the relay
            for name in rounds[0]:
                results[name] = median_of([r[name] for r in rounds]) | {
                    "rounds": [r[name]["rate"] for r in rounds]}
            pairs = (("many, memory", "relay"), ("many, sqlite", "many, memory"))
            results["round ratios"] = {
                f"{a} / {b}": [r[a]["rate"] / r[b]["rate"] for r in rounds]
                for a, b in pairs if a in rounds[0]}
        if "hot" in CASES:
            service_case("one hot session", sessions=1)
        if "growth" in CASES:
            for history in (0, 10, 100, 1000, 5000):
                count = min(SESSIONS, max(100, 1_000_000 // max(history, 1)))
                service_case(f"history {history}", sessions=count, history=history)
            # The same with answers that carry only what the write appended: what is
            # left grows with the history only on the provider's side.
            for history in (10, 1000):
                service_case(f"history {history}, delta", sessions=SESSIONS, history=history,
                             query="?view=delta")
            # The most any gateway could do with 1,000-message turns on this harness:
            # wrk, on the service's core, posting straight to the mock a request of the
            # size the service sends the provider, and nothing else. Its rate bounds the
            # service's, whatever the service's own work.
            log("== the provider's request at 1000 messages, straight to the mock")
            results["request 1000"] = wrk(mock.url, ["/v1/chat/completions"],
                                          provider_request(1000), cpu=SERVICE_CPU)
        if "latency" in CASES:
            log("== service: concurrency 1")
            runs = []
            for _ in range(RUNS):
                service = start_service(mock)
                try:
                    ids = make_sessions(service, SESSIONS)
                    runs.append(wrk(service.url, message_paths(ids), short, connections=1))
                finally:
                    service.stop()
            results["service c1"] = median_of(runs)
        if "rate" in CASES:
            service_max = results.get("many, memory", {}).get("rate")
            if service_max is None:
                service_max = service_case("many, memory")["rate"]
            fixed = int(service_max / 2)
            log(f"== fixed rate {fixed}/s (half the service's maximum)")
            relay = start_relay(mock)
            try:
                results["relay at rate"] = oha(oha_bin, relay.url, ["/relay"], short, fixed)
            finally:
                relay.stop()
            service = start_service(mock)
            try:
                ids = make_sessions(service, SESSIONS)
                results["service at rate"] = oha(oha_bin, service.url, message_paths(ids),
                                                 short, fixed)
                # Where the time went, as the service itself saw it during the run.
                results["inside at rate"] = inside(service)
            finally:
                service.stop()
        if "memory" in CASES:
            log("== memory")
            service = start_service(mock)
            try:
                time.sleep(1)
                idle = service.rss_kib()
                count, history = 100, 1000
                make_sessions(service, count, history)
                time.sleep(1)
                full = service.rss_kib()
                results["memory"] = {
                    "idle_mib": idle / 1024,
                    "per_message": (full - idle) * 1024 / (count * history),
                }
            finally:
                service.stop()
        if "soak" in CASES:
            log(f"== soak, {SOAK} s")
            results["soak"] = soak(mock)
    finally:
        mock.stop()
    print_table(results, started_load)


def soak(mock, messages=20):
    """The default store, sessions created, written to and deleted for SOAK seconds by
    bench/soak.rs (on the load core); the service's RSS read every 5 s."""
    service = start_service(mock, store=f"sqlite://{WORK}/soak.db")
    try:
        client = subprocess.Popen(
            ["taskset", "-c", LOAD_CPU, str(ROOT / "target/release/examples/soak"),
             service.url, str(SOAK), str(CONNECTIONS), str(messages)],
            stdout=subprocess.PIPE, text=True)
        samples = []  # (seconds, KiB)
        started = time.time()
        while client.poll() is None:
            samples.append((time.time() - started, service.rss_kib()))
            time.sleep(5)
        counts = json.loads(client.stdout.read())
        if counts["errors"]:
            raise SystemExit(f"the soak saw errors: {counts}")

        def median(start, end):
            """The median RSS read between two fractions of the soak (MiB)."""
            within = [kib for at, kib in samples if SOAK * start <= at <= SOAK * end]
            return statistics.median(within or [samples[-1][1]]) / 1024

        # The allocator's RSS swings by several per cent from one reading to the next
        # (its highest readings too), so two single readings say little; a leak lifts
        # the whole stretch, its median with it. The first quarter is the climb to the
        # plateau.
        return counts | {"messages": messages, "rss_mib": [kib / 1024 for _, kib in samples],
                         "second_quarter_mib": median(0.25, 0.5),
                         "last_quarter_mib": median(0.75, 1.0),
                         "max_mib": max(kib for _, kib in samples) / 1024}
    finally:
        service.stop()


def per_request(cpu_seconds, result, duration=DURATION):
    """CPU microseconds per request of a wrk run of `duration` seconds (a steadier figure
    than the rate on a shared machine: it does not count the time the process waited for
    its core)."""
    return cpu_seconds * 1e6 / (result["rate"] * duration)


HISTOGRAMS = {
    "turn": "text_session_turn_duration_seconds",
    "overhead": "text_session_turn_overhead_seconds",
    "provider": "text_session_provider_request_duration_seconds",
}


def inside(service):
    """p50 and p99 (upper bucket bounds, ms) of the service's own histograms: the time a
    turn held its lock, the part of it that was not the provider call, the provider
    call."""
    host, port = service.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    out = {}
    for key, name in HISTOGRAMS.items():
        buckets = {}
        for labels, count in re.findall(rf'^{name}_bucket{{([^}}]*)}} (\S+)$', text, re.M):
            le = re.search(r'le="([^"]+)"', labels).group(1)
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0) + float(count)
        bounds = sorted(buckets)
        total = buckets[bounds[-1]] if bounds else 0
        for q in (50, 99):
            out[f"{key} p{q}"] = next((b * 1000 for b in bounds if total and buckets[b] >= total * q / 100),
                                      float("nan"))
    return out


def median_of(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def print_table(r, started_load):
    def ratio(a, b):
        return f"{a / b:.0%}" if a is not None and b else "—"

    def rate(name):
        return r.get(name, {}).get("rate")

    lines = [("case", "figure", "compared with", "ratio")]
    if "mock" in r:
        lines.append(("mock straight", f"{rate('mock'):,.0f} req/s", "", ""))
    if "relay" in r:
        lines.append(("bare relay", f"{rate('relay'):,.0f} req/s", "mock", ratio(rate("relay"), rate("mock"))))
    for name in ("many, memory", "many, sqlite", "one hot session"):
        if name in r:
            base = "many, memory" if name == "many, sqlite" else "relay"
            each = r.get("round ratios", {}).get(f"{name} / {base}")
            if each:
                shown = (f"{statistics.median(each):.0%} (rounds: "
                         + ", ".join(f"{x:.0%}" for x in each) + ")")
            else:
                shown = ratio(rate(name), rate(base))
            lines.append((f"/message, {name}", f"{rate(name):,.0f} turns/s", base, shown))
    for name in ("relay", "many, memory", "many, sqlite"):
        if "cpu_us" in r.get(name, {}):
            cpu = r[name]["cpu_us"]
            base = r.get("relay", {}).get("cpu_us") if name != "relay" else None
            lines.append((f"  CPU per request, {name}", f"{cpu:,.0f} µs", "relay" if base else "",
                          f"{cpu / base:.1f}×" if base else ""))
    for history in (0, 10, 100, 1000, 5000):
        name = f"history {history}"
        if name in r:
            lines.append((f"/message, {history} messages of 500 B",
                          f"{rate(name):,.0f} turns/s", "history 10", ratio(rate(name), rate("history 10"))))
            if "full_bytes" in r[name]:
                lines.append((f"  one answer, full view / ?view=delta",
                              f"{r[name]['full_bytes']:,} B / {r[name]['delta_bytes']:,} B", "", ""))
    for history in (10, 1000):
        name = f"history {history}, delta"
        if name in r:
            lines.append((f"/message?view=delta, {history} messages of 500 B",
                          f"{rate(name):,.0f} turns/s", "history 10, delta",
                          ratio(rate(name), rate("history 10, delta"))))
    if "request 1000" in r:
        lines.append(("  the provider's request at 1000 messages, straight to the mock",
                      f"{rate('request 1000'):,.0f} req/s", "history 10, delta",
                      ratio(rate("request 1000"), rate("history 10, delta"))))
    # What 1,000-message turns can be expected to reach: each sends its request (what that
    # costs the sending core, measured just above) and does a turn's work, taken to be a
    # 10-message turn's. Not a strict limit: a turn on a kept history can cost less than
    # that (sending alone, the row above, is the strict one).
    delta_10, delta_1000 = r.get("history 10, delta"), r.get("history 1000, delta")
    if delta_10 and delta_1000:
        lines.append(("  the service's core per turn, 10 / 1000 messages (delta)",
                      f"{delta_10['core_us']:,.0f} µs / {delta_1000['core_us']:,.0f} µs", "", ""))
    if delta_10 and "request 1000" in r:
        send = r["request 1000"]["core_us"]
        bound = 1e6 / (send + delta_10["core_us"])
        lines.append(("  the sending core per request at 1000 messages, straight to the mock",
                      f"{send:,.0f} µs", "", ""))
        lines.append(("  estimate: 1 / (sending the request + a 10-message turn)",
                      f"{bound:,.0f} turns/s", "history 10, delta",
                      ratio(bound, rate("history 10, delta"))))
    for name in ("relay c1", "service c1"):
        if name in r:
            x = r[name]
            added = ""
            if name == "service c1" and "relay c1" in r:
                added = (f"{(x['p50'] - r['relay c1']['p50']) * 1000:+.0f} µs / "
                         f"{(x['p99'] - r['relay c1']['p99']) * 1000:+.0f} µs")
            lines.append((f"{name.split()[0]}, 1 connection, p50 / p99 (median of {RUNS})",
                          f"{x['p50'] * 1000:.0f} µs / {x['p99'] * 1000:.0f} µs",
                          "relay" if added else "", added))
    for name in ("relay at rate", "service at rate"):
        if name in r:
            x = r[name]
            added = ""
            if name == "service at rate" and "relay at rate" in r:
                added = f"p99 {x['p99'] - r['relay at rate']['p99']:+.2f} ms"
            lines.append((f"{name.split()[0]} at {x['rate']:,.0f}/s, p50/p90/p99/p99.9",
                          " / ".join(f"{x[k]:.2f}" for k in ("p50", "p90", "p99", "p99.9")) + " ms",
                          "relay" if added else "", added))
    if "inside at rate" in r:
        x = r["inside at rate"]
        for key, label in (("turn", "turn lock held"), ("overhead", "  of which the service's own work"),
                           ("provider", "  of which the provider call")):
            lines.append((f"  inside, {label}, p50 / p99 (≤ bucket)",
                          f"{x[key + ' p50']:.2f} / {x[key + ' p99']:.2f} ms", "", ""))
    if "memory" in r:
        m = r["memory"]
        lines.append(("memory per stored 500-byte message", f"{m['per_message']:,.0f} B",
                      "the text", f"{m['per_message'] / 500:.2f}×"))
        lines.append(("memory idle (RSS)", f"{m['idle_mib']:.1f} MiB", "", ""))
    if "soak" in r:
        x = r["soak"]
        lines.append((f"soak, {SOAK} s: sessions of {x['messages']} messages come and go",
                      f"{x['turns'] / x['seconds']:,.0f} turns/s, {x['sessions']:,} sessions", "", ""))
        lines.append(("  RSS, median of the second / the last quarter (highest)",
                      f"{x['second_quarter_mib']:.1f} / {x['last_quarter_mib']:.1f} MiB "
                      f"({x['max_mib']:.1f})",
                      "second quarter", f"{x['last_quarter_mib'] / x['second_quarter_mib'] - 1:+.1%}"))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    print()
    print(f"load generator and mock on core {LOAD_CPU}, service on core {SERVICE_CPU}; "
          f"{DURATION} s per case, {CONNECTIONS} connections, {SESSIONS} sessions; "
          f"load average {started_load} at the start, {load_average()} at the end")
    for i, line in enumerate(lines):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    (WORK / "results.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    run()
