"""Marks the tests of stet 0.0.2's suite that check what this stet deliberately does
differently (the copied test files stay as 0.0.2 published them)."""

from __future__ import annotations

import pytest

KEEPS_THE_FILE = (
    "a full reset/clear keeps the store file, empty, where 0.0.2 deleted it: the file "
    "keeps its mode, group, ACL and extended attributes, so a store shared by a group "
    "stays writable by its other workers (docs/reference/store-files.md)"
)

#: test id -> why this stet differs on purpose (strict: passing would be reported)
DIFFERENT = {
    "test_backends.py::test_parquet_backend": KEEPS_THE_FILE,
    "test_utils.py::test_reset_default_store": KEEPS_THE_FILE,
    "test_utils.py::test_reset_all": KEEPS_THE_FILE,
    "test_utils.py::test_reset_all_interactive_yes": KEEPS_THE_FILE,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        name = f"{item.path.name}::{item.name}"
        if name in DIFFERENT:
            item.add_marker(pytest.mark.xfail(reason=DIFFERENT[name], strict=True))
