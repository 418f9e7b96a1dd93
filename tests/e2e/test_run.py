"""`skybuffer run` end to end, CI-sized: managed Redis, a real Prefect server with the
DataWriter on a 20-second schedule, synthetic ingest at 2,000 events/s, clean shutdown;
then a DataWriter run on the quiescent buffer frees what it drained.

Also covers: skybuffer.pipeline.prefect_server, skybuffer.pipeline.services (through the
behaviour above).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
import redis

from skybuffer.buffer.server import ManagedRedis
from skybuffer.constants import TYPES, Keys
from skybuffer.settings import Settings, load_settings
from tests.conftest import free_port, stop_pid

KEYS = Keys()
PARTITION = re.compile(r"^(posts|likes|reposts|follows|blocks|other)/year=\d{4}/month=\d{2}/"
                       r"day=\d{2}/hour=\d{2}/[^/]+\.parquet$")  # fmt: skip
RUNS_WANTED = 3
TOP_UP_EVENTS = 5000


def _completed_runs(api_url: str, flow: str = "datawriter") -> int:
    body = json.dumps(
        {
            "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
            "flows": {"name": {"any_": [flow]}},
        }
    ).encode()
    request = urllib.request.Request(
        f"{api_url}/flow_runs/count", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(json.loads(response.read()))
    except OSError:
        return 0


def isolated_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `skybuffer run` of its own: data dir, free ports, and a
    Prefect server it starts itself."""
    env = {
        **os.environ,
        "SKYBUFFER_DATA_DIR": str(tmp_path / "var"),
        "SKYBUFFER_REDIS__PORT": str(free_port()),
        "SKYBUFFER_PREFECT__PORT": str(free_port()),
        "SKYBUFFER_METRICS__INGEST_PORT": str(free_port()),
        "SKYBUFFER_METRICS__WRITER_PORT": str(free_port()),
        **extra,
    }
    env.pop("PREFECT_API_URL", None)
    return env


def _ui_api_url(port: int) -> str:
    """Where the served Prefect UI will call the API (it reads /ui-settings first)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as response:
        return str(json.loads(response.read())["api_url"])


@pytest.mark.slow
def test_run_schedules_the_datawriter_and_shuts_down_cleanly(tmp_path: Path) -> None:
    env = isolated_env(
        tmp_path, SKYBUFFER_WRITER__SCHEDULE="20", SKYBUFFER_LAKE__SEAL_SCHEDULE="20"
    )
    settings = _settings_from(env)
    api_url = f"http://127.0.0.1:{settings.prefect.port}/api"
    run = subprocess.Popen(
        [sys.executable, "-m", "skybuffer", "run", "--source", "synthetic", "--rate", "2000",
         "--no-stack"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "run.log", "wb"),
    )  # fmt: skip
    server = ManagedRedis(settings.redis, settings.redis_dir)
    try:
        deadline = time.monotonic() + 300
        while _completed_runs(api_url) < RUNS_WANTED or _completed_runs(api_url, "seal") < 1:
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "fewer than 3 writer runs and a seal in 5 min"
            time.sleep(0.5)
        assert (
            _ui_api_url(settings.prefect.port) == api_url
        )  # this server's, not Prefect's default port
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=300) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        stop_pid(run.pid)
    assert not server.is_serving(), "Redis still runs after a clean shutdown"
    assert _completed_runs(api_url) == 0, "the Prefect server still answers after shutdown"
    _assert_lake_matches_buffer(settings, server)
    _assert_a_run_on_the_quiescent_buffer_frees_what_it_drains(env, settings, server)


def _settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _skybuffer(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "skybuffer", *args], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, (args, done.stderr[-3000:])


def _buffer_figures(client: redis.Redis) -> tuple[int, int, int]:
    """(events ingested, events buffered, Redis used_memory)."""
    ingested = int(client.hget(KEYS.cursor("synthetic"), "position").decode().split(":")[-1])
    buffered = sum(int(v) for v in client.hgetall(KEYS.event_counts).values())
    return ingested, buffered, int(client.info("memory")["used_memory"])


def _assert_a_run_on_the_quiescent_buffer_frees_what_it_drains(
    env: dict[str, str], settings: Settings, server: ManagedRedis
) -> None:
    """While the ingester runs, Redis memory across a DataWriter run is a race between
    the two; with ingest finished it must fall, the streams end empty (entries
    acknowledged and deleted) and the lake then holds every event ingested."""
    server.start()
    try:
        client = server.client()
        before_top_up = _buffer_figures(client)[0]  # the synthetic position is an index
        _skybuffer(env, "ingest", "--source", "synthetic", "--rate", "0",
                   "--count", str(TOP_UP_EVENTS))  # fmt: skip
        _, buffered, before = _buffer_figures(client)
        assert buffered >= TOP_UP_EVENTS
        assert _buffer_figures(client)[0] == before_top_up + TOP_UP_EVENTS  # N more
        _skybuffer(env, "write", "--once")
        ingested, buffered, after = _buffer_figures(client)
        assert buffered == 0
        assert [client.xlen(KEYS.stream(t)) for t in TYPES] == [0] * len(TYPES)
        assert after < before, f"used_memory did not fall across a drain: {before} -> {after}"
    finally:
        server.stop()
    parquet = f"read_parquet('{settings.lake.root}/*/*/*/*/*/*.parquet', union_by_name=true)"
    [(rows, identities)] = duckdb.sql(
        f"SELECT count(*), count(DISTINCT (did, collection, rkey, time_us)) FROM {parquet}"
    ).fetchall()
    assert rows == identities == ingested


def _assert_lake_matches_buffer(settings: Settings, server: ManagedRedis) -> None:
    """Lake rows == events ingested - events still buffered; every file where it belongs."""
    lake = Path(str(settings.lake.root))
    files = [p.relative_to(lake).as_posix() for p in lake.rglob("*.parquet")]
    assert all(PARTITION.match(f) for f in files), [f for f in files if not PARTITION.match(f)]
    assert {f.split("/")[0] for f in files} >= {"posts", "likes", "reposts", "follows", "blocks"}
    server.start()
    try:
        client = server.client()
        ingested = int(client.hget(KEYS.cursor("synthetic"), "position").decode().split(":")[-1])
        buffered = sum(int(v) for v in client.hgetall(KEYS.event_counts).values())
    finally:
        server.stop()
    parquet = f"read_parquet('{lake}/*/*/*/*/*/*.parquet', union_by_name=true)"
    [(rows,)] = duckdb.sql(f"SELECT count(*) FROM {parquet}").fetchall()
    assert rows == ingested - buffered
    assert rows > 0
    [(identities,)] = duckdb.sql(
        f"SELECT count(*) FROM (SELECT DISTINCT did, collection, rkey, time_us FROM {parquet})"
    ).fetchall()
    assert identities == rows, "the lake holds an event twice"
    assert set(TYPES) >= {f.split("/")[0] for f in files}
