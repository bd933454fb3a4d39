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
                if isinstance(t, ast.Name) and t.id in names:
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


# ---------------------------------------------------------------------------- imports
def _module_name(path: Path) -> str:
    parts = ["stet", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {_module_name(p): p for p in MODULES}


def _imports(path: Path) -> set[str]:
    """The stet modules ``path`` imports, wherever the import is (module level, inside a
    function, under ``TYPE_CHECKING``): ``from . import x`` counts as importing ``x``
    when it is a module, else the package."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in NAMES)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("stet"):
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & NAMES.keys()
            out.update(subs)
            if subs != {f"{target}.{a.name}" for a in node.names}:
                out.add(target)  # names from the module itself
    out.discard(name)
    return out


GRAPH = {name: _imports(path) for name, path in NAMES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected part of ``graph`` that has one."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_walk_finds_imports_of_every_kind() -> None:
    assert "stet._schema" in GRAPH["stet._run"]  # module level
    assert "stet._run" in GRAPH["stet._decorator"]
    assert "stet._summary" in GRAPH["stet._progress"]  # under TYPE_CHECKING
    assert "stet.backends.postgres.store" in GRAPH["stet.backends"]  # inside a function
    assert "stet.backends.postgres.source" in GRAPH["stet.backends.postgres.store"]  # subpackage
    assert "stet.backends" in GRAPH["stet._load"]  # from . import backends
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_source_file_is_over_800_lines() -> None:
    sizes = {p.relative_to(SRC): len(p.read_text(encoding="utf-8").splitlines())
             for p in MODULES}
    assert len(sizes) > 30
    over = {str(p): n for p, n in sizes.items() if n > 800}
    assert not over, f"split these by what they hold: {over}"
