"""CSV framing: the grammar stet writes, read back in one pass; torn tails told apart."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._codec import (
    EMPTY_FIELD,
    ESCAPED_FIELD,
    TEAR_ALIGN,
    Chunk,
    Codec,
    Damage,
    Parsed,
    corrupt,
    is_utf8,
)
from ._index import bulk
from ._schema import RESERVED_PREFIX
from .errors import StoreError

__all__ = ["CsvCodec"]

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
    chunked = True

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
                raise corrupt(path, "its first line is not a header of distinct field "
                                     "names", "CSV")
            # no complete header line yet (empty file, or a torn first write)
            if data.strip() and (b"\0" in data or not _is_text(data)):
                raise corrupt(path, "it is not UTF-8 text", "CSV")
            return None, 0
        end = m.end()
        try:
            text = data[start:end].decode("utf-8")
        except UnicodeDecodeError:
            raise corrupt(path, "its header is not UTF-8 text", "CSV") from None
        rows = _csv_rows(text)
        # (An empty name is a field name like any other: f(**{"": 1}) makes one.)
        if len(rows) != 1 or not rows[0] or len(set(rows[0])) != len(rows[0]):
            raise corrupt(path, "its first line is not a header of distinct field names", "CSV")
        if not any(name.startswith(RESERVED_PREFIX) for name in rows[0]):
            raise corrupt(path, f"its header has no {RESERVED_PREFIX}* column, so it is a data "
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
        if not is_utf8(k):
            raise StoreError(
                f"the field name {k!r} holds a lone surrogate, which a CSV store (UTF-8 "
                f"text) cannot hold. Give it another name, or use a .json store."
            )
    bad = [k for k, v in record.items() if not is_utf8(v)]
    if not bad:
        return record
    out = dict(record)
    for k in bad:
        out[k] = json.dumps(out[k])
    out[ESCAPED_FIELD] = json.dumps(bad)
    return out


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


