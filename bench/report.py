"""The benchmark's results and their plain-text table (for a code block in docs/benchmarks.md)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.failfast import Answer, Distribution, FailFastResult
from bench.load import LoadResult


@dataclasses.dataclass(frozen=True)
class Machine:
    cores: int
    cpu: str
    kernel: str
    python: str

    @classmethod
    def here(cls) -> Machine:
        model = "unknown CPU"
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return cls(
            cores=len(os.sched_getaffinity(0)),
            cpu=model,
            kernel=f"{platform.system()} {platform.release()}",
            python=platform.python_version(),
        )


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Where, when and with which load settings a benchmark ran."""

    machine: Machine
    date: str
    tool: str
    connections: int
    duration_s: float
    warmup_s: float
    platform: str

    @classmethod
    def now(
        cls, tool: str, connections: int, duration_s: float, warmup_s: float, platform: str
    ) -> RunInfo:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return cls(Machine.here(), date, tool, connections, duration_s, warmup_s, platform)


@dataclasses.dataclass(frozen=True)
class Report:
    machine: Machine
    date: str
    tool: str
    connections: int
    duration_s: float
    warmup_s: float
    platform: str
    rows: list[tuple[str, LoadResult]]
    page_items: int
    upstream_calls: dict[str, int | None]
    breaker: FailFastResult
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.rows[1][1].rps / self.rows[0][1].rps

    def to_json(self) -> dict[str, Any]:
        b = self.breaker
        failing = [a for a in b.opening if a.erp_requests]
        return {
            "machine": dataclasses.asdict(self.machine),
            "date": self.date,
            "tool": {
                "name": self.tool,
                "threads": 1,
                "connections": self.connections,
                "duration_s": self.duration_s,
                "warmup_s": self.warmup_s,
            },
            "platform": self.platform,
            "rows": [{"label": label, **dataclasses.asdict(r)} for label, r in self.rows],
            "ratio_gateway_to_envoy_direct": self.ratio,
            "page_items": self.page_items,
            "upstream_calls_during_cached_run": self.upstream_calls,
            "breaker": {
                "reference_cached": dataclasses.asdict(Distribution.of(b.reference)),
                "failing_before_open": dataclasses.asdict(Distribution.of(failing)),
                "open": dataclasses.asdict(Distribution.of(b.open)),
                "opening_requests": [dataclasses.asdict(a) for a in b.opening],
                "erp_requests_opening": b.erp_requests_opening,
                "erp_requests_while_open": b.erp_requests_open,
                "open_answers_not_circuit_open": sum(not a.circuit_open for a in b.open),
                "seconds_open_before_clear": b.seconds_open_before_clear,
                "recovered_after_s": b.recovered_after_s,
                "reference_cpu_s": b.reference_cpu_s,
                "open_cpu_s": b.open_cpu_s,
            },
            "notes": self.notes,
        }


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _dist_row(label: str, d: Distribution, cpu_s: dict[str, float] | None = None) -> str:
    line = f"  {label:<47}{d.n:>5}{d.p50_ms:>9.2f}{d.p99_ms:>9.2f}{d.max_ms:>9.2f}"
    for name, width in (("envoy", 7), ("product", 9)):
        if cpu_s and name in cpu_s:
            line += f"{cpu_s[name] * 1e6 / max(d.n, 1):>{width}.0f}"
    return line


def _opening(answers: list[Answer], erp_attempts: int, shown: int = 10) -> list[str]:
    lines = [f"  opened after {len(answers)} requests ({erp_attempts} ERP attempts in all):"]
    for number, a in enumerate(answers[:shown], 1):
        what = "circuit open" if a.circuit_open else (a.code or "?")
        lines.append(
            f"    #{number:<3}{a.status} {what:<18}{a.erp_requests:>2} ERP attempts{a.ms:>9.1f} ms"
        )
    if len(answers) > shown:
        lines.append(f"    ... {len(answers) - shown} more (see --json)")
    return lines


def load_lines(rows: Sequence[tuple[str, LoadResult]], ratio: bool = False) -> list[str]:
    """Rate, latency and non-2xx of each row; with ratio, each rate over the first row's."""
    lines = [f"{'':<57}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'non-2xx':>9}"]
    lines[0] += f"{'ratio':>8}" if ratio else ""
    for label, row in rows:
        lines.append(
            f"{label:<57}{_n(row.rps):>8}{row.p50_ms:>9.2f}{row.p99_ms:>9.2f}{row.non_2xx:>9}"
        )
        lines[-1] += f"{row.rps / rows[0][1].rps:>8.3f}" if ratio else ""
        if row.socket_errors or row.timeouts:
            lines.append(f"  socket errors {row.socket_errors}, timeouts {row.timeouts}")
    return lines


def _load_lines(r: Report) -> list[str]:
    cached = r.rows[1][1]
    calls = ", ".join(f"{name} {'n/a' if n is None else n}" for name, n in r.upstream_calls.items())
    return [
        *load_lines(r.rows),
        f"ratio gateway / Envoy direct: {r.ratio:.3f} ({r.ratio:.1%})",
        f"cached page: {r.page_items} products, {cached.bytes_per_response / 1024:.1f} KiB; "
        f"upstream requests during the row: {calls}",
    ]


def cpu_lines(rows: Sequence[tuple[str, LoadResult]], names: Sequence[str]) -> list[str]:
    """CPU per request of each named process the bench could see (rows labelled in at most
    29 characters), and what else kept the cores busy."""
    names = [n for n in names if any(n in row.cpu_s for _, row in rows)]
    width = {n: max(9, len(n) + 1) for n in names}
    lines = [f"{'CPU per request (us, /proc)':<31}" + "".join(f"{n:>{width[n]}}" for n in names)]
    lines[0] += f"{'busy':>7}{'other':>7}{'steal':>7}"
    for label, row in rows:
        per = row.cpu_us_per_request()
        cells = "".join(f"{f'{per[n]:.0f}' if n in per else '-':>{width[n]}}" for n in names)
        lines.append(f"  {label:<29}{cells}" + "".join(f"{c:>7.2f}" for c in row.cores()))
    return [
        *lines,
        "  busy/other/steal: average cores busy; busy outside the processes listed (kernel",
        "  network work, other programs); taken by the hypervisor",
    ]


def _breaker_lines(b: FailFastResult) -> list[str]:
    failing = [a for a in b.opening if a.erp_requests]
    circuit_open = sum(a.circuit_open for a in b.open)
    recovered = "never" if b.recovered_after_s is None else f"{b.recovered_after_s:.1f} s"
    header = f"  {'':<47}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    if "product" in b.open_cpu_s:
        header += f"{'envoy':>7}{'product':>9}"
    return [
        "breaker open: fail-fast latency (ERP down; a fresh X-Tenant-Id per request, so no cache",
        "can answer; one sequential client on a keep-alive connection; CPU in us per request)",
        header,
        _dist_row("failed against the ERP before it opened", Distribution.of(failing)),
        _dist_row("answered by the open breaker (503)", Distribution.of(b.open), b.open_cpu_s),
        _dist_row(
            "reference: cached GET /v1/products, same client",
            Distribution.of(b.reference),
            b.reference_cpu_s,
        ),
        *_opening(b.opening, b.erp_requests_opening),
        f"  while open: {b.erp_requests_open} ERP requests; {circuit_open}/{len(b.open)} answers "
        f"said circuit open; faults cleared {b.seconds_open_before_clear:.1f} s after opening",
        f"  closed again (first 200 for a fresh tenant) {recovered} after it opened",
    ]


def header_lines(title: str, r: Report | RunInfo) -> list[str]:
    """The title, then the machine, date, load settings and platform a run had."""
    m = r.machine
    return [
        title,
        f"machine   {m.cores} cores (nproc), {m.cpu}; {m.kernel}; Python {m.python}",
        f"date      {r.date}",
        f"load      {r.tool}, 1 thread, {r.connections} connections, {r.duration_s:g} s per row "
        f"after a {r.warmup_s:g} s warm-up;",
        f"          wrk shares the {m.cores} cores with Envoy and the services it measures",
        f"platform  {r.platform}",
    ]


def render(r: Report) -> str:
    """The report as a compact plain-text table."""
    lines = [
        *header_lines("Product gateway benchmark (bench/products.py)", r),
        "",
        *_load_lines(r),
        "",
        *cpu_lines([(row.path, row) for _, row in r.rows], ("envoy", "product", "wrk")),
        "",
        *_breaker_lines(r.breaker),
    ]
    for note in r.notes:
        lines += ["", *textwrap.wrap(note, 96, initial_indent="* ", subsequent_indent="  ")]
    return "\n".join(lines)
