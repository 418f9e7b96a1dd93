"""The terminal: skybuffer's two Rich consoles (stdout for results, stderr for what a
person should read), byte sizes for people, and a table of figures."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def figures_table(title: str, rows: list[dict[str, Any]]) -> Table:
    """A table of dict rows with the keys of the first row as columns."""
    table = Table(title=title)
    if not rows:
        return table
    for key in rows[0]:
        number = isinstance(rows[0][key], int | float)
        table.add_column(str(key), justify="right" if number else "left", overflow="fold")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    return table
