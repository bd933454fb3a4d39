"""How records are framed as bytes in each append-only file format.

A codec knows how a file starts, how one record is written, how complete records are
read back from a chunk of bytes, and what may follow the last complete record. The log
(:mod:`stet._log`) does everything else, the same way for every format.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import operator
import os
import re
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._identity import RESERVED_PREFIX
from ._index import FUNC_FIELD, Index, bulk
from .errors import CorruptStoreError, StoreError

__all__ = ["Chunk", "Codec", "CsvCodec", "JsonCodec", "JsonLinesCodec", "Record",
           "refuse_surrogate_pairs"]

Record = dict[str, str]

#: CSV bookkeeping column listing (as a JSON array) the fields whose value is "".
EMPTY_FIELD = "_stet_empty"
#: CSV bookkeeping column listing (as a JSON array) the fields whose cell holds their
#: value as a JSON string: text UTF-8 cannot hold (a lone surrogate such as "\ud800").
ESCAPED_FIELD = "_stet_escaped"


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

    @abstractmethod
    def frame(self, record: Mapping[str, str], head: Any, first: bool) -> bytes | None:
        """Bytes appending ``record``; ``None`` when the file must be rewritten first."""

    @abstractmethod
    def render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        """A whole file holding ``records`` (with its terminator), and its head state."""


def _corrupt(path: Path, what: str, fmt: str) -> CorruptStoreError:
    return CorruptStoreError(
        f"{path} is not a readable stet {fmt} store: {what}. The file was left untouched; "
        f"move it aside or point the store at another path."
    )


# --------------------------------------------------------------------------------- CSV
# The grammar stet's CSV writer follows (RFC 4180): a field is quoted (``"`` ... ``"``
# with ``""`` for a quote) or holds no quote, comma, CR or LF; a record ends with LF
# (CRLF, from other tools, is read too). Possessive quantifiers: one pass, no backtracking,
# so a 10 MB field or a million rows cost one scan in C.
_QUOTED = rb'"[^"]*+(?:""[^"]*+)*+"'
_FIELD = rb"(?:" + _QUOTED + rb'|[^",\r\n]*+)'
_ROW = _FIELD + rb"(?:," + _FIELD + rb")*+"
#: Whole records from the start of a chunk (the match ends where the first bad one starts).
_RECORDS = re.compile(rb"(?:" + _ROW + rb"\r?\n)*+")
_RECORD = re.compile(_ROW + rb"\r?\n")
#: A record lacking only its newline (or the LF of its CRLF).
_ROW_ONLY = re.compile(_ROW + rb"\r?")
#: A prefix of one record: whole fields, then one field cut anywhere (a quoted one inside
#: a doubled quote or just after its closing quote).
_ROW_PREFIX = re.compile(rb"(?:" + _FIELD + rb",)*+(?:" + rb'"[^"]*+(?:""[^"]*+)*+"?'
                         + rb'|[^",\r\n]*+)\r?')
_ANY_QUOTED = re.compile(rb'"[^"]*+(?:""[^"]*+)*+"?')


def _records_end(data: bytes) -> int:
    """Offset just past the last of the whole, well-formed records that start ``data``."""
    if b'"' not in data and b"\r" not in data:
        return data.rfind(b"\n") + 1  # every line is a record (what stet writes for plain values)
    m = _RECORDS.match(data)
    assert m is not None  # (the pattern matches the empty string)
    return m.end()


def _csv_tail(data: bytes, end: int, width: int, file_end: int) -> str:
    """What the bytes after the last whole record are: ``clean`` (none), ``torn`` (what an
    interrupted append leaves: a prefix of one record) or ``open`` (a whole record without
    its newline, not ending where a cut write can end); raises :class:`Damage` otherwise."""
    if end == len(data):
        return "clean"
    tail = data[end:]
    m = _ROW_PREFIX.match(tail)
    if m is None or m.end() != len(tail):
        bad = end + (m.end() if m is not None else 0)
        raise Damage(bad, "a malformed row (a stray quote, or a line break outside quotes)"
                          if bad < len(data) else "a malformed row")
    cells = _ANY_QUOTED.sub(b"", tail).count(b",") + 1
    if cells > width:
        raise Damage(end, f"a row has {cells} cells where the header has {width}")
    if cells == width and _ROW_ONLY.fullmatch(tail) and file_end % TEAR_ALIGN:
        return "open"
    if b"\n" in tail and file_end % TEAR_ALIGN:
        # Line breaks inside a quote opened and never closed. A cut write of a value with
        # line breaks would end on a page boundary; this is a stray quote (the rows after
        # it are whole records, not to be dropped).
        raise Damage(end, "a quote opens a cell and never closes")
    try:
        tail.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":  # (a character cut by the tear is fine)
            raise Damage(end + exc.start, "bytes that are not UTF-8 text") from None
    return "torn"


def _row_offset(data: bytes, row: int) -> int:
    """Offset of the ``row``-th record (0-based) of well-formed ``data`` (for messages)."""
    pos = 0
    for _ in range(row):
        m = _RECORD.match(data, pos)
        if m is None:
            break
        pos = m.end()
    return pos


#: ``csv.field_size_limit`` is process-wide; stet raises it only while it reads a store
#: that needs it, under this lock, and puts back the caller's limit unless someone else
#: changed it meanwhile.
_limit_lock = threading.Lock()


def _csv_rows(text: str) -> list[list[str]]:
    """``csv.reader`` rows of ``text``, fields of any size (a 10 MB value included)."""
    try:
        return list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        if "field limit" not in str(exc):
            raise
    with _limit_lock:
        old = csv.field_size_limit(sys.maxsize)
        try:
            return list(csv.reader(io.StringIO(text, newline="")))
        finally:
            if csv.field_size_limit() == sys.maxsize:
                csv.field_size_limit(old)


def _plain_columns(text: str, width: int) -> list[list[str]] | None:
    """Columns of whole CSV lines that hold no quote and no CR (what stet writes for plain
    values), split in C rather than by the csv module: a million rows open in a fraction
    of the time. ``None`` when the text is not that simple (the csv module reads it)."""
    if not text or '"' in text or "\r" in text or not text.endswith("\n"):
        return None
    lines = text.count("\n")
    if text.count(",") != lines * (width - 1):
        return None
    per_line = text.split("\n")
    per_line.pop()
    if set(map(str.count, per_line, itertools.repeat(","))) != {width - 1}:
        return None
    cells = text.replace("\n", ",").split(",")
    total = lines * width
    return [cells[k:total:width] for k in range(width)]


def _first_record_end(data: bytes) -> int:
    """Offset just past the first newline outside quotes (0 if none yet)."""
    i = data.find(b"\n")
    while i >= 0:
        if data.count(b'"', 0, i) % 2 == 0:
            return i + 1
        i = data.find(b"\n", i + 1)
    return 0


class CsvCodec(Codec):
    """CSV: a header row of field names, then one row per record.

    An empty cell is an absent field; a field whose value is the empty string is listed in
    the ``_stet_empty`` column (a JSON array), which appears only once it is needed.
    """

    label = "CSV"

    def __init__(self) -> None:
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")
        # csv quotes a cell holding "\n" but not one holding a lone "\r" when the line
        # terminator is "\n"; rows with "\r" anywhere are written fully quoted.
        self._quoted = csv.writer(self._buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self._header: Sequence[str] | None = None
        self._header_set: frozenset[str] = frozenset()

    def _line(self, row: Sequence[str]) -> str:
        self._buf.seek(0)
        self._buf.truncate()
        if any("\r" in cell for cell in row) or (row and row[0].startswith("\ufeff")):
            # (a leading U+FEFF quoted, so it is not taken for a byte-order mark)
            self._quoted.writerow(row)
        else:
            self._writer.writerow(row)
        return self._buf.getvalue()

    def parse_head(self, data: bytes, path: Path) -> tuple[Any, int]:
        start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        m = _RECORD.match(data, start)
        if m is None:
            if _first_record_end(data) or (b"\n" in data and b'"' not in data):
                raise _corrupt(path, "its first line is not a header of distinct field "
                                     "names", "CSV")
            # no complete header line yet (empty file, or a torn first write)
            if data.strip() and (b"\0" in data or not _is_text(data)):
                raise _corrupt(path, "it is not UTF-8 text", "CSV")
            return None, 0
        end = m.end()
        try:
            text = data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise _corrupt(path, "its header is not UTF-8 text", "CSV") from None
        rows = _csv_rows(text)
        # (An empty name is a field name like any other: f(**{"": 1}) makes one.)
        if len(rows) != 1 or not rows[0] or len(set(rows[0])) != len(rows[0]):
            raise _corrupt(path, "its first line is not a header of distinct field names", "CSV")
        if not any(name.startswith(RESERVED_PREFIX) for name in rows[0]):
            raise _corrupt(path, f"its header has no {RESERVED_PREFIX}* column, so it is a data "
                                 f"file, not a store (every stet store, 0.0.2's included, has "
                                 f"{RESERVED_PREFIX}timestamp)", "CSV")
        return list(rows[0]), end

    def parse(
        self, data: bytes, head: Any, first: bool, path: Path, keys_only: bool = False,
        at: int = 0,
    ) -> Parsed:
        header: list[str] = head
        width = len(header)
        end = _records_end(data)
        tail = _csv_tail(data, end, width, at + len(data))
        body = data[:end] if tail != "open" else data + b"\n"
        if tail == "open":
            end = len(data)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Damage(exc.start, "bytes that are not UTF-8 text") from None
        escaped_col = header.index(ESCAPED_FIELD) if ESCAPED_FIELD in header else -1
        with bulk():
            plain = _plain_columns(text, width) if escaped_col < 0 else None
            if plain is not None and not any("" in col for col in plain):
                return Parsed(Chunk(header=header, columns=plain), end, tail)
            parsed = _csv_rows(text)
            if escaped_col < 0 and parsed and set(map(len, parsed)) == {width}:
                columns = list(zip(*parsed, strict=True))
                if not any("" in col for col in columns):  # no absent fields: fast path
                    return Parsed(Chunk(header=header, columns=columns),
                                  end, tail)
        rows: list[Sequence[str | None]] = []
        empty_col = header.index(EMPTY_FIELD) if EMPTY_FIELD in header else -1
        for k, row in enumerate(parsed):
            if len(row) != width:
                if not row:
                    continue
                raise Damage(_row_offset(body, k), f"a row has {len(row)} cells where the "
                                                   f"header has {width}: {row!r:.200}")
            if escaped_col >= 0 and row[escaped_col]:
                decoded = _unescape(row, row[escaped_col], header)
                if decoded is None:
                    raise Damage(_row_offset(body, k), f"bad {ESCAPED_FIELD} cell "
                                                       f"{row[escaped_col]!r:.200}")
                row = decoded
            if "" in row:
                empties: set[str] = set()
                if empty_col >= 0 and row[empty_col]:
                    try:
                        empties = set(json.loads(row[empty_col]))
                    except (ValueError, TypeError, RecursionError):
                        raise Damage(_row_offset(body, k), f"bad {EMPTY_FIELD} cell "
                                                           f"{row[empty_col]!r:.200}") from None
                rows.append([v if v or h in empties else None
                             for h, v in zip(header, row, strict=True)])
            else:
                rows.append(row)
        return Parsed(Chunk(header=header, rows=rows), end, tail)

    def _cells(self, record: Mapping[str, str], header: Sequence[str]) -> list[str] | None:
        if self._header is not header:  # the set of the last header seen, for membership
            self._header, self._header_set = header, frozenset(header)
        if not self._header_set.issuperset(record):
            return None
        if "" in record.values():
            empties = [k for k, v in record.items() if v == ""]
            if EMPTY_FIELD not in header:
                return None
            record = {**record, EMPTY_FIELD: json.dumps(empties)}
        get = record.get
        return [get(h, "") for h in header]

    def frame(self, record: Mapping[str, str], head: Any, first: bool) -> bytes | None:
        cells = self._cells(record, head)
        if cells is None:
            return None
        try:
            return self._line(cells).encode("utf-8")
        except UnicodeEncodeError:
            escaped = self._cells(_escape(record), head)
            return None if escaped is None else self._line(escaped).encode("utf-8")

    def render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        try:
            return self._render(records, head)
        except UnicodeEncodeError:  # (rare: checked only when needed)
            return self._render([_escape(r) for r in records], head)

    def _render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        header: list[str] = list(head or [])
        seen = set(header)
        new_keys: list[str] = []
        new_book: list[str] = []
        for r in records:
            for k in r:
                if k not in seen:
                    seen.add(k)
                    (new_book if k.startswith(RESERVED_PREFIX) else new_keys).append(k)
            if EMPTY_FIELD not in seen and "" in r.values():
                seen.add(EMPTY_FIELD)
                new_book.append(EMPTY_FIELD)
        header += new_keys + new_book
        out = [self._line(header)]
        for r in records:
            cells = self._cells(r, header)
            assert cells is not None
            out.append(self._line(cells))
        return "".join(out).encode("utf-8"), header


def _escape(record: Mapping[str, str]) -> Mapping[str, str]:
    """``record`` with the values UTF-8 cannot hold as JSON strings, listed in
    ``_stet_escaped`` (the record itself when there are none)."""
    for k in record:
        if not _utf8(k):
            raise StoreError(
                f"the field name {k!r} holds a lone surrogate, which a CSV store (UTF-8 "
                f"text) cannot hold. Give it another name, or use a .json store."
            )
    bad = [k for k, v in record.items() if not _utf8(v)]
    if not bad:
        return record
    out = dict(record)
    for k in bad:
        out[k] = json.dumps(out[k])
    out[ESCAPED_FIELD] = json.dumps(bad)
    return out


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unescape(row: list[str], cell: str, header: Sequence[str]) -> list[str] | None:
    """``row`` with the cells ``cell`` lists decoded (``None`` if they are not JSON text)."""
    try:
        names = json.loads(cell)
        out = list(row)
        for name in names:
            k = header.index(name)
            value = json.loads(out[k])
            if not isinstance(value, str):
                return None
            out[k] = value
    except (ValueError, TypeError, RecursionError):
        return None
    return out


def _is_text(data: bytes) -> bool:
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > 4090  # a multi-byte character cut at the sample's edge
    return True


# -------------------------------------------------------------------------------- JSON
_WS = re.compile(rb"[ \t\r\n]*")
_JSON_CLEAN = re.compile(rb"[ \t\r\n]*\][ \t\r\n]*")
# What an interrupted append may leave after the last complete object: an append writes
# ``,\n{...}\n]\n`` (``\n{...}\n]\n`` for the first object) in one write over the
# closing ``\n]\n``, so a cut leaves the comma over the old bracket (``,]``), or the start
# of the object line and nothing after it (or the old final newline, after ``\n{``).
_JSON_TORN = re.compile(rb"[ \t\r\n]*(?:(,)?[ \t\r\n]*(?:\][ \t\r\n]*|(\{[^\n]*)(\n?))?)?")
_decoder = json.JSONDecoder()
#: Ends that complete any prefix of a one-line JSON object json.dumps writes.
_CLOSERS = ('"}', "}", '":0}', ":0}", "0}", '"":0}', "ue}", "rue}", "e}", "l}", "ll}",
            "ull}", "se}", "lse}", "alse}")
_OPEN_ESCAPE = re.compile(rb"(\\+)(u[0-9a-fA-F]{0,3})?$")


def _is_object_prefix(data: bytes) -> bool:
    """Whether ``data`` is the start of a one-line JSON object (as cut by a torn write)."""
    if not data.startswith(b"{") or b"\n" in data or not data.isascii():
        return False  # (stet writes its objects as ASCII, on one line)
    escape = b""
    m = _OPEN_ESCAPE.search(data)
    if m and len(m.group(1)) % 2:  # cut inside an escape sequence
        escape = b"n" if m.group(2) is None else b"0" * (5 - len(m.group(2)))
    for close in _CLOSERS:
        try:
            if isinstance(json.loads(data + escape + close.encode()), dict):
                return True
        except (ValueError, RecursionError):
            continue
    return False


def _all_text(column: Sequence[Any]) -> bool:
    """Whether every value is a ``str`` (``str.join`` checks that in C)."""
    try:
        "".join(column)
    except TypeError:
        return False
    return True


def _skip_ws_back(data: bytes, end: int) -> int:
    """The offset just past the last non-whitespace byte before ``end``."""
    while end and data[end - 1] in b" \t\r\n":
        end -= 1
    return end


def _check_object(obj: Any, path: Path, fmt: str) -> Record:
    if not isinstance(obj, dict):
        raise _corrupt(path, f"an element is {type(obj).__name__}, not an object", fmt)
    out: Record = {}
    for k, v in obj.items():
        if isinstance(v, str):
            out[k] = v
        elif v is None:
            continue  # null: the field is absent
        elif isinstance(v, (bool, int, float)):
            out[k] = repr(v)
        else:
            raise _corrupt(path, f"field {k!r} holds {type(v).__name__}, not text", fmt)
    return out


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


def _require_marker(obj: Any, path: Path) -> None:
    """Refuse a JSON array whose first object lacks stet's marker: a data file, not a
    store (the rule CSV applies to its header)."""
    if isinstance(obj, dict) and not any(
        isinstance(k, str) and k.startswith(RESERVED_PREFIX) for k in obj
    ):
        raise _corrupt(path, f"its first object has no {RESERVED_PREFIX}* field, so it is a "
                             f"data file, not a store (every stet store, 0.0.2's included, "
                             f"has {RESERVED_PREFIX}timestamp)", "JSON")


class JsonCodec(Codec):
    """JSON: one array of objects, one object per line, valid after every append.

    The array's first object holds a ``_stet_`` field (as every record stet writes does):
    an array without one is someone else's data, refused and left untouched.
    """

    label = "JSON"
    terminator = b"\n]\n"

    def parse_head(self, data: bytes, path: Path) -> tuple[Any, int]:
        start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        pos = _WS.match(data, start).end()  # type: ignore[union-attr]
        if pos == len(data):
            return None, 0
        if data[pos : pos + 1] != b"[":
            raise _corrupt(path, "it does not start with a JSON array", "JSON")
        return True, pos + 1

    def check_start(self, data: bytes, path: Path) -> None:
        """Refuse, from the first bytes of a file alone, a file that is not a JSON store
        (not an array, or an array whose first object lacks stet's marker). Says nothing
        when those bytes do not settle it (the first object is longer, or torn)."""
        head, start = self.parse_head(data, path)
        if head is None:
            return
        try:
            text = data[start:].decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data[start : start + exc.start].decode("utf-8")
        pos = len(text) - len(text.lstrip(" \t\r\n"))
        if text[pos : pos + 1] in ("", "]"):
            return
        try:
            obj, _end = _decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return
        _require_marker(obj, path)

    def parse(
        self, data: bytes, head: Any, first: bool, path: Path, keys_only: bool = False,
        at: int = 0,
    ) -> Parsed:
        if first:
            with bulk():
                fast = self._parse_whole(data, path, keys_only)
            if fast is not None:
                return fast
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = data[: exc.start].decode("utf-8")
        ascii_only = text.isascii()
        dicts: list[Record] = []
        pos = 0  # in characters
        end_chars = 0
        n = len(text)
        while True:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos >= n:
                break
            ch = text[pos]
            if ch == "]":
                break
            if not first:
                if ch != ",":
                    break
                pos += 1
                while pos < n and text[pos] in " \t\r\n":
                    pos += 1
            start = pos
            try:
                obj, pos = _decoder.raw_decode(text, pos)
            except json.JSONDecodeError:
                break
            except RecursionError:
                at = start if ascii_only else len(text[:start].encode("utf-8"))
                raise Damage(at, "an element is nested too deeply to be a record") from None
            if first:
                _require_marker(obj, path)
            try:
                dicts.append(_check_object(obj, path, "JSON"))
            except CorruptStoreError:
                at = start if ascii_only else len(text[:start].encode("utf-8"))
                kind = type(obj).__name__
                raise Damage(at, f"an element is not an object of text fields ({kind}: "
                                 f"{text[start:pos][:80]!r})") from None
            end_chars = pos
            first = False
        end = end_chars if ascii_only else len(text[:end_chars].encode("utf-8"))
        rest = data[end:]
        if _JSON_CLEAN.fullmatch(rest):
            tail = "clean"
        else:
            m = _JSON_TORN.fullmatch(rest)
            comma, obj = (m.group(1), m.group(2)) if m is not None else (None, None)
            if m is None or (comma is not None and first) or (
                obj is not None and ((comma is None) != first or not _is_object_prefix(obj)
                                     or (m.group(3) and obj != b"{"))):
                bad = end + _WS.match(rest).end()  # type: ignore[union-attr]
                raise Damage(bad, f"unexpected text after the last whole record: "
                                  f"{data[bad:bad + 80]!r}")
            tail = "torn"
        return Parsed(Chunk(dicts=dicts), end, tail)

    def _parse_whole(self, data: bytes, path: Path, keys_only: bool) -> Parsed | None:
        """Fast path for a complete file: one ``json.loads`` of the array body."""
        # (offsets found by hand, not by rstrip and slicing: a 200 MB file is not copied)
        close = _skip_ws_back(data, len(data))
        if close == 0 or data[close - 1] != ord("]"):
            return None
        text = bytearray(b"[")
        text += memoryview(data)[:close]
        try:
            items = json.loads(text)
        except (ValueError, RecursionError):
            return None
        del text
        if not isinstance(items, list):
            return None
        if items:
            _require_marker(items[0], path)
        end = _skip_ws_back(data, close - 1) if items else 0
        if items and set(map(type, items)) == {dict}:
            # Usual case: every object has the same fields, all text. Checked and turned
            # into columns without a Python-level loop per record.
            keys = items[0].keys()
            header = tuple(keys)
            if all(map(keys.__eq__, map(dict.keys, items))):  # same fields everywhere
                if keys_only and FUNC_FIELD in header:
                    # Straight into the index's own row layout: (function, sorted keys...)
                    names = tuple(sorted(h for h in header
                                         if not h.startswith(RESERVED_PREFIX)))
                    getter = operator.itemgetter(FUNC_FIELD, *names)
                    rows = list(map(getter, items)) if names else []
                    if rows and all(map(_all_text, zip(*rows, strict=True))):
                        chunk = Chunk()
                        chunk.index_rows = (names, rows)
                        return Parsed(chunk, end, "clean")
                if keys_only:
                    header = tuple(h for h in header
                                   if h == FUNC_FIELD or not h.startswith(RESERVED_PREFIX))
                rows = list(map(operator.itemgetter(*header), items)) if header else []
                if rows and len(header) == 1:
                    columns: list[Sequence[str]] = [rows]
                else:
                    columns = list(zip(*rows, strict=True))
                if rows and all(map(_all_text, columns)):
                    return Parsed(Chunk(header=header, columns=columns), end, "clean")
        dicts = [_check_object(o, path, "JSON") for o in items]
        return Parsed(Chunk(dicts=dicts), end, "clean")

    def frame(self, record: Mapping[str, str], head: Any, first: bool) -> bytes | None:
        line = json.dumps(record, ensure_ascii=True)
        return (b"\n" if first else b",\n") + line.encode("ascii")

    def render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        body = ",\n".join(json.dumps(r, ensure_ascii=True) for r in records)
        return (b"[\n" + body.encode("ascii") + b"\n]\n") if records else b"[\n]\n", True


class JsonLinesCodec(Codec):
    """JSON Lines with a first line naming the file's generation (used for sidecars)."""

    label = "JSON Lines"

    def parse_head(self, data: bytes, path: Path) -> tuple[Any, int]:
        nl = data.find(b"\n")
        if nl < 0:
            return None, 0
        try:
            head = json.loads(data[:nl])
            gen = head["_stet_generation"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise _corrupt(path, "its first line is not a stet sidecar header", "sidecar") from None
        return str(gen), nl + 1

    def parse(
        self, data: bytes, head: Any, first: bool, path: Path, keys_only: bool = False,
        at: int = 0,
    ) -> Parsed:
        end = data.rfind(b"\n") + 1
        tail = "clean"
        if end < len(data):
            last = data[end:]
            try:
                whole = isinstance(json.loads(last), dict)
            except (ValueError, RecursionError):
                whole = False
            if whole:
                tail, end = "open", len(data)  # a whole record, only its newline missing
            elif _is_object_prefix(last):
                tail = "torn"  # a cut append
            else:
                raise Damage(end, f"a line is not a JSON object: {last[:80]!r}")
        dicts = []
        pos = 0
        for line in data[:end].split(b"\n"):
            if line.strip():
                try:
                    obj = json.loads(line)
                except (ValueError, RecursionError):
                    raise Damage(pos, f"a line is not JSON: {line[:80]!r}") from None
                dicts.append(_check_object(obj, path, "sidecar"))
            pos += len(line) + 1
        return Parsed(Chunk(dicts=dicts), end, tail)

    def frame(self, record: Mapping[str, str], head: Any, first: bool) -> bytes | None:
        return json.dumps(record, ensure_ascii=True).encode("ascii") + b"\n"

    def render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        gen = head or os.urandom(16).hex()
        out = [json.dumps({"_stet_generation": gen})]
        out += [json.dumps(r, ensure_ascii=True) for r in records]
        return ("\n".join(out) + "\n").encode("ascii"), gen
