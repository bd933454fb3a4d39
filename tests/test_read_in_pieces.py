"""A big CSV or JSON store (and a JSON Lines log) is read a piece at a time, and reads the
same as read whole: every run, however awkward its values, with damage reported at its
line, and a torn last record still discarded."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import stet
import stet._logfile
from stet.backends import get_backend
from stet.errors import CorruptStoreError

AWKWARD = ["", " ", ",", '"', '""', "\n", "\r\n", "a,b", 'say "hi"', "line\nbreak",
           "é", "日本", "🙂", "\t", "x" * 5000, ",\n\"", "0.1", "-", "\\", "'"]


def _records(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"i": i, "note": "".join(rng.choice(AWKWARD) for _ in range(rng.randint(0, 4)))}
            for i in range(n)]


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    with get_backend(path) as b:
        for r in records:
            b.record(r)


def _tear_csv(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b'999,"cut in the midd')


def _tear_json(path: Path) -> None:
    data = path.read_bytes()
    assert data.endswith(b"\n]\n")
    path.write_bytes(data[:-3] + b',\n{"i": "999", "note": "cut in the midd')


#: What an append cut short leaves at the end of a store, by format.
TEAR = {"csv": _tear_csv, "json": _tear_json}


@pytest.mark.parametrize("fmt", sorted(TEAR))
@pytest.mark.parametrize("seed", range(3))
def test_a_store_read_in_pieces_holds_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, fmt: str
) -> None:
    path = tmp_path / f"runs.{fmt}"
    records = _records(400, seed)
    _write(path, records)
    assert path.stat().st_size > 20 * 4096  # many pieces
    monkeypatch.setattr(stet._logfile, "_PIECE", 4096)
    with get_backend(path) as b:
        assert len(b) == len(records)
        for r in records:
            assert b.has(r), r
        assert not b.has({"i": 0, "note": "not recorded"})


def test_a_failure_log_read_in_pieces_holds_every_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.csv"
    notes = [r["note"] for r in _records(300, 7)]

    @stet.once(store=path, name="f", verbose=False)
    def f(i: int, note: str) -> None:
        raise ValueError(note[:50])

    for i, note in enumerate(notes):
        with pytest.raises(ValueError):
            f(i, note)
    assert (tmp_path / "runs.csv.failures.jsonl").stat().st_size > 10 * 4096
    monkeypatch.setattr(stet._logfile, "_PIECE", 4096)
    g = stet.once(store=path, name="f", verbose=False, skip_failed=True)(
        lambda i, note: pytest.fail("a failed run was run again"))
    for i, note in enumerate(notes):
        g(i, note)


def test_damage_in_the_middle_is_named_at_its_line_when_read_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.csv"
    _write(path, _records(300, 1))
    lines = path.read_bytes().split(b"\n")
    at = len(lines) * 2 // 3
    lines[at] = b'12,"never closed,x' + lines[at]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CorruptStoreError) as whole:
        len(get_backend(path))
    monkeypatch.setattr(stet._logfile, "_PIECE", 4096)
    with pytest.raises(CorruptStoreError) as pieces:
        len(get_backend(path))
    assert str(pieces.value) == str(whole.value)


@pytest.mark.parametrize("fmt", sorted(TEAR))
def test_a_torn_last_record_is_still_discarded_when_read_in_pieces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    path = tmp_path / f"runs.{fmt}"
    records = _records(300, 2)
    _write(path, records)
    TEAR[fmt](path)
    monkeypatch.setattr(stet._logfile, "_PIECE", 4096)
    with get_backend(path) as b:
        assert len(b) == len(records)
        with pytest.warns(stet._logfile.StoreWarning, match="interrupted write"):
            b.record({"i": 1000, "note": "after"})
        assert len(b) == len(records) + 1


@pytest.mark.parametrize("fmt", sorted(TEAR))
def test_a_first_record_longer_than_a_piece_is_read_once_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The piece that holds the file's head holds no whole record: the next, longer, one
    starts after the head (not at the file's start, where the head would be read as a
    record, or as damage)."""
    path = tmp_path / f"runs.{fmt}"
    records = [{"i": 0, "note": "x" * 50_000}, *_records(50, 3)[1:]]
    _write(path, records)
    monkeypatch.setattr(stet._logfile, "_PIECE", 4096)
    with get_backend(path) as b:
        assert len(b) == len(records)
        assert all(b.has(r) for r in records)
        assert not b.has({"i": "i", "note": "note"})  # (the CSV header, read as a run)


def test_a_first_failure_longer_than_a_piece_is_read_once_and_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "runs.csv"
    monkeypatch.setattr(stet._logfile, "_PIECE", 4096)

    @stet.once(store=path, name="f", verbose=False)
    def f(note: str) -> None:
        raise ValueError(note[:10])

    notes = ["x" * 50_000, "short", "y" * 9000]
    for note in notes:
        with pytest.raises(ValueError):
            f(note)
    g = stet.once(store=path, name="f", verbose=False, skip_failed=True)(
        lambda note: pytest.fail("a failed run was run again"))
    for note in notes:
        g(note)
