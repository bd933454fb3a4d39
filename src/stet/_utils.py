"""The path the original API reference names for ``status`` and ``reset``; they live in
:mod:`stet._admin`."""

from ._admin import reset, status

__all__ = ["reset", "status"]
