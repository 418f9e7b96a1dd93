"""Settings: one clear error for bad values, env and TOML layering, documented fields.

Also covers: skybuffer.settings.reference, skybuffer.settings.base, skybuffer.settings.buffer,
skybuffer.settings.sections (through the
behaviour above).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from skybuffer.errors import ConfigError
from skybuffer.settings import load_settings
from skybuffer.settings.reference import reference_markdown

REPO = Path(__file__).resolve().parent.parent


def test_environment_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYBUFFER_REDIS__MAXMEMORY", "30mb")
    monkeypatch.setenv("SKYBUFFER_WRITER__SCHEDULE", "30")
    settings = load_settings(data_dir="/tmp/skybuffer-settings-test")
    assert settings.redis.maxmemory == "30mb"
    assert settings.writer.schedule == "30"
    assert settings.lake.root == "/tmp/skybuffer-settings-test/lake"


def test_a_toml_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "skybuffer.toml"
    config.write_text("[ingest]\nbatch_events = 123\nrate = 10\n[redis]\nport = 7000\n")
    monkeypatch.setenv("SKYBUFFER_REDIS__PORT", "7001")
    settings = load_settings(config=config)
    assert settings.ingest.batch_events == 123
    assert settings.redis.port == 7001


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ingest": {"low_water": 0.9}}, "low_water"),
        ({"redis": {"port": "many"}}, "redis.port"),
        ({"redis": {"maxmemry": "1gb"}}, "maxmemry"),
        ({"stack": {"host": "0.0.0.0"}}, "loopback"),
    ],
)
def test_bad_settings_get_one_message_naming_the_setting(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config=tmp_path / "nope.toml")


def test_configuration_doc_is_generated_from_the_settings() -> None:
    doc = (REPO / "docs" / "CONFIGURATION.md").read_text()
    assert doc.strip() == reference_markdown().strip(), (
        "docs/CONFIGURATION.md is stale: python -m skybuffer.settings > docs/CONFIGURATION.md"
    )
    for line in doc.splitlines():
        if line.startswith("| `SKYBUFFER_"):
            assert line.rstrip(" |").split("|")[-1].strip(), f"undocumented setting: {line}"
