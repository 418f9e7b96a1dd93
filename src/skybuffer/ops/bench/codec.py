"""`skybuffer bench codec`: Redis bytes per event of a file's events, codec vs plain JSON.

The file's events go through the buffer's encoder at the level that ships into scratch
streams of a scratch redis-server, and the same events as one plain-JSON entry each into
another key; MEMORY USAGE gives both sizes exactly.
"""

from __future__ import annotations

from pathlib import Path

import redis

from skybuffer.buffer.producer import Encoder
from skybuffer.constants import CODEC_LEVEL, Keys
from skybuffer.ops.bench.ingest import stream_bytes
from skybuffer.ops.harness import scratch_redis
from skybuffer.settings import RedisSettings


def bench_codec(path: Path, base: RedisSettings, batch_events: int = 5000) -> dict:
    """Redis bytes per event of a JSONL file's events through the codec (at the level
    that ships) vs plain JSON."""
    data = [line for line in path.read_bytes().splitlines() if line.strip()]
    with scratch_redis(base) as server:
        prefix = Keys(base.prefix).ops_prefix + "codec:"
        codec_bytes, json_bytes = codec_vs_json(server.client("admin"), prefix, data, batch_events)
    return {
        "file": str(path),
        "events": len(data),
        "mean_event_bytes": round(sum(map(len, data)) / max(len(data), 1), 1),
        "bytes_per_event": round(codec_bytes / max(len(data), 1), 1),
        "json_bytes_per_event": round(json_bytes / max(len(data), 1), 1),
        "batch_events": batch_events,
        "codec_level": CODEC_LEVEL,
    }


def codec_vs_json(
    client: redis.Redis, prefix: str, events: list[bytes], batch_events: int = 5000
) -> tuple[int, int]:
    """Redis bytes (MEMORY USAGE) of ``events`` as the buffer keeps them (the codec's
    entries at the level that ships, under ``prefix``) and as one plain-JSON entry each."""
    encoder, keys = Encoder(max_event_bytes=10**7, level=CODEC_LEVEL), Keys(prefix)
    for seq, start in enumerate(range(0, len(events), batch_events), 1):
        batch = encoder.encode(seq, str(start), events[start : start + batch_events])
        for type_, fields in batch.entries.items():
            client.xadd(keys.stream(type_), fields)  # type: ignore[arg-type]
    json_key = prefix + "json"
    for start in range(0, len(events), 1000):
        pipe = client.pipeline(transaction=False)
        for raw in events[start : start + 1000]:
            pipe.xadd(json_key, {"json": raw})
        pipe.execute()
    return stream_bytes(client, keys), int(client.memory_usage(json_key, samples=0) or 0)
