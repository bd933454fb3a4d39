"""Index snapshots (``<store>.stet-index``, see :mod:`stet._snapshot`) are a cache: a
process that read a big file store leaves one at normal exit, and the next process that
opens the store uses it only while it still describes the store. Whatever happened to the
store or to the snapshot meanwhile, every lookup answers exactly as a full read of the
store would: a snapshot never makes stet skip a run the store does not hold, never loses
a run the store holds, and never raises.

How a test tells whether a snapshot was used, from outside: it plants one run the store
does not hold in a real snapshot (re-saved with the snapshot's own description of the
store). Used, the snapshot reports that run done; after any damage to the store it must
not. Exit behaviour is tried in real, fresh processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stet
from conftest import IN_CI
from mounts import read_only_mount
from stet import _snapshot
from stet._digest import digest
from stet._index import Index, IndexState
from stet._sidecar import index_file, temp_file
from stet.backends import get_backend
from stet.backends._base import CachedStore

SRC = Path(stet.__file__).resolve().parents[1]
FUNC = "_stet_func"
KEY = ("alpha", "seed")
BIG = _snapshot.MIN_RECORDS + 200
#: The run planted in snapshots (never in a store): reported done only by a snapshot used.
EXTRA = ("f", KEY, ("0", "424242"))

Record = dict[str, str]


@dataclass(frozen=True)
class Kind:
    """A file format and what its store is, as far as snapshots care."""

    fmt: str
    #: An append-only file whose snapshot covers a prefix of its bytes (CSV, JSON).
    log: bool = False
    #: A SQLite database: its snapshot covers the rows up to a row id.
    database: bool = False
    #: Runs wait in a log beside the store until folded into it (Parquet).
    folded: bool = False
    #: A record with a new field rewrites the whole file (a wider CSV header).
    header: bool = False

    def __str__(self) -> str:
        return self.fmt


KINDS = [Kind("csv", log=True, header=True), Kind("json", log=True),
         Kind("sqlite", database=True), Kind("parquet", folded=True)]
LOGS = [k for k in KINDS if k.log]
DATABASES = [k for k in KINDS if k.database]
FOLDED = [k for k in KINDS if k.folded]
WIDENED = [k for k in KINDS if k.header]
#: Kinds whose snapshot is saved again by copying the digests of the one loaded (a
#: Parquet store's is made afresh whenever it is folded).
COPIED = [k for k in KINDS if not k.folded]


def kinds(selected: list[Kind]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("kind", selected, ids=str)


# ----------------------------------------------------------------------- stores
def run_record(seed: int, func: str | None = "f", alpha: int | str | None = None,
               ) -> Record:
    r = {"alpha": str(seed % 7 if alpha is None else alpha), "seed": str(seed),
         "_stet_timestamp": "2026-01-01T00:00:00+00:00"}
    if func is not None:
        r[FUNC] = func
    return r


def big_records(n: int = BIG, first: int = 0) -> list[Record]:
    """``n`` records of ``f(alpha, seed)``: ten without a function name (as stet 0.0.2
    wrote them), and one run recorded twice (so that a snapshot has room for a digest
    more than the store's runs: see :func:`plant_extra_run`)."""
    records = [run_record(first + i, func=None if i % 100 == 50 else "f")
               for i in range(n - 1)]
    return [*records, dict(records[0])]


def write_store(path: Path, records: list[Record]) -> None:
    """A store at ``path`` holding ``records`` (folded), and no snapshot beside it."""
    b = get_backend(path)
    b.append_records(records)
    b.finish()
    b.close()
    gone(index_file(path))


def gone(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@pytest.fixture(params=KINDS, ids=str)
def kind(request: pytest.FixtureRequest) -> Kind:
    if request.param.folded:
        pytest.importorskip("pyarrow")
    return request.param  # type: ignore[no-any-return]


_built: dict[tuple[str, int, int], Path] = {}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Copies of stores built once per module (building a Parquet store takes a while)."""
    where = tmp_path_factory.mktemp("built")

    def copy(kind: Kind, target: Path, n: int = BIG, first: int = 0) -> list[Record]:
        key = (kind.fmt, n, first)
        if key not in _built:
            path = where / f"{len(_built)}.{kind.fmt}"
            write_store(path, big_records(n, first))
            _built[key] = path
        shutil.copyfile(_built[key], target)
        return big_records(n, first)

    return copy


@pytest.fixture
def store(kind: Kind, tmp_path: Path, built: Any) -> tuple[Path, list[Record]]:
    """A store of :data:`BIG` records with a real snapshot beside it."""
    path = tmp_path / f"runs.{kind.fmt}"
    records = built(kind, path)
    read_in_full(path)
    assert index_file(path).is_file()
    return path, records


@contextlib.contextmanager
def opened(path: Path) -> Iterator[CachedStore]:
    b = get_backend(path)
    assert isinstance(b, CachedStore)
    try:
        yield b
    finally:
        b.close()


def read_in_full(path: Path) -> int:
    """Read the store in a fresh backend and close it (which saves a snapshot)."""
    with opened(path) as b:
        return len(b)


def plant_extra_run(path: Path) -> None:
    """Re-save the snapshot beside ``path`` with :data:`EXTRA` among its runs, keeping its
    description of the store (so it holds as long as the store is what it described)."""
    saved = _snapshot.load(path)
    assert saved is not None
    state = saved.state
    assert len(state.digests) < state.count  # (the store repeats a run)
    index = Index()
    index.load_state(IndexState(dict(state.groups), set(state.nofunc),
                                state.digests | {digest(*EXTRA)}, state.count))
    _snapshot.save(path, index, saved.store, None)


def extra_is_done(path: Path) -> bool:
    with opened(path) as b:
        return b.contains_run(*EXTRA)


# ----------------------------------------------------------------------- oracle
def full_read_says(records: list[Record], func: str | None, fields: Record) -> bool:
    """Whether a record matches as stet's rules say (``func=None``: any function)."""
    return any((func is None or r.get(FUNC, "") in ("", func))
               and all(r.get(k) == v for k, v in fields.items()) for r in records)


def lookups(records: list[Record]) -> list[tuple[str | None, Record]]:
    """Lookups worth asking of a store holding ``records``: exact keys of some records
    (with the right and another function, the right and a wrong ``alpha``), narrowed
    keys, and runs that are nowhere."""
    seeds = [r["seed"] for r in records]
    picked = {*seeds[::29], *seeds[-6:], *(r["seed"] for r in records if FUNC not in r)}
    by_seed = {r["seed"]: r for r in records}
    out: list[tuple[str | None, Record]] = []
    for s in sorted(picked):
        alpha = by_seed[s]["alpha"]
        for func in ("f", "g", None):
            out.append((func, {"alpha": alpha, "seed": s}))
        out.append(("f", {"alpha": "99", "seed": s}))
        out.append((None, {"seed": s}))
    for s in ("-1", "77777", EXTRA[2][1]):
        out.append(("f", {"alpha": "0", "seed": s}))
        out.append((None, {"seed": s}))
    for alpha in ("0", "3", "6", "7", "99"):
        out.append(("f", {"alpha": alpha}))  # a key narrowed to alpha alone
        out.append(("g", {"alpha": alpha}))
        out.append((None, {"alpha": alpha}))
    return out


def assert_answers_as_a_full_read(path: Path, records: list[Record]) -> None:
    """A fresh backend answers every lookup, and counts records, as the store's records
    say: every record done, nothing else (the planted run included)."""
    with opened(path) as b:
        for func, fields in lookups(records):
            names = tuple(sorted(fields))
            texts = tuple(fields[n] for n in names)
            got = b.has(fields) if func is None else b.contains_run(func, names, texts)
            assert got == full_read_says(records, func, fields), (func, fields)
        assert all(b.contains_run(r.get(FUNC, "f"), KEY, (r["alpha"], r["seed"]))
                   for r in records)
        assert not b.contains_run(*EXTRA)
        assert len(b) == len(records)


# --------------------------------------------------------------------- processes
def python(code: str, *args: str, cwd: Path | None = None,
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(SRC)})


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return r.stdout


#: Reads the store, looks one run up, prints the count and exits normally (or ``how``).
READ = """
    import os, signal, sys
    from stet.backends import get_backend
    b = get_backend(sys.argv[1])
    print(len(b), b.contains_run("f", ("alpha", "seed"), ("0", "424242")))
    {how}
"""
NORMALLY = ""
KILLED = "os.kill(os.getpid(), signal.SIGKILL)"
#: Killed in the middle of writing the snapshot (half of its first write done).
KILLED_WHILE_SAVING = """
import stet._snapshot as snapshot
real = snapshot._write_all
def dying(fd, data):
    real(fd, data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
snapshot._write_all = dying
"""


def read_in_a_process(path: Path, how: str = NORMALLY) -> subprocess.CompletedProcess[str]:
    return python(textwrap.dedent(READ).format(how=how), str(path))


def leftovers(path: Path) -> list[str]:
    """Files beside the store that are temporary files of its snapshot."""
    name = index_file(path).name
    return [n for n in os.listdir(path.parent) if n.startswith(f".{name}")]


# ============================================================== 1. who saves one
def test_a_process_that_read_a_big_store_leaves_a_snapshot_when_it_exits_normally(
        kind: Kind, tmp_path: Path, built: Any) -> None:
    path = tmp_path / f"runs.{kind.fmt}"
    built(kind, path)
    assert not index_file(path).exists()
    assert ok(read_in_a_process(path)).split() == [str(BIG), "False"]
    assert index_file(path).is_file()
    assert _snapshot.load(path) is not None
    assert leftovers(path) == []


@pytest.mark.parametrize("n", [_snapshot.MIN_RECORDS - 1, _snapshot.MIN_RECORDS])
def test_a_snapshot_is_left_only_beside_a_store_of_at_least_min_records(
        kind: Kind, tmp_path: Path, built: Any, n: int) -> None:
    path = tmp_path / f"runs.{kind.fmt}"
    built(kind, path, n=n)
    assert ok(read_in_a_process(path)).split()[0] == str(n)
    assert index_file(path).exists() == (n >= _snapshot.MIN_RECORDS)


def test_a_process_killed_leaves_no_snapshot(kind: Kind, tmp_path: Path,
                                             built: Any) -> None:
    path = tmp_path / f"runs.{kind.fmt}"
    built(kind, path)
    r = read_in_a_process(path, KILLED)
    assert r.returncode == -signal.SIGKILL
    assert not index_file(path).exists() and leftovers(path) == []


def test_a_process_killed_while_saving_a_snapshot_leaves_none_and_harms_no_reader(
        kind: Kind, tmp_path: Path, built: Any) -> None:
    path = tmp_path / f"runs.{kind.fmt}"
    records = built(kind, path)
    r = read_in_a_process(path, KILLED_WHILE_SAVING)
    assert r.returncode == -signal.SIGKILL
    assert not index_file(path).exists()  # (what it left half-written is not the snapshot)
    (left,) = leftovers(path)  # its temporary file: no reader reads it
    assert_answers_as_a_full_read(path, records)
    assert ok(read_in_a_process(path)).split() == [str(BIG), "False"]
    assert _snapshot.load(path) is not None
    assert leftovers(path) == [left]  # (young: it might be another saver's, being written)
    os.utime(path.parent / left, (1, 1))
    index_file(path).unlink()
    assert ok(read_in_a_process(path)).split() == [str(BIG), "False"]
    assert index_file(path).is_file() and leftovers(path) == []  # old: cleaned


# ================================================ 2. a used snapshot answers right
def test_a_planted_run_shows_that_the_snapshot_is_used(store: Any) -> None:
    path, _records = store
    assert not extra_is_done(path)
    plant_extra_run(path)
    assert extra_is_done(path)
    assert ok(read_in_a_process(path)).split() == [str(BIG), "True"]


def test_the_next_process_answers_every_lookup_as_a_full_read_would(store: Any) -> None:
    path, records = store
    assert_answers_as_a_full_read(path, records)


def test_runs_appended_after_the_snapshot_by_another_process_are_read_after_it(
        kind: Kind, store: Any) -> None:
    path, _records = store
    plant_extra_run(path)
    code = """
        import json, sys
        from stet.backends import get_backend
        get_backend(sys.argv[1]).append_records(json.loads(sys.argv[2]))
    """
    added = [*(run_record(s) for s in range(90000, 90005)), run_record(0, alpha="narrow"),
             run_record(90007, func=None)]
    ok(python(code, str(path), json.dumps(added)))
    with opened(path) as b:
        # the snapshot was used and the rest read after it (a Parquet store's appended
        # runs were folded at that process's exit: a new file, a new snapshot)
        assert b.contains_run(*EXTRA) == (not kind.folded)
        for r in added:
            assert b.contains_run("f", KEY, (r["alpha"], r["seed"]))
            assert b.contains_run("g", KEY, (r["alpha"], r["seed"])) == (FUNC not in r)
            assert b.has({"seed": r["seed"]})
        assert b.contains_run("f", ("alpha",), ("narrow",))
        assert not b.contains_run("f", ("alpha",), ("wide",))
        assert len(b) == BIG + len(added)


def test_a_snapshot_saved_again_after_many_appends_holds_the_old_runs_and_the_new(
        kind: Kind, store: Any) -> None:
    """A process that loaded a snapshot and then recorded many runs saves it again at
    exit (copying the old digests as they are, then adding the new ones)."""
    path, records = store
    plant_extra_run(path)
    before = index_file(path).stat().st_mtime_ns
    code = """
        import json, sys
        from stet.backends import get_backend
        b = get_backend(sys.argv[1])
        print(b.contains_run("f", ("alpha", "seed"), ("0", "424242")))
        b.append_records(json.loads(sys.argv[2]))
    """
    added = [run_record(s) for s in range(200000, 200000 + _snapshot.MIN_RECORDS)]
    assert ok(python(code, str(path), json.dumps(added))).split() == ["True"]
    saved = _snapshot.load(path)
    assert saved is not None and saved.state.count == len(records) + len(added)
    assert index_file(path).stat().st_mtime_ns != before
    with opened(path) as b:
        # (a Parquet store's runs were folded in: a new file, its snapshot made afresh)
        assert b.contains_run(*EXTRA) == (not kind.folded)
        assert all(b.contains_run("f", KEY, (r["alpha"], r["seed"]))
                   for r in [*records, *added])
        assert len(b) == len(records) + len(added)


@kinds(COPIED)
def test_a_snapshot_saved_again_never_copies_digests_from_another_snapshot(
        kind: Kind, store: Any, tmp_path: Path) -> None:
    """Saving again copies the digests of the snapshot loaded, while its file is there
    (same inode). Once replaced, its inode may be given to a later snapshot, holding
    other digests in another order: copying those lost runs."""
    path, records = store
    a = get_backend(path)
    assert len(a) == BIG  # (loaded the snapshot)
    keep = tmp_path / "same-inode"
    os.link(index_file(path), keep)
    more = [run_record(s) for s in range(300000, 300000 + _snapshot.MIN_RECORDS)]
    with opened(path) as d:
        d.append_records(more)
    index_file(path).unlink()
    read_in_full(path)  # another snapshot, of more runs, written from a set
    rewrite_in_place(keep, index_file(path).read_bytes())
    os.replace(keep, index_file(path))  # ... under the first one's inode
    mine = [run_record(s) for s in range(400000, 400000 + _snapshot.MIN_RECORDS)]
    a.append_records(mine)
    a.close()  # saved again
    everything = [*records, *more, *mine]
    assert _snapshot.load(path).state.count == len(everything)  # type: ignore[union-attr]
    with opened(path) as b:
        lost = [r for r in everything
                if not b.contains_run("f", KEY, (r["alpha"], r["seed"]))]
        assert lost == []


def test_runs_appended_by_this_process_after_loading_a_snapshot_are_answered_too(
        store: Any) -> None:
    path, records = store
    with opened(path) as b:
        assert len(b) == BIG
        new = run_record(123456)
        b.append_record(new)
        assert b.contains_run("f", KEY, (new["alpha"], new["seed"]))
        assert b.has({"seed": "123456"}) and len(b) == BIG + 1
    assert_answers_as_a_full_read(path, [*records, run_record(123456)])


def test_a_decorated_function_skips_exactly_the_runs_the_store_holds(store: Any) -> None:
    path, _records = store
    code = """
        import sys, stet
        ran = []
        @stet.once(store=sys.argv[1], verbose=False, name="f")
        def f(alpha, seed):
            ran.append(seed)
        for seed in [0, 1, 50, 150, 1198, 5000, 424242]:
            f(alpha=seed % 7, seed=seed)
        @stet.once(store=sys.argv[1], verbose=False, name="g")
        def g(alpha, seed):
            ran.append(-seed)
        for seed in [50, 150, 51]:
            g(alpha=seed % 7, seed=seed)
        @stet.once(store=sys.argv[1], verbose=False, name="f", key=["alpha"])
        def narrowed(alpha, seed):
            ran.append(("narrowed", alpha))
        narrowed(alpha=3, seed=-1)
        narrowed(alpha=42, seed=-1)
        print(ran)
    """
    out = ok(python(code, str(path)))
    # 50 and 150 hold no function name: done for g too; 424242 only in no snapshot yet
    assert out.strip() == "[5000, 424242, -51, ('narrowed', 42)]"


# =========================================== 3. the store changed after the snapshot
def test_a_store_appended_to_is_read_from_the_snapshot_then_its_tail(store: Any) -> None:
    path, _records = store
    plant_extra_run(path)
    with opened(path) as b:
        b.append_records([run_record(s) for s in range(70000, 70003)])
    with opened(path) as b:
        assert b.contains_run(*EXTRA)
        assert all(b.contains_run("f", KEY, (str(s % 7), str(s)))
                   for s in range(70000, 70003))
        assert len(b) == BIG + 3


def test_a_run_removed_by_the_backend_is_not_done_and_the_planted_one_is_gone(
        store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    with opened(path) as b:
        assert b.remove({"alpha": "5", "seed": "5"}) == 1
    left = [r for r in records if r["seed"] != "5"]
    assert_answers_as_a_full_read(path, left)


def test_a_run_forgotten_in_another_process_is_not_done(store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    code = """
        import sys, stet
        @stet.once(store=sys.argv[1], verbose=False, name="f")
        def f(alpha, seed):
            return None
        print(f.forget(alpha=5, seed=5), f.is_done(alpha=5, seed=5))
    """
    assert ok(python(code, str(path))).split() == ["1", "False"]
    assert_answers_as_a_full_read(path, [r for r in records if r["seed"] != "5"])


def test_runs_reset_by_the_cli_are_not_done(store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    r = subprocess.run([sys.executable, "-m", "stet", "reset", str(path), "--where",
                        "alpha=3", "-y"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode == 0, r.stderr
    assert_answers_as_a_full_read(path, [r for r in records if r["alpha"] != "3"])


def rewrite_in_place(path: Path, data: bytes) -> None:
    """Give the store's file (the same inode) the content ``data``."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


@kinds(LOGS)
def test_a_store_edited_by_hand_to_the_same_length_is_read_in_full(
        kind: Kind, store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    data = path.read_bytes()
    at = data.index(b"1123")  # seed 1123: one digit changed, same length, same inode
    rewrite_in_place(path, data[:at] + b"1923" + data[at + 4:])
    assert path.stat().st_size == len(data)
    edited = [dict(r, seed="1923") if r["seed"] == "1123" else r for r in records]
    assert_answers_as_a_full_read(path, edited)


@kinds(LOGS)
def test_a_hand_edit_that_adler32_cannot_see_is_seen(kind: Kind, store: Any) -> None:
    """Two digit swaps ("312" to "321", "421" to "412"): the same bytes summed, and the
    same sum weighted by position, so Adler-32 (not CRC-32) gives the same checksum."""
    path, records = store
    plant_extra_run(path)
    data = path.read_bytes()
    for old, new in ((b"312", b"321"), (b"421", b"412")):
        (found,) = re.finditer(rb"(?<!\d)" + old + rb"(?!\d)", data)
        data = data[:found.start()] + new + data[found.end():]
    assert zlib.adler32(data) == zlib.adler32(path.read_bytes())
    rewrite_in_place(path, data)
    swapped = {"312": "321", "421": "412"}
    assert_answers_as_a_full_read(
        path, [dict(r, seed=swapped.get(r["seed"], r["seed"])) for r in records])


@kinds(LOGS)
def test_a_store_truncated_and_regrown_longer_is_read_in_full(
        kind: Kind, store: Any, built: Any, tmp_path: Path) -> None:
    path, _records = store
    plant_extra_run(path)
    other = tmp_path / f"other.{kind.fmt}"
    others = built(kind, other, n=BIG + 50, first=50000)
    assert other.stat().st_size >= path.stat().st_size
    ino = path.stat().st_ino
    rewrite_in_place(path, other.read_bytes())
    assert path.stat().st_ino == ino
    assert_answers_as_a_full_read(path, others)


@pytest.mark.parametrize("how", ["copied over", "renamed over"])
def test_a_store_replaced_by_another_stores_file_is_read_in_full(
        kind: Kind, store: Any, built: Any, tmp_path: Path, how: str) -> None:
    path, _records = store
    plant_extra_run(path)
    other = tmp_path / "other" / f"runs.{kind.fmt}"
    other.parent.mkdir()
    others = built(kind, other, first=50000)  # as many records, other runs
    if how == "copied over":
        shutil.copyfile(other, path)
    else:
        os.replace(other, path)
    assert_answers_as_a_full_read(path, others)


@kinds(WIDENED)
def test_a_widened_header_rewrites_the_store_and_drops_its_snapshot(
        kind: Kind, store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    wide = {**run_record(80000), "lr": "0.1"}
    with opened(path) as b:
        b.append_record(wide)
        assert not index_file(path).exists()  # (until this reader saves one as it closes)
    with opened(path) as b:
        assert b.contains_run("f", ("alpha", "lr", "seed"),
                              (wide["alpha"], "0.1", "80000"))
    assert_answers_as_a_full_read(path, [*records, wide])


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            for s in statements:
                conn.execute(s)
    finally:
        conn.close()


def last_rowid(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT max(rowid) FROM stet_records").fetchone()[0])
    finally:
        conn.close()


@kinds(DATABASES)
def test_a_row_deleted_by_another_tool_is_not_done(kind: Kind, store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    sql(path, "DELETE FROM stet_records WHERE seed = '700'")
    assert_answers_as_a_full_read(path, [r for r in records if r["seed"] != "700"])


@kinds(DATABASES)
@pytest.mark.parametrize("row", ["the last", "a middle"])
def test_a_row_deleted_and_another_inserted_under_its_rowid_is_read_in_full(
        kind: Kind, store: Any, row: str) -> None:
    path, records = store
    plant_extra_run(path)
    rowid = last_rowid(path) if row == "the last" else 2
    sql(path, f"DELETE FROM stet_records WHERE rowid = {rowid}",
        f"INSERT INTO stet_records (rowid, _stet_func, alpha, seed, _stet_timestamp) "
        f"VALUES ({rowid}, 'f', '1', '60000', 't')")
    rows = list(records)
    rows[rowid - 1] = run_record(60000, alpha=1)
    assert_answers_as_a_full_read(path, rows)


@kinds(DATABASES)
@pytest.mark.parametrize("rowid", [2, 500, 1, "last"])
def test_a_row_updated_by_another_tool_is_read_as_it_now_is(
        kind: Kind, store: Any, rowid: int | str) -> None:
    path, records = store
    plant_extra_run(path)
    at = last_rowid(path) if rowid == "last" else int(rowid)
    sql(path, f"UPDATE stet_records SET seed = '60000' WHERE rowid = {at}")
    rows = list(records)
    rows[at - 1] = {**rows[at - 1], "seed": "60000"}
    assert_answers_as_a_full_read(path, rows)


@kinds(DATABASES)
def test_a_snapshot_is_not_used_once_another_tool_dropped_the_change_triggers(
        kind: Kind, store: Any) -> None:
    """Changed rows are counted by triggers; without them, nothing says a row is as the
    snapshot saw it: the store is read in full."""
    path, records = store
    plant_extra_run(path)
    sql(path, "DROP TRIGGER stet_records_updated")
    assert_answers_as_a_full_read(path, records)


@kinds(FOLDED)
def test_a_parquet_file_replaced_in_place_with_its_size_and_time_is_read_in_full(
        kind: Kind, store: Any, tmp_path: Path) -> None:
    """The same inode, size and modification time: only the checksum tells."""
    path, records = store
    plant_extra_run(path)
    other = tmp_path / f"other.{kind.fmt}"
    edited = [*records[:-2], dict(records[-2], seed="1199"), records[-1]]  # (1198 before)
    write_store(other, edited)
    data = other.read_bytes()
    st = path.stat()
    assert len(data) == st.st_size and data != path.read_bytes()
    rewrite_in_place(path, data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (st.st_ino, st.st_size,
                                                          st.st_mtime_ns)
    assert_answers_as_a_full_read(path, edited)


# ================================================== 4. a damaged or foreign snapshot
def trailer_of(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The digests and trailer of the snapshot beside ``path``."""
    data = index_file(path).read_bytes()
    length = int.from_bytes(data[-16:-8], "little")
    end = len(data) - _snapshot.FOOTER
    return data[:end - length], json.loads(data[end - length:end])


def forge(path: Path, digests: bytes, trailer: bytes) -> None:
    """A snapshot of these digests and trailer, whole (its checksum right)."""
    body = digests + trailer
    index_file(path).write_bytes(body + _snapshot.footer(zlib.crc32(body), len(trailer)))


def assert_ignored(path: Path, records: list[Record]) -> None:
    assert_answers_as_a_full_read(path, records)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.99, 0.999])
def test_a_truncated_snapshot_is_ignored(store: Any, fraction: float) -> None:
    path, records = store
    plant_extra_run(path)
    data = index_file(path).read_bytes()
    for cut in {int(len(data) * fraction), len(data) - 1, len(data) - 9, 15, 16, 17}:
        index_file(path).write_bytes(data[:cut])
        assert_ignored(path, records)


def test_random_bytes_for_a_snapshot_are_ignored(store: Any) -> None:
    path, records = store
    for size in (0, 1, 16, 4096, 100_000):
        index_file(path).write_bytes(os.urandom(size))
        assert_ignored(path, records)
        index_file(path).write_bytes(os.urandom(size) + os.urandom(4) + b"\x10" + bytes(7)
                                     + _snapshot.MAGIC)
        assert_ignored(path, records)


@pytest.mark.parametrize("trailer", [
    b"not json at all", b"{\"version\": 1, ", b"\xff\xfe\x00", b"[1, 2, 3]", b"null",
    b"{}", b"\"a string\"", b"[" * 100_000 + b"]" * 100_000,
    b'{"version": 2, "records": 1' + b"0" * 5000 + b'}',
], ids=lambda t: repr(t[:20]))
def test_a_foreign_file_with_the_right_magic_but_no_trailer_is_ignored(
        store: Any, trailer: bytes) -> None:
    path, records = store
    digests, _ = trailer_of(path)
    forge(path, digests, trailer)
    assert_ignored(path, records)


def test_a_snapshot_of_the_first_format_without_a_checksum_is_ignored(store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    digests, trailer = trailer_of(path)
    old = json.dumps({**trailer, "version": 1}).encode()
    index_file(path).write_bytes(digests + old + len(old).to_bytes(8, "little")
                                 + b"STETIDX1")
    assert_ignored(path, records)


def _spoilt(trailer: dict[str, Any], change: str) -> dict[str, Any]:
    t = dict(trailer)
    groups = t["groups"]
    if change == "records as text":
        t["records"] = str(t["records"])
    elif change == "negative records":
        t["records"] = -t["records"]
    elif change == "records a float":
        t["records"] = float(t["records"])
    elif change == "records a bool":
        t["records"] = True
    elif change == "digests off by one":
        t["digests"] += 1
    elif change == "digests negative":
        t["digests"] = -1
    elif change == "digests more than records":
        t["digests"], t["records"] = t["records"] + 1, t["records"]
    elif change == "a negative group":
        t["groups"] = [[groups[0][0], -groups[0][1]], *groups[1:]]
    elif change == "groups not summing to records":
        t["groups"] = [[groups[0][0], groups[0][1] + 1], *groups[1:]]
    elif change == "groups a dict":
        t["groups"] = {"alpha": 1}
    elif change == "group names numbers":
        t["groups"] = [[[1, 2], n] for _, n in groups]
    elif change == "nofunc names no group":
        t["nofunc"] = [["nowhere"]]
    elif change == "nofunc a string":
        t["nofunc"] = "alpha"
    elif change == "store a list":
        t["store"] = [1, 2]
    elif change == "store missing":
        del t["store"]
    elif change == "store of another kind":
        t["store"] = {**t["store"], "kind": "postgres"}
    elif change == "store with text numbers":
        t["store"] = {k: str(v) for k, v in t["store"].items()}
    elif change == "another version":
        t["version"] = _snapshot.VERSION + 1
    elif change == "version as text":
        t["version"] = str(_snapshot.VERSION)
    else:
        raise AssertionError(change)
    return t


SPOILT = ["records as text", "negative records", "records a float", "records a bool",
          "digests off by one", "digests negative", "digests more than records",
          "a negative group", "groups not summing to records", "groups a dict",
          "group names numbers", "nofunc names no group", "nofunc a string", "store a list",
          "store missing", "store of another kind", "store with text numbers",
          "another version", "version as text"]


@pytest.mark.parametrize("change", SPOILT)
def test_a_snapshot_whose_trailer_is_spoilt_is_ignored(store: Any, change: str) -> None:
    path, records = store
    plant_extra_run(path)
    digests, trailer = trailer_of(path)
    forge(path, digests, json.dumps(_spoilt(trailer, change)).encode())
    assert_ignored(path, records)


@pytest.mark.parametrize("where", ["a digest", "a field name", "the description"])
def test_a_snapshot_with_one_bit_flipped_is_ignored(store: Any, where: str) -> None:
    """Without its checksum, a flipped bit in a digest lost that run, and one in a field
    name every run of the field set."""
    path, records = store
    data = bytearray(index_file(path).read_bytes())
    at = {"a digest": 16 * 5 + 3, "a field name": data.rindex(b'"seed"') + 2,
          "the description": data.rindex(b'"store"') + 12}[where]
    data[at] ^= 0x04
    index_file(path).write_bytes(bytes(data))
    assert_ignored(path, records)


def test_a_snapshot_that_is_a_directory_is_ignored_and_stays(store: Any) -> None:
    path, records = store
    gone(index_file(path))
    index_file(path).mkdir()
    assert_ignored(path, records)  # (whose close tried to save a snapshot there)
    assert index_file(path).is_dir()
    r = read_in_a_process(path)
    assert ok(r).split() == [str(BIG), "False"] and r.stderr == ""
    assert index_file(path).is_dir() and leftovers(path) == []


@pytest.mark.parametrize("what", ["a FIFO", "a link to a directory", "a link to /dev/zero",
                                  "a dangling link"])
def test_a_snapshot_that_is_no_regular_file_is_ignored_and_never_hangs(
        store: Any, what: str, tmp_path: Path) -> None:
    path, records = store
    gone(index_file(path))
    if what == "a FIFO":
        os.mkfifo(index_file(path))
    else:
        target = {"a link to a directory": tmp_path, "a link to /dev/zero": "/dev/zero",
                  "a dangling link": tmp_path / "nowhere"}[what]
        index_file(path).symlink_to(target)
    r = read_in_a_process(path)  # (in a process: a hang ends in its timeout)
    assert ok(r).split() == [str(BIG), "False"] and r.stderr == ""
    assert_ignored(path, records)


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_saving_a_snapshot_never_writes_through_a_link_at_its_temporary_name(
        store: Any, tmp_path: Path, link: str) -> None:
    path, records = store
    index_file(path).unlink()
    victim = tmp_path / "someone-elses-file"
    victim.write_bytes(b"precious")
    planted = temp_file(index_file(path), os.getpid())  # (where this process saves)
    (planted.symlink_to if link == "symbolic" else planted.hardlink_to)(victim)
    assert read_in_full(path) == BIG  # (its close saves a snapshot)
    assert victim.read_bytes() == b"precious"
    assert _snapshot.load(path) is not None and not planted.exists()
    assert_answers_as_a_full_read(path, records)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file (see the directory test)")
def test_an_unreadable_snapshot_is_ignored(store: Any) -> None:
    path, records = store
    plant_extra_run(path)
    index_file(path).chmod(0)
    try:
        assert_ignored(path, records)
    finally:
        index_file(path).chmod(0o644)


#: Damaged snapshots tried per format (few under CI, where every format runs them).
EXAMPLES = 25 if IN_CI else 100


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_no_damage_to_a_snapshots_bytes_makes_a_lookup_wrong(store: Any,
                                                             data: st.DataObject) -> None:
    path, records = store
    original = index_file(path).read_bytes() if index_file(path).exists() else None
    if original is None or _snapshot.load(path) is None:
        read_in_full(path)
        original = index_file(path).read_bytes()
    n = len(original)
    how = data.draw(st.sampled_from(["overwrite", "flip", "cut", "insert"]), label="how")
    at = data.draw(st.integers(0, n - 1), label="at")
    if how == "overwrite":
        junk = data.draw(st.binary(min_size=1, max_size=64), label="junk")
        damaged = original[:at] + junk + original[at + len(junk):]
    elif how == "flip":
        bit = data.draw(st.integers(0, 7), label="bit")
        damaged = original[:at] + bytes([original[at] ^ (1 << bit)]) + original[at + 1:]
    elif how == "cut":
        damaged = original[:at]
    else:
        junk = data.draw(st.binary(min_size=1, max_size=64), label="junk")
        damaged = original[:at] + junk + original[at:]
    index_file(path).write_bytes(damaged)
    try:
        with opened(path) as b:
            assert len(b) == len(records)
            for r in records:
                assert b.contains_run(r.get(FUNC, "f"), KEY, (r["alpha"], r["seed"])), r
            assert not b.contains_run("f", KEY, ("0", "77777"))
            assert b.contains_run("g", ("alpha",), ("0",))  # (a record of no function)
            assert b.has({"seed": "1000"}) and not b.has({"seed": "-5"})
    finally:
        index_file(path).write_bytes(original)


# ========================================== 5. a snapshot that cannot be written
def test_a_big_store_in_a_read_only_directory_is_read_and_exits_cleanly(
        kind: Kind, tmp_path: Path, built: Any) -> None:
    source = tmp_path / "data"
    source.mkdir()
    built(kind, source / f"runs.{kind.fmt}")
    with read_only_mount(source, tmp_path / "ro") as ro:
        r = read_in_a_process(ro / f"runs.{kind.fmt}")
        assert ok(r).split() == [str(BIG), "False"]
        assert r.stderr == ""
        assert sorted(os.listdir(ro)) == [f"runs.{kind.fmt}"]


# ============================================ 6. Parquet read without pyarrow
LOOK_ONLY = """
    import sys
    from stet.backends import get_backend
    b = get_backend(sys.argv[1])
    print(len(b), b.contains_run("f", ("alpha", "seed"), ("0", "424242")),
          b.contains_run("f", ("alpha", "seed"), ("3", "3")), "pyarrow" in sys.modules)
    # a run not done is about to be made (and recorded, folded at exit): pyarrow now,
    # so that a missing one is said before the function runs
    print(b.contains_run("f", ("alpha", "seed"), ("3", "4")), "pyarrow" in sys.modules)
"""
RECORD_ONE = """
    import sys, stet
    @stet.once(store=sys.argv[1], verbose=False, name="f")
    def f(alpha, seed):
        return None
    f(alpha=3, seed=4)
    print(f.is_done(alpha=0, seed=424242), "pyarrow" in sys.modules)
"""


@kinds(FOLDED)
def test_a_parquet_store_with_a_valid_snapshot_is_looked_up_without_pyarrow(
        kind: Kind, store: Any) -> None:
    path, _records = store
    plant_extra_run(path)
    assert ok(python(LOOK_ONLY, str(path))).split() == [str(BIG), "True", "True", "False",
                                                         "False", "True"]
    # a snapshot that no longer holds: the file is read, with pyarrow
    os.utime(path, ns=(1, 1))
    assert ok(python(LOOK_ONLY, str(path))).split() == [str(BIG), "False", "True", "True",
                                                         "False", "True"]


WITHOUT_PYARROW = """
    import sys
    sys.modules["pyarrow"] = None  # (as if it were not installed)
    import stet
    ran = []
    @stet.once(store=sys.argv[1], verbose=False, name="f")
    def f(alpha, seed):
        ran.append(seed)
    print(f(alpha=3, seed=3) is None, ran)  # done: skipped, from the snapshot
    try:
        f(alpha=3, seed=4)
    except ImportError as exc:
        print("ImportError", "stet[parquet]" in str(exc), ran)
"""


@kinds(FOLDED)
def test_without_pyarrow_a_parquet_run_is_refused_before_it_runs(
        kind: Kind, store: Any) -> None:
    """Read from its snapshot, a Parquet store needs no pyarrow to skip; a run to be made
    (and recorded) needs it, and its absence is said before the function runs."""
    path, _records = store
    assert ok(python(WITHOUT_PYARROW, str(path))).split() == [
        "True", "[]", "ImportError", "True", "[]"]


@kinds(FOLDED)
def test_runs_left_unfolded_beside_a_parquet_store_with_a_snapshot_are_answered(
        kind: Kind, store: Any) -> None:
    path, _records = store
    plant_extra_run(path)
    code = """
        import os, signal, sys
        from stet.backends import get_backend
        b = get_backend(sys.argv[1])
        b.append_record({"_stet_func": "f", "alpha": "3", "seed": "4"})
        os.kill(os.getpid(), signal.SIGKILL)  # (its log is left unfolded)
    """
    assert python(code, str(path)).returncode == -signal.SIGKILL
    assert Path(f"{path}.stet-log").exists()
    with opened(path) as b:
        assert b.contains_run(*EXTRA)  # (the snapshot of the Parquet file is used)
        assert b.contains_run("f", KEY, ("3", "4")) and b.has({"seed": "4", "alpha": "3"})
        assert b.contains_run("f", ("alpha",), ("3",)) and len(b) == BIG + 1


@kinds(FOLDED)
def test_a_parquet_store_recorded_to_imports_pyarrow_and_folds_at_exit(
        kind: Kind, store: Any) -> None:
    import pyarrow.parquet as pq

    path, records = store
    plant_extra_run(path)
    assert ok(python(RECORD_ONE, str(path))).split() == ["True", "True"]
    assert not Path(f"{path}.stet-log").exists()
    rows = pq.read_table(path).to_pylist()
    assert len(rows) == BIG + 1 and {"alpha": "3", "seed": "4"}.items() <= rows[-1].items()
    # the fold wrote a new snapshot, of the new file: the planted run is gone
    assert _snapshot.load(path) is not None
    assert_answers_as_a_full_read(path, [*records, run_record(4, alpha=3)])
