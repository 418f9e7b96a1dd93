"""docs/CONFIGURATION.md, built from the settings' field docstrings (one table per section).

Regenerate with ``python -m skybuffer.settings > docs/CONFIGURATION.md``; a test keeps it
current.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from skybuffer.settings import Settings

DOC_HEADER = """# Configuration

Every setting, with its environment variable and default. Values come, highest first,
from command-line options, environment variables, a TOML file (`--config` /
`SKYBUFFER_CONFIG`, with sections `[redis]`, `[ingest]`, ...), then these defaults.
Paths left unset are derived from `data_dir`. Generated from `src/skybuffer/settings/`
by `python -m skybuffer.settings > docs/CONFIGURATION.md`; a test keeps it current.
"""


def reference_markdown() -> str:
    """docs/CONFIGURATION.md: one table per section, built from the field docstrings."""
    lines = [DOC_HEADER]
    top = [(n, f) for n, f in Settings.model_fields.items() if not _is_section(f.annotation)]
    lines += _table("Top level", "SKYBUFFER_", top)
    for name, field in Settings.model_fields.items():
        if _is_section(field.annotation):
            section = field.annotation
            assert isinstance(section, type)
            prefix = f"SKYBUFFER_{name.upper()}__"
            lines += _table(f"`[{name}]`", prefix, list(section.model_fields.items()))
    return "\n".join(lines)


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _table(title: str, prefix: str, fields: list[tuple[str, Any]]) -> list[str]:
    rows = [f"## {title}", "", "| environment variable | default | meaning |", "|---|---|---|"]
    for name, field in fields:
        default = "(secret)" if "password" in name or "webhook_url" in name else _default(field)
        meaning = (field.description or "").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | {default} | {meaning} |")
    return rows + [""]


def _default(field: Any) -> str:
    if field.default_factory is not None:
        return "(derived)"
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, Path) and value.is_absolute():
        return "(derived)"
    return f"`{value}`"
