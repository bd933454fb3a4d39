"""stet.sweep refuses an executor it cannot run on, before anything is submitted."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import stet


def test_an_executor_without_the_futures_interface_is_refused_before_anything_runs(
        tmp_path: Path) -> None:
    calls: list[int] = []

    @stet.once(store=tmp_path / "runs.csv")
    def f(x: int) -> int:
        calls.append(x)
        return x

    with multiprocessing.get_context("fork").Pool(1) as pool, pytest.raises(TypeError) as info:
        stet.sweep(f, [{"x": 1}, {"x": 2}], executor=pool, progress=False)
    text = str(info.value)
    assert "multiprocessing.pool.Pool" in text  # what it got
    assert "concurrent.futures.Executor" in text and "submitit" in text  # what it takes
    assert "nothing was submitted" in text
    assert calls == []


def test_any_object_is_refused_by_its_type(tmp_path: Path) -> None:
    @stet.once(store=tmp_path / "runs.csv")
    def f(x: int) -> int:
        return x

    class Launcher:
        def map(self, fn: object, items: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(TypeError, match=r"test_executors_refused\..*Launcher"):
        stet.sweep(f, [{"x": 1}], executor=Launcher(), progress=False)
