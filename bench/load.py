"""wrk as the load generator: fixed connections and duration, percentiles from its Lua hook.

wrk keeps its HdrHistogram in microseconds; the `done` hook below prints the
summary as one JSON line, so nothing depends on wrk's human-readable output.
Status errors are what wrk counts as such: HTTP statuses of 400 and above.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.launcher import ROOT, infra
from services.launcher.edge_limits import EdgeLimits, Quota
from services.launcher.platform import LauncherConfig, Platform, State

INSTALL_HINT = (
    "wrk (the HTTP load generator) is not on PATH; install it with\n"
    "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
    "  macOS:         brew install wrk\n"
    "then run the benchmark again."
)
MARKER = "BENCH_JSON "
MACHINE_KEYS = frozenset({"machine", "steal"})
_LUA = """
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
    '"socket_errors":%d,"timeouts":%d,"p50_us":%.1f,"p90_us":%.1f,' ..
    '"p99_us":%.1f,"max_us":%.1f,"mean_us":%.1f}\\n',
    "{marker}", summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write, e.timeout, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


# Limits far above what one machine's load can reach: every check at the edge still
# runs (route buckets, the per-address and per-user quotas, the rate-limit service on
# login and register), but none refuses a request.
HIGH_LIMITS_ENV = {
    "RATELIMIT_RULES": "generic_key:login,remote_address=1000000/second; "
    "generic_key:register,remote_address=1000000/second"
}
HIGH_LIMITS = EdgeLimits(
    route_rps=1000000, credentials_rps=1000, address=Quota(1000000), user=Quota(1000000)
)


def nearest_rank(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of values sorted ascending (NaN when there are none)."""
    if not ordered:
        return math.nan
    return ordered[max(math.ceil(percent / 100 * len(ordered)) - 1, 0)]


def open_many_files() -> None:
    """The soft open-file limit raised to the hard one: a thousand client connections,
    and as many in Envoy and the services, need more than the usual 1,024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@contextmanager
def own_platform(
    service_env: Mapping[str, str] | None = None,
    edge_limits: EdgeLimits | None = None,
    *,
    event_workers: int = 1,
    replicas: Mapping[str, int] | None = None,
    log_level: str = "WARNING",
    service_tls: bool = True,
) -> Iterator[State]:
    """The whole platform on free ports in a run directory of this process, removed after.

    LOG_LEVEL=WARNING by default: the services write no per-request log line.
    `service_tls` as `./shop up` (mTLS between Envoy and the services) unless False."""
    # One run directory per platform: a bench may run one of each kind side by side.
    run_dir = ROOT / ".run" / f"bench-{os.getpid()}{'' if service_tls else '-plaintext'}"
    # Port 0: a free port for every component, so a `./shop up` may run alongside.
    config = LauncherConfig.on_free_ports(
        run_dir,
        replicas={"event-worker": event_workers, **(replicas or {})},
        log_level=log_level,
        service_env=service_env or {},
        edge_limits=edge_limits or EdgeLimits(),
        service_tls=service_tls,
    )
    launched = Platform(config)
    try:
        yield launched.up()
    finally:
        launched.down()
        shutil.rmtree(infra.pg_data_dir(run_dir), ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)


class LoadError(RuntimeError):
    """wrk is missing, failed, or printed no summary."""


@dataclass(frozen=True)
class LoadResult:
    """One wrk run: throughput, latency in milliseconds, errors and CPU seconds spent."""

    path: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    non_2xx: int
    socket_errors: int
    timeouts: int
    bytes_per_response: float
    cpu_s: dict[str, float] = field(default_factory=dict)

    def cpu_us_per_request(self) -> dict[str, float]:
        """CPU microseconds per request of each measured process (wrk included)."""
        return {
            name: s * 1e6 / max(self.requests, 1)
            for name, s in self.cpu_s.items()
            if name not in MACHINE_KEYS
        }

    def cores(self) -> tuple[float, float, float]:
        """Cores on average: busy, busy outside the measured processes, stolen by the host."""
        machine = self.cpu_s.get("machine", 0.0)
        measured = sum(s for name, s in self.cpu_s.items() if name not in MACHINE_KEYS)
        other = max(machine - measured, 0.0)
        return (
            machine / self.duration_s,
            other / self.duration_s,
            self.cpu_s.get("steal", 0.0) / self.duration_s,
        )


def wrk_binary() -> str:
    """The wrk executable, or LoadError with how to install it."""
    found = shutil.which("wrk")
    if found is None:
        raise LoadError(INSTALL_HINT)
    return found


def wrk_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    words = (result.stdout or result.stderr).split()
    return " ".join(words[:2]) if words else "wrk"


def _lua(headers: Mapping[str, str]) -> str:
    lines = "\n".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items())
    return _LUA.replace("{headers}", lines).replace("{marker}", MARKER)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and every process under it, from
    /proc (0 when unreadable): the live ones', and the reaped children's the kernel
    adds to their parent. PostgreSQL serves each connection from a backend process
    forked by its postmaster, so the postmaster's pid meters the database's work."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                own = int(stat[11]) + int(stat[12])
                children.setdefault(int(stat[1]), []).append((int(entry.name), own))
    under = [pid]
    while under:
        for child, own in children.get(under.pop(), []):
            ticks += own
            under.append(child)
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_s() -> tuple[float, float]:
    """CPU seconds of all cores so far: busy (all but idle, iowait, steal), and stolen."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    fields += [0] * (8 - len(fields))
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:7]) - fields[3] - fields[4]) / tick, fields[7] / tick


def own_cpu_s() -> float:
    """User + system CPU seconds so far of this process, every thread of it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def cpu_meter(pids: Mapping[str, int]) -> Iterator[dict[str, float]]:
    """CPU seconds spent inside by each named process, by the children reaped meanwhile
    (as "wrk"), by the whole machine ("machine") and stolen from it by the host ("steal")."""
    spent: dict[str, float] = {}
    before = {name: _proc_cpu_s(pid) for name, pid in pids.items()}
    children, (machine, steal) = _children_cpu_s(), _machine_s()
    yield spent
    spent.update({name: _proc_cpu_s(pid) - before[name] for name, pid in pids.items()})
    spent["wrk"] = _children_cpu_s() - children
    machine_now, steal_now = _machine_s()
    spent["machine"], spent["steal"] = machine_now - machine, steal_now - steal


def run_wrk(
    binary: str,
    url: str,
    *,
    headers: Mapping[str, str],
    connections: int,
    duration_s: float,
    pids: Mapping[str, int] | None = None,
) -> LoadResult:
    """One wrk run with a single thread (the machine's cores belong to the system under test)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-") as script:
        script.write(_lua(headers))
        script.flush()
        argv = [binary, "-t", "1", "-c", str(connections), "-d", f"{duration_s:g}s",
                "--timeout", "10s", "-s", script.name, url]  # fmt: skip
        with cpu_meter(pids or {}) as cpu:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith(MARKER)]
    if result.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({result.returncode}): {result.stderr or result.stdout}")
    raw = json.loads(lines[-1][len(MARKER) :])
    seconds = raw["duration_us"] / 1e6
    requests = raw["requests"]
    return LoadResult(
        path=urllib.parse.urlsplit(url).path,
        connections=connections,
        duration_s=seconds,
        requests=requests,
        rps=requests / seconds,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        mean_ms=raw["mean_us"] / 1000,
        non_2xx=raw["status_errors"],
        socket_errors=raw["socket_errors"],
        timeouts=raw["timeouts"],
        bytes_per_response=raw["bytes"] / max(requests, 1),
        cpu_s=cpu,
    )


def warm_up(
    binary: str, url: str, *, headers: Mapping[str, str], connections: int, duration_s: float
) -> LoadResult | None:
    """An unmetered run before a measured one (None when duration_s is 0)."""
    if not duration_s:
        return None
    progress(f"warm-up {urllib.parse.urlsplit(url).path} for {duration_s:g} s")
    return run_wrk(binary, url, headers=headers, connections=connections, duration_s=duration_s)


def measure(
    binary: str,
    url: str,
    *,
    headers: Mapping[str, str],
    connections: int,
    warmup_s: float,
    duration_s: float,
    pids: Mapping[str, int] | None = None,
) -> LoadResult:
    """A warm-up run, then the measured one with the CPU of `pids` metered."""
    warm_up(binary, url, headers=headers, connections=connections, duration_s=warmup_s)
    progress(f"measuring {urllib.parse.urlsplit(url).path} for {duration_s:g} s")
    return run_wrk(
        binary, url, headers=headers, connections=connections, duration_s=duration_s, pids=pids
    )
