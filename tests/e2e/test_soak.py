"""`make soak`: the seed's end-to-end acceptance, not run in CI.

Ten minutes (SKYBUFFER_SOAK_MINUTES) of `skybuffer run` with every service: managed
Redis, a real Prefect server with the DataWriter on its production schedule (every five
minutes, cron), the monitoring stack, and synthetic ingest at a realistic 1,500
events/s. Prints and writes a JSON summary (runs, durations against the 4-minute
budget, events/s, Redis memory) for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from skybuffer.buffer.server import ManagedRedis
from tests.conftest import free_port, stop_pid
from tests.e2e.test_run import _assert_lake_matches_buffer, _settings_from, isolated_env

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

BUDGET_SECONDS = 240


def _flow_runs(api_url: str) -> list[dict]:
    body = json.dumps({"sort": "START_TIME_ASC"}).encode()
    request = urllib.request.Request(
        f"{api_url}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return list(json.loads(response.read()))


def test_ten_minutes_at_the_production_schedule(tmp_path: Path) -> None:
    minutes = float(os.environ.get("SKYBUFFER_SOAK_MINUTES", "10"))
    env = isolated_env(
        tmp_path,
        SKYBUFFER_STACK__PROMETHEUS_PORT=str(free_port()),
        SKYBUFFER_STACK__ALERTMANAGER_PORT=str(free_port()),
        SKYBUFFER_STACK__EXPORTER_PORT=str(free_port()),
    )
    settings = _settings_from(env)
    api_url = f"http://127.0.0.1:{settings.prefect.port}/api"
    server = ManagedRedis(settings.redis, settings.redis_dir)
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115 - closed at the end
    run = subprocess.Popen(
        [sys.executable, "-m", "skybuffer", "run", "--source", "synthetic", "--rate", "1500"],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    memory: list[int] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < minutes * 60:
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            if server.is_serving():
                memory.append(int(server.client().info("memory")["used_memory"]))
            time.sleep(2)
        runs = _flow_runs(api_url)
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=300) == 0
    finally:
        stop_pid(run.pid)
        log.close()
    elapsed = time.monotonic() - started
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]
    durations = [r["total_run_time"] for r in completed]
    server.start()
    try:
        cursor = server.client().hget("skybuffer:cursor:synthetic", "position")
        ingested = int(cursor.decode().split(":")[-1]) if cursor else 0
    finally:
        server.stop()
    summary = {
        "minutes": round(elapsed / 60, 1),
        "flow_runs": {r["state_type"]: sum(x["state_type"] == r["state_type"] for x in runs)
                      for r in runs},
        "run_seconds": durations,
        "budget_seconds": BUDGET_SECONDS,
        "ingested_events": ingested,
        "events_per_s": round(ingested / elapsed),
        "redis_used_memory_peak": max(memory, default=0),
        "redis_used_memory_last": memory[-1] if memory else 0,
    }  # fmt: skip
    print(json.dumps(summary, indent=2))
    (tmp_path / "soak.json").write_text(json.dumps(summary, indent=2))
    assert len(completed) >= int(minutes // 5), summary
    assert not [r for r in runs if r["state_type"] in {"FAILED", "CRASHED", "CANCELLED"}]
    assert all(d < BUDGET_SECONDS for d in durations), summary
    _assert_lake_matches_buffer(settings, server)
