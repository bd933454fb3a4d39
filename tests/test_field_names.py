"""Field names and values are data in every file format (docs/explanation/identity.md).

No name (a backend's own column such as SQLite's ``rowid``, names differing only in
case, quotes, dots, brackets, invisible or very long names, lone surrogates) and no value
changes what a store does: a recorded run skips in every later process, and ``load``
gives back exactly what was recorded. A name or value a format cannot hold is refused
before anything is written (and before a decorated function runs), never stored in a
way that breaks the store afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stet
from stet.backends import get_backend
from stet.errors import StoreError

FILE_FORMATS = ["csv", "json", "sqlite", "parquet"]

#: Names that are something else to some backend: SQLite's row id aliases (any case), an
#: ``id``, names equal but for case (SQLite column names ignore case), quoting and
#: identifier syntax of SQL, a dot (a nested column path to some Parquet readers),
#: invisible and very long names.
NASTY_NAMES: list[str] = [
    "rowid", "ROWID", "RowId", "oid", "OID", "_rowid_", "_ROWID_", "id", "ID",
    "a", "A", "rowid__2", "a__2",
    '"', '""', "'", 'x"y', "a.b", ".", "a b", " ", "[x]", "]", "`x`", "?", ":x", "@x",
    "$x", "-- x", "/* x */", "x; DROP TABLE stet_records", "select", "TEXT",
    "column:x", "key", "value", "generation", "__index_level_0__",
    "\u200b", "\u3000", "\ufeff", "\u00a0", "é", "É", "\u212a", "k", "K",
    "n" * 300, "N" * 300, "n" * 5000, "a\x00b", "\x00",
]

#: Names and values that need care in some formats: a lone surrogate (not UTF-8).
SURROGATE = "\ud800"
#: A surrogate pair as two characters: JSON text cannot tell it from the one character
#: it encodes ("\U00010000").
PAIR = "\ud800\udc00"


def _user(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_stet_")}


def _canon(records: list[dict[str, Any]]) -> list[str]:
    """The records as a sorted list of texts, one per record, telling every two distinct
    strings apart (``json.dumps`` writes a surrogate pair as the character it encodes)."""
    return sorted(repr(sorted(r.items())) for r in records)


def _texts_of(record: dict[str, Any]) -> dict[str, str]:
    return {k: stet.canonical(v) for k, v in record.items()}


# ------------------------------------------------------------------- fixed names


_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import stet

    store, names = sys.argv[1], json.loads(sys.argv[2])
    ran = []

    @stet.once(store=store, verbose=False)
    def f(x):
        ran.append(x)

    @stet.once(store=store, verbose=False)
    def g(**kwargs):
        ran.append(kwargs)

    for x in range(5):
        f(x)
    for i, name in enumerate(names):
        g(**{name: i})
    g(**{name: "together" for name in names})
    print(len(ran))
    """
)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_nasty_field_names_skip_in_every_new_process(tmp_path: Path, fmt: str) -> None:
    """``f(x)`` for x in 0..4 beside ``g(rowid=1)`` (and every other nasty name) in one
    store: each later process skips all of them (SQLite re-ran every run before)."""
    store = tmp_path / f"runs.{fmt}"
    nasty = NASTY_NAMES + ([SURROGATE, "x" + SURROGATE] if fmt in ("json", "sqlite") else [])
    names = json.dumps(nasty)
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    runs = [
        subprocess.run([sys.executable, str(script), str(store), names], capture_output=True,
                       text=True, timeout=120)
        for _ in range(3)
    ]
    for r in runs:
        assert r.returncode == 0, r.stderr
    executed = [int(r.stdout.split()[-1]) for r in runs]
    total = 5 + len(nasty) + 1
    assert executed == [total, 0, 0]
    with get_backend(store) as b:
        records = [_user(r) for r in b.load()]
        assert len(records) == total
        for i, name in enumerate(nasty):
            assert {name: str(i)} in records
            if "\x00" not in name:  # (the backend API refuses NUL in names)
                assert b.has({name: i})
                assert not b.has({name: i + 1})
        assert {name: "together" for name in nasty} in records


def test_sqlite_gives_a_row_id_name_a_column_of_its_own(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    with get_backend(store) as b:
        b.record({"rowid": "r", "OID": "o", "_rowid_": "u", "x": "1"})
    with sqlite3.connect(store) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(stet_records)")]
        rowids = [r[0] for r in conn.execute("SELECT rowid FROM stet_records")]
    conn.close()
    assert not {"rowid", "oid", "_rowid_"} & {c.lower() for c in columns}
    assert rowids == [1]
    with get_backend(store) as b:
        assert [_user(r) for r in b.load()] == [
            {"rowid": "r", "OID": "o", "_rowid_": "u", "x": "1"}]


def test_sqlite_store_whose_columns_hide_every_row_id_alias_still_reads(
    tmp_path: Path,
) -> None:
    """A store written before row id names got columns of their own may have columns
    ``rowid``, ``oid`` and ``_rowid_``: it still reads, skips and follows new rows."""
    store = tmp_path / "runs.sqlite"
    with sqlite3.connect(store) as conn:
        conn.execute('CREATE TABLE stet_records ("x" TEXT, "_stet_timestamp" TEXT, '
                     '"rowid" TEXT, "oid" TEXT, "_rowid_" TEXT)')
        conn.execute("INSERT INTO stet_records VALUES ('1', 't', NULL, NULL, NULL)")
        conn.execute("INSERT INTO stet_records VALUES (NULL, 't', '5', '6', '7')")
    conn.close()
    with get_backend(store) as writer, get_backend(store) as reader:
        assert reader.has({"x": 1})
        assert reader.has({"rowid": 5, "oid": 6, "_rowid_": 7})
        writer.record({"x": 2})
        writer.record({"ROWID": 3})
        assert reader.has({"x": 2})
        assert reader.has({"ROWID": 3})
        assert not reader.has({"rowid": 3})
        assert len(reader) == 4
        assert len(reader.load()) == 4


# ------------------------------------------------------------------- surrogates


@pytest.mark.parametrize("fmt", ["json", "sqlite", "parquet"])
def test_a_lone_surrogate_in_a_value_round_trips(tmp_path: Path, fmt: str) -> None:
    """Text that UTF-8 cannot encode (a lone surrogate, e.g. from ``os.fsdecode``) in a
    value or a saved result: recorded, skipped and loaded back as it was, also after
    Parquet's fold (where it used to fail, run after run, after running the function)."""
    store = tmp_path / f"runs.{fmt}"
    calls: list[Any] = []

    @stet.once(store=store, verbose=False, save_result=True, name="f")
    def f(**kwargs: Any) -> str:
        calls.append(kwargs)
        return "result" + SURROGATE

    assert f(x=SURROGATE) == "result" + SURROGATE
    assert f(x="a" + SURROGATE, y="plain") == "result" + SURROGATE
    assert f(x=SURROGATE) == "result" + SURROGATE  # a skip, its saved result
    assert len(calls) == 2
    get_backend(store).finish()  # (Parquet: folded into the file)
    script = textwrap.dedent(
        f"""
        import stet
        calls = []
        @stet.once(store={str(store)!r}, verbose=False, save_result=True, name="f")
        def f(**kwargs):
            calls.append(kwargs)
        a = f(x="\\ud800")
        b = f(x="a\\ud800", y="plain")
        print(len(calls), a == b == "result\\ud800")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["0", "True"], out.stderr
    with get_backend(store) as b:
        assert b.has({"x": SURROGATE})
        assert _canon([_user(r) for r in b.load()]) == _canon(
            [{"x": SURROGATE}, {"x": "a" + SURROGATE, "y": "plain"}])
        assert b.remove({"x": SURROGATE}) == 1
        assert not b.has({"x": SURROGATE})
        assert b.has({"x": "a" + SURROGATE, "y": "plain"})


@pytest.mark.parametrize("fmt", ["json", "sqlite"])
def test_a_lone_surrogate_in_a_name_round_trips(tmp_path: Path, fmt: str) -> None:
    store = tmp_path / f"runs.{fmt}"
    calls: list[Any] = []

    @stet.once(store=store, verbose=False)
    def f(**kwargs: Any) -> None:
        calls.append(kwargs)

    f(**{SURROGATE: "v", "y": "a" + SURROGATE})
    f(**{SURROGATE: "v", "y": "a" + SURROGATE})
    assert len(calls) == 1
    with get_backend(store) as b:
        assert b.has({SURROGATE: "v", "y": "a" + SURROGATE})
        assert [_user(r) for r in b.load()] == [{SURROGATE: "v", "y": "a" + SURROGATE}]


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "sqlite"])
def test_a_surrogate_pair_as_two_characters_is_kept_or_refused_before_the_run(
    tmp_path: Path, fmt: str
) -> None:
    """JSON's escape (a JSON store, CSV's escaped cells, Parquet's sidecar) reads
    ``"\\ud800\\udc00"`` back as one character: such a value would re-run forever, so it is
    refused before the function runs, naming the parameter. SQLite keeps it apart."""
    store = tmp_path / f"runs.{fmt}"
    calls: list[Any] = []

    @stet.once(store=store, verbose=False)
    def f(**kwargs: Any) -> None:
        calls.append(kwargs)

    f(x=1)
    f(x="\U00010000")
    if fmt == "sqlite":
        f(x=PAIR)
        f(x=PAIR)
        assert calls == [{"x": 1}, {"x": "\U00010000"}, {"x": PAIR}]
        with get_backend(store) as b:
            assert b.has({"x": PAIR}) and b.has({"x": "\U00010000"})
            assert len(b.load()) == 3
        return
    with pytest.raises(StoreError, match=r"parameter 'x'.*surrogate pair") as info:
        f(x="a" + PAIR)
    assert str(store) in str(info.value)
    with pytest.raises(StoreError, match=r"name of parameter '\\ud800\\udc00'"):
        f(**{PAIR: 1})
    assert calls == [{"x": 1}, {"x": "\U00010000"}]
    with get_backend(store) as b, pytest.raises(StoreError, match="surrogate pair"):
        b.record({"y": PAIR})
    assert calls == [{"x": 1}, {"x": "\U00010000"}]
    get_backend(store).finish()
    with get_backend(store) as b:
        assert _canon([_user(r) for r in b.load()]) == _canon([{"x": "1"},
                                                              {"x": "\U00010000"}])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_lone_surrogate_in_a_name_is_refused_before_the_function_runs(
    tmp_path: Path, fmt: str
) -> None:
    """A CSV header and a Parquet column's name are UTF-8 text: a parameter name with a
    lone surrogate is refused up front, naming it and the store, and the store stays
    usable (Parquet used to fail at every later fold; CSV ran the function first)."""
    store = tmp_path / f"runs.{fmt}"
    calls: list[Any] = []

    @stet.once(store=store, verbose=False)
    def f(**kwargs: Any) -> None:
        calls.append(kwargs)

    f(x=1)
    with pytest.raises(StoreError, match=r"parameter '\\ud800'.*surrogate") as info:
        f(**{SURROGATE: 1})
    assert str(store) in str(info.value)
    with get_backend(store) as b, pytest.raises(StoreError, match="surrogate"):
        b.record({"a" + SURROGATE: 1})
    assert calls == [{"x": 1}]
    f(x=2)
    get_backend(store).finish()
    with get_backend(store) as b:
        assert _canon([_user(r) for r in b.load()]) == _canon([{"x": "1"}, {"x": "2"}])


# ------------------------------------------------------------------- hypothesis

def _texts(surrogates: bool) -> st.SearchStrategy[str]:
    texts = st.text(alphabet=st.characters(codec=None if surrogates else "utf-8"),
                    max_size=12)
    if surrogates:
        texts = texts | st.builds(str.__add__, texts,
                                  st.sampled_from([SURROGATE, "\udfff", "\udc80x", PAIR]))
    return texts


def _record_lists(fmt: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    """Lists of records with nasty and arbitrary names and values (with lone surrogates
    where the format keeps them: JSON and CSV escape them, SQLite holds them as BLOBs,
    Parquet as a binary column; CSV and Parquet names are UTF-8 text)."""
    names = st.one_of(
        st.sampled_from(NASTY_NAMES),
        st.text(alphabet="aAbBiIdDrRoOwW_.\"'` []", min_size=1, max_size=6),
        _texts(surrogates=fmt in ("json", "sqlite")).filter(bool),
    ).filter(lambda n: not n.startswith("_stet_"))
    values = st.one_of(
        _texts(surrogates=True),
        st.sampled_from(["", " ", "None", "1", "01", "1.0", '"', "\n", "a,b", "\u200b"]),
        st.integers(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
    )
    return st.lists(st.dictionaries(names, values, min_size=1, max_size=4),
                    min_size=1, max_size=5)


def _refused(fmt: str, record: dict[str, Any]) -> bool:
    """Whether ``fmt`` refuses the record up front: JSON's escapes (a JSON store, CSV's
    escaped cells, Parquet's sidecar) cannot keep a surrogate pair as two characters;
    Parquet's column names cannot hold a lone surrogate."""
    texts = [*record, *(stet.canonical(v) for v in record.values())]
    if fmt in ("json", "csv", "parquet") and any(re.search("[\ud800-\udbff][\udc00-\udfff]", t)
                                          for t in texts):
        return True
    return fmt == "parquet" and any(re.search("[\ud800-\udfff]", k) for k in record)


def _check_round_trip(fmt: str, records: list[dict[str, Any]], via_decorator: bool) -> None:
    directory = Path(tempfile.mkdtemp(prefix="stet-names-"))
    try:
        store = directory / f"runs.{fmt}"
        calls: list[dict[str, Any]] = []
        if via_decorator:
            @stet.once(store=store, verbose=False)
            def g(**kwargs: Any) -> None:
                calls.append(kwargs)

            for _ in range(2):  # the second time, every one a skip
                for r in records:
                    if _refused(fmt, r):
                        with pytest.raises(StoreError, match="surrogate"):
                            g(**r)
                    else:
                        g(**r)
            records = [r for r in records if not _refused(fmt, r)]
            assert len(calls) == len(set(_canon([_texts_of(r) for r in records])))
            stet.backends.shared_backend(store).finish()
            stet.backends.shared_backend(store).close()
        else:
            with get_backend(store) as b:
                for r in records:
                    if any("\x00" in k for k in r):  # the API refuses NUL in names
                        with pytest.raises(TypeError, match="NUL"):
                            b.record(r)
                    elif _refused(fmt, r):
                        with pytest.raises(StoreError, match="surrogate"):
                            b.record(r)
                    else:
                        b.record(r)
            records = [r for r in records
                       if not any("\x00" in k for k in r) and not _refused(fmt, r)]
        expected = [_texts_of(r) for r in records]
        if via_decorator:
            seen: set[str] = set()
            expected = [e for e in expected
                        if (j := repr(sorted(e.items()))) not in seen
                        and not seen.add(j)]  # type: ignore[func-returns-value]
        with get_backend(store) as fresh:
            loaded = fresh.load()
            assert _canon([_user(r) for r in loaded]) == _canon(expected)
            funcs = {r.get("_stet_func") for r in loaded}
            for e in expected:  # (has() less its refusal of NUL in names)
                assert fresh.contains_any(e)
                names = tuple(sorted(e))
                texts = tuple(e[n] for n in names)
                if via_decorator:  # what the next process's decorated g asks
                    (func,) = funcs
                    assert fresh.contains_run(str(func), names, texts)
                    assert not fresh.contains_run(str(func) + "_other", names, texts)
                other = {**e, names[0]: e[names[0]] + "x"}
                assert fresh.contains_any(other) is (other in expected)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
@settings(max_examples=int(os.environ.get("STET_NAME_EXAMPLES", "15")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data(), via_decorator=st.booleans())
def test_arbitrary_field_names_and_values_round_trip_and_skip(
    fmt: str, data: st.DataObject, via_decorator: bool
) -> None:
    records = data.draw(_record_lists(fmt))
    _check_round_trip(fmt, records, via_decorator)


_EMPTY_NAME_SCRIPT = textwrap.dedent(
    """
    import sys
    import stet

    ran = []

    @stet.once(store=sys.argv[1], verbose=False, save_result=True)
    def g(**kwargs):
        ran.append(kwargs)
        return len(ran)

    for x in range(3):
        g(x=x)
    g(**{"": 1})
    g(**{"": ""})
    g(**{"": 1, "x": 1})
    print(len(ran))
    """
)


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_an_empty_field_name_is_a_field_and_the_store_stays_readable(
    tmp_path: Path, fmt: str
) -> None:
    """``g(**{"": 1})`` is a run of its own in every format. A CSV store used to be
    rewritten with an empty header name, which stet then refused to read: every run
    recorded before was held hostage by a CorruptStoreError."""
    store = tmp_path / f"runs.{fmt}"
    script = tmp_path / "run.py"
    script.write_text(_EMPTY_NAME_SCRIPT)
    executed = []
    for _ in range(2):
        r = subprocess.run([sys.executable, str(script), str(store)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        executed.append(int(r.stdout.split()[-1]))
    assert executed == [6, 0]
    with get_backend(store) as b:
        records = sorted((_user(r) for r in b.load()), key=lambda r: json.dumps(r, sort_keys=True))
    assert records == sorted([{"x": "0"}, {"x": "1"}, {"x": "2"}, {"": "1"}, {"": ""},
                              {"": "1", "x": "1"}], key=lambda r: json.dumps(r, sort_keys=True))


def test_a_name_a_csv_store_cannot_hold_is_refused_before_the_run(tmp_path: Path) -> None:
    """A ``**kwargs`` name with a lone surrogate: a CSV header cannot hold it (values are
    kept JSON-escaped, names cannot be). It used to run the function, then refuse to
    record it; now it is refused first, naming the store, which is left as it was."""
    store = tmp_path / "runs.csv"
    ran: list[dict[str, Any]] = []

    @stet.once(store=store, verbose=False)
    def g(**kwargs: Any) -> None:
        ran.append(kwargs)

    g(x=1)
    before = store.read_bytes()
    with pytest.raises(StoreError, match="lone surrogate") as info:
        g(**{"a" + SURROGATE: 1})
    assert str(store) in str(info.value)
    assert ran == [{"x": 1}]
    assert store.read_bytes() == before
    g(x="v" + SURROGATE)  # (a value with one is kept)
    assert len(ran) == 2
