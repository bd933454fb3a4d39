"""A store-file fuzzer: random damage to valid append-only store files
(docs/explanation/durability.md).

A valid store of each append-only format (CSV, JSON, and the ``.failures.jsonl`` log) is
written by stet itself, record by record, so the byte span of every record is known. Then
hypothesis cuts it short (a torn tail), flips bytes, inserts bytes or deletes a range, and
the store is opened, read and written to. Every outcome must be one of:

* ``CorruptStoreError``, with the file byte-identical afterwards;
* the records: every record the damage did not touch is there, in order (for a cut: the
  whole records before the cut, and no more than the record the cut fell in);

never a silent loss of an intact record, and never another exception type.
"""

from __future__ import annotations

import itertools
import tempfile
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stet._logfile import StoreWarning
from stet.backends import get_backend
from stet.backends._base import FailureLog
from stet.errors import CorruptStoreError

FORMATS = ("csv", "json", "jsonl")

#: Values that exercise quoting, escapes and multi-byte text in every format.
VALUES = ["plain", "", ",", '"', 'a "quoted", value', "two\nlines", "x\r\ny", "ü ∑ 🎲",
          ' ] } {"i": 9}', "\ud800", "7", "-0.5", "tab\tbed", "\\", "\ufeffbom"]

Span = tuple[int, int]
#: Bytes that mean something to a parser.
STRUCTURAL = [b'"', b"\n", b",", b"\r", b"{", b"}", b"[", b"]", b":", b"\\", b" ", b"\xff",
              b"\x00"]


def _open(path: Path, fmt: str) -> Any:
    if fmt == "jsonl":
        return FailureLog(path, path.with_name(path.name + ".lock"))
    return get_backend(path)


def _read(path: Path, fmt: str) -> list[dict[str, str]]:
    store = _open(path, fmt)
    if fmt == "jsonl":
        return list(store.records())
    with store as b:
        return list(b.load())


def _append(path: Path, fmt: str, record: dict[str, str]) -> None:
    store = _open(path, fmt)
    if fmt == "jsonl":
        store.append(record)
        return
    with store as b:
        b.append_record(record)


@cache
def _valid_store(fmt: str) -> tuple[bytes, tuple[Span, ...], tuple[dict[str, str], ...]]:
    """A store written by stet record by record: its bytes, each record's span (from its
    first byte to just past its newline; JSON: from the comma before it to the end of its
    object) and the records as read back."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / {"csv": "runs.csv", "json": "runs.json", "jsonl": "runs.jsonl"}[fmt]
        sizes = []
        for k in range(24):
            record = {"v": VALUES[k % len(VALUES)], "_stet_timestamp": f"2026-01-01T{k:02}"}
            if k % 3 == 0:
                record["w"] = VALUES[(k * 7 + 1) % len(VALUES)]
            if k == 0:
                record["w"] = ""  # (CSV: its _stet_empty column, from the start)
                record["v"] = "\ud800"  # (CSV: its _stet_escaped column, from the start)
            _append(path, fmt, record)
            sizes.append(path.stat().st_size)
        data = path.read_bytes()
        records = tuple(_read(path, fmt))
    assert len(records) == len(sizes)
    if fmt == "json":
        first = data.index(b"[") + 1
        ends = [s - len(b"\n]\n") for s in sizes]
        spans = [(first, ends[0]), *itertools.pairwise(ends)]
    else:
        first = data.index(b"\n") + 1  # (the header line: field names without line breaks)
        spans = [(first, sizes[0]), *itertools.pairwise(sizes)]
    for start, end in spans:  # (the spans are those of the records)
        assert data[end - 1: end] == (b"}" if fmt == "json" else b"\n")
        assert data[start: start + 2] in ((b",\n", b"\n{") if fmt == "json" else (
            data[start: start + 2],))
    return data, tuple(spans), records


def _is_subsequence(wanted: list[dict[str, str]], got: list[dict[str, str]]) -> bool:
    it = iter(got)
    return all(any(w == g for g in it) for w in wanted)


def _check(fmt: str, damaged: bytes, intact: list[dict[str, str]], what: str,
           check_loaded: Callable[[list[dict[str, str]]], None] | None = None) -> None:
    """Open, read and append to ``damaged``: refused with the file untouched, or every
    ``intact`` record is read, in order, and kept by the next append."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / {"csv": "runs.csv", "json": "runs.json", "jsonl": "runs.jsonl"}[fmt]
        path.write_bytes(damaged)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", StoreWarning)
            try:
                loaded = _read(path, fmt)
            except CorruptStoreError as exc:
                assert str(path) in str(exc), what
                assert path.read_bytes() == damaged, what
                return
            assert _is_subsequence(intact, loaded), (what, intact, loaded)
            if check_loaded is not None:
                check_loaded(loaded)
            new = {"v": "after", "_stet_timestamp": "2027"}
            try:
                _append(path, fmt, new)
            except CorruptStoreError:
                assert path.read_bytes() == damaged, what
                return
            again = _read(path, fmt)
        assert _is_subsequence([*intact, new], again), (what, again)
        assert again[:-1] == loaded, what  # (nothing the reader had seen was dropped)


def _intact(spans: tuple[Span, ...], records: tuple[dict[str, str], ...], lo: int,
            hi: int) -> list[dict[str, str]]:
    """The records whose bytes (and both edges) lie outside the damaged range [lo, hi]."""
    return [r for (start, end), r in zip(spans, records, strict=True)
            if end < lo or start > hi]


fuzz = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("fmt", FORMATS)
@fuzz
@given(data=st.data())
def test_a_cut_store_reads_exactly_its_whole_records(fmt: str, data: st.DataObject) -> None:
    valid, spans, records = _valid_store(fmt)
    first = spans[0][0]
    cut = data.draw(st.integers(first, len(valid)), label="cut")
    damaged = valid[:cut]
    whole = [r for (_, end), r in zip(spans, records, strict=True) if end <= cut]
    torn = next((k for k, (s, e) in enumerate(spans) if s < cut < e), None)

    def exactly(loaded: list[dict[str, str]]) -> None:
        # the whole records, and at most the record the cut fell in: whole (only its
        # newline lost), or, for CSV, a row that reads whole with its last cell cut
        assert loaded[: len(whole)] == whole, (cut, loaded)
        extra = loaded[len(whole):]
        assert len(extra) <= 1, (cut, extra)
        if extra:
            assert torn is not None
            original = records[torn]
            if fmt != "csv" or cut == spans[torn][1] - 1:
                assert extra[0] == original, (cut, extra)
            else:
                assert cut % 4096, cut  # (a write is cut on page boundaries)
                assert len(extra[0]) <= len(original), (cut, extra)

    _check(fmt, damaged, whole, f"cut at {cut}", exactly)


@pytest.mark.parametrize("fmt", ["json"])
@fuzz
@given(data=st.data())
def test_a_json_append_cut_over_the_closing_bracket_reads_its_whole_records(
    fmt: str, data: st.DataObject
) -> None:
    """The last append writes ``,\\n{...}\\n]\\n`` over the old ``\\n]\\n``: a cut leaves
    the start of the new bytes followed by what is left of the old ones."""
    valid, spans, records = _valid_store(fmt)
    before = spans[-1][0] + len(b"\n]\n")  # the file before the last append
    prev = valid[: spans[-1][0]] + b"\n]\n"
    assert len(prev) == before
    t = data.draw(st.integers(spans[-1][0], len(valid) - 1), label="written")
    damaged = valid[:t] + prev[t:]
    _check(fmt, damaged, list(records[:-1]), f"cut over the bracket at {t}")


@pytest.mark.parametrize("fmt", FORMATS)
@fuzz
@given(data=st.data())
def test_damage_anywhere_is_refused_or_loses_no_intact_record(
    fmt: str, data: st.DataObject
) -> None:
    valid, spans, records = _valid_store(fmt)
    kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "flips"]),
                     label="kind")
    if kind == "set":  # a byte that means something to a parser (a stray quote, ...)
        i = data.draw(st.integers(0, len(valid) - 1), label="at")
        new = data.draw(st.sampled_from(STRUCTURAL), label="byte")
        damaged = valid[:i] + new + valid[i + 1:]
        lo, hi = i, i + 1
    elif kind == "flip":
        i = data.draw(st.integers(0, len(valid) - 1), label="at")
        x = data.draw(st.integers(1, 255), label="xor")
        damaged = valid[:i] + bytes([valid[i] ^ x]) + valid[i + 1:]
        lo, hi = i, i + 1
    elif kind == "flips":
        i = data.draw(st.integers(0, len(valid) - 2), label="at")
        n = data.draw(st.integers(2, 8), label="n")
        new = data.draw(st.binary(min_size=n, max_size=n), label="bytes")
        damaged = valid[:i] + new + valid[i + n:]
        lo, hi = i, i + n
    elif kind == "insert":
        i = data.draw(st.integers(0, len(valid)), label="at")
        new = data.draw(st.one_of(
            st.binary(min_size=1, max_size=12),
            st.sampled_from([*STRUCTURAL, b",\n{", b'"\n', b'\\"', b'",', b"\n]\n"])),
            label="bytes")
        damaged = valid[:i] + new + valid[i:]
        lo, hi = i, i
    else:
        i = data.draw(st.integers(0, len(valid) - 1), label="at")
        j = data.draw(st.integers(i + 1, min(len(valid), i + 200)), label="to")
        damaged = valid[:i] + valid[j:]
        lo, hi = i, j
    if damaged == valid:
        return
    header_end = spans[0][0]
    intact = [] if lo < header_end else _intact(spans, records, lo, hi)
    _check(fmt, damaged, intact, f"{kind} at {lo}..{hi}")
