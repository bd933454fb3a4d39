"""stet: make parameter sweeps safely resumable.

Decorate an experiment with :func:`once`; re-running a sweep skips every parameter
combination that already finished, and nothing else.
"""

from __future__ import annotations

from ._config import configure, settings
from ._decorator import once
from ._identity import UnstableValueError, canonical
from ._utils import reset, status
from .errors import CorruptStoreError, StoreError

__all__ = [
    "CorruptStoreError",
    "StoreError",
    "UnstableValueError",
    "canonical",
    "configure",
    "once",
    "reset",
    "settings",
    "status",
]

__version__ = "0.1.0"
