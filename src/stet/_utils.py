"""Utility functions: ``status`` and ``reset`` of a store."""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from ._decorator import _DEFAULT_STORE
from ._identity import RESERVED_PREFIX
from ._index import FUNC_FIELD
from .backends import get_backend
from .backends._base import TIMESTAMP_FIELD, BaseBackend, canonical_fields

__all__ = ["reset", "status"]


def _open_existing(store_path: str | os.PathLike[str]) -> BaseBackend:
    backend = get_backend(store_path)
    if not backend.exists():
        raise FileNotFoundError(f"no stet store at {os.fspath(store_path)!r}")
    return backend


def status(store_path: str | Path = _DEFAULT_STORE) -> None:
    """Print a summary of completed experiments in a store.

    Args:
        store_path: Path to the store file (any supported extension).
            Defaults to ``_stet_store.csv``.

    Raises:
        FileNotFoundError: If the store file does not exist.
    """
    backend = _open_existing(store_path)
    records = backend.load()
    fields: dict[str, None] = {}
    for r in records:
        fields.update((k, None) for k in r if not k.startswith(RESERVED_PREFIX))
    print(f"Store: {os.fspath(store_path)} ({type(backend).__name__})")
    print(f"Completed runs: {len(records)}")
    print(f"Key fields: {', '.join(fields) if fields else '(none)'}")
    stamps = sorted(r[TIMESTAMP_FIELD] for r in records if r.get(TIMESTAMP_FIELD))
    if stamps:
        print(f"First run: {stamps[0]}")
        print(f"Last run:  {stamps[-1]}")
    _print_functions(backend, records)


def _print_functions(backend: BaseBackend, records: list[dict[str, Any]]) -> None:
    """Per function: completed, failed (with the latest error) and running now."""
    completed = Counter(r.get(FUNC_FIELD) or "" for r in records)
    done_keys = {_run_key(r) for r in records}
    failed: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {}
    for f in backend.failures():
        if _run_key(f) not in done_keys:
            failed.setdefault(f.get(FUNC_FIELD) or "", {})[_run_key(f)] = f
    running = Counter(str(c.get("func", "")) for c in backend.claims().running())
    funcs = sorted(set(completed) | set(failed) | set(running))
    if not funcs:
        return
    print("Per function:")
    for func in funcs:
        label = func or "(any function)"
        line = f"  {label}: {completed.get(func, 0)} completed"
        fails = failed.get(func, {})
        if fails:
            latest = max(fails.values(), key=lambda f: f.get(TIMESTAMP_FIELD, ""))
            line += (f", {len(fails)} failed (latest: {latest.get('_stet_error_type', '?')}: "
                     f"{str(latest.get('_stet_error', ''))[:80]})")
        if running.get(func):
            line += f", {running[func]} running now"
        print(line)


def _run_key(record: dict[str, Any]) -> tuple[str, ...]:
    items = sorted((k, str(v)) for k, v in record.items() if not k.startswith(RESERVED_PREFIX))
    return (str(record.get(FUNC_FIELD) or ""), *(f"{k}={v}" for k, v in items))


def reset(
    store_path: str | Path = _DEFAULT_STORE, key_dict: dict[str, Any] | None = None
) -> None:
    """Remove entries from a store.

    Args:
        store_path: Path to the store file. Defaults to ``_stet_store.csv``.
        key_dict: If provided, remove only this specific key combination (values may be
            given as text, e.g. ``{'alpha': '0.1'}``). If None, clear the entire store
            (prompts for confirmation in interactive mode).

    Raises:
        FileNotFoundError: If the store file does not exist.
    """
    backend = _open_existing(store_path)
    if key_dict is not None:
        removed = backend.remove(dict(key_dict))
        backend.remove_failures(None, canonical_fields(key_dict))
        shown = ", ".join(f"{k}={v}" for k, v in key_dict.items())
        if isinstance(removed, int):
            print(f"[stet] Removed {removed} record(s) matching {shown} from {store_path}")
        return
    if sys.stdin is not None and sys.stdin.isatty():
        n = len(backend.load())
        answer = input(f"[stet] Remove all {n} record(s) from {store_path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("[stet] Nothing removed.")
            return
    backend.clear()
    backend.remove_failures(None, {})
    print(f"[stet] Cleared {store_path}")
