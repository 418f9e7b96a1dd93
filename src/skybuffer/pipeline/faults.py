"""Fault injection for crash tests: ``writer.fault`` names a step of a batch where the
DataWriter exits abruptly (os._exit, as a kill -9 would leave it), so the tests can prove
that the next run neither loses nor duplicates anything, whichever step it stopped at."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from skybuffer.errors import ConfigError

log = logging.getLogger("skybuffer.pipeline.datawriter")  # the DataWriter's own lines

SEAL_STEPS = ("seal_before_publish", "seal_before_manifest", "seal_before_remove")
"""The steps of a seal (lake/sealing.py) a crash test can stop at."""
FORGET_STEPS = ("forget_before_manifest", "forget_before_remove", "forget_before_replace")
"""The steps of an erasure's rewrite (lake/eraser.py) a crash test can stop at."""
FAULT_STEPS = ("after_first_file", "before_ack", "before_trim", *SEAL_STEPS, *FORGET_STEPS)
"""Where ``writer.fault`` makes the process exit abruptly (os._exit), for crash tests."""
FAULT_EXIT_CODE = 86


class Faults:
    """The fault a DataWriter was configured with (None: none)."""

    def __init__(self, step: str | None) -> None:
        if step is not None and step not in FAULT_STEPS:
            raise ConfigError(f"writer.fault {step!r} is not one of {FAULT_STEPS}")
        self.step = step

    def at(self, step: str) -> None:
        if self.step == step:
            log.error("Fault injection: exiting abruptly at %s.", step)
            os._exit(FAULT_EXIT_CODE)

    def after_first_file(self, files: int) -> Callable[[Any], None]:
        """A publish hook that exits after the first of ``files`` files is published."""
        published = 0

        def hook(part: Any) -> None:
            nonlocal published
            published += 1
            if published < files:
                self.at("after_first_file")

        return hook
