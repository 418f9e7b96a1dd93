"""Lake fixtures: settings for a lake in the test's temp dir, rows of real events."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skybuffer.events import classify
from skybuffer.lake.rows import RowBuilder
from skybuffer.lake.schema import Rows
from skybuffer.settings import LakeSettings


@pytest.fixture
def lake(tmp_path: Path) -> LakeSettings:
    return LakeSettings(root=str(tmp_path / "lake"))


@pytest.fixture
def builder() -> Iterator[RowBuilder]:
    rows = RowBuilder()
    yield rows
    rows.close()


@pytest.fixture
def by_type(golden_lines: list[bytes]) -> dict[str, list[bytes]]:
    grouped: dict[str, list[bytes]] = {}
    for line in golden_lines:
        grouped.setdefault(classify(line, 1_000_000), []).append(line)
    return grouped


@pytest.fixture
def build(builder: RowBuilder) -> Callable[..., Rows]:
    """Rows of ``lines``, one entry per ``per_entry`` lines, IDs 1000-0, 1001-0, ..."""

    def make(type_: str, lines: list[bytes], per_entry: int = 1, first_ms: int = 1000) -> Rows:
        chunks = [lines[i : i + per_entry] for i in range(0, len(lines), per_entry)]
        ids = [f"{first_ms + i}-0" for i in range(len(chunks))]
        return builder.build(type_, ids, [b"\n".join(c) for c in chunks])

    return make
