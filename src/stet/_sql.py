"""SQL text shared by the SQLite and PostgreSQL stores: identifiers are always quoted."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["quote_ident"]


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: any text is data, never SQL."""
    if "\x00" in name:
        raise ValueError(f"field name {name!r} holds a NUL character")
    return '"' + name.replace('"', '""') + '"'


def column_list(names: Iterable[str]) -> str:
    return ", ".join(quote_ident(n) for n in names)
