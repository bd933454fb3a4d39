"""The Hydra sweeper's stet side: what identifies a job, which jobs are done, and the task
function as each job runs it.

Built on stet's public API alone (``stet.once`` of a ``**fields`` function, its
``.pending``): a Hydra job is a run whose key fields are the job's task overrides, or
the config values ``hydra.sweeper.key`` names. The plugin class Hydra instantiates lives
in ``hydra_plugins.stet_sweeper``; Hydra and OmegaConf are imported only when used.

Identity (documented in docs/how-to/hydra.md):

* by default, a job is its task overrides: one field per override, named by its key
  (``lr``, ``db``, ``model.depth``, ``db@pkg``), holding the value text as Hydra's sweeper
  renders it (``0.1``). ``hydra.*`` overrides are not part of it; ``+x=1`` and ``++x=1``
  are the job ``x=1`` (the prefixes say how to apply the value, not what it is); a
  deletion ``~x`` is the field ``~x`` (with the value it names, or empty). The order of
  overrides does not matter;
* with ``key``, a job is the values of those config keys (dotted paths) in the job's
  composed config; two jobs that differ only elsewhere are one run.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import stet

from ._run import record_plan, run_of

__all__ = ["JobPlan", "StetTask", "SweepKeyError", "check_key", "job_fields", "override_field",
           "resolve_store", "summary"]

log = logging.getLogger("hydra_plugins.stet_sweeper")

#: A keyed config value built by one of these resolvers differs from job to job (or from
#: the sweeper to the job): keyed, no job would ever be skipped.
_PER_RUN = re.compile(r"\$\{\s*(hydra|now)\s*:[^}]*\}")


def resolve_store(store: str | os.PathLike[str]) -> str:
    """A file store as an absolute path (relative to the current directory: where the
    multirun started, before any job changes directory); a URL unchanged."""
    text = os.fspath(store)
    if "://" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


def _is_hydra_key(name: str) -> bool:
    base = name.split("@", 1)[0]
    return base == "hydra" or base.startswith(("hydra.", "hydra/"))


def override_field(text: str) -> tuple[str, str] | None:
    """The key field of one override (``+lr=0.1`` -> ``("lr", "0.1")``), or ``None`` for
    a ``hydra.*`` override, which is not part of a job's identity."""
    name, _, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if name.startswith("~"):
        return None if _is_hydra_key(name[1:].strip()) else ("~" + name[1:].strip(), value)
    name = name.removeprefix("++").removeprefix("+").strip()
    return None if _is_hydra_key(name) else (name, value)


def job_fields(overrides: Iterable[str], config: Any, key: Sequence[str] | None) -> dict[str, Any]:
    """A job's key fields: its task overrides, or (with ``key``) those config values."""
    if key is None:
        fields: dict[str, Any] = {}
        for text in overrides:
            field = override_field(text)
            if field is not None:
                fields[field[0]] = field[1]
        return fields
    return {path: _config_value(config, path) for path in key}


_ABSENT = object()


class SweepKeyError(ValueError):
    """``hydra.sweeper.key`` names something that cannot identify a job."""


def _config_value(config: Any, path: str) -> Any:
    from omegaconf import OmegaConf

    node = OmegaConf.select(config, path, default=_ABSENT, throw_on_missing=True)
    if node is _ABSENT:
        raise SweepKeyError(f"hydra.sweeper.key names {path!r}, which this job's config does "
                         f"not have (keys are dotted paths into the task config, such as "
                         f"'optim.lr')")
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def check_key(config: Any, key: Sequence[str]) -> None:
    """Refuse keys that are no identity: ``hydra.*`` ones (the job's own settings, not
    the task's) and values a ``hydra:`` or ``now:`` interpolation builds (they differ
    from job to job, so no job would ever be skipped)."""
    from omegaconf import OmegaConf

    for path in key:
        if _is_hydra_key(path):
            raise SweepKeyError(f"hydra.sweeper.key names {path!r}: Hydra's own settings are "
                             f"not part of a job's identity; name keys of the task config")
        parent_path, _, last = path.rpartition(".")
        parent = OmegaConf.select(config, parent_path) if parent_path else config
        if not OmegaConf.is_config(parent):
            continue  # _config_value says it is missing
        raw: Any = OmegaConf.to_container(parent, resolve=False)
        if isinstance(raw, dict):
            value = raw.get(last)
        else:
            value = raw[int(last)] if last.isdigit() and int(last) < len(raw) else None
        found = _PER_RUN.search(repr(value))
        if found:
            raise SweepKeyError(
                f"hydra.sweeper.key names {path!r}, whose value comes from "
                f"{found.group(0)}: it changes from run to run, so no job would ever be "
                f"skipped. Leave it out of hydra.sweeper.key.")


def _identity(fields: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, stet.canonical(v)) for k, v in fields.items()))


def _probe(**fields: Any) -> None:
    """Stands for the task function when the sweeper asks the store what is done."""


class JobPlan:
    """Which jobs of a sweep still need to run, asked of the store in bulk."""

    def __init__(self, store: str, name: str, skip_failed: bool) -> None:
        self.skip_failed = skip_failed
        # Decorated now, so that a store stet cannot use is said before anything runs.
        self._not_done = stet.once(store=store, name=name)(_probe)
        self._to_run = stet.once(store=store, name=name, skip_failed=True)(_probe)

    def select(self, jobs: Sequence[Sequence[str]],
               fields: Sequence[dict[str, Any]]) -> tuple[list[list[str]], dict[str, int]]:
        """The jobs to launch (the first job of each run neither done nor, with
        ``skip_failed``, failed before), in order, and the counts: ``same`` (jobs that are
        the same run as an earlier one), ``done``, ``failed``."""
        firsts: dict[tuple[tuple[str, str], ...], int] = {}
        for i, f in enumerate(fields):
            firsts.setdefault(_identity(f), i)
        unique = [fields[i] for i in firsts.values()]
        record_plan(run_of(self._not_done), unique)  # (``stet status`` counts what is left)
        not_done: list[dict[str, Any]] = self._not_done.pending(unique)  # type: ignore[attr-defined]
        todo: list[dict[str, Any]] = (self._to_run.pending(not_done)  # type: ignore[attr-defined]
                                      if self.skip_failed and not_done else not_done)
        launch = {_identity(f) for f in todo}
        chosen = [list(jobs[i]) for ident, i in firsts.items() if ident in launch]
        counts = {"same": len(jobs) - len(unique), "done": len(unique) - len(not_done),
                  "failed": len(not_done) - len(todo)}
        return chosen, counts


def summary(jobs: int, counts: dict[str, int], launching: int, key: Sequence[str] | None) -> str:
    """``stet: 6 jobs, 4 done, launching 2`` (with the jobs that repeat another's run and
    those skipped as failed before, when there are any)."""
    text = f"stet: {jobs} job{'' if jobs == 1 else 's'}"
    if counts["same"]:
        text += f" ({counts['same']} the same run as another under key [{', '.join(key or ())}])"
    text += f", {counts['done']} done"
    if counts["failed"]:
        text += f", {counts['failed']} failed before (skip_failed)"
    return text + f", launching {launching}"


class StetTask:
    """The task function as each job runs it: the job's run is claimed in the store, the
    task function runs, and the run is recorded as done when it returns, as failed when
    it raises (the exception propagates, so Hydra sees the job fail). A job whose run
    another process holds (a concurrent multirun) or finished meanwhile is skipped: the
    task function does not run, nothing is recorded, and the job returns ``None``.

    A module-level class, so launchers that pickle the task function (joblib, submitit)
    can send it to their workers.
    """

    def __init__(self, task_function: Callable[[Any], Any], store: str, name: str,
                 key: Sequence[str] | None, skip_failed: bool) -> None:
        self.task_function = task_function
        self.store, self.name, self.skip_failed = store, name, skip_failed
        self.key = None if key is None else list(key)

    def __call__(self, cfg: Any) -> Any:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task)
        fields = job_fields(overrides, cfg, self.key)
        returned: list[Any] = []
        task = self.task_function

        def job(**_fields: Any) -> None:
            returned.append(task(cfg))

        # Skip messages name the task function: "[stet] Skipping train(lr='0.1', ...)".
        job.__name__ = getattr(task, "__name__", self.name)
        stet.once(store=self.store, name=self.name, skip_failed=self.skip_failed)(job)(**fields)
        return returned[0] if returned else None
