"""Shared fixtures: one fresh store of every kind, for the conformance suite."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import stet
from stet.backends import BaseBackend, get_backend

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stet-0.0.2"
LOCAL_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stet-0.0.2"

#: Every store format; the conformance suite runs each behaviour against each.
FORMATS = ["csv", "json", "sqlite", "parquet"]


@pytest.fixture(autouse=True)
def _quiet_defaults() -> Iterator[None]:
    """Each test starts from stet's documented defaults."""
    saved = (stet.settings.verbose, stet.settings.fsync)
    stet.configure(verbose=True, fsync=False)
    yield
    stet.settings.verbose, stet.settings.fsync = saved


@pytest.fixture(params=FORMATS)
def fmt(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_path(tmp_path: Path, fmt: str) -> Path:
    """A path for a new (not yet existing) store of each format."""
    return tmp_path / f"store.{fmt}"


@pytest.fixture
def backend(store_path: Path) -> Iterator[BaseBackend]:
    b = get_backend(store_path)
    yield b
    b.close()


def fixture_store(fmt: str, dest: Path) -> Path:
    """Copy the stet 0.0.2 fixture store of ``fmt`` to ``dest`` (writable)."""
    src = LOCAL_FIXTURES / f"v002_store.{fmt}"
    target = dest / f"v002_store.{fmt}"
    shutil.copyfile(src, target)
    return target
