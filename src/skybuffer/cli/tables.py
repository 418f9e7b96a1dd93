"""How the CLI shows the pipeline: the status table, Redis memory, the stack's programs,
query results that fit (or one block per row), and the one-line live status."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from skybuffer.console import console, human_bytes
from skybuffer.lake.query import TypeFigures
from skybuffer.observability.status import BufferStatus


def status_table(status: BufferStatus) -> Table:
    table = Table(title="skybuffer buffer", show_footer=True)
    table.add_column("type", footer="total")
    table.add_column("events", justify="right", footer=f"{status.events:,}")
    table.add_column("batches", justify="right")  # stream entries: one compressed batch each
    table.add_column("oldest age", justify="right")
    lake = status.lake
    if lake is not None:
        table.title = "skybuffer buffer · lake"
        table.add_column("files", justify="right", footer=f"{lake.files:,}")
        table.add_column("rows", justify="right", footer=f"{lake.rows:,}")
        table.add_column("bytes", justify="right", footer=human_bytes(lake.bytes))
        table.add_column("newest hour", no_wrap=True)
    for type_, stream in status.streams.items():
        age = f"{stream.oldest_age_seconds:.1f} s"
        cells = [type_, f"{stream.events:,}", f"{stream.entries:,}", age]
        if lake is not None:
            cells += _lake_cells(lake.types.get(type_))
        table.add_row(*cells)
    table.caption = (
        f"Redis {redis_memory(status)} · dead letters {status.deadletter:,} · "
        f"waiting on disk for Redis {human_bytes(status.spool_bytes)}"
    )
    if lake is not None:
        table.caption += f" · lake {lake.root}" + (f" ({lake.error})" if lake.error else "")
    if status.deadletter_events:
        reasons = ", ".join(f"{r} {n:,}" for r, n in status.deadletter_events.items())
        table.caption += (
            f"\ndead-lettered events by reason: {reasons} (`skybuffer deadletter list`)"
        )
    for role, owner in status.owners.items():
        table.caption += f"\n{role}: {owner}"
    return table


def _lake_cells(part: TypeFigures | None) -> list[str]:
    if part is None:
        return ["-"] * 4
    return [f"{part.files:,}", f"{part.rows:,}", human_bytes(part.bytes), part.newest_hour or "-"]


def redis_memory(status: BufferStatus) -> str:
    """Used memory and the share of maxmemory, or that Redis has no limit (maxmemory 0)."""
    used = human_bytes(status.used_memory)
    if not status.maxmemory:
        return f"{used} (no maxmemory limit)"
    return f"{used} of {human_bytes(status.maxmemory)} ({status.memory_fraction:.1%})"


def stack_table(info: dict[str, Any]) -> Table:
    """`skybuffer stack status`: one row per program, then where and Slack's state."""
    table = Table(title="skybuffer monitoring stack")
    for column in ("program", "state", "pid", "url", "log"):
        table.add_column(column, overflow="fold")
    for name, part in info.get("components", {}).items():
        state = "ready" if part.get("ready") else "starting" if part.get("running") else "stopped"
        if part.get("binary") is None:
            state = "not installed"
        pid = part.get("pid")
        table.add_row(name, state, "-" if pid is None else str(pid), part["url"], part["log"])
    table.caption = f"files in {info.get('stack_dir')}\nSlack alerts: {info.get('slack')}"
    return table


MIN_COLUMN_WIDTH = 8
"""Below this a column folds its values into unreadable slivers: rows go vertical."""
WIDE_HINT = "too wide for {width} columns, so one block per row; --json or --csv for all of it"


def rows_table(
    columns: list[str], rows: list[tuple[Any, ...]], width: int | None = None
) -> RenderableType:
    """Query results as they are (NULL shown as such): a table when every column gets a
    readable width in ``width`` (the console's by default), else one block per row, the
    column names down the left, with a hint to --json / --csv."""
    cells = [["NULL" if v is None else str(v) for v in row] for row in rows]
    width = width or console.width
    if _fits(columns, cells, width):
        return _wide_table(columns, cells)
    return _vertical(columns, cells, WIDE_HINT.format(width=width))


def _fits(columns: list[str], cells: list[list[str]], width: int) -> bool:
    """Each column at its natural width, or at least its name and MIN_COLUMN_WIDTH, plus
    Rich's borders and padding (3 per column, 1 more at the edge)."""
    needed = 1 + 3 * len(columns)
    for index, name in enumerate(columns):
        natural = max([len(name), *(len(row[index]) for row in cells)])
        needed += min(natural, max(MIN_COLUMN_WIDTH, len(name)))
    return needed <= width


def _wide_table(columns: list[str], cells: list[list[str]]) -> Table:
    table = Table(show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*row)
    table.caption = f"{len(cells):,} rows"
    return table


def _vertical(columns: list[str], cells: list[list[str]], hint: str) -> Group:
    """One block per row: a rule naming the row, then ``column  value`` lines."""
    blocks: list[RenderableType] = []
    for number, row in enumerate(cells, 1):
        block = Table.grid(padding=(0, 2))
        block.add_column(style="bold", no_wrap=True)
        block.add_column(overflow="fold")
        for name, value in zip(columns, row, strict=True):
            block.add_row(name, value)
        blocks += [Rule(f"row {number:,}", align="left"), block]
    blocks.append(Text(f"{len(cells):,} rows ({hint})", style="dim"))
    return Group(*blocks)


def live_line(rate: float, status: BufferStatus, extra: str = "") -> str:
    """One line: events/s, buffer depth per type, Redis memory %."""
    depth = " ".join(f"{t}={s.events:,}" for t, s in status.streams.items())
    memory = f"{status.memory_fraction:5.1%}" if status.maxmemory else "(no limit)"
    line = f"{rate:8,.0f} ev/s │ buffer {depth} │ redis {memory}"
    return f"{line} │ {extra}" if extra else line
