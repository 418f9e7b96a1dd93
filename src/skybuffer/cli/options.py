"""Options every command shares, and the helpers that turn them into settings and output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from skybuffer.settings import Settings, load_settings

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="SKYBUFFER_DATA_DIR", help="Holds redis, lake, spool, "
                 "reports (default ./var).", show_default=False),
]  # fmt: skip
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", envvar="SKYBUFFER_CONFIG", help="TOML settings file."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")]
SourceOpt = Annotated[
    str,
    typer.Option("--source", help="jetstream (live Bluesky; --url for one server), or offline: "
                 "synthetic (realistic generated events) or replay (--file)."),
]  # fmt: skip
RateOpt = Annotated[
    float | None,
    typer.Option("--rate", help="Events per second (0 = as fast as possible; default 1500)."),
]
SeedOpt = Annotated[
    int | None,
    typer.Option("--seed", help="For --source synthetic: the same seed makes the same events "
                 "(default 42)."),
]  # fmt: skip
CountOpt = Annotated[
    int | None,
    typer.Option("--count", min=1, help="Stop after N more events, counted from where the "
                 "source resumes. Only valid events count: dead letters are kept too, and "
                 "reported apart."),
]  # fmt: skip
FileOpt = Annotated[Path | None, typer.Option("--file", help="JSONL or JSONL.zst to replay.")]
UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="One Jetstream server (ws://... or wss://.../subscribe) instead "
                 "of the configured hosts, e.g. a local `skybuffer replay-server`."),
]  # fmt: skip
CollectionsOpt = Annotated[
    str | None,
    typer.Option("--collections", help="Which records to ask Jetstream for: collection names, "
                 "comma-separated (e.g. app.bsky.feed.like), or 'all' (default: posts, likes, "
                 "reposts, follows, blocks)."),
]  # fmt: skip


def split_collections(value: str | None) -> list[str] | None:
    """--collections: None keeps the setting, 'all' means no filter."""
    if value is None:
        return None
    names = [c.strip() for c in value.split(",") if c.strip()]
    return [] if names == ["all"] else names


def settings_for(data_dir: Path | None, config: Path | None, **overrides: Any) -> Settings:
    return load_settings(data_dir=data_dir, config=config, **overrides)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
