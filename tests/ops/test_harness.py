"""ops/harness.py: what the benchmarks and chaos experiments share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from skybuffer import processes
from skybuffer.ops.harness import (
    Checksum,
    ChecksumSource,
    delete_keys,
    machine,
    machine_line,
    pyplot,
    save_plot,
    scratch_redis,
    stream_entries,
)
from skybuffer.settings import Settings
from skybuffer.sources.memory import MemorySource

EVENTS = [b'{"n":%d}' % i for i in range(50)]


def digest(events: list[bytes]) -> str:
    checksum = Checksum()
    for event in events:
        checksum.add(event)
    return checksum.hexdigest()


def test_checksum_ignores_order_but_sees_a_lost_doubled_or_altered_event() -> None:
    assert digest(EVENTS) == digest(list(reversed(EVENTS)))
    assert digest(EVENTS[1:]) != digest(EVENTS)
    assert digest([*EVENTS, EVENTS[0]]) != digest(EVENTS)
    assert digest([b'{"n":-1}', *EVENTS[1:]]) != digest(EVENTS)


def test_checksum_counts_distinct_events_once_when_asked() -> None:
    checksum = Checksum(keep_distinct=True)
    for event in [*EVENTS, *EVENTS[:10]]:
        checksum.add(event)
    assert checksum.count == 60 and len(checksum.distinct) == 50


def test_checksum_source_digests_exactly_what_it_hands_on() -> None:
    offered = Checksum()
    source = ChecksumSource(MemorySource(EVENTS), offered)
    source.resume(None)
    handed = [event for batch in source.batches(7, 0.0) for event in batch.events]
    assert handed == EVENTS
    assert offered.hexdigest() == digest(EVENTS)


def test_a_scratch_redis_reads_back_its_stream_and_leaves_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    with scratch_redis(make_settings().redis) as server:
        client: redis.Redis = server.client("admin")
        for i in range(45):
            client.xadd("skybuffer:ops:t:s", {"i": i})
        client.set("skybuffer:kept", 1)
        read = [int(fields[b"i"]) for _id, fields in stream_entries(client, "skybuffer:ops:t:s")]
        assert read == list(range(45))
        assert delete_keys(client, "skybuffer:ops:") == 1
        assert client.get("skybuffer:kept") == b"1", "a key outside the prefix was deleted"
        pid, scratch = server.pid(), server.directory.parent
    assert pid is not None and not processes.alive(pid), "the scratch server still runs"
    assert not scratch.exists(), "the scratch directory was left behind"


def test_save_plot_writes_a_png(tmp_path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_plot(fig, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.get_fignums(), "the figure was kept open"


def test_machine_names_what_ran_the_figures() -> None:
    m = machine()
    assert m["cpus"] and m["python"] and m["platform"]
    assert f"{m['cpus']} CPUs" in machine_line()


@pytest.mark.parametrize("prefix", ["skybuffer:ops:", "odd*[prefix]?:"])
def test_delete_keys_takes_the_prefix_literally(
    prefix: str, make_settings: Callable[..., Settings]
) -> None:
    with scratch_redis(make_settings().redis) as server:
        client: redis.Redis = server.client("admin")
        client.set(prefix + "a", 1)
        client.set("odd-other", 1)
        assert delete_keys(client, prefix) == 1
        assert client.exists("odd-other")
