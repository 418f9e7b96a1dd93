"""`make clean` keeps the data dir; `make clean-data` deletes it only when told yes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory with the repository's Makefile and a data dir holding a lake file."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(MAKEFILE, tmp_path / "Makefile")
    (tmp_path / "var" / "lake").mkdir(parents=True)
    (tmp_path / "var" / "lake" / "likes.parquet").write_bytes(b"PAR1")
    return tmp_path


def make(
    checkout: Path, target: str, answer: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", target], cwd=checkout, input=answer, text=True,
        capture_output=True, env={**os.environ, **env}, timeout=60,
    )  # fmt: skip


def test_make_clean_keeps_the_data_dir(checkout: Path) -> None:
    (checkout / ".venv").mkdir()
    done = make(checkout, "clean")
    assert done.returncode == 0, done.stderr
    assert not (checkout / ".venv").exists()
    assert (checkout / "var" / "lake" / "likes.parquet").exists()


@pytest.mark.parametrize("answer", ["", "no\n", "y\n"])
def test_clean_data_keeps_the_data_dir_unless_the_answer_is_yes(
    checkout: Path, answer: str
) -> None:
    done = make(checkout, "clean-data", answer)
    assert done.returncode != 0
    assert "Type yes" in done.stdout and done.stdout.rstrip().endswith("kept var")
    assert (checkout / "var" / "lake" / "likes.parquet").exists()


def test_clean_data_deletes_the_data_dir_on_yes(checkout: Path) -> None:
    done = make(checkout, "clean-data", "yes\n")
    assert done.returncode == 0, done.stderr
    assert not (checkout / "var").exists()
    assert done.stdout.rstrip().endswith("deleted var")
    assert make(checkout, "clean-data").stdout.strip() == "nothing to delete: var does not exist"


def test_clean_data_refuses_while_the_data_dirs_redis_runs(checkout: Path) -> None:
    """A pid file naming a live process (this test's own) stands for a running server."""
    (checkout / "var" / "redis").mkdir()
    (checkout / "var" / "redis" / "redis.pid").write_text(f"{os.getpid()}\n")
    done = make(checkout, "clean-data", CONFIRM="yes")
    assert done.returncode != 0
    assert "stop the pipeline first" in done.stdout
    assert (checkout / "var" / "lake" / "likes.parquet").exists()
