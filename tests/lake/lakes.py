"""Helpers of the lake tests: a lake the real pipeline wrote (replay source, Redis, the
DataWriter), every row's identity counted as a reader sees it, `skybuffer lake` run as
its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES
from skybuffer.events import identity
from skybuffer.lake.manifest import read_manifest
from skybuffer.lake.query import run_query
from skybuffer.lake.schema import HOUR_US
from skybuffer.pipeline.datawriter import drain_once
from skybuffer.pipeline.runner import build_ingester
from skybuffer.settings import Settings
from skybuffer.testbed.generator import generate

T0 = 1_779_717_600_000_000  # 2026-05-25T14:00Z, long past: ready to seal
Identity = tuple[object, ...]


def buffer_and_drain(settings: Settings, tmp_path: Path, lines: list[bytes], name: str) -> None:
    """Lines through the real pipeline: the replay source, Redis, the DataWriter."""
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    client = ManagedRedis(settings.redis, settings.redis_dir).client("admin")
    client.delete("skybuffer:cursor:replay")  # each file is a new replay from its start
    build_ingester(settings, "replay", file=path).run()
    assert drain_once(settings).ok


def two_hours(duplicates: int = 300) -> list[bytes]:
    """Events of two past hours, and copies of some of them (an upstream replay)."""
    lines = generate(3, 4_000, T0) + generate(4, 4_000, T0 + HOUR_US)
    return lines + lines[:duplicates]


IDENTITY_COLUMNS = ["did", "kind", "collection", "rkey", "rev", "operation", "time_us"]


def lake_identities(settings: Settings) -> Counter[Identity]:
    """Every row's identity, counted, over the files a reader of each hour reads: a
    sealed hour's listed and late files (never the ones its seal replaced), an open
    hour's all."""
    found: Counter[Identity] = Counter()
    for directory in {p.parent for p in Path(str(settings.lake.root)).rglob("*.parquet")}:
        manifest = read_manifest(str(directory))
        replaced = set(manifest.replaced) if manifest else set()
        for file in directory.glob("*.parquet"):
            if file.name in replaced:
                continue
            for row in pq.read_table(file, columns=IDENTITY_COLUMNS).to_pylist():
                found[tuple(row.values())] += 1
    return found


def queried_events(settings: Settings) -> int:
    """Rows `skybuffer query` counts over every type (it reads sealed hours through
    their manifests)."""
    union = " UNION ALL ".join(f"SELECT count(*) AS n FROM {t}" for t in TYPES)
    result = run_query(settings.lake, f"SELECT sum(n) FROM ({union})")
    return int(result.rows[0][0])


def expected(lines: list[bytes]) -> int:
    return len({identity(orjson.loads(line)) for line in lines})


def run_lake(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "skybuffer", "lake", *args]
    environ = {
        **os.environ,
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
        "SKYBUFFER_METRICS__INGEST_PORT": "0",
        "SKYBUFFER_METRICS__WRITER_PORT": "0",
        **env,
    }
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=300)
