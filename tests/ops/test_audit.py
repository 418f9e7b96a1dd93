"""`skybuffer audit` passes the shipped profile and fails the seed's eviction policy.

Covers on purpose: ops/audit.py, ops/audit_checks.py (the configuration checks) and
ops/audit_state.py (the live server's state), and ops/report.py (the report every
experiment writes)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skybuffer.buffer.server import ManagedRedis
from skybuffer.buffer.users import USERS
from skybuffer.cli import app
from skybuffer.ops.audit import PROFILES, run_audit
from skybuffer.ops.harness import conf_variant
from skybuffer.ops.report import SEED_RATE, eight_hours, events_in
from skybuffer.settings import Settings


def _statuses(data: dict) -> dict[str, str]:
    return {check["setting"]: check["status"] for check in data["checks"]}


@pytest.fixture
def met27_conf(make_settings: Callable[..., Settings], tmp_path: Path) -> Path:
    """The shipped redis.conf with the seed's MET-27 eviction policy."""
    base = make_settings().redis.conf
    return conf_variant(base, tmp_path / "met27", {"maxmemory-policy": "allkeys-lru"})


def test_audit_passes_the_shipped_redis_conf_on_the_default_profile(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_audit(make_settings(), "default")
    statuses = _statuses(report.data)
    assert report.exit_code == 0
    assert "FAIL" not in statuses.values(), report.data["checks"]
    core = ("maxmemory", "maxmemory-policy", "appendonly", "appendfsync", "aof-load-truncated",
            "ACL default user", "bind", "8-hour headroom")  # fmt: skip
    for setting in core:
        assert statuses[setting] == "PASS", setting
    assert set(report.data["buffer_hours_at"]) == {"seed (2.7M / 8 h)", "mid-2026 steady",
                                                   "2025 average"}  # fmt: skip


def test_audit_reports_are_written_without_any_password(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_audit(make_settings(), "default")
    markdown = Path(report.paths["markdown"]).read_text()
    as_json = Path(report.paths["json"]).read_text()
    assert json.loads(as_json)["command"] == "audit"
    assert "| maxmemory-policy | PASS |" in markdown
    for user in USERS:
        secret = redis_server.credentials(user).password
        assert secret not in markdown and secret not in as_json


def test_audit_fails_the_met27_profile_on_its_eviction_policy(
    start_redis: Callable[..., ManagedRedis],
    make_settings: Callable[..., Settings],
    met27_conf: Path,
) -> None:
    start_redis(conf=met27_conf)
    report = run_audit(make_settings(redis={"conf": met27_conf}), "met27")
    check = next(c for c in report.data["checks"] if c["setting"] == "maxmemory-policy")
    assert check["status"] == "FAIL"
    assert "whole" in check["reason"] and "noeviction" in check["fix"]
    assert report.data["failed"] == ["maxmemory-policy"]
    assert report.exit_code == 1
    # The seed's 2.7M events in 8 h, as skybuffer buffers them: well within 2 GB.
    headroom = next(c for c in report.data["checks"] if c["setting"] == "8-hour headroom")
    assert headroom["status"] == "PASS"
    assert headroom["value"].endswith(f"for {eight_hours(SEED_RATE)}")
    assert "(2,700,000 events)" in headroom["value"]


def test_audit_fails_a_server_without_aof_and_says_how_to_fix_it(
    start_redis: Callable[..., ManagedRedis],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    conf = conf_variant(make_settings().redis.conf, tmp_path / "noaof",
                        {"appendonly": "no", "appendfsync": "no"})  # fmt: skip
    start_redis(conf=conf)
    report = run_audit(make_settings(redis={"conf": conf}), "default")
    checks = {c["setting"]: c for c in report.data["checks"]}
    assert checks["appendonly"]["status"] == checks["appendfsync"]["status"] == "FAIL"
    assert checks["appendonly"]["fix"].startswith("CONFIG SET appendonly yes")


def test_audit_command_exits_non_zero_on_fail_and_prints_json(
    start_redis: Callable[..., ManagedRedis],
    make_settings: Callable[..., Settings],
    met27_conf: Path,
) -> None:
    server = start_redis(conf=met27_conf)
    settings = make_settings()
    env = {"SKYBUFFER_REDIS__PORT": str(server.settings.port),
           "SKYBUFFER_REDIS__CONF": str(met27_conf)}  # fmt: skip
    result = CliRunner().invoke(
        app, ["audit", "--profile", "met27", "--json", "--data-dir", str(settings.data_dir)],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["failed"] == ["maxmemory-policy"]
    assert list((settings.data_dir / "reports").glob("audit-*.md"))


def test_audit_of_an_external_url_never_writes_the_url_or_its_password(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    creds = redis_server.credentials("skybuffer")
    url = f"redis://{creds.username}:{creds.password}@127.0.0.1:{redis_server.settings.port}/0"
    report = run_audit(make_settings(redis={"url": url}), "default")
    assert report.exit_code == 0
    assert report.data["target"]["port"] == redis_server.settings.port
    for path in (report.paths["markdown"], report.paths["json"]):
        text = Path(path).read_text()
        assert creds.password not in text and "redis://" not in text


@pytest.mark.parametrize("profile", ["default", "met27"])
def test_the_shipped_redis_conf_gets_no_warn_on_either_profile(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings], profile: str
) -> None:
    """What skybuffer ships is what it recommends: a departure from MET-27 (noeviction, not
    allkeys-lru) is deliberate and says so; it is not a WARN."""
    report = run_audit(make_settings(), profile)
    statuses = _statuses(report.data)
    assert {"WARN", "FAIL"}.isdisjoint(statuses.values()), report.data["checks"]
    policy = next(c for c in report.data["checks"] if c["setting"] == "maxmemory-policy")
    assert ("deliberate" in policy["reason"]) == (profile == "met27")


def test_eight_hours_of_events_is_one_figure_in_the_audit(
    redis_server: ManagedRedis, make_settings: Callable[..., Settings]
) -> None:
    report = run_audit(make_settings(), "default")
    headroom = next(c for c in report.data["checks"] if c["setting"] == "8-hour headroom")
    assert headroom["value"].endswith("for 8 h at 350 ev/s (10,080,000 events)")
    assert report.data["profile"]["events_8h"] == events_in() == 10_080_000
    assert PROFILES["met27"].events_8h == 2_700_000  # the seed's MET-27 count, exactly
