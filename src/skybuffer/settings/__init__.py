"""Every knob skybuffer has: one root ``Settings`` with a nested model per component.

Values come, highest first, from: keyword arguments (the CLI), environment variables
(``SKYBUFFER_`` prefix, ``__`` between levels: ``SKYBUFFER_REDIS__MAXMEMORY``), a TOML
file (``SKYBUFFER_CONFIG`` or ``--config``), then the defaults (the sections are in
``settings/sections.py``). Only the CLI and ``flows.py`` build a ``Settings``; every
component receives its own part.
"""

from __future__ import annotations

import contextlib
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from skybuffer.datadir import (
    PORTS,
    claim,
    default_data_dir,
    recorded_ports,
    recorded_topology,
    require_pipeline,
    running_redis_port,
)
from skybuffer.settings.sections import (
    IngestSettings,
    JetstreamSettings,
    LakeSettings,
    MetricsSettings,
    PrefectSettings,
    RedisSettings,
    StackSettings,
    WriterSettings,
)

__all__ = [
    "IngestSettings",
    "JetstreamSettings",
    "LakeSettings",
    "MetricsSettings",
    "PrefectSettings",
    "RedisSettings",
    "Settings",
    "StackSettings",
    "WriterSettings",
    "load_settings",
]


class Settings(BaseSettings):
    """The root of every setting, resolved for its data dir: the paths under it, and the
    ports it records (datadir.py), which fill every port left unset when the settings are
    built; ``claim_ports`` chooses and records the rest for a command that starts them."""

    model_config = SettingsConfigDict(
        env_prefix="SKYBUFFER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        use_attribute_docstrings=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    """Holds redis, prefect, lake, spool and reports unless each is set on its own; default:
    the nearest var/ holding a pipeline in the current directory or a parent, else ./var."""
    config: Path | None = None
    """A TOML file with any of these settings (sections [redis], [ingest], ...)."""
    redis: RedisSettings = Field(default_factory=RedisSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    writer: WriterSettings = Field(default_factory=WriterSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    stack: StackSettings = Field(default_factory=StackSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    jetstream: JetstreamSettings = Field(default_factory=JetstreamSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        if self.ingest.spool_dir is None:
            self.ingest.spool_dir = self.data_dir / "spool"
        if self.lake.root is None:
            self.lake.root = str(self.data_dir / "lake")
        self._fill_recorded_ports()
        return self

    def _fill_recorded_ports(self) -> None:
        """Each unset port from the data dir's record, if any (creates nothing); a data dir
        from before the record has its running Redis's port in its endpoint file."""
        recorded = recorded_ports(self.data_dir)
        with contextlib.suppress(ValueError):
            recorded.setdefault("redis", running_redis_port(self.redis_dir))
        self._set_ports({s: p for s, p in recorded.items() if self.port(s) is None})
        mode, _ = recorded_topology(self.data_dir)
        if mode and "mode" not in self.redis.model_fields_set and not self.redis.url:
            self.redis.mode = mode

    def claim_ports(self) -> None:
        """For commands that start a service: every unset port gets the data dir's port,
        chosen and recorded at its first start (which creates the data dir)."""
        unset = [service for service in PORTS if self.port(service) is None]
        if unset:
            self._set_ports(claim(self.data_dir, unset, self.redis_dir))

    def port(self, service: str) -> int | None:
        section, field = PORTS[service]
        return getattr(getattr(self, section), field)

    def _set_ports(self, ports: dict[str, int]) -> None:
        for service, port in ports.items():
            section, field = PORTS[service]
            setattr(getattr(self, section), field, port)

    def require_pipeline(self) -> None:
        """For read-only commands: NoPipeline unless a pipeline lives in the data dir."""
        require_pipeline(self.data_dir, external_redis=bool(self.redis.url))

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def prefect_dir(self) -> Path:
        return self.data_dir / "prefect"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _toml_file(init_settings(), env_settings())
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)


def _toml_file(init: dict[str, Any], env: dict[str, Any]) -> Path | None:
    path = init.get("config") or env.get("config")
    if not path:
        return None
    path = Path(path)
    if not path.is_file():
        from skybuffer.errors import ConfigError

        raise ConfigError(f"config file {path} does not exist (set by --config/SKYBUFFER_CONFIG)")
    return path


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable ConfigError."""
    from pydantic import ValidationError

    from skybuffer.errors import ConfigError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file is not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
