"""stet: make parameter sweeps safely resumable.

Decorate an experiment with :func:`once`; re-running a sweep skips every parameter
combination that already finished, and nothing else.
"""

from __future__ import annotations

from ._admin import reset, status
from ._config import configure, settings
from ._decorator import once
from ._grid import Grid, grid
from ._identity import UnstableValueError, canonical
from ._load import load
from ._ray import RayExecutor
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
