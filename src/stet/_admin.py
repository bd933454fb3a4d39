"""The public ``status`` and ``reset`` of a store (also importable as ``stet._utils``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._schema import DEFAULT_STORE
from .backends import display_store, get_backend
from .backends._base import canonical_fields

if TYPE_CHECKING:
    from ._status import StoreStatus

__all__ = ["reset", "status"]


def status(
    store_path: str | Path | Any = DEFAULT_STORE,
    settings: Iterable[Mapping[str, Any]] | None = None,
    *,
    func: Any = None,
) -> StoreStatus:
    """Print a summary of a store, and return it as a :class:`~stet._status.StoreStatus`.

    Prints the store, its completed runs, key fields, first and last run; then per
    function: completed, failed (with the latest error) and running now, first and last
    run and mean duration. Given the sweep's ``settings``, also how many of them are
    done, failed, running and pending, and an ETA (runs left times the mean duration,
    divided by the workers running now).

    Args:
        store_path: Path to the store file (any supported extension), or a
            ``@stet.once`` function (its store, and its identity for ``settings``).
            Defaults to ``_stet_store.csv``.
        settings: The sweep's settings (dicts of keyword arguments, e.g.
            :func:`stet.grid`). Without ``func``, a setting's fields that no run in the
            store holds are ignored.
        func: The ``@stet.once`` function the settings are for (exact identity).

    Returns:
        The same data, as attributes (``completed``, ``functions``, ``sweep``, ...).

    Raises:
        FileNotFoundError: If the store file does not exist.
    """
    from ._status import store_status  # when asked: `import stet` stays ~6 ms faster

    run = getattr(store_path, "__stet_run__", None)
    if run is not None:
        func = store_path if func is None else func
        store_path = run.location  # resolved when it was decorated
    st = store_status(store_path, settings, func=func)
    if run is not None:
        st.path = display_store(run.store)  # shown as it was written
    print(st, flush=True)
    return st


def reset(
    store_path: str | Path | Any = DEFAULT_STORE, key_dict: dict[str, Any] | None = None
) -> None:
    """Remove entries from a store.

    A full reset leaves the store file empty rather than deleting it (stet 0.0.2 deleted
    it): the file keeps its permission bits, group, ACL and extended attributes, so a
    store shared by a group stays writable by the group's other workers (a file made
    afresh by the next run would get that worker's umask and primary group). A store
    that does not exist is left so, and nothing is raised (as in 0.0.2).

    Args:
        store_path: Path to the store file, or a ``@stet.once`` function (its store).
            Defaults to ``_stet_store.csv``.
        key_dict: If provided, remove only this specific key combination (values may be
            given as text, e.g. ``{'alpha': '0.1'}``). If None, clear the entire store
            (prompts for confirmation in interactive mode).
    """
    run = getattr(store_path, "__stet_run__", None)
    shown_store = display_store(store_path if run is None else run.store)  # as written
    if run is not None:
        store_path = run.location  # resolved when it was decorated
    # The messages keep stet 0.0.2's words ("Store cleared", "Aborted"): scripts grep them.
    backend = get_backend(store_path)
    if not backend.exists():
        print(f"[stet] Store cleared: nothing to remove, there is no store at {shown_store}"
              if key_dict is None else
              f"[stet] Removed 0 record(s): there is no store at {shown_store}")
        return
    if key_dict is not None:
        removed = backend.remove(dict(key_dict))
        backend.remove_failures(None, canonical_fields(key_dict))
        shown = ", ".join(f"{k}={v}" for k, v in key_dict.items())
        if isinstance(removed, int):
            print(f"[stet] Removed {removed} record(s) matching {shown} from {shown_store}")
        return
    if sys.stdin is not None and sys.stdin.isatty():
        n = len(backend.load())
        answer = input(f"[stet] Remove all {n} record(s) from {shown_store}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("[stet] Aborted: nothing removed.")
            return
    backend.clear()
    backend.remove_failures(None, {})
    backend.clear_plans()  # a full reset forgets the sweeps' plans too
    print(f"[stet] Store cleared: {shown_store} (kept, empty)")
