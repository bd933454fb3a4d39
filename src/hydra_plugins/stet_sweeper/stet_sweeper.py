"""``hydra/sweeper=stet``: Hydra's basic sweeper, minus the jobs a stet store has done.

The sweep expands exactly as the basic sweeper's (same override grammar,
``hydra.sweeper.params``, ``max_batch_size``); the jobs whose runs the store records as
done are dropped before the launcher sees them, and the rest go to whatever launcher is
configured, with the task function wrapped so that each job claims its run and records
it (:class:`stet._hydra.StetTask`). Kept light: Hydra imports this module whenever it
starts, so stet itself is imported only when a sweep is set up.
"""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence  # noqa: UP035

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.errors import CompactHydraException
from omegaconf import MISSING, DictConfig, OmegaConf

if TYPE_CHECKING:
    from hydra.core.utils import JobReturn
    from hydra.types import HydraContext, TaskFunction

    from stet._hydra import JobPlan

log = logging.getLogger(__name__)


# No `from __future__ import annotations`: Hydra runs this module before it is in
# sys.modules, where dataclasses would look string annotations up. OmegaConf reads these
# at runtime, in typing's spellings.
@dataclass
class StetSweeperConf:
    """``hydra.sweeper.*`` for ``hydra/sweeper=stet``."""

    _target_: str = "hydra_plugins.stet_sweeper.stet_sweeper.StetSweeper"
    #: The store (any stet store: runs.sqlite, runs.csv, a PostgreSQL URL); a relative
    #: path is relative to the directory the multirun was started from.
    store: str = MISSING
    #: Config keys (dotted paths) that identify a job (a list, or one key); by default,
    #: its task overrides.
    key: Any = None
    #: The function name runs are stored under (default: the task function's name).
    name: Optional[str] = None  # noqa: UP045
    #: Also drop the jobs whose runs failed before, instead of trying them again.
    skip_failed: bool = False
    #: As the basic sweeper's: launch at most this many jobs at a time.
    max_batch_size: Optional[int] = None  # noqa: UP045
    #: As the basic sweeper's: sweep overrides set in the config.
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="stet", node=StetSweeperConf,
                             provider="stet")


class StetSweeper(BasicSweeper):
    """Hydra's basic sweeper that launches only the jobs a stet store has not done."""

    def __init__(self, store: str, key: Any = None, name: str | None = None,
                 skip_failed: bool = False, max_batch_size: int | None = None,
                 params: dict[str, str] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.store = store
        self.key_setting = key  # checked in setup: Hydra would wrap an error said here
        self.key: list[str] | None = None
        self.name = name
        self.skip_failed = skip_failed
        self.plan: JobPlan | None = None

    def setup(self, *, hydra_context: "HydraContext", task_function: "TaskFunction",
              config: DictConfig) -> None:
        from stet._hydra import JobPlan, StetTask, resolve_store
        from stet.errors import StoreError

        self.key = _key_list(self.key_setting)
        # Resolved here, in the directory the multirun started from: jobs may chdir.
        store = resolve_store(self.store)
        name = self.name or getattr(task_function, "__qualname__", None) or "task"
        try:
            self.plan = JobPlan(store, name, self.skip_failed)
        except (ValueError, StoreError) as exc:  # the store's problem, in stet's words
            raise StetSweeperError(f"hydra.sweeper.store: {exc}") from None
        task = StetTask(task_function, store, name, self.key, self.skip_failed)
        super().setup(hydra_context=hydra_context, task_function=task, config=config)

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        """The basic sweeper's sweep, launching only the jobs not done."""
        from hydra.core.override_parser.overrides_parser import OverridesParser

        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None and self.plan is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = self.split_arguments(parser.parse_overrides(params_conf), None)[0]

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        from stet._hydra import summary

        todo, counts = self.plan.select(jobs, [self._fields(job) for job in jobs])
        log.info(summary(len(jobs), counts, len(todo), self.key))
        self.overrides = list(self.split_overrides_to_chunks(todo, self.max_batch_size)) \
            if todo else []
        self.batch_index = 0
        returns: list[Sequence[JobReturn]] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            if self.batch_index > 1:  # a concurrent multirun may have done some meanwhile
                batch, counts = self.plan.select(batch, [self._fields(job) for job in batch])
                if counts["done"]:
                    log.info(f"stet: {counts['done']} more done meanwhile, "
                             f"launching {len(batch)}")
                if not batch:
                    continue
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=initial_job_idx)
            for r in results:
                _ = r.return_value  # raises if the job failed, as the basic sweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        return returns

    def _fields(self, overrides: Sequence[str]) -> dict[str, Any]:
        from stet._hydra import SweepKeyError, check_key, job_fields

        if self.key is None:
            return job_fields(overrides, None, None)
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                     list(overrides))
        try:
            check_key(config, self.key)
            return job_fields(overrides, config, self.key)
        except SweepKeyError as exc:  # said as Hydra says a config error: the message alone
            raise StetSweeperError(str(exc)) from None


class StetSweeperError(CompactHydraException):
    """A ``hydra.sweeper.*`` setting stet cannot use (said before any job launches)."""


def _key_list(key: Any) -> "list[str] | None":
    """``hydra.sweeper.key`` as a list of dotted paths: ``[lr, seed]``, or ``lr`` alone."""
    if key is None:
        return None
    if isinstance(key, str):
        return [key]
    if OmegaConf.is_list(key) or isinstance(key, list | tuple):
        paths = list(key)  # (an empty list identifies nothing)
        if paths and all(isinstance(p, str) and p for p in paths):
            return paths
    raise StetSweeperError(f"hydra.sweeper.key must be a list of config keys (dotted "
                           f"paths, e.g. [optim.lr,seed]) or one key, not {key!r}")
