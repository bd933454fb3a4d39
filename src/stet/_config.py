"""Process-wide settings: whether skips are announced, whether writes are fsynced."""

from __future__ import annotations

import os

__all__ = ["config", "configure", "settings"]


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


class Settings:
    """Defaults used where a decorator or backend does not say otherwise.

    ``verbose``: print ``[stet] Skipping ...`` lines (env ``STET_QUIET=1`` turns them off).
    ``fsync``: fsync every record before the call returns, for power loss
    (env ``STET_FSYNC=1``); without it a record is with the OS, which survives SIGKILL.
    """

    def __init__(self) -> None:
        self.verbose: bool = not _env_flag("STET_QUIET", False)
        self.fsync: bool = _env_flag("STET_FSYNC", False)

    def __repr__(self) -> str:
        return f"Settings(verbose={self.verbose}, fsync={self.fsync})"


#: The configuration. Inside the package it is called ``config``, as a sweep's inputs are
#: its settings; ``stet.settings`` is its public name.
config = settings = Settings()


def configure(*, verbose: bool | None = None, fsync: bool | None = None) -> None:
    """Change the process-wide defaults (see :class:`Settings`)."""
    if verbose is not None:
        config.verbose = verbose
    if fsync is not None:
        config.fsync = fsync
