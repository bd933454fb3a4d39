"""What ``import stet`` loads: the decorator and what it needs, not the store backends.

Checked by module name in a fresh interpreter, not by timing (speed is the benchmarks'
business): a module on the list below coming back into ``import stet`` is what made it
slow before (see stet/__init__.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stet

SRC = str(Path(stet.__file__).resolve().parents[1])

#: Loaded when a store is opened, a function decorated or a sweep run; never by
#: ``import stet``. (``stet.backends`` stands for the package and all its modules.)
KEPT_OUT = [
    "sqlite3", "_sqlite3", "csv", "concurrent.futures", "dataclasses", "inspect",
    "tempfile", "subprocess", "hashlib", "platform", "pathlib", "datetime", "asyncio",
    "json", "threading", "uuid", "stet.backends", "stet._admin", "stet._claims", "stet._codec",
    "stet._csv_codec", "stet._execute", "stet._grid", "stet._index", "stet._interrupt",
    "stet._json_codec", "stet._load", "stet._locking", "stet._logfile", "stet._platform",
    "stet._progress", "stet._ray", "stet._run", "stet._saved", "stet._sidecar",
    "stet._status", "stet._submitit", "stet._summary", "stet._sweep",
    "numpy", "pandas", "pyarrow", "psycopg", "tqdm", "ray", "submitit", "omegaconf",
]


def _fresh(code: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _loaded_by(code: str, cwd: Path | None = None) -> list[str]:
    """The modules ``code`` loads in a fresh interpreter, beyond those it starts with (a
    site's .pth files may load some of the standard library first)."""
    names: list[str] = json.loads(_fresh(
        "import sys\nbefore = set(sys.modules)\n" + code + "\nnew = set(sys.modules) - before"
        "\nimport json\nprint(json.dumps(sorted(new)))", cwd))
    return names


def test_import_stet_loads_none_of_the_modules_kept_out() -> None:
    loaded = _loaded_by("import stet")
    assert "stet._decorator" in loaded
    found = [m for m in loaded
             if any(m == out or m.startswith(out + ".") for out in KEPT_OUT)]
    assert found == [], f"import stet loaded {found}: import them where they are used"


def test_decorating_a_function_brings_the_store_machinery_it_runs_on(tmp_path: Path) -> None:
    loaded = _loaded_by("import stet\n@stet.once(store='runs.csv')\ndef f(x):\n    pass\n",
                        tmp_path)
    assert "stet._run" in loaded
    assert "stet.backends" in loaded


#: What ``inspect`` loads (7-9 ms): a plain function's decoration reads its code object.
_INSPECT = ["inspect", "ast", "dis", "tokenize"]


@pytest.mark.parametrize("define", ["def f(a, b=1, /, *c, d, **e):\n    pass",
                                    "f = lambda a, b=1: None",
                                    "async def f(a, *, b=2):\n    pass"])
def test_a_plain_function_s_binder_is_made_without_inspect(define: str) -> None:
    loaded = _loaded_by(f"from stet._identity import Binder, is_coroutine_function\n"
                        f"{define}\nBinder(f, None)\nBinder(f, ['a'])\n"
                        f"is_coroutine_function(f)\n")
    assert [m for m in _INSPECT if m in loaded] == []


def test_a_call_of_a_simple_signature_is_bound_without_inspect() -> None:
    # (a signature with *args, **kwargs or keyword-only parameters is bound by inspect)
    loaded = _loaded_by("from stet._identity import Binder\n"
                        "def f(alpha, seed, n_iter=100):\n    pass\n"
                        "b = Binder(f, ['alpha', 'seed'])\n"
                        "b.sorted_view(*b.bind((0.5, 1), {}))\n"
                        "b.sorted_view(*b.bind((), {'alpha': [0.5], 'seed': 1}, {}))\n")
    assert [m for m in _INSPECT if m in loaded] == []


@pytest.mark.parametrize("define", ["def f(a, b=1):\n    pass",
                                    "async def f(a, *, b=2):\n    pass"])
def test_decorating_a_plain_function_imports_no_inspect(tmp_path: Path, define: str) -> None:
    loaded = _loaded_by(f"import stet\n{define}\nstet.once(store='runs.csv')(f)\n",
                        tmp_path)
    if "dataclasses" in loaded:  # (dataclasses imports inspect)
        pytest.skip("a module the store machinery imports loads dataclasses")
    assert [m for m in _INSPECT if m in loaded] == []


def test_every_public_name_is_importable_from_stet_and_listed_by_dir() -> None:
    lines = [f"from stet import {name}" for name in stet.__all__]
    out = _fresh("\n".join(lines) + "\nimport stet\n"
                 "print(sorted(set(stet.__all__) - set(dir(stet))))")
    assert out.strip() == "[]"
    for name in stet.__all__:
        assert getattr(stet, name) is not None


def test_names_resolved_on_demand_are_the_same_objects_as_in_their_modules() -> None:
    from stet import _admin, _grid, _load, _saved, _submitit, _summary, _sweep

    assert stet.sweep is _sweep.sweep
    assert stet.submit is _submitit.submit
    assert stet.load is _load.load
    assert (stet.status, stet.reset) == (_admin.status, _admin.reset)
    assert (stet.grid, stet.Grid) == (_grid.grid, _grid.Grid)
    assert stet.SweepSummary is _summary.SweepSummary
    assert stet.SweepInterrupted is _summary.SweepInterrupted
    assert stet.ResultNotSavedWarning is _saved.ResultNotSavedWarning


def test_the_backends_package_is_an_attribute_of_stet_without_importing_it() -> None:
    out = _fresh("import stet\nprint(stet.backends.get_backend.__name__, "
                 "stet.backends.BaseBackend.__name__)")
    assert out.split() == ["get_backend", "BaseBackend"]


def test_an_unknown_attribute_of_stet_is_an_attribute_error_that_names_it() -> None:
    with pytest.raises(AttributeError, match="no attribute 'sweeep'"):
        stet.sweeep  # noqa: B018  (module __getattr__: any name type-checks)


#: Each file store's own backend module, and the modules only other stores need.
_OWN = {"csv": "stet.backends._csv", "json": "stet.backends._json",
        "sqlite": "stet.backends._sqlite", "parquet": "stet.backends._parquet"}
_NOT_FOR = {"csv": ["sqlite3", "stet._json_codec"],
            "json": ["sqlite3", "csv", "stet._csv_codec"],
            "sqlite": ["stet._csv_codec", "stet._json_codec"],
            "parquet": ["sqlite3", "stet._csv_codec"]}


@pytest.mark.parametrize("fmt", sorted(_OWN))
def test_a_store_s_first_use_loads_its_own_backend_and_not_the_others(
        tmp_path: Path, fmt: str) -> None:
    code = (f"import stet\nstet.configure(verbose=False)\n"
            f"@stet.once(store='runs.{fmt}')\ndef f(x):\n    pass\nf(1)\n")
    _fresh(code, tmp_path)  # records the run
    loaded = _loaded_by(code, tmp_path)  # skips it
    unwanted = [m for other, own in _OWN.items() if other != fmt for m in [own]]
    assert _OWN[fmt] in loaded
    assert [m for m in unwanted + _NOT_FOR[fmt] if m in loaded] == []
    # nor what only a record's time, a saved result or a rewrite needs (sqlite3 itself
    # imports datetime; pyarrow, which reads a Parquet store without a snapshot, both)
    later = ["glob", "stet._saved"] + (["dataclasses", "datetime"] if fmt in ("csv", "json")
                                       else [])
    assert [m for m in later if m in loaded] == []


def test_every_backend_class_is_an_attribute_of_the_backends_package() -> None:
    from stet import backends
    from stet.backends._csv import CsvBackend
    from stet.backends._sqlite import SqliteBackend

    assert backends.CsvBackend is CsvBackend
    assert backends.BACKENDS[".db"] is SqliteBackend
    assert sorted(backends.BACKENDS) == [".csv", ".db", ".json", ".parquet", ".sqlite",
                                         ".sqlite3"]
