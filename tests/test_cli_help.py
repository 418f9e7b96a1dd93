"""Help reads like a manual and output is readable: every command's help at 80 and 200
columns, the command order, `stack status` as a table, a Redis without maxmemory, and log
lines printed above the live status line.

Also covers: skybuffer.cli.apps, skybuffer.cli.dataflow, skybuffer.cli.ops, skybuffer.cli.stack,
skybuffer.cli.chaos, skybuffer.cli.bench,
skybuffer.cli.options, skybuffer.cli.tables, skybuffer.cli.live, skybuffer.console,
skybuffer.observability.status (through the behaviour above).
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
import typer.rich_utils
from rich.console import Console
from rich.live import Live
from typer.testing import CliRunner

from skybuffer.cli import app
from skybuffer.cli.live import logs_above
from skybuffer.cli.tables import status_table
from skybuffer.observability.status import BufferStatus, StreamStatus
from skybuffer.settings import load_settings

JARGON = ("<bool>", "list[", "{", "the seed", "seed's", "entries", "wantedCollections")


def _commands() -> Iterator[tuple[list[str], object]]:
    def walk(command: object, path: list[str]) -> Iterator[tuple[list[str], object]]:
        yield path, command
        names = getattr(command, "commands", {})
        for name in command.list_commands(None) if names else []:  # type: ignore[attr-defined]
            yield from walk(names[name], [*path, name])

    return walk(typer.main.get_command(app), [])


COMMANDS = list(_commands())


def _help(path: list[str], width: int, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", width)  # read once, at import
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "root")
def test_help_has_no_internal_words_and_paragraphs_flow(
    path: list[str], width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _help(path, width, monkeypatch)
    for word in JARGON:
        assert word not in text, f"{word!r} in `skybuffer {' '.join(path)} --help`"
    if width == 200:  # each paragraph of the description on one line: no hard breaks
        command = dict((tuple(p), c) for p, c in COMMANDS)[tuple(path)]
        flat = re.sub(r"\s+", " ", text)
        for paragraph in (getattr(command, "help", None) or "").split("\n\n"):
            words = re.sub(r"\s+", " ", paragraph.replace("`", "")).strip()
            if words and len(words) < 190:
                assert any(words in line for line in text.splitlines()), (path, words)
                assert words in flat


def test_run_is_listed_first_and_every_command_says_what_it_is_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _help([], 100, monkeypatch)
    listed = re.findall(r"^│ ([a-z][a-z-]*) {2,}\S", text, flags=re.MULTILINE)
    assert listed[0] == "run"
    assert {"ingest", "write", "status", "query", "deadletter", "redis", "chaos"} <= set(listed)
    for path, command in COMMANDS:
        first = (getattr(command, "help", None) or "").strip().split("\n\n")[0]
        assert len(first) > 20 and first.rstrip().endswith("."), path


def test_stack_status_prints_a_table_and_json(tmp_path: Path) -> None:
    load_settings(data_dir=tmp_path / "var").claim_ports()  # a pipeline's data dir
    runner = CliRunner()
    args = ["stack", "status", "--data-dir", str(tmp_path / "var")]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    assert "{" not in table.output and "program" in table.output
    assert "prometheus" in table.output and "Slack alerts" in table.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert set(json.loads(as_json.output)) == {"stack_dir", "components", "slack"}


def _rendered(renderable: object, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_status_of_a_redis_without_maxmemory_says_no_limit() -> None:
    status = BufferStatus(streams={"likes": StreamStatus(3, 1, 2.0)}, used_memory=2048)
    text = _rendered(status_table(status))
    assert "no maxmemory limit" in text and "0.0%" not in text and "of 0 B" not in text
    limited = BufferStatus(used_memory=1024**2, maxmemory=4 * 1024**2)
    assert "1.0 MB of 4.0 MB (25.0%)" in _rendered(status_table(limited))


def test_a_fix_command_in_a_narrow_table_wraps_whole() -> None:
    from skybuffer.console import figures_table

    fix = "redis-cli CONFIG SET maxmemory-policy-something-very-long noeviction"
    text = _rendered(figures_table("audit", [{"fix": fix}]), width=30)
    assert "…" not in text
    characters = "".join(c for c in text.split("fix", 1)[1] if c.isalnum() or c == "-")
    assert characters == "".join(c for c in fix if c.isalnum() or c == "-")


def test_a_log_line_prints_above_the_live_line_never_glued_to_it() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    handler = logging.StreamHandler(io.StringIO())  # stands for logging's stderr handler
    root = logging.getLogger()
    root.addHandler(handler)
    stderr = handler.stream
    try:
        import sys

        saved, sys.stderr = sys.stderr, stderr
        try:
            with logs_above(stderr, Live("LIVE-LINE", console=console, auto_refresh=False)):
                logging.getLogger("skybuffer.test").warning("a log line")
        finally:
            sys.stderr = saved
    finally:
        root.removeHandler(handler)
    assert handler.stream is stderr  # given back
    assert stderr.getvalue() == ""  # nothing went around the live display
    lines = out.getvalue().replace("\r", "\n").splitlines()
    assert any(line.strip().endswith("a log line") for line in lines)
    assert not any("LIVE-LINE" in line and "a log line" in line for line in lines)
