"""stet: make parameter sweeps safely resumable.

Decorate an experiment with :func:`once`; re-running a sweep skips every parameter
combination that already finished, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._admin import reset, status
from ._config import configure, settings
from ._decorator import once
from ._grid import Grid, grid
from ._identity import UnstableValueError, canonical
from ._load import load
from ._saved import ResultNotSavedWarning
from ._submitit import submit
from ._summary import SweepInterrupted, SweepSummary
from ._sweep import sweep
from .errors import CorruptStoreError, StoreError

__all__ = [
    "CorruptStoreError",
    "Grid",
    "RayExecutor",
    "ResultNotSavedWarning",
    "StoreError",
    "SweepInterrupted",
    "SweepSummary",
    "UnstableValueError",
    "canonical",
    "configure",
    "grid",
    "load",
    "once",
    "reset",
    "settings",
    "status",
    "submit",
    "sweep",
]

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ._ray import RayExecutor


def __getattr__(name: str) -> Any:
    # stet.RayExecutor is a concurrent.futures.Executor: that module is imported when one
    # is asked for, not by ``import stet`` (which stays on what a sweep needs).
    if name == "RayExecutor":
        from ._ray import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'stet' has no attribute {name!r}")
