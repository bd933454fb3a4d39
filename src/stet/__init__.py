"""stet: make parameter sweeps safely resumable.

Decorate an experiment with :func:`once`; re-running a sweep skips every parameter
combination that already finished, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import configure, settings
from ._decorator import once
from ._identity import UnstableValueError, canonical
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
    from . import backends as backends
    from ._admin import reset, status
    from ._grid import Grid, grid
    from ._load import load
    from ._ray import RayExecutor
    from ._saved import ResultNotSavedWarning
    from ._submitit import submit
    from ._summary import SweepInterrupted, SweepSummary
    from ._sweep import sweep

# ``import stet`` loads the decorator and what identifies a run, nothing else: the store
# backends (sqlite3, csv, claims, locks) come with the first decorated function, and the
# sweep machinery (concurrent.futures) and the names below when first asked for. Loaded
# up front, they made ``import stet`` 105-125 ms on the project's machine; without them it
# takes about 22 ms of CPU, 35-43 ms of wall time on a busy machine (medians of fresh
# processes). tests/test_imports.py keeps them out.
_LAZY = {
    "Grid": "._grid",
    "RayExecutor": "._ray",
    "ResultNotSavedWarning": "._saved",
    "SweepInterrupted": "._summary",
    "SweepSummary": "._summary",
    "grid": "._grid",
    "load": "._load",
    "reset": "._admin",
    "status": "._admin",
    "submit": "._submitit",
    "sweep": "._sweep",
}


def __getattr__(name: str) -> Any:
    import importlib

    if name == "backends":  # ``import stet; stet.backends.get_backend(...)`` (documented)
        return importlib.import_module(".backends", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # (asked once: later uses are plain attribute reads)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | {"backends"})
