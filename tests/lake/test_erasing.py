"""`lake forget`, on a lake the real pipeline wrote with one account's events in a sealed
hour and in an open one: its rows leave both and nothing else does; done twice, nothing
more goes; the DataWriter keeps it out of buffered and replayed events (and of later ones
with --keep-out), also from a batch it staged before the request; a kill -9 at every step
of the rewrite is finished by the next sealing run, exactly once.

Also covers: skybuffer.lake.erasures, skybuffer.lake.eraser, skybuffer.pipeline.erasing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from skybuffer.buffer.server import ManagedRedis
from skybuffer.lake.erasures import Erasures
from skybuffer.lake.inventory import lake_hours, verify_lake
from skybuffer.lake.manifest import MANIFEST, read_manifest
from skybuffer.lake.schema import HOUR_US
from skybuffer.lake.writer import publish_lock
from skybuffer.pipeline.datawriter import drain_once
from skybuffer.pipeline.erasing import forget
from skybuffer.pipeline.faults import FAULT_EXIT_CODE, FORGET_STEPS
from skybuffer.pipeline.runner import build_ingester
from skybuffer.pipeline.sealing import seal_ready
from skybuffer.settings import Settings

from .lakes import T0, buffer_and_drain, lake_identities, queried_events, run_lake, two_hours


@pytest.fixture
def settings(make_settings: Callable[..., Settings], redis_server: ManagedRedis) -> Settings:
    return make_settings()


def did_of(line: bytes) -> str:
    return str(orjson.loads(line)["did"])


def moved(line: bytes, by_us: int, tag: str) -> bytes:
    """The event ``by_us`` later, as a new event (commits get a new rkey)."""
    event = orjson.loads(line)
    event["time_us"] += by_us
    if event.get("kind") == "commit":
        event["commit"]["rkey"] += tag
    return orjson.dumps(event)


def busiest(lines: list[bytes], rank: int = 0) -> str:
    return Counter(did_of(line) for line in lines).most_common(rank + 1)[rank][0]


def sealed_and_open(settings: Settings, tmp_path: Path) -> tuple[list[bytes], str]:
    """A lake whose first hour is sealed and second open, with the busiest account's
    events in both; the lines and the account."""
    lines = two_hours(duplicates=0)
    account = busiest(lines)
    lines += [moved(line, HOUR_US, "b") for line in lines if did_of(line) == account]
    buffer_and_drain(settings, tmp_path, lines, "first")
    seal_ready(settings, watermark=T0 + 2 * HOUR_US)  # the first hour only
    states = {h.hour: h.state for h in lake_hours(settings.lake)}
    assert set(states.values()) == {"sealed", "open"}
    return lines, account


def accounts(settings: Settings) -> Counter[object]:
    """Rows per account, as a reader of each hour sees them (identities counted once)."""
    identities = lake_identities(settings)
    assert sum(identities.values()) == len(identities), "an event is in the lake twice"
    return Counter(identity[0] for identity in identities)


def test_forget_removes_an_account_from_sealed_and_open_hours_and_nothing_else(
    settings: Settings, tmp_path: Path
) -> None:
    lines, account = sealed_and_open(settings, tmp_path)
    before = accounts(settings)
    report = forget(settings, [account])
    after = accounts(settings)
    assert account not in after and before - Counter({account: before[account]}) == after
    assert sum(report.finished[0].rows_removed.values()) == before[account] > 0
    manifests = [
        read_manifest(str(p.parent)) for p in Path(str(settings.lake.root)).rglob(MANIFEST)
    ]
    assert sum(m.forgotten_rows for m in manifests if m) == before[account] // 2
    assert verify_lake(settings.lake).ok
    assert queried_events(settings) == sum(after.values())
    again = forget(settings, [account])
    assert sum(again.finished[0].rows_removed.values()) == 0 and accounts(settings) == after
    assert Erasures(str(settings.lake.root)).pending() == []


def test_the_datawriter_keeps_forgotten_accounts_out_of_buffered_and_later_events(
    settings: Settings, tmp_path: Path
) -> None:
    lines = two_hours(duplicates=0)
    gone, kept_out = busiest(lines), busiest(lines, 1)
    forget(settings, [gone])
    forget(settings, [kept_out], keep_out=True)
    tomorrow = time.time_ns() // 1000 + 24 * HOUR_US - T0
    later = [moved(line, tomorrow, "n") for line in lines if did_of(line) in (gone, kept_out)]
    buffer_and_drain(settings, tmp_path, lines + later, "after")  # buffered after the request
    found = accounts(settings)
    assert found[gone] == lines_of(later, gone) > 0  # only what it sent after the request
    assert kept_out not in found
    assert sum(found.values()) == len(lines) - lines_of(lines, gone, kept_out) + found[gone]


def lines_of(lines: list[bytes], *dids: str) -> int:
    return sum(1 for line in lines if did_of(line) in dids)


def test_a_batch_staged_before_the_request_is_staged_again_without_the_account(
    settings: Settings, tmp_path: Path
) -> None:
    lines = two_hours(duplicates=0)
    account = busiest(lines)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    build_ingester(settings, "replay", file=path).run()
    root = Path(str(settings.lake.root))
    with publish_lock(str(root)):  # the DataWriter stages, then waits here to publish
        drained: list[bool] = []
        writer = threading.Thread(target=lambda: drained.append(drain_once(settings).ok))
        writer.start()
        deadline = time.monotonic() + 300
        while not list(root.rglob(".tmp-*.inprogress")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(root.rglob(".tmp-*.inprogress")), "the DataWriter staged nothing"
        Erasures(str(root)).request(account, time.time_ns() // 1000, keep_out=False)
    writer.join(timeout=300)
    assert drained == [True]
    found = accounts(settings)
    assert account not in found and sum(found.values()) == len(lines) - lines_of(lines, account)


@pytest.mark.parametrize("step", FORGET_STEPS)
def test_a_forget_killed_at_any_step_is_finished_by_the_next_sealing_run_exactly_once(
    settings: Settings, tmp_path: Path, step: str
) -> None:
    lines, account = sealed_and_open(settings, tmp_path)
    before = accounts(settings)
    killed = run_lake(settings, "forget", "--did", account, SKYBUFFER_WRITER__FAULT=step)
    assert killed.returncode == FAULT_EXIT_CODE, killed.stderr[-2000:]
    assert [e.did for e in Erasures(str(settings.lake.root)).pending()] == [account]
    # Meanwhile a query reads each hour once: an hour's old files or its new ones.
    assert before.total() - before[account] <= queried_events(settings) <= before.total()
    done = run_lake(settings, "seal", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    assert accounts(settings) == before - Counter({account: before[account]})
    assert Erasures(str(settings.lake.root)).pending() == []
    assert list(Path(str(settings.lake.root)).rglob(".tmp-seal-*")) == []
    verified = run_lake(settings, "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout


def test_forget_names_the_fix_for_what_is_not_a_did(settings: Settings, tmp_path: Path) -> None:
    sealed_and_open(settings, tmp_path)
    refused = run_lake(settings, "forget", "--did", "alice.bsky.social")
    assert refused.returncode != 0
    assert "is not a DID: give the account as did:plc:" in refused.stderr
    assert not Path(str(settings.lake.root), "_skybuffer", "erasures.json").exists()
