"""Exceptions stet raises for problems with a store."""

from __future__ import annotations

__all__ = ["CorruptStoreError", "StoreError"]


class StoreError(Exception):
    """A store cannot be used; the message names the store and what to do."""


class CorruptStoreError(StoreError):
    """A store file is corrupt or is not a stet store; the file is left untouched."""
