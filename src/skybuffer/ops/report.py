"""Reports of the operations toolkit: one shape for every command, three renderings.

Every ops command (audit, bench redis, capacity, chaos) returns a ``Report``: the figures
as a JSON-ready dict, one or more tables of rows, notes on how to read them, and plots.
``Report.write`` puts ``{command}-{UTC timestamp}.md`` / ``.json`` / ``.png`` under
``{data_dir}/reports/``; ``print_report`` shows the same tables on the console. One shape
means the Markdown a person reads, the JSON a script reads and the console summary never
disagree.

Secrets never reach a report: commands put no password or URL into ``data``, and
``redact`` drops any key that looks like one, as a safety net.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from skybuffer.ops.harness import machine_line

SECRET_WORDS = ("password", "requirepass", "masterauth", "secret")

# The seed's figures and MET-27 targets every report compares with.
SEED_OPS_PER_S = 1_587
SEED_JSON_MEMORY_PERCENT = 78.5  # 2.7M plain-JSON events in 2 GB
SEED_EVENTS_8H = 2_700_000
MET27 = {"ops_per_s": 1_000, "p50_ms": 10.0, "p95_ms": 50.0, "maxmemory_bytes": 2 * 1024**3}

# "8 hours of events": the buffer must hold BUFFER_HOURS at a stated rate. Every report
# that says "8 hours" counts them with ``events_in`` (audit and capacity agree).
BUFFER_HOURS = 8
STEADY_RATE = 350.0
"""ev/s, Jetstream's whole network in mid-2026 (docs/JETSTREAM.md, "Event rates")."""
SEED_RATE = SEED_EVENTS_8H / (BUFFER_HOURS * 3600)  # the seed's 2.7M in 8 h: 93.75 ev/s
# Real rates (docs/JETSTREAM.md, "Event rates"): mid-2026 steady, the 2025 average.
RATES = {"seed (2.7M / 8 h)": SEED_RATE, "mid-2026 steady": STEADY_RATE, "2025 average": 1_000.0}


def events_in(hours: float = BUFFER_HOURS, rate: float = STEADY_RATE) -> int:
    """Events that arrive in ``hours`` at ``rate`` ev/s: 8 h at 350 ev/s = 10,080,000."""
    return round(hours * 3600 * rate)


def eight_hours(rate: float = STEADY_RATE) -> str:
    """How reports name 8 hours of events: ``8 h at 350 ev/s (10,080,000 events)``."""
    return f"{BUFFER_HOURS} h at {rate:,.0f} ev/s ({events_in(BUFFER_HOURS, rate):,} events)"


@dataclass
class Table:
    """Rows of one table; the keys of the first row are the columns."""

    title: str
    rows: list[dict[str, Any]]


@dataclass
class Plot:
    """A PNG: ``draw(path)`` writes it (matplotlib, Agg backend)."""

    name: str
    draw: Callable[[Path], None]


@dataclass
class Report:
    """What an ops command found, ready to be written and shown."""

    command: str
    title: str
    data: dict[str, Any]
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    exit_code: int = 0
    paths: dict[str, str] = field(default_factory=dict)

    def write(self, reports_dir: Path) -> Report:
        """Write the Markdown, JSON and PNG files; their paths go into ``paths``."""
        reports_dir.mkdir(parents=True, exist_ok=True)
        base = _unique_base(reports_dir, self.command)
        for index, plot in enumerate(self.plots):
            path = base.with_name(base.name + ("" if index == 0 else f"-{plot.name}") + ".png")
            plot.draw(path)
            self.paths[plot.name] = str(path)
        self.paths["markdown"] = str(base.with_suffix(".md"))
        self.paths["json"] = str(base.with_suffix(".json"))
        Path(self.paths["markdown"]).write_text(self.markdown())
        Path(self.paths["json"]).write_text(json.dumps(self.as_json(), indent=2, default=str))
        return self

    def as_json(self) -> dict[str, Any]:
        return redact({"command": self.command, **self.data, "report_files": self.paths})

    def markdown(self) -> str:
        lines = [f"# {self.title}", "", f"Generated {utc_now()} · machine {machine_line()}", ""]
        for table in self.tables:
            lines += [f"## {table.title}", "", md_table(table.rows), ""]
        if self.notes:
            lines += ["## How to read this", ""] + [f"- {note}" for note in self.notes] + [""]
        for name, path in self.paths.items():
            if path.endswith(".png"):
                lines += [f"![{name}]({Path(path).name})", ""]
        figures = json.dumps(redact(self.data), indent=2, default=str)
        lines += ["## Figures (JSON)", "", "```json", figures, "```", ""]
        return "\n".join(lines)


def _unique_base(directory: Path, command: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    base, n = directory / f"{command}-{stamp}", 1
    while base.with_suffix(".json").exists():
        n += 1
        base = directory / f"{command}-{stamp}-{n}"
    return base


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def redact(value: Any) -> Any:
    """Drop keys that name a secret, at any depth (a safety net: none should be there)."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if not _secret(str(k))}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _secret(key: str) -> bool:
    lowered = key.lower()
    return lowered == "url" or any(word in lowered for word in SECRET_WORDS)


def md_table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    columns = list(rows[0])
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        out.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def target_of(client: redis.Redis) -> dict[str, Any]:
    """Where a client points and what runs there: host, port, version (no credentials)."""
    kwargs = client.connection_pool.connection_kwargs
    info = client.info("server")
    return {
        "host": kwargs.get("host", "?"),
        "port": kwargs.get("port", "?"),
        "redis_version": info.get("redis_version"),
    }


def print_report(report: Report) -> None:
    """The console summary: the tables, the verdict line and where the files are."""
    from skybuffer.console import console, figures_table

    for table in report.tables:
        console.print(figures_table(table.title, table.rows))
    for note in report.notes[:3]:
        console.print(f"[dim]· {note}[/]")
    for name, path in report.paths.items():
        console.print(f"[dim]{name}: {path}[/]")


@contextmanager
def progress(total: int, description: str, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar; yields ``advance_to(done)`` (a no-op when disabled)."""
    if not enabled:
        yield lambda done: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from skybuffer.console import err_console

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, nearest rank."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return float(sorted_values[rank])


def verdict(ok: bool, warn: bool = False) -> str:
    return "PASS" if ok else ("WARN" if warn else "FAIL")
