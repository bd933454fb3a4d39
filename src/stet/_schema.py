"""stet's vocabulary, defined once: the fields it writes beside a run's key fields, a
record, the host name, and a record's run identity.

Every ``_stet_``-prefixed name is spelled here and nowhere else in the package (a test
holds it); every module that reads or writes a record imports from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BOOKKEEPING_ORDER", "DEFAULT_STORE", "DURATION_FIELD", "EMPTY_FIELD", "ERROR_FIELD",
    "ERROR_TYPE_FIELD", "ESCAPED_FIELD", "FUNC_FIELD", "GENERATION_FIELD", "HOST",
    "HOST_FIELD", "JSON_FIELD", "PID_FIELD", "RESERVED_PREFIX", "RESULT_FIELD",
    "STARTED_FIELD", "TIMESTAMP_FIELD", "TRACEBACK_FIELD", "Record", "RunKey",
    "format_duration", "is_bookkeeping", "key_names", "run_key",
]

#: A record: field name -> canonical text (a run's key fields, then stet's own fields).
Record = dict[str, str]

#: Every field stet writes starts so; a key field may not.
RESERVED_PREFIX = "_stet_"

#: The function's name ("" or absent: the record matches any function).
FUNC_FIELD = "_stet_func"
#: When the run was recorded (UTC, ISO 8601); every store has it, 0.0.2's included.
TIMESTAMP_FIELD = "_stet_timestamp"
#: When the run started (UTC, ISO 8601).
STARTED_FIELD = "_stet_started"
#: How long the run took, in seconds (text, six decimals).
DURATION_FIELD = "_stet_duration"
#: The machine that ran it.
HOST_FIELD = "_stet_host"
#: The process that ran it (failures only).
PID_FIELD = "_stet_pid"
#: A failure's exception type (qualified name) and message.
ERROR_TYPE_FIELD = "_stet_error_type"
ERROR_FIELD = "_stet_error"
#: The return value, as JSON text (``save_result=True``).
RESULT_FIELD = "_stet_result"
#: A failure's traceback, as text (shown by ``stet report`` where a failure holds one).
TRACEBACK_FIELD = "_stet_traceback"
#: The key fields whose values are mappings (dicts, configs), as one JSON object
#: (``{"cfg": {"lr": 0.1}}``): a copy for other tools; the key fields are the identity.
JSON_FIELD = "_stet_json"
#: CSV: the names of the fields a record holds as empty text (a JSON array).
EMPTY_FIELD = "_stet_empty"
#: The names of fields whose text was escaped to be written (a JSON array).
ESCAPED_FIELD = "_stet_escaped"
#: JSON stores: the generation of a rewritten file, in its first object.
GENERATION_FIELD = "_stet_generation"

#: The order stet's own fields are shown in (after the key fields).
BOOKKEEPING_ORDER = (FUNC_FIELD, TIMESTAMP_FIELD, STARTED_FIELD, DURATION_FIELD, HOST_FIELD,
                     PID_FIELD, ERROR_TYPE_FIELD, ERROR_FIELD)

#: The store ``@stet.once`` and the helpers use when none is given.
DEFAULT_STORE = "_stet_store.csv"

#: This machine's name, as recorded in ``_stet_host`` and in claims (set on first use,
#: by ``__getattr__`` below).
HOST: str

#: A run's identity: (function name, sorted (key field, text) pairs).
RunKey = tuple[str, tuple[tuple[str, str], ...]]


def is_bookkeeping(field: str) -> bool:
    """Whether ``field`` is one of stet's own (``_stet_``-prefixed) fields."""
    return field.startswith(RESERVED_PREFIX)


def key_names(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The sorted names of a record's key fields (those that identify its run)."""
    return tuple(sorted(k for k in record if not k.startswith(RESERVED_PREFIX)))


def run_key(record: Mapping[str, Any]) -> RunKey:
    """THE identity of a record's run: its function (``""`` if none) and its key fields,
    sorted, with their texts. Two records are of the same run exactly when equal here."""
    items = sorted((k, str(v)) for k, v in record.items() if not k.startswith(RESERVED_PREFIX))
    return str(record.get(FUNC_FIELD) or ""), tuple(items)


def format_duration(seconds: float) -> str:
    """``h:mm:ss``, rounded to the second (elapsed times and ETAs)."""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_seconds(seconds: float) -> str:
    """A run's duration for reading: ``31 us``, ``12.3 ms``, ``1.2 s``; from a minute on,
    ``h:mm:ss`` (as :func:`format_duration`)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    return format_duration(seconds)


def __getattr__(name: str) -> Any:
    # HOST is asked of the platform module when first used (recording a run, a claim),
    # not by ``import stet``, which loads this module: platform is 2-3 ms to import.
    if name == "HOST":
        import os

        # os.uname() is what platform.node() asks on POSIX, without importing platform
        # and, through it, subprocess (about 6 ms at a store's first use).
        if hasattr(os, "uname"):
            host = os.uname().nodename
        else:  # pragma: no cover - Windows
            import platform

            host = platform.node()
        globals()["HOST"] = host
        return host
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
