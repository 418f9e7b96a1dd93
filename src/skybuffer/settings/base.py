"""What every settings section shares: strict keys and docstrings as descriptions."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

PACKAGE_DIR = Path(__file__).resolve().parent.parent
"""The skybuffer package's directory (src/skybuffer in a checkout)."""


class Section(BaseModel):
    """A group of settings: unknown keys are errors (a typo must not pass silently), and
    each field's docstring is its description (docs/CONFIGURATION.md is built from them)."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")
