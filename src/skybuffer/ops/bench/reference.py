"""The in-run reference of ``bench write``: the Arrow-native path over the same events.

``bench write`` would be a bare figure that only compares with itself on the same
machine. So before the drain, a child process (``python -m skybuffer.ops.bench.reference``)
exports the buffered events of each type from the scratch Redis as NDJSON files (not
timed), then times ``pyarrow.json.read_json`` + ``pyarrow.parquet.write_table`` of
each file with the lake's compression: no Redis, no per-event validation, no exactly-once
bookkeeping. ``events_per_s / reference_events_per_s`` is then a ratio that means the
same on any machine. It runs in its own process so that its heap never counts in the
writer's peak RSS; its own peak is reported beside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import redis

from skybuffer.constants import TYPES
from skybuffer.errors import SkybufferError
from skybuffer.privilege import skybuffer_env
from skybuffer.settings import Settings, load_settings

PAGE_ENTRIES = 200
"""Stream entries per XRANGE call of the export."""


def run_reference(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Run the reference in a child process on the events buffered now; its figures."""
    env = {
        **skybuffer_env(),
        "SKYBUFFER_DATA_DIR": str(settings.data_dir),
        "SKYBUFFER_REDIS__PORT": str(settings.redis.port),
    }
    command = [
        sys.executable,
        "-m",
        "skybuffer.ops.bench.reference",
        str(workdir),
        settings.lake.compression,
        str(settings.lake.compression_level),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SkybufferError(f"bench: the reference run failed: {done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def export_ndjson(settings: Settings, workdir: Path) -> dict[str, Path]:
    """Each type's buffered events, one per line, in stream order (read, not consumed)."""
    from skybuffer.buffer.codec import Decoder
    from skybuffer.buffer.server import ManagedRedis
    from skybuffer.constants import Keys

    client = ManagedRedis(settings.redis, settings.redis_dir).client("admin")
    keys, decoder, files = Keys(settings.redis.prefix), Decoder(), {}
    for type_ in TYPES:
        path, written = workdir / f"{type_}.ndjson", 0
        with path.open("wb") as out:
            for fields in _entries(client, keys.stream(type_)):
                events = decoder.decode(fields) if fields else []
                out.writelines(e + b"\n" for e in events)
                written += len(events)
        if written:
            files[type_] = path
        else:
            path.unlink()
    return files


def _entries(client: redis.Redis, stream: str) -> Iterator[dict[bytes, bytes]]:
    """Every entry's fields, in pages of ``PAGE_ENTRIES`` (XRANGE: nothing is consumed)."""
    low = "-"
    while page := cast(list, client.xrange(stream, low, "+", count=PAGE_ENTRIES)):
        for _, fields in page:
            yield fields
        last = page[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else last)


def convert(files: dict[str, Path], compression: str, level: int) -> dict[str, Any]:
    """Time read_json + write_table of every file; events/s over the whole set."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    rows = size = 0
    cpu_before, started = os.times(), time.perf_counter()
    for path in files.values():
        table = pj.read_json(path)
        target = path.with_suffix(".parquet")
        pq.write_table(table, target, compression=compression, compression_level=level)
        rows += table.num_rows
        size += target.stat().st_size
        del table
    seconds = time.perf_counter() - started
    cpu_after = os.times()
    cpu = cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system
    return {
        "reference_events": rows,
        "reference_seconds": round(seconds, 3),
        "reference_events_per_s": round(rows / seconds) if seconds else 0,
        "reference_cpu_seconds": round(cpu, 3),
        "reference_parquet_bytes_per_event": round(size / rows, 1) if rows else 0.0,
    }


def main(argv: list[str]) -> None:
    from skybuffer.processes import peak_rss_bytes

    workdir, compression, level = Path(argv[0]), argv[1], int(argv[2])
    workdir.mkdir(parents=True, exist_ok=True)
    files = export_ndjson(load_settings(), workdir)
    figures = convert(files, compression, level)
    figures["reference_peak_rss_bytes"] = peak_rss_bytes()
    for path in workdir.iterdir():
        path.unlink()
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
