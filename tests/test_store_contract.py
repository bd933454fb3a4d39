"""``stet.testing``'s store contract, run against every built-in store (PostgreSQL on the
real server of ``pgserver.py``) and against a store made outside stet
(``example_store.py``): the proof that a user can add a store."""

from __future__ import annotations

import ast
import errno
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

import stet
from example_store import DirectoryStore
from stet.backends import Store, get_backend
from stet.errors import StoreError
from stet.testing import StoreContract


class TestBuiltInStores(StoreContract):
    """Every format of ``conftest.FORMATS`` (the ``store_path`` fixture)."""

    @pytest.fixture
    def open_store(self, store_path: Path) -> Callable[[], Store]:
        return lambda: get_backend(store_path)

    @pytest.fixture
    def store_spec(self, store_path: Path) -> str:
        return str(store_path)  # (a built-in store's handle holds locks: it does not pickle)


class TestExampleStore(StoreContract):
    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Callable[[], Store]:
        return lambda: DirectoryStore(tmp_path / "runs")


class _FailingStore(DirectoryStore):
    """A store whose reads or writes fail as a full or forbidden disk makes them fail."""

    reads: OSError | None = None
    writes: OSError | None = None

    def _read(self) -> list[tuple[Path, dict[str, str]]]:
        if self.reads is not None:
            raise self.reads
        return super()._read()

    def append_record(self, record: dict[str, str]) -> None:
        if self.writes is not None:
            raise self.writes
        super().append_record(record)


def test_a_stores_os_errors_reach_the_user_as_store_errors_naming_it(
    tmp_path: Path,
) -> None:
    store = _FailingStore(tmp_path / "runs")
    calls: list[int] = []

    @stet.once(store=store, verbose=False)
    def f(seed: int) -> None:
        calls.append(seed)

    store.reads = PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(StoreError, match=r"reading directory store .*runs failed: "
                                         r"Permission denied; check the permissions"):
        f(1)
    assert calls == []  # before the function ran
    store.reads, store.writes = None, OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StoreError, match=r"recording a run in directory store .*runs "
                                         r"failed: .*the disk is full"):
        f(1)
    store.writes = None
    f(1)
    f(1)
    assert calls == [1, 1]  # the run whose record was lost runs again, once


def test_the_capabilities_of_the_built_in_stores_are_declared() -> None:
    from stet.backends import CsvBackend, PostgresBackend, SqliteBackend

    assert CsvBackend.capabilities.shared_claims
    assert CsvBackend.capabilities.durable_failures
    assert CsvBackend.capabilities.remove_by_match
    assert not CsvBackend.capabilities.bulk_append
    assert SqliteBackend.capabilities.bulk_append
    assert not SqliteBackend.capabilities.claim_catches_up
    # (PostgreSQL's claim catches up with the table: the look before it may lag)
    assert PostgresBackend.capabilities.claim_catches_up
    assert PostgresBackend.capabilities.bulk_append
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


# ------------------------------------------------------------- structural promises
SRC = Path(__file__).resolve().parents[1] / "src" / "stet"
#: What stet appends to a store's name for the files it keeps beside it.
SIDE_NAMES = (".lock", ".claims", ".failures.jsonl", ".stet-log", "-wal", "-shm",
              "-journal", ".stet-tmp-", ".stet-export-")


def _string_constants(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants of a module, docstrings left out."""
    docs = {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_side_file_names_are_spelled_in_the_sidecar_module_alone() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "_sidecar.py":
            continue
        for line, text in _string_constants(ast.parse(path.read_text("utf-8"))):
            hits = [n for n in SIDE_NAMES if re.search(re.escape(n) + "(?![A-Za-z_])", text)]
            if hits:
                found.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
    assert found == []


def test_callers_read_capabilities_instead_of_probing_stores() -> None:
    """No getattr() on a store in the modules that use one: they call the interface."""
    names = {n for n in dir(Store) if not n.startswith("__")} | {"path"}
    found = []
    for name in ("_decorator", "_run", "_sweep", "_cli", "_load", "_status", "_admin",
                 "_saved", "_hydra"):
        path = SRC / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value in names | {"display_store"}):
                found.append(f"{name}.py:{node.lineno}: {ast.unparse(node)}")
    assert found == []
