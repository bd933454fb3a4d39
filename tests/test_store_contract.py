"""``stet.testing``'s store contract, run against every built-in store (PostgreSQL on the
real server of ``pgserver.py``) and against a store made outside stet
(``example_store.py``): the proof that a user can add a store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

import stet
from example_store import DirectoryStore
from stet.backends import Store, get_backend
from stet.testing import StoreContract


class TestBuiltInStores(StoreContract):
    """Every format of ``conftest.FORMATS`` (the ``store_path`` fixture)."""

    @pytest.fixture
    def open_store(self, store_path: Path) -> Callable[[], Store]:
        return lambda: get_backend(store_path)


class TestExampleStore(StoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: DirectoryStore(tmp_path / "runs")


def test_the_capabilities_of_the_built_in_stores_are_declared() -> None:
    from stet.backends import CsvBackend, SqliteBackend

    assert CsvBackend.capabilities.shared_claims
    assert CsvBackend.capabilities.durable_failures
    assert CsvBackend.capabilities.remove_by_match
    assert not CsvBackend.capabilities.bulk_append
    assert SqliteBackend.capabilities.bulk_append
    assert not DirectoryStore.capabilities.shared_claims


def test_a_subclass_of_base_backend_written_for_the_reference_runs_under_once(
    tmp_path: Path,
) -> None:
    """Code written for the API reference (five methods on BaseBackend(path)) works as a
    store object, and a record of another function does not count as this one's."""
    from stet.backends._base import BaseBackend

    class ListBackend(BaseBackend):
        rows: ClassVar[list[dict[str, str]]] = []

        def has(self, key_dict: dict[str, object]) -> bool:
            want = {k: stet.canonical(v) for k, v in key_dict.items()}
            return any(all(r.get(k) == v for k, v in want.items()) for r in self.rows)

        def record(self, key_dict: dict[str, object]) -> None:
            self.rows.append({k: stet.canonical(v) for k, v in key_dict.items()})

        def load(self) -> list[dict[str, object]]:
            return list(self.rows)

        def remove(self, key_dict: dict[str, object]) -> None:
            want = {k: stet.canonical(v) for k, v in key_dict.items()}
            self.rows[:] = [r for r in self.rows
                            if not all(r.get(k) == v for k, v in want.items())]

        def clear(self) -> None:
            self.rows.clear()

        def exists(self) -> bool:
            return bool(self.rows)

    store = ListBackend(tmp_path / "list")
    calls: list[str] = []

    @stet.once(store=store, verbose=False)
    def f(seed: int) -> None:
        calls.append("f")

    @stet.once(store=store, verbose=False)
    def g(seed: int) -> None:
        calls.append("g")

    f(1), f(1), g(1)
    assert calls == ["f", "g"]
    assert len(stet.load(f)) == 1
    assert f.forget(1) == -1  # remove() said nothing: how many is unknown
    f(1)
    assert calls == ["f", "g", "f"]


def test_importing_stet_does_not_import_pytest_or_the_contract() -> None:
    code = ("import sys, stet, stet.backends; "
            "print('pytest' in sys.modules, 'stet.testing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]
