"""The package's structure: one vocabulary module, no import cycle, no oversized file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import stet._schema as schema

SRC = Path(schema.__file__).resolve().parent
MODULES = sorted(SRC.rglob("*.py"))
# A stet field name begins a word: "_stet_func", not the attribute "__stet_run__".
FIELD_NAME = re.compile(r"(?<!\w)_stet_")
# The PostgreSQL backend is being rewritten apart; it switches to stet._schema's HOST at
# the merge, and this entry goes then.
NOT_YET_SWITCHED = {"backends/_pgclaims.py: _HOST"}


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring constants of the module, its classes and functions."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                out.add(id(body[0].value))
    return out


def test_stet_field_names_are_spelled_only_in_the_schema_module() -> None:
    found = []
    for path in MODULES:
        if path.name == "_schema.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in docs and FIELD_NAME.search(node.value)):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not found, "spell these with stet._schema's names:\n" + "\n".join(found)


def test_the_schema_module_spells_every_field_it_exports() -> None:
    fields = {n: getattr(schema, n) for n in schema.__all__ if n.endswith("_FIELD")}
    assert fields and all(v.startswith(schema.RESERVED_PREFIX) for v in fields.values())
    assert len(set(fields.values())) == len(fields), "two names for one field"


def test_no_module_defines_the_schema_names_again() -> None:
    names = set(schema.__all__) | {"_" + n for n in schema.__all__}
    found = []
    for path in MODULES:
        if path.name == "_schema.py":
            continue
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                if (isinstance(t, ast.Name) and t.id in names
                        and f"{path.relative_to(SRC)}: {t.id}" not in NOT_YET_SWITCHED):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {t.id}")
            if isinstance(node, ast.FunctionDef) and node.name in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: def {node.name}")
    assert not found, "defined in stet._schema; import it from there:\n" + "\n".join(found)


def test_a_run_key_ignores_bookkeeping_and_field_order() -> None:
    a = {"b": "2", "a": "1", schema.FUNC_FIELD: "f", schema.TIMESTAMP_FIELD: "t1"}
    b = {schema.TIMESTAMP_FIELD: "t2", "a": "1", schema.FUNC_FIELD: "f", "b": "2"}
    assert schema.run_key(a) == schema.run_key(b) == ("f", (("a", "1"), ("b", "2")))
    assert schema.run_key({"a": "1"}) == ("", (("a", "1"),))
    assert schema.run_key({"a": "1", schema.FUNC_FIELD: "g"}) != schema.run_key(a)
    assert schema.key_names(a) == ("a", "b")
    assert schema.format_duration(3725.4) == "1:02:05"
