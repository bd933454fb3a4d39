"""stet.load (typed DataFrames) and save_result (results stored with runs)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest

import stet
from stet.backends import get_backend

pd = pytest.importorskip("pandas")


def test_load_types_values_back(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store))
    def exp(alpha: float, seed: int, model: str, flag: bool, code: str, extra: Any = None
            ) -> None:
        pass

    exp(0.1, 1, "resnet", True, "007")
    exp(1e-05, 2, "vit", False, "12", extra=3)
    exp(float("nan"), 3, "1", True, "x", extra=None)
    df = stet.load(store)
    assert list(df.columns[:6]) == ["alpha", "seed", "model", "flag", "code", "extra"]
    assert df["alpha"].dtype == "float64" and df["alpha"][1] == 1e-05
    assert math.isnan(df["alpha"][2])
    assert df["seed"].dtype == "int64" and list(df["seed"]) == [1, 2, 3]
    assert df["flag"].dtype == "bool" and list(df["flag"]) == [True, False, True]
    # "007" is not the integer 7: strings stay strings when any value is not a number
    assert list(df["model"]) == ["resnet", "vit", "1"]
    assert list(df["code"]) == ["007", "12", "x"]
    assert df["extra"].dtype == "Int64" and df["extra"][1] == 3
    assert df["extra"].isna().tolist() == [True, False, True]
    # bookkeeping columns, typed
    for col in ("_stet_func", "_stet_timestamp", "_stet_started", "_stet_duration",
                "_stet_host"):
        assert col in df.columns
    assert {f.rsplit(".", 1)[-1] for f in df["_stet_func"]} == {"exp"}
    assert str(df["_stet_timestamp"].dtype).startswith("datetime64")
    assert df["_stet_duration"].dtype == "float64"


def test_load_by_function_failures_and_errors(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.sqlite")

    @stet.once(store=store, name="a")
    def a(x: int) -> None:
        if x < 0:
            raise RuntimeError("boom")

    @stet.once(store=store, name="b")
    def b(x: int) -> None:
        pass

    a(1)
    b(2)
    b(3)
    with pytest.raises(RuntimeError):
        a(-1)
    assert len(stet.load(store)) == 3
    assert list(stet.load(store, func="b")["x"]) == [2, 3]
    assert list(stet.load(a)["x"]) == [1]  # a decorated function: its store and runs
    fails = stet.load(store, failures=True)
    assert list(fails["x"]) == [-1]
    assert fails["_stet_error_type"][0] == "RuntimeError" and fails["_stet_error"][0] == "boom"
    with pytest.raises(FileNotFoundError, match="no stet store"):
        stet.load(tmp_path / "missing.csv")
    with pytest.raises(TypeError, match="func="):
        stet.load(store, func=len)


def test_load_without_pandas_says_how_to_get_it(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    with pytest.raises(ImportError, match=r"pip install 'stet\[pandas\]'"):
        stet.load(tmp_path / "runs.csv")


def test_import_stet_stays_light() -> None:
    code = ("import sys, stet; heavy = [m for m in ('pandas', 'tqdm', 'dask', 'pyarrow', "
            "'numpy', 'concurrent.futures') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ save_result
def test_save_result_round_trip_on_every_backend(store_path: Path) -> None:
    calls = []

    @stet.once(store=str(store_path), save_result=True, verbose=False, name="exp")
    def exp(alpha: float, seed: int) -> dict[str, Any]:
        calls.append((alpha, seed))
        return {"loss": alpha * seed, "acc": 0.5, "tags": ["a", "b"], "nested": {"n": 1},
                "note": ""}

    first = exp(0.1, 2)
    again = exp(0.1, 2)
    assert again == first and again is not first
    assert calls == [(0.1, 2)]
    again["loss"] = -1  # a caller's change never leaks into the next skip
    assert exp(0.1, 2)["loss"] == pytest.approx(0.2)
    [record] = get_backend(store_path).load()
    assert json.loads(record["_stet_result"])["acc"] == 0.5

    # A fresh process (here: a fresh decorated function) reads stored results once.
    @stet.once(store=str(store_path), save_result=True, verbose=False, name="exp")
    def exp2(alpha: float, seed: int) -> dict[str, Any]:
        raise AssertionError("must not run")

    assert exp2(0.1, 2) == first
    df = stet.load(store_path)
    assert list(df["result.loss"]) == [pytest.approx(0.2)]
    assert list(df["result.nested.n"]) == [1]
    assert df["result.tags"][0] == ["a", "b"]
    assert "_stet_result" not in df.columns


def test_save_result_sees_runs_recorded_by_other_workers(tmp_path: Path) -> None:
    store = str(tmp_path / "runs.json")

    @stet.once(store=store, save_result=True, verbose=False)
    def exp(x: int) -> int:
        return x * 10

    assert exp(1) == 10
    assert exp(1) == 10  # cached
    # Another process records a run (with its result) after this one read the store.
    code = (f"import stet\n@stet.once(store={store!r}, save_result=True)\n"
            f"def exp(x):\n    return x * 10\nexp(2)\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert exp(2) == 20


def test_results_off_by_default_and_non_json_results(tmp_path: Path) -> None:
    import numpy as np

    store = str(tmp_path / "runs.csv")

    @stet.once(store=store, verbose=False)
    def plain(x: int) -> int:
        return x

    assert plain(1) == 1 and plain(1) is None
    assert "_stet_result" not in get_backend(store).load()[0]

    class Model:
        pass

    @stet.once(store=store, save_result=True, verbose=False)
    def fit(x: int) -> Any:
        return Model() if x == 0 else {"w": np.float32(0.5), "a": np.arange(3),
                                       "n": np.int64(7)}

    with pytest.warns(stet.ResultNotSavedWarning, match="not saved"):
        model = fit(0)
    assert isinstance(model, Model)  # the caller still gets its value
    assert fit.is_done(0)  # the run did complete: recorded, not re-run
    assert fit(0) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(1)  # NumPy values become their Python equivalents
    assert fit(1) == {"w": 0.5, "a": [0, 1, 2], "n": 7}


def test_forget_drops_the_stored_result(tmp_path: Path) -> None:
    n = [0]

    @stet.once(store=str(tmp_path / "runs.sqlite"), save_result=True, verbose=False)
    def exp(x: float) -> int:
        n[0] += 1
        return n[0]

    assert exp(0.5) == 1
    assert exp(0.5) == 1
    assert exp.forget(0.5) == 1
    assert exp(0.5) == 2
    assert exp(0.5) == 2


def test_sweep_results_and_load(tmp_path: Path) -> None:
    @stet.once(store=str(tmp_path / "runs.parquet"), save_result=True, verbose=False)
    def exp(alpha: float, seed: int) -> dict[str, float]:
        return {"loss": alpha + seed}

    g = stet.grid(alpha=[0.1, 0.2], seed=range(2))
    s = stet.sweep(exp, g, progress=False)
    assert [r["loss"] for _, r in s.results] == [0.1, 1.1, 0.2, 1.2]
    df = stet.load(exp)
    assert sorted(df["result.loss"]) == [0.1, 0.2, 1.1, 1.2]
    assert df.groupby("alpha")["result.loss"].mean().to_dict() == pytest.approx(
        {0.1: 0.6, 0.2: 0.7})
