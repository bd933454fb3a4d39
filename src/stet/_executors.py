"""Which executors :func:`stet.sweep` takes, told apart before anything is submitted.

``None`` runs the sweep here; a :class:`concurrent.futures.Executor` (a process or thread
pool, Dask's ``Client.get_executor()``, :class:`stet.RayExecutor`) gets one call per run;
a submitit executor gets the sweep as one job array (:mod:`stet._submitit`). Anything
else is refused with a ``TypeError`` naming it, before a setting is looked at: an
executor that fails halfway would leave jobs submitted behind it.
"""

from __future__ import annotations

import sys
from typing import Any, Literal

__all__ = ["executor_kind", "is_submitit"]

Kind = Literal["here", "futures", "submitit"]


def is_submitit(executor: Any) -> bool:
    """A submitit executor (``AutoExecutor``, ``SlurmExecutor``, ``LocalExecutor``,
    ``DebugExecutor``, or a subclass); submitit is imported only if the type comes
    from it."""
    if not any(c.__module__.split(".")[0] == "submitit" for c in type(executor).__mro__):
        return False
    import submitit

    return isinstance(executor, submitit.core.core.Executor)


def executor_kind(executor: Any) -> Kind:
    """How :func:`stet.sweep` runs through ``executor``; a ``TypeError`` if it cannot."""
    if executor is None:
        return "here"
    if is_submitit(executor):
        return "submitit"
    # (concurrent.futures is not imported by ``import stet``: if nothing imported it, no
    # object can be one of its executors)
    futures = sys.modules.get("concurrent.futures")
    if futures is not None and isinstance(executor, futures.Executor):
        return "futures"
    cls = type(executor)
    name = f"{cls.__module__}.{cls.__qualname__}"
    hint = ""
    if cls.__module__.split(".")[0] == "ray":
        hint = " For Ray, pass stet.RayExecutor()."
    raise TypeError(
        f"sweep(executor=...) got a {name}, which is not an executor stet can run on. It "
        f"takes a concurrent.futures.Executor (ProcessPoolExecutor, ThreadPoolExecutor, "
        f"Dask's client.get_executor(), stet.RayExecutor()) or a submitit executor "
        f"(AutoExecutor, SlurmExecutor, LocalExecutor, DebugExecutor); nothing was "
        f"submitted.{hint}"
    )
