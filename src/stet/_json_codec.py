"""JSON framing: one array of objects, and JSON Lines (failure logs, sidecars)."""

from __future__ import annotations

import json
import operator
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._codec import (
    Chunk,
    Codec,
    Damage,
    Parsed,
    Record,
    corrupt,
)
from ._index import bulk
from ._schema import FUNC_FIELD, GENERATION_FIELD, RESERVED_PREFIX
from .errors import CorruptStoreError

__all__ = ["JsonCodec", "JsonLinesCodec"]

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
        raise corrupt(path, f"an element is {type(obj).__name__}, not an object", fmt)
    out: Record = {}
    for k, v in obj.items():
        if isinstance(v, str):
            out[k] = v
        elif v is None:
            continue  # null: the field is absent
        elif isinstance(v, (bool, int, float)):
            out[k] = repr(v)
        else:
            raise corrupt(path, f"field {k!r} holds {type(v).__name__}, not text", fmt)
    return out


def _require_marker(obj: Any, path: Path) -> None:
    """Refuse a JSON array whose first object lacks stet's marker: a data file, not a
    store (the rule CSV applies to its header)."""
    if isinstance(obj, dict) and not any(
        isinstance(k, str) and k.startswith(RESERVED_PREFIX) for k in obj
    ):
        raise corrupt(path, f"its first object has no {RESERVED_PREFIX}* field, so it is a "
                             f"data file, not a store (every stet store, 0.0.2's included, "
                             f"has {RESERVED_PREFIX}timestamp)", "JSON")


class JsonCodec(Codec):
    """JSON: one array of objects, one object per line, valid after every append.

    The array's first object holds a ``_stet_`` field (as every record stet writes does):
    an array without one is someone else's data, refused and left untouched.
    """

    label = "JSON"
    terminator = b"\n]\n"
    chunked = True

    def parse_head(self, data: bytes, path: Path) -> tuple[Any, int]:
        start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        pos = _WS.match(data, start).end()  # type: ignore[union-attr]
        if pos == len(data):
            return None, 0
        if data[pos : pos + 1] != b"[":
            raise corrupt(path, "it does not start with a JSON array", "JSON")
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
        return _chunk_of(items, end, keys_only, path)

    def parse_piece(
        self, data: bytes, head: Any, first: bool, path: Path, keys_only: bool = False,
        at: int = 0,
    ) -> Parsed:
        """A piece of a big file: the records before the last ``,\n`` in it (where
        stet's writes put one between two records, and a JSON string cannot hold one) in
        one ``json.loads``; the rest is read with the next piece. Any other layout (a
        file written by another tool) goes record by record, as :meth:`parse`."""
        cut = data.rfind(b",\n")
        body = b""
        if cut > 0 and not first:
            skip = _WS.match(data).end()  # type: ignore[union-attr]
            if data[skip:skip + 1] == b",":
                body = data[skip + 1:cut]
        elif cut > 0:
            body = data[:cut]
        if body:
            text = bytearray(b"[")
            text += body
            text += b"]"
            try:
                with bulk():
                    items = json.loads(text)
            except (ValueError, RecursionError):
                items = None
            if items:
                if first:
                    _require_marker(items[0], path)
                with bulk():
                    return _chunk_of(items, cut, keys_only, path)
        return self.parse(data, head, first, path, keys_only, at)

    def frame(self, record: Mapping[str, str], head: Any, first: bool) -> bytes | None:
        line = json.dumps(record, ensure_ascii=True)
        return (b"\n" if first else b",\n") + line.encode("ascii")

    def render(self, records: Sequence[Mapping[str, str]], head: Any) -> tuple[bytes, Any]:
        body = ",\n".join(json.dumps(r, ensure_ascii=True) for r in records)
        return (b"[\n" + body.encode("ascii") + b"\n]\n") if records else b"[\n]\n", True


def _chunk_of(items: list[Any], end: int, keys_only: bool, path: Path) -> Parsed:
    """The records of a parsed array (which ends at ``end``), in the fastest layout they
    fit."""
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


class JsonLinesCodec(Codec):
    """JSON Lines with a first line naming the file's generation (used for sidecars)."""

    label = "JSON Lines"
    chunked = True

    def parse_head(self, data: bytes, path: Path) -> tuple[Any, int]:
        nl = data.find(b"\n")
        if nl < 0:
            return None, 0
        try:
            head = json.loads(data[:nl])
            gen = head[GENERATION_FIELD]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise corrupt(path, "its first line is not a stet sidecar header", "sidecar") from None
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
        out = [json.dumps({GENERATION_FIELD: gen})]
        out += [json.dumps(r, ensure_ascii=True) for r in records]
        return ("\n".join(out) + "\n").encode("ascii"), gen

