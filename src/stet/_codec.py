"""What every codec shares: the interface, parsed chunks, and how damage is reported.

A codec knows how a file starts, how one record is written, how complete records are
read back from a chunk of bytes, and what may follow the last complete record. The log
(:mod:`stet._logfile`) does everything else, the same way for every format. The formats are
:mod:`stet._csv_codec` and :mod:`stet._json_codec`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._index import Index, bulk
from ._schema import EMPTY_FIELD, ESCAPED_FIELD, Record
from .errors import CorruptStoreError, StoreError

__all__ = ["EMPTY_FIELD", "ESCAPED_FIELD", "TEAR_ALIGN", "Chunk", "Codec", "Damage", "Parsed",
           "Record", "corrupt", "is_utf8",
           "refuse_surrogate_pairs"]

# EMPTY_FIELD: CSV bookkeeping column listing (as a JSON array) the fields whose value
# is "". ESCAPED_FIELD: the fields whose cell holds their value as a JSON string: text
# UTF-8 cannot hold (a lone surrogate such as "\ud800").


class Chunk:
    """Records parsed from a file: aligned rows (``None`` = field absent) or dicts."""

    __slots__ = ("columns", "dicts", "header", "index_rows", "rows")

    def __init__(
        self,
        header: Sequence[str] | None = None,
        rows: list[Sequence[str | None]] | None = None,
        dicts: list[Record] | None = None,
        columns: Sequence[Sequence[str]] | None = None,
    ) -> None:
        self.header = header
        self.rows: list[Sequence[str | None]] = rows if rows is not None else []
        self.dicts: list[Record] = dicts if dicts is not None else []
        self.columns: Sequence[Sequence[str]] = columns if columns is not None else []
        #: Rows already in the index's layout: (key names sorted, [(func, value...)]).
        self.index_rows: tuple[tuple[str, ...], list[tuple[str, ...]]] | None = None

    def feed(self, index: Index) -> None:
        if self.index_rows is not None:
            with bulk():
                index.add_index_rows(*self.index_rows)
            return
        if self.header is not None and self.columns:
            with bulk():
                index.add_columns(self.header, self.columns)
            return
        if self.header is not None and self.rows:
            with bulk():
                index.add_rows(self.header, self.rows)
        if len(self.dicts) < 8:
            for d in self.dicts:
                index.add(d)
            return
        with bulk():
            self._feed_dicts(index)

    def _feed_dicts(self, index: Index) -> None:
        groups: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        for d in self.dicts:
            keys = tuple(d)
            rows = groups.get(keys)
            if rows is None:
                rows = groups[keys] = []
            rows.append(tuple(d.values()))
        for keys, rows in groups.items():
            index.add_rows(keys, rows)

    def records(self) -> Iterator[Record]:
        """The records as dicts (CSV's ``_stet_empty`` column, already decoded into the
        fields it lists, is left out)."""
        if self.header is not None:
            h = self.header
            drop = EMPTY_FIELD in h
            for values in zip(*self.columns, strict=True):
                record = dict(zip(h, values, strict=True))
                if drop:
                    del record[EMPTY_FIELD]
                yield record
            escaped = ESCAPED_FIELD in h
            for row in self.rows:
                record = {k: v for k, v in zip(h, row, strict=True) if v is not None}
                if drop:
                    record.pop(EMPTY_FIELD, None)
                if escaped:
                    record.pop(ESCAPED_FIELD, None)
                yield record
        yield from self.dicts

    def __len__(self) -> int:
        indexed = len(self.index_rows[1]) if self.index_rows is not None else 0
        columns = len(self.columns[0]) if self.columns else 0
        return indexed + columns + len(self.rows) + len(self.dicts)


class Parsed:
    """Result of parsing from some offset: records, and where the last one ended.

    ``end`` is the offset just past the last complete record; ``tail`` is ``"clean"``,
    ``"torn"`` (bytes after ``end`` that can only be what an interrupted append left, to
    be discarded) or ``"open"`` (the last record is whole but lacks its final newline, as
    an editor may leave it; the next append writes the newline first).
    """

    __slots__ = ("chunk", "end", "tail")

    def __init__(self, chunk: Chunk, end: int, tail: str) -> None:
        self.chunk, self.end, self.tail = chunk, end, tail


class Damage(Exception):
    """Bytes at offset ``at`` of the parsed data that no stet write can have left.

    Raised by codecs; the log turns it into a :class:`CorruptStoreError` naming the line.
    """

    def __init__(self, at: int, what: str) -> None:
        super().__init__(what)
        self.at, self.what = at, what


#: Writes are cut (by SIGKILL, a full disk) only at page boundaries of the file: the
#: kernel copies a write into the page cache page by page and checks for a fatal signal
#: between pages. A whole-looking last CSV line lacking only its newline that ends
#: elsewhere cannot be a cut append, so it is a record (an editor left it so); an
#: unclosed quote running over line breaks that ends elsewhere is damage, not a cut.
TEAR_ALIGN = 4096


class Codec(ABC):
    """Framing of one file format."""

    #: Bytes that must follow the last record for the file to be well formed.
    terminator: bytes = b""
    label: str = ""
    #: Whether a file may be read a piece at a time: a piece ending on a
    #: :data:`TEAR_ALIGN` boundary parses as its whole records and a torn tail (what a
    #: write cut there leaves), and the next piece starts where those records end.
    chunked: bool = False

    @abstractmethod
    def parse_head(self, data: bytes, path: Path) -> tuple[Any, int]:
        """Parse the start of a file: ``(head state, offset of the first record)``."""

    @abstractmethod
    def parse(
        self, data: bytes, head: Any, first: bool, path: Path, keys_only: bool = False,
        at: int = 0,
    ) -> Parsed:
        """Parse complete records from ``data`` (which starts where the last one ended).

        ``keys_only``: the records are for the index; a codec may leave out bookkeeping
        fields other than the function name (a million records load faster). ``at``: the
        offset of ``data`` in the file. Bytes after the last complete record are a torn
        tail only if an interrupted append can have left them; anything else malformed
        raises :class:`Damage`.
        """

    def parse_piece(
        self, data: bytes, head: Any, first: bool, path: Path, keys_only: bool = False,
        at: int = 0,
    ) -> Parsed:
        """:meth:`parse` for a piece of a file that goes on after it (see
        :attr:`chunked`): may stop earlier than the last whole record, if that is faster;
        the rest is parsed with the next piece."""
        return self.parse(data, head, first, path, keys_only, at)

    @abstractmethod
    def frame(self, record: Mapping[str, str], head: Any, first: bool) -> bytes | None:
        """Bytes appending ``record``; ``None`` when the file must be rewritten first."""

    @abstractmethod
    def render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        """A whole file holding ``records`` (with its terminator), and its head state."""


def corrupt(path: Path, what: str, fmt: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"{path} is not a readable stet {fmt} store: {what}. The file was left untouched; "
        f"move it aside or point the store at another path."
    )


_PAIR = re.compile("[\ud800-\udbff][\udc00-\udfff]")


def refuse_surrogate_pairs(path: Path, fmt: str, items: Iterator[tuple[str, str]]) -> None:
    """Raise :class:`StoreError` for a key field whose name or value holds a surrogate
    pair as two characters (``"\\ud800\\udc00"``): JSON's escape (``\\ud800\\udc00``), which
    JSON stores, CSV's escaped cells and Parquet's sidecar use for text UTF-8 cannot hold,
    cannot keep it apart from the one character it encodes (``"\\U00010000"``), so the run
    would never be found again. Lone surrogates are fine: escaped and read back."""
    for name, value in items:
        for what in (name, value):
            pair = None if what.isascii() else _PAIR.search(what)
            if pair is not None:
                part = "name" if what is name else "value"
                raise StoreError(
                    f"cannot record in {fmt} store {path}: the {part} of parameter "
                    f"{name!r:.80} holds a surrogate pair as two characters "
                    f"({pair.group()!r}), which the store's text escapes (JSON's) read back "
                    f"as the one character it encodes, so the run could never be found "
                    f"again. Nothing was recorded; pass the character itself (or use a "
                    f"SQLite store)."
                )


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (it holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
