"""The `skybuffer` command: parse, build settings, call one function, show the result.

Commands live in cli/dataflow.py (the data flow) and cli/ops.py (the operator's tools);
importing them registers them on the application.
"""

from __future__ import annotations

import logging
import sys

from skybuffer.cli import dataflow, deadletter, ops  # noqa: F401 - registers the commands
from skybuffer.cli.apps import app
from skybuffer.errors import SkybufferError

__all__ = ["app", "main"]


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except SkybufferError as exc:
        from skybuffer.console import err_console

        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
