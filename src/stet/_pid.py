"""Kept for imports of old: the process id lives in :mod:`stet._fork`."""

from __future__ import annotations

from ._fork import close_if_ours, pid

__all__ = ["close_if_ours", "pid"]
