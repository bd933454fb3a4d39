"""Conformance suite: every documented behaviour, against every store format.

Each test runs on real files in ``tmp_path`` for every format, and on a table of a real
PostgreSQL server (the ``fmt`` / ``store_path`` / ``backend`` fixtures in
``conftest.py``). The behaviours are those promised in docs/explanation/promises.md and
the original API reference. What every store owes stet (the matching rules, names and
values as data, handles following each other, threads and processes sharing a run) is
checked by ``stet.testing``'s contract (``test_store_contract.py``), which also runs
against a store made outside stet; this file keeps what goes through the decorator's
options, the command line and the formats' own files.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
import json
import random
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import stet
from formats import FOLDED_LATER, SHOW_ABSENT, other_tools_rows
from stet.backends import BaseBackend, get_backend

# ----------------------------------------------------------------------------- helpers

#: Values whose canonical texts are all different, and which a naive store confuses:
#: empty and missing-value spellings, CSV/JSON/SQL metacharacters, unicode.
TRICKY: list[Any] = [
    None,
    "",
    "NA",
    "null",
    "NULL",
    "nan",
    "NaN",
    "N/A",
    "#N/A",
    "\\N",
    " ",
    "  padded  ",
    "0",
    "-0",
    "a,b",
    'say "hi"',
    '"',
    '""',
    "'",
    "it's",
    ",",
    "line1\nline2",
    "\n",
    "cr\rlf\r\n",
    "tab\there",
    "ünïcødé ✓ 日本語 🎉",
    "[]",
    "{}",
    '{"a": 1}',
    "=1+1",
    "#comment",
    "x" * 3000,
]

#: Field names that are dangerous as SQL identifiers or CSV headers.
WEIRD_NAMES: list[str] = [
    'a"; DROP TABLE stet_records; --',
    "x); DELETE FROM stet_records; --",
    "with space",
    "it's",
    'say "hi"',
    "comma,name",
    "select",
    "[bracket]",
    "`tick`",
    "ünïcødé",
]


def _text(value: Any) -> str:
    """The canonical text stet stores for ``value``."""
    return stet.canonical(value)


def _fresh_load(path: Path) -> list[dict[str, Any]]:
    """All records as seen by a brand-new backend instance."""
    with get_backend(path) as b:
        return b.load()


def _user_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_stet_")}


def _stray_files(directory: Path) -> list[str]:
    """Temporary or sidecar files left beside a store."""
    return sorted(
        p.name for p in directory.iterdir() if "stet-tmp" in p.name or p.name.endswith(".stet-log")
    )


class _Stdin:
    """A stand-in for ``sys.stdin`` that says whether it is a terminal."""

    def __init__(self, tty: bool) -> None:
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


# ====================================================================== decorator styles


def test_bare_decorator_uses_default_csv_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    calls: list[tuple[float, int]] = []

    @stet.once
    def f(alpha: float, seed: int) -> dict[str, float]:
        calls.append((alpha, seed))
        return {"alpha": alpha, "seed": seed}

    assert f(0.1, 1) == {"alpha": 0.1, "seed": 1}
    assert (tmp_path / "_stet_store.csv").exists()
    assert capsys.readouterr().out == ""
    assert f(0.1, 1) is None
    assert capsys.readouterr().out == "[stet] Skipping f(alpha=0.1, seed=1)\n"
    assert f(0.1, 2) == {"alpha": 0.1, "seed": 2}
    assert calls == [(0.1, 1), (0.1, 2)]
    rows = pd.read_csv(tmp_path / "_stet_store.csv", dtype=str, keep_default_na=False)
    assert sorted(zip(rows["alpha"], rows["seed"], strict=True)) == [("0.1", "1"), ("0.1", "2")]


def test_store_style(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[float, int]] = []

    @stet.once(store=store_path)
    def f(alpha: float, seed: int) -> list[float]:
        calls.append((alpha, seed))
        return [alpha, seed]

    assert f(0.1, 1) == [0.1, 1]
    assert capsys.readouterr().out == ""
    assert f(0.1, 1) is None
    assert capsys.readouterr().out == "[stet] Skipping f(alpha=0.1, seed=1)\n"
    # keyword order does not matter; the message follows the signature
    assert f(seed=1, alpha=0.1) is None
    assert capsys.readouterr().out == "[stet] Skipping f(alpha=0.1, seed=1)\n"
    assert f(0.1, 2) == [0.1, 2]
    assert calls == [(0.1, 1), (0.1, 2)]
    assert len(_fresh_load(store_path)) == 2
    # the same function on the same store given as text: the same runs
    again = stet.once(store=str(store_path))(f.__wrapped__)  # type: ignore[attr-defined]
    assert again(0.1, 2) is None
    assert calls == [(0.1, 1), (0.1, 2)]


def test_store_and_key_style(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[float, int, int]] = []

    @stet.once(store=store_path, key=["alpha", "seed"])
    def f(alpha: float, seed: int, n_steps: int = 10) -> str:
        calls.append((alpha, seed, n_steps))
        return "done"

    assert f(0.1, 1, n_steps=5) == "done"
    assert f(0.1, 1, n_steps=500) is None
    assert capsys.readouterr().out == "[stet] Skipping f(alpha=0.1, seed=1)\n"
    assert f(0.1, 2) == "done"
    assert calls == [(0.1, 1, 5), (0.1, 2, 10)]
    fields = [_user_fields(r) for r in _fresh_load(store_path)]
    assert sorted(fields, key=lambda r: r["seed"]) == [
        {"alpha": "0.1", "seed": "1"},
        {"alpha": "0.1", "seed": "2"},
    ]


def test_verbose_false_per_decorator(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []

    @stet.once(store=store_path, verbose=False)
    def f(x: int) -> int:
        calls.append(x)
        return x

    assert f(1) == 1
    assert f(1) is None
    assert calls == [1]
    assert capsys.readouterr().out == ""


def test_verbose_false_globally(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []

    @stet.once(store=store_path)
    def f(x: int) -> int:
        calls.append(x)
        return x

    @stet.once(store=store_path, verbose=True)
    def loud(x: int) -> int:
        calls.append(-x)
        return x

    stet.configure(verbose=False)
    assert f(1) == 1
    assert f(1) is None
    assert calls == [1]
    assert capsys.readouterr().out == ""
    # a decorator's own verbose=True wins over the process-wide default
    assert loud(2) == 2
    assert loud(2) is None
    assert capsys.readouterr().out == "[stet] Skipping loud(x=2)\n"
    stet.configure(verbose=True)
    assert f(1) is None
    assert capsys.readouterr().out == "[stet] Skipping f(x=1)\n"


def test_async_function(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[float, int]] = []

    @stet.once(store=store_path)
    async def f(alpha: float, seed: int) -> str:
        await asyncio.sleep(0)
        calls.append((alpha, seed))
        return "ok"

    assert asyncio.run(f(0.1, 1)) == "ok"
    assert asyncio.run(f(0.1, 1)) is None
    assert capsys.readouterr().out == "[stet] Skipping f(alpha=0.1, seed=1)\n"
    assert calls == [(0.1, 1)]

    @stet.once(store=store_path)
    async def boom(x: int) -> None:
        calls.append((-1.0, x))
        raise RuntimeError("async failure")

    with pytest.raises(RuntimeError, match="async failure"):
        asyncio.run(boom(1))
    with pytest.raises(RuntimeError, match="async failure"):
        asyncio.run(boom(1))
    assert calls == [(0.1, 1), (-1.0, 1), (-1.0, 1)]
    assert [_user_fields(r) for r in _fresh_load(store_path)] == [{"alpha": "0.1", "seed": "1"}]


def test_raising_function_records_nothing(store_path: Path) -> None:
    calls: list[int] = []

    class Boom(Exception):
        pass

    @stet.once(store=store_path)
    def f(x: int) -> int:
        calls.append(x)
        if len(calls) < 3:
            raise Boom(f"failure {len(calls)}")
        return x

    with pytest.raises(Boom, match="failure 1"):
        f(7)
    assert _fresh_load(store_path) == []
    with pytest.raises(Boom, match="failure 2"):
        f(7)
    assert f(7) == 7  # third attempt succeeds and is recorded
    assert f(7) is None
    assert calls == [7, 7, 7]
    assert [_user_fields(r) for r in _fresh_load(store_path)] == [{"x": "7"}]


# ============================================================================== identity


def test_name_option_overrides_function_name(store_path: Path) -> None:
    calls: list[str] = []

    @stet.once(store=store_path, name="experiment")
    def f(x: int) -> None:
        calls.append("f")

    @stet.once(store=store_path, name="experiment")
    def g(x: int) -> None:
        calls.append("g")

    f(1)
    g(1)  # same name: same run
    assert calls == ["f"]


def test_defaults_are_applied(store_path: Path) -> None:
    calls: list[tuple[int, int]] = []

    @stet.once(store=store_path)
    def f(x: int, y: int = 10) -> None:
        calls.append((x, y))

    f(1)
    f(1, y=10)
    f(1, 10)
    f(x=1)
    assert calls == [(1, 10)]
    f(1, y=11)
    assert calls == [(1, 10), (1, 11)]
    assert [_user_fields(r) for r in _fresh_load(store_path)] == [
        {"x": "1", "y": "10"},
        {"x": "1", "y": "11"},
    ]

    @stet.once(store=store_path)
    def g(a: int, /, b: int = 2, *, c: int = 3) -> None:
        calls.append((a, b + c))

    g(1)
    g(1, 2)
    g(1, b=2, c=3)
    g(1, c=3)
    assert calls[2:] == [(1, 5)]
    g(1, c=4)
    assert calls[2:] == [(1, 5), (1, 6)]


def test_key_restricts_identity(store_path: Path) -> None:
    calls: list[tuple[int, int]] = []

    @stet.once(store=store_path, key=["x"])
    def f(x: int, y: int) -> None:
        calls.append((x, y))

    f(1, 2)
    f(1, 3)
    f(2, 3)
    assert calls == [(1, 2), (2, 3)]
    assert all("y" not in r for r in _fresh_load(store_path))


def test_key_naming_a_non_parameter_is_type_error_at_decoration(store_path: Path) -> None:
    def f(alpha: float, seed: int) -> None:
        pass

    with pytest.raises(TypeError, match="nope"):
        stet.once(store=store_path, key=["alpha", "nope"])(f)
    assert not store_path.exists()

    def g(alpha: float, **kwargs: Any) -> None:
        pass

    stet.once(store=store_path, key=["alpha", "extra"])(g)  # **kwargs may supply it


def test_self_and_cls_are_left_out(store_path: Path) -> None:
    calls: list[str] = []

    class Model:  # instances have a default repr holding an address
        @stet.once(store=store_path)
        def fit(self, lr: float) -> str:
            calls.append(f"fit {lr}")
            return "fitted"

        @classmethod
        @stet.once(store=store_path)
        def build(cls, n: int) -> str:
            calls.append(f"build {n}")
            return "built"

    assert Model().fit(0.1) == "fitted"
    assert Model().fit(0.1) is None  # another instance: the same run
    assert Model().fit(0.2) == "fitted"
    assert Model.build(3) == "built"
    assert Model.build(3) is None
    assert calls == ["fit 0.1", "fit 0.2", "build 3"]
    for r in _fresh_load(store_path):
        assert "self" not in r
        assert "cls" not in r


def test_var_kwargs_entries_are_fields(store_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    @stet.once(store=store_path)
    def f(x: int, **kwargs: Any) -> None:
        calls.append({"x": x, **kwargs})

    f(1, a=2)
    f(1, a=3)
    f(1, a=2)  # done
    f(1, b=2)  # the record of (1, a=2) has no field b: not this run
    f(1, b=2, a=2)  # every record lacks a or b
    f(1, a=2, b=2)  # same as the previous call
    assert calls == [
        {"x": 1, "a": 2},
        {"x": 1, "a": 3},
        {"x": 1, "b": 2},
        {"x": 1, "b": 2, "a": 2},
    ]
    fields = sorted((_user_fields(r) for r in _fresh_load(store_path)), key=repr)
    assert fields == sorted(
        [
            {"x": "1", "a": "2"},
            {"x": "1", "a": "3"},
            {"x": "1", "b": "2"},
            {"x": "1", "a": "2", "b": "2"},
        ],
        key=repr,
    )


def test_numpy_scalars_equal_python_scalars(store_path: Path) -> None:
    calls: list[tuple[Any, Any]] = []

    @stet.once(store=store_path)
    def f(alpha: Any, seed: Any) -> None:
        calls.append((alpha, seed))

    f(0.1, 3)
    f(np.float64(0.1), np.int64(3))
    f(np.float64(0.5), np.int32(4))
    f(0.5, 4)
    assert len(calls) == 2
    f(np.float32(0.25), np.bool_(True))
    f(0.25, True)
    f(np.str_("0.25"), "True")
    assert len(calls) == 3
    assert sorted((r["alpha"], r["seed"]) for r in _fresh_load(store_path)) == [
        ("0.1", "3"),
        ("0.25", "True"),
        ("0.5", "4"),
    ]


def test_text_equal_values_are_the_same_run(store_path: Path) -> None:
    """The documented price: a value and its ``str`` are the same run; nothing else is."""
    calls: list[Any] = []

    @stet.once(store=store_path)
    def f(x: Any) -> None:
        calls.append(x)

    f(1)
    f("1")  # same run (documented)
    f(1.0)  # "1.0" is not "1"
    f(True)  # "True" is not "1"
    f("True")  # same as True
    f(None)
    f("None")  # same as None
    assert calls == [1, 1.0, True, None]


def test_named_function_value_is_keyed_by_name(store_path: Path) -> None:
    calls: list[str] = []

    def relu(v: float) -> float:
        return max(v, 0.0)

    @stet.once(store=store_path)
    def f(activation: Callable[[float], float], seed: int) -> None:
        calls.append(activation.__name__)

    f(relu, 1)
    f(relu, 1)
    f(abs, 1)
    assert calls == ["relu", "abs"]


# ========================================================================= tricky values


def test_tricky_values_round_trip_and_match_exactly(store_path: Path) -> None:
    calls: list[Any] = []

    @stet.once(store=store_path)
    def f(v: Any) -> str:
        calls.append(v)
        return "ran"

    for v in TRICKY:  # all distinct: none may be taken for another
        assert f(v) == "ran", f"{v!r} was wrongly skipped"
    assert calls == TRICKY
    for v in TRICKY:
        assert f(v) is None, f"{v!r} was not skipped"
    assert calls == TRICKY

    expected = sorted(_text(v) for v in TRICKY)
    with get_backend(store_path) as fresh:
        records = fresh.load()
        assert sorted(r.get("v", "<absent>") for r in records) == expected
        for v in TRICKY:
            assert fresh.has({"v": v}), repr(v)
            assert fresh.has({"v": _text(v)}), repr(v)
        for miss in ["na", "Null", "nan ", " NA", "a, b", "line1 line2", "line1\r\nline2", "x"]:
            assert not fresh.has({"v": miss}), repr(miss)


def test_empty_string_and_absent_field_differ(store_path: Path) -> None:
    calls: list[tuple[int, dict[str, Any]]] = []

    @stet.once(store=store_path)
    def f(x: int, **kwargs: Any) -> None:
        calls.append((x, kwargs))

    f(1)
    f(1, note="")  # the record of f(1) has no field note: not done
    f(1, note="")
    f(1)
    f(2, note="")
    f(2, note="")
    f(2, note="x")
    assert calls == [(1, {}), (1, {"note": ""}), (2, {"note": ""}), (2, {"note": "x"})]

    with get_backend(store_path) as fresh:
        records = [_user_fields(r) for r in fresh.load()]
        assert sorted(records, key=repr) == sorted(
            [{"x": "1"}, {"x": "1", "note": ""}, {"x": "2", "note": ""}, {"x": "2", "note": "x"}],
            key=repr,
        )


# ===================================================================== weird field names


def test_weird_field_names_via_kwargs(store_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    @stet.once(store=store_path)
    def f(**kwargs: Any) -> None:
        calls.append(kwargs)

    every = {name: i for i, name in enumerate(WEIRD_NAMES)}
    f(**every)
    f(**every)
    assert len(calls) == 1
    for name in WEIRD_NAMES:
        f(**{name: "solo"})
        f(**{name: "solo"})
    assert len(calls) == 1 + len(WEIRD_NAMES)
    f(**{**every, WEIRD_NAMES[0]: "changed"})
    assert len(calls) == 2 + len(WEIRD_NAMES)

    with get_backend(store_path) as fresh:
        records = [_user_fields(r) for r in fresh.load()]
    assert {k: str(v) for k, v in every.items()} in records
    for name in WEIRD_NAMES:
        assert {name: "solo"} in records
    assert len(records) == 2 + len(WEIRD_NAMES)
    if store_path.suffix == ".sqlite":
        with sqlite3.connect(store_path) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert "stet_records" in tables
            n = conn.execute("SELECT count(*) FROM stet_records").fetchone()[0]
        conn.close()
        assert n == 2 + len(WEIRD_NAMES)


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "\ufeffbom", "trailing\n"])
def test_exotic_field_names_never_break_the_store(store_path: Path, name: str) -> None:
    """A field name with line breaks or a BOM is either refused up front, or stored and
    matched as data; either way the store stays readable and keeps its records."""
    with get_backend(store_path) as b:
        try:
            b.record({name: "1"})
        except (TypeError, ValueError):
            stored = False
        else:
            stored = True
        b.record({"plain": "2"})
    with get_backend(store_path) as fresh:
        assert fresh.has({"plain": "2"})
        assert fresh.has({name: "1"}) is stored
        assert not fresh.has({name: "2"})
        records = [_user_fields(r) for r in fresh.load()]
    assert {"plain": "2"} in records
    assert ({name: "1"} in records) is stored
    assert len(records) == 1 + stored


# ====================================================================== 0.0.2 stores


def _v002_experiment(path: Path, calls: list[tuple[Any, Any]]) -> Callable[..., Any]:
    @stet.once(store=path, key=["alpha", "seed"])
    def run_experiment(alpha: float, seed: int, n_iter: int = 100) -> str:
        calls.append((alpha, seed))
        return "new"

    return run_experiment


def test_v002_store_runs_are_skipped(
    v002_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = v002_store
    calls: list[tuple[Any, Any]] = []
    run_experiment = _v002_experiment(path, calls)
    for alpha in (0.1, 0.5, 1.0):
        for seed in range(4):
            assert run_experiment(alpha, seed) is None
    assert calls == []
    out = capsys.readouterr().out
    assert out.count("[stet] Skipping run_experiment(") == 12
    assert "[stet] Skipping run_experiment(alpha=0.1, seed=0)\n" in out
    assert run_experiment(np.float64(0.5), np.int64(2), n_iter=7) is None
    assert run_experiment(0.1, 4) == "new"
    assert run_experiment(2.0, 0) == "new"
    assert run_experiment(1, 0) == "new"  # 1 is not 1.0
    assert run_experiment(0.1, 4) is None
    assert calls == [(0.1, 4), (2.0, 0), (1, 0)]
    assert len(_fresh_load(path)) == 15


def test_v002_reset_with_text_values(v002_store: Path) -> None:
    path = v002_store
    calls: list[tuple[Any, Any]] = []
    run_experiment = _v002_experiment(path, calls)
    assert run_experiment(0.1, 0) is None  # the decorator has read the store
    stet.reset(path, key_dict={"alpha": "0.1", "seed": "0"})
    assert len(_fresh_load(path)) == 11
    assert run_experiment(0.1, 0) == "new"  # the removal is seen
    assert run_experiment(0.1, 1) is None
    stet.reset(path, key_dict={"alpha": 0.5, "seed": 2})  # typed values work too
    assert run_experiment(0.5, 2) == "new"
    assert run_experiment(0.5, 3) is None
    assert calls == [(0.1, 0), (0.5, 2)]


def test_status_prints_summary(
    v002_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stet.status(v002_store)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"Store: {stet.backends.display_store(v002_store)} (")
    assert "Completed runs: 12" in lines
    assert "Key fields: alpha, seed" in lines


def test_status_missing_store(store_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        stet.status(store_path)
    assert not store_path.exists()


# =========================================================================== backend API


def test_backend_remove_and_clear_replace_atomically(
    store_path: Path, backend: BaseBackend
) -> None:
    file_format = store_path.suffix not in (".sqlite", ".postgres")

    def inode() -> int | None:  # a PostgreSQL store has no file to replace
        return store_path.stat().st_ino if store_path.suffix != ".postgres" else None

    for seed in range(3):
        backend.record({"alpha": 0.1, "seed": seed})
    ino0 = inode() if store_path.exists() else None

    backend.remove({"alpha": 0.1, "seed": 0})
    assert not backend.has({"alpha": 0.1, "seed": 0})
    assert backend.has({"alpha": 0.1, "seed": 1})
    assert sorted(r["seed"] for r in backend.load()) == ["1", "2"]
    assert store_path.exists()
    ino1 = inode()
    if file_format and ino0 is not None:
        assert ino1 != ino0

    backend.record({"alpha": 0.1, "seed": 7})
    backend.remove({"alpha": 0.1, "seed": 1})
    ino2 = inode()
    if file_format:
        assert ino2 != ino1
    assert sorted(r["seed"] for r in _fresh_load(store_path)) == ["2", "7"]

    backend.clear()
    assert backend.load() == []
    assert not backend.has({"alpha": 0.1, "seed": 2})
    if file_format:
        assert inode() != ino2
    assert _fresh_load(store_path) == []
    if store_path.suffix != ".postgres":
        assert _stray_files(store_path.parent) == []

    backend.record({"alpha": 0.5, "seed": 0})  # usable after clear
    assert [_user_fields(r) for r in _fresh_load(store_path)] == [{"alpha": "0.5", "seed": "0"}]


# ============================================================================ bad input


@pytest.mark.parametrize("name", ["store.txt", "store.csv.bak", "store", "store.pq"])
def test_unknown_extension_is_value_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name

    def f(x: int) -> None:
        pass

    for attempt in (lambda: stet.once(store=path)(f), lambda: get_backend(path)):
        with pytest.raises(ValueError) as info:
            attempt()
        msg = str(info.value)
        if path.suffix:
            assert path.suffix in msg
        for ext in (".csv", ".json", ".sqlite", ".parquet"):
            assert ext in msg
    assert list(tmp_path.iterdir()) == []


def _binary(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" + random.Random(1234).randbytes(4096))


def _text_file(path: Path) -> None:
    path.write_text("alpha,seed\n0.1,0\nnot really a store\n" * 50)


def _json_object(path: Path) -> None:
    path.write_text(json.dumps({"alpha": "0.1", "seed": "0"}, indent=2) + "\n")


def _json_numbers(path: Path) -> None:
    path.write_text("[1, 2, 3]\n")


def _json_garbage(path: Path) -> None:
    path.write_text("hello, world\n")


def _csv_ragged(path: Path) -> None:
    path.write_text("alpha,seed,_stet_timestamp\n0.1,0,2026-01-01T00:00:00+00:00\n0.5,1,x,extra\n")


def _sqlite_foreign(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()


CORRUPT_CASES: list[tuple[str, str, Callable[[Path], None]]] = [
    ("csv", "binary", _binary),
    ("csv", "ragged", _csv_ragged),
    ("json", "binary", _binary),
    ("json", "object", _json_object),
    ("json", "numbers", _json_numbers),
    ("json", "garbage", _json_garbage),
    ("sqlite", "binary", _binary),
    ("sqlite", "text", _text_file),
    ("sqlite", "foreign-tables", _sqlite_foreign),
    ("parquet", "binary", _binary),
    ("parquet", "text", _text_file),
    ("parquet", "json", _json_object),
]


@pytest.mark.parametrize(
    ("ext", "make"),
    [(ext, make) for ext, _, make in CORRUPT_CASES],
    ids=[f"{ext}-{label}" for ext, label, _ in CORRUPT_CASES],
)
def test_corrupt_store_is_an_error_and_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str, make: Callable[[Path], None]
) -> None:
    path = tmp_path / f"store.{ext}"
    make(path)
    before = path.read_bytes()
    calls: list[int] = []

    @stet.once(store=path)
    def f(alpha: float, seed: int) -> None:
        calls.append(seed)

    def expect_error(action: Callable[[], object]) -> None:
        with pytest.raises(stet.CorruptStoreError) as info:
            action()
        assert str(path) in str(info.value)
        assert path.read_bytes() == before

    expect_error(lambda: f(0.1, 0))  # a lookup
    assert calls == []
    with get_backend(path) as b:
        expect_error(lambda: b.has({"alpha": 0.1, "seed": 0}))
        expect_error(lambda: b.record({"alpha": 0.1, "seed": 0}))  # an attempted record
        expect_error(b.load)
        expect_error(lambda: b.remove({"alpha": 0.1, "seed": 0}))
    with get_backend(path) as b:
        expect_error(lambda: b.record({"alpha": 0.5, "seed": 1}))  # record first, fresh
    expect_error(lambda: stet.status(path))
    expect_error(lambda: stet.reset(path, key_dict={"alpha": "0.1", "seed": "0"}))
    monkeypatch.setattr(sys, "stdin", _Stdin(tty=False))
    expect_error(lambda: stet.reset(path))
    expect_error(lambda: f(0.1, 0))
    assert calls == []
    assert _stray_files(tmp_path) == []


class _Opaque:
    """An instance with the default repr (a memory address)."""


def test_unstable_values_are_type_errors(store_path: Path) -> None:
    calls: list[int] = []

    @stet.once(store=store_path)
    def f(model: Any, seed: int) -> None:
        calls.append(seed)

    for bad in (object(), _Opaque(), lambda x: x):
        with pytest.raises(TypeError) as info:
            f(bad, 1)
        msg = str(info.value)
        assert "model" in msg
        assert "key=" in msg
        assert "__stet_key__" in msg
    assert calls == []
    assert _fresh_load(store_path) == []

    @stet.once(store=store_path, key=["seed"])
    def g(model: Any, seed: int) -> None:
        calls.append(seed)

    g(object(), 1)
    g(object(), 1)
    assert calls == [1]


def test_stet_key_hook_gives_stable_identity(store_path: Path) -> None:
    class Config:
        def __init__(self, lr: float, depth: int) -> None:
            self.lr, self.depth = lr, depth

        def __stet_key__(self) -> tuple[float, int]:
            return (self.lr, self.depth)

    calls: list[float] = []

    @stet.once(store=store_path)
    def f(cfg: Config) -> None:
        calls.append(cfg.lr)

    f(Config(0.1, 3))
    f(Config(0.1, 3))
    f(Config(0.2, 3))
    assert calls == [0.1, 0.2]


# ============================================================================== reset


def test_reset_without_tty_clears(
    store_path: Path, backend: BaseBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    @stet.once(store=store_path)
    def f(x: int) -> None:
        calls.append(x)

    f(1)
    f(2)
    monkeypatch.setattr(sys, "stdin", _Stdin(tty=False))

    def no_input(prompt: str = "") -> str:
        raise AssertionError(f"reset asked {prompt!r} without a terminal")

    monkeypatch.setattr(builtins, "input", no_input)
    stet.reset(store_path)
    assert _fresh_load(store_path) == []
    f(1)
    f(2)
    assert calls == [1, 2, 1, 2]


def test_reset_with_tty_asks_first(
    store_path: Path, backend: BaseBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.record({"x": 1})
    backend.record({"x": 2})
    prompts: list[str] = []
    answers = iter(["n", "", "y"])

    def fake_input(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(sys, "stdin", _Stdin(tty=True))
    monkeypatch.setattr(builtins, "input", fake_input)
    stet.reset(store_path)  # "n"
    assert len(_fresh_load(store_path)) == 2
    stet.reset(store_path)  # "" (default: no)
    assert len(_fresh_load(store_path)) == 2
    stet.reset(store_path)  # "y"
    assert _fresh_load(store_path) == []
    assert len(prompts) == 3
    assert not backend.has({"x": 1})


def test_reset_one_combination_keeps_others(store_path: Path, backend: BaseBackend) -> None:
    for a in ("0.1", "0.5"):
        for s in range(2):
            backend.record({"alpha": a, "seed": s})
    stet.reset(store_path, key_dict={"alpha": "0.5", "seed": "1"})
    got = sorted((r["alpha"], r["seed"]) for r in _fresh_load(store_path))
    assert got == [("0.1", "0"), ("0.1", "1"), ("0.5", "0")]


# ============================================== the store file alone, read by other tools

_WRITER = textwrap.dedent(
    """
    import json, sys
    import stet

    path, values = sys.argv[1], json.loads(sys.argv[2])

    @stet.once(store=path, name="sweep")
    def f(i, v, **extra):
        return i

    for i, v in enumerate(values):
        assert f(i, v) == i
    assert f(len(values), "with-empty", note="") == len(values)
    """
)


def test_store_file_alone_holds_every_run_after_exit(
    fmt: str, store_path: Path, tmp_path: Path
) -> None:
    path = store_path
    values = [_text(v) for v in TRICKY]
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path), json.dumps(values)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert path.exists()
    assert _stray_files(tmp_path) == []  # no sidecar, no temporary file

    rows = other_tools_rows(path, fmt)
    assert len(rows) == len(values) + 1
    by_i = {str(r["i"]): r for r in rows}
    for i, v in enumerate(values):
        assert by_i[str(i)]["v"] == v, (i, v)
        assert by_i[str(i)]["_stet_timestamp"]
    assert by_i[str(len(values))]["note"] == ""
    if fmt in SHOW_ABSENT:  # (CSV shows an absent field empty)
        assert by_i["0"].get("note") is None

    # and stet itself, in another process, sees every run as done
    calls: list[int] = []

    @stet.once(store=path, name="sweep")
    def f(i: int, v: Any, **extra: Any) -> None:
        calls.append(i)

    for i, v in enumerate(values):
        assert f(i, v) is None
    assert f(len(values), "with-empty", note="") is None
    assert calls == []
    assert len(_fresh_load(path)) == len(values) + 1


def test_other_tools_see_records_written_in_process(store_path: Path, fmt: str) -> None:
    @stet.once(store=store_path)
    def f(alpha: float, seed: int) -> None:
        pass

    for seed in range(5):
        f(0.1, seed)
        if fmt not in FOLDED_LATER:  # valid for other tools after every completed record
            rows = other_tools_rows(store_path, fmt)
            assert len(rows) == seed + 1
    if fmt in FOLDED_LATER:
        # within the writing process a sidecar may hold the tail; stet's readers see it
        assert len(_fresh_load(store_path)) == 5
        return
    rows = other_tools_rows(store_path, fmt)
    assert sorted((r["alpha"], r["seed"]) for r in rows) == [("0.1", str(s)) for s in range(5)]
    for r in rows:
        assert dt.datetime.fromisoformat(r["_stet_timestamp"]).utcoffset() == dt.timedelta(0)
        assert all(k in ("alpha", "seed") or k.startswith("_stet_") for k in r)


def test_sqlite_columns_are_all_text(tmp_path: Path) -> None:
    path = tmp_path / "runs.sqlite"

    @stet.once(store=path)
    def f(alpha: float, seed: int) -> None:
        pass

    f(0.1, 0)
    conn = sqlite3.connect(path)
    try:
        types = {row[2].upper() for row in conn.execute("PRAGMA table_info(stet_records)")}
    finally:
        conn.close()
    assert types == {"TEXT"}


def test_sqlite_write_refused_midway_leaves_nothing_and_new_columns_still_work(
    tmp_path: Path,
) -> None:
    """A batch that fails halfway (here: a value SQLite cannot bind) is rolled back with
    the columns it added; the next records, with those fields, are written all the same."""
    path = tmp_path / "runs.sqlite"
    with get_backend(path) as b:
        b.append_record({"x": "0", "_stet_func": "f"})
        bad: list[dict[str, Any]] = [{"x": "1", "y": "a", "_stet_func": "f"},
                                     {"x": "2", "Y": object(), "_stet_func": "f"}]
        with pytest.raises(stet.StoreError, match="left as it was") as err:
            b.append_records(bad)
        assert not isinstance(err.value, stet.CorruptStoreError)
        b.append_record({"x": "3", "y": "b", "Y": "c", "_stet_func": "f"})
        assert b.has({"x": 3, "y": "b", "Y": "c"}) and not b.has({"x": 1, "y": "a"})
    with get_backend(path) as fresh:
        assert [_user_fields(r) for r in fresh.load()] == [
            {"x": "0"}, {"x": "3", "y": "b", "Y": "c"}]


@pytest.mark.parametrize("ext", [".db"])
def test_sqlite_aliases(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"runs{ext}"
    calls: list[int] = []

    @stet.once(store=path)
    def f(x: int) -> None:
        calls.append(x)

    f(1)
    f(1)
    assert calls == [1]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT x FROM stet_records").fetchall() == [("1",)]
    finally:
        conn.close()


def test_v002_store_stays_readable_by_other_tools(fmt: str, v002_store: Path) -> None:
    path = v002_store
    calls: list[tuple[Any, Any]] = []
    run_experiment = _v002_experiment(path, calls)
    run_experiment(3.0, 0)
    stet.reset(path, key_dict={"alpha": "0.1", "seed": "0"})  # forces a rewrite
    rows = other_tools_rows(path, fmt)
    got = sorted((str(r["alpha"]), str(r["seed"])) for r in rows)
    expected = sorted(
        [(a, str(s)) for a in ("0.1", "0.5", "1.0") for s in range(4) if (a, s) != ("0.1", 0)]
        + [("3.0", "0")]
    )
    assert got == expected


def test_a_data_csv_is_not_taken_for_a_store(tmp_path: Path) -> None:
    """store= pointed at a results table by mistake: refused, the file left untouched."""
    data = tmp_path / "results.csv"
    data.write_text("alpha,seed,loss\n0.1,0,0.25\n0.5,1,0.5\n")
    before = data.read_bytes()

    @stet.once(store=data)
    def f(alpha: float, seed: int) -> None: ...

    with pytest.raises(stet.CorruptStoreError, match="data file"):
        f(0.1, 0)
    assert data.read_bytes() == before
