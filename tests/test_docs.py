"""Every code block in the documentation runs, so the docs cannot rot.

Each page of ``docs/`` runs in a fresh temporary directory, as one Python script in a
fresh process: its ``python`` blocks in order, in one namespace, each at the same line
number as in the page (a traceback points at the page's line). Besides ``python``:

* a ``python`` block with ``title="NAME.py"`` is a file the reader saves: it is written
  to ``NAME.py`` in the page's directory (not run), for later ``console`` blocks to run;
* a ``console`` block is a shell transcript: each ``$ command`` line runs (bash, in the
  page's directory, with this virtual environment's ``stet`` and ``python`` first on
  ``PATH``), and what it prints must match the lines that follow it;
* a ``text`` block with ``title="Output"`` right after a ``python`` block is what that
  block prints: it must match.

Output matches line by line, trailing spaces ignored; ``...`` within a line stands for
any text, and a line holding only ``...`` for any number of lines.

Blocks in any other language (``bash``, ``text``, ``toml``, ...) are shown, not run.
A ``python`` block that must not run is written ``{.python .no-run}`` and preceded by an
HTML comment ``<!-- no-run: why -->``; there are as few as possible.

A ``python`` block written as an interactive session (``>>>`` prompts) is a transcript,
read and not run.

A page that needs a PostgreSQL server says ``<!-- docs-test: postgres -->``: it runs
with ``STET_STORE`` set to a URL naming a fresh table on the test suite's server.

The README's blocks run the same way.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))
#: The README's blocks run too. Its PostgreSQL example reads the store URL from
#: ``STET_STORE``, so it always runs against the test server.
README = "README.md"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_ATTR = re.compile(r'(?P<key>[\w-]+)="(?P<value>[^"]*)"')
_NO_RUN_WHY = re.compile(r"^\s*<!--\s*no-run:\s*\S.*-->\s*$")
_MARK = "@@stet-docs-block {}@@"

#: Languages that are shown and never run.
SHOWN_ONLY = {"bash", "sh", "text", "toml", "yaml", "ini", "json", "csv", "sql", "cfg",
              "diff", "pycon", "ipython", "make", "dockerfile", "slurm"}


@dataclass
class Block:
    number: int
    lang: str
    classes: list[str]
    attrs: dict[str, str]
    fence_line: int  # 0-based index of the opening fence
    lines: list[str]  # content, dedented to the fence
    end_line: int  # 0-based index of the closing fence
    expected: str | None = None  # for python blocks: the following Output block

    @property
    def no_run(self) -> bool:
        return "no-run" in self.classes

    @property
    def saved_as(self) -> str | None:
        title = self.attrs.get("title", "")
        return title if self.lang == "python" and title.endswith(".py") else None

    @property
    def is_output(self) -> bool:
        return self.lang == "text" and self.attrs.get("title") == "Output"

    @property
    def transcript(self) -> bool:
        """A Python session shown with its ``>>>`` prompts: read, not run as a script."""
        first = next((line for line in self.lines if line.strip()), "")
        return self.lang == "python" and first.startswith(">>>")

    @property
    def runs(self) -> bool:
        return self.lang in ("python", "console") and not self.no_run and not self.transcript


@dataclass
class Page:
    path: str
    text: list[str]
    blocks: list[Block] = field(default_factory=list)

    @property
    def directives(self) -> set[str]:
        return set(re.findall(r"<!--\s*docs-test:\s*([\w-]+)\s*-->", "\n".join(self.text)))


def _info(info: str) -> tuple[str, list[str], dict[str, str]]:
    info = info.strip()
    attrs = {m["key"]: m["value"] for m in _ATTR.finditer(info)}
    if info.startswith("{"):
        classes = re.findall(r"\.([\w-]+)", _ATTR.sub("", info))
        return (classes[0] if classes else ""), classes[1:], attrs
    words = _ATTR.sub("", info).split()
    return (words[0] if words else ""), words[1:], attrs


def parse(path: str) -> Page:
    """The fenced blocks of a Markdown page, in order."""
    text = (ROOT / path).read_text(encoding="utf-8").splitlines()
    page = Page(path, text)
    i = 0
    while i < len(text):
        m = _FENCE.match(text[i])
        if not m:
            i += 1
            continue
        indent, fence = len(m["indent"]), m["fence"]
        lang, classes, attrs = _info(m["info"])
        start, j = i, i + 1
        closing = re.compile(rf"^ {{0,{indent + 3}}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        while j < len(text) and not closing.match(text[j]):
            j += 1
        if j == len(text):
            raise AssertionError(f"{path}:{start + 1}: unclosed code fence")
        body = [line[indent:] if line[:indent].strip() == "" else line
                for line in text[start + 1 : j]]
        page.blocks.append(Block(len(page.blocks), lang.lower(), classes, attrs, start,
                                 body, j))
        i = j + 1
    previous: Block | None = None
    for b in page.blocks:
        if b.is_output:
            if previous is None or previous.lang != "python" or not previous.runs \
                    or previous.saved_as:
                raise AssertionError(f"{path}:{b.fence_line + 1}: an Output block must "
                                     f"follow a python block that runs")
            previous.expected = "\n".join(b.lines)
        previous = b
    return page


# ------------------------------------------------------------------------ the runner
#: Written beside each page's script; the script imports it on the page's first line.
HELPER = '''
import json, os, subprocess, sys

def block(n):
    print("\\n" + MARK.format(n), flush=True)

def save(n, name, text):
    with open(name, "w", encoding="utf-8") as fh:
        fh.write(text)

def console(n, commands):
    block(n)
    for cmd in commands:
        print("$ " + cmd, flush=True)
        res = subprocess.run(["bash", "-c", cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
'''


def script_for(page: Page, run_dir: Path) -> str:
    """The page as one Python script whose line numbers are the page's."""
    lines = [""] * (len(page.text) + 1)
    if any(b.fence_line == 0 for b in page.blocks):
        raise AssertionError(f"{page.path}: a page starts with a heading, not a code block")
    (run_dir / "_stet_docs.py").write_text(f"MARK = {_MARK!r}\n" + HELPER)
    lines[0] = "import _stet_docs as _stet_docs  # noqa"
    for b in page.blocks:
        if not b.runs:
            continue
        if b.saved_as:
            lines[b.fence_line] = (f"_stet_docs.save({b.number}, {b.saved_as!r}, "
                                   f"{json.dumps(chr(10).join(b.lines) + chr(10))})")
        elif b.lang == "python":
            lines[b.fence_line] = f"_stet_docs.block({b.number})"
            for k, line in enumerate(b.lines):
                lines[b.fence_line + 1 + k] = line
        else:
            commands = [line[2:] for line in b.lines if line.startswith("$ ")]
            if not commands:
                raise AssertionError(f"{page.path}:{b.fence_line + 1}: a console block "
                                     f"without a `$ command` line")
            lines[b.fence_line] = f"_stet_docs.console({b.number}, {json.dumps(commands)})"
    return "\n".join(lines) + "\n"


def _line_matches(expected: str, actual: str) -> bool:
    if "..." not in expected:
        return expected == actual
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def matches(expected: list[str], actual: list[str]) -> bool:
    """``actual`` matches ``expected``, where ``...`` alone matches any lines."""
    memo: dict[tuple[int, int], bool] = {}

    def go(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[i, j]
        if i == len(expected):
            ok = j == len(actual)
        elif expected[i].strip() == "...":
            ok = go(i + 1, j) or (j < len(actual) and go(i, j + 1))
        else:
            ok = j < len(actual) and _line_matches(expected[i], actual[j]) and go(i + 1, j + 1)
        memo[i, j] = ok
        return ok

    return go(0, 0)


def _clean(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _outputs(stdout: str) -> dict[int, str]:
    parts = re.split(r"^@@stet-docs-block (\d+)@@$", stdout, flags=re.MULTILINE)
    return {int(parts[k]): parts[k + 1] for k in range(1, len(parts) - 1, 2)}


def run_page(page: Page, tmp_path: Path, env_extra: dict[str, str] | None = None,
             timeout: float = 120) -> None:
    run_dir, work = tmp_path / "run", tmp_path / "work"
    run_dir.mkdir()
    work.mkdir()
    script = run_dir / (Path(page.path).name + ".py")
    script.write_text(script_for(page, run_dir), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STET_")}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="100", NO_COLOR="1", TERM="dumb", LC_ALL="C.UTF-8",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               MPLBACKEND="Agg")
    env.update(env_extra or {})
    res = subprocess.run([sys.executable, str(script)], cwd=work, env=env, timeout=timeout,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    where = str(ROOT / page.path)
    stderr = res.stderr.replace(str(script), where)
    if res.returncode != 0:
        pytest.fail(f"{page.path} failed (exit {res.returncode}):\n{stderr[-6000:]}\n"
                    f"--- stdout ---\n{res.stdout[-3000:]}", pytrace=False)
    outputs = _outputs(res.stdout)
    for b in page.blocks:
        if not b.runs or b.saved_as:
            continue
        expected = "\n".join(b.lines) if b.lang == "console" else b.expected
        if expected is None:
            continue
        actual = outputs.get(b.number, "")
        if not matches(_clean(expected), _clean(actual)):
            pytest.fail(f"{page.path}:{b.fence_line + 1}: the output differs from the "
                        f"page.\n--- the page shows ---\n{expected}\n--- it printed ---\n"
                        f"{actual.strip()}\n--- stderr ---\n{stderr[-3000:]}", pytrace=False)


# ---------------------------------------------------------------------------- tests
RUNNABLE = [p for p in PAGES if any(b.runs for b in parse(p).blocks)]


@pytest.mark.parametrize("path", [*RUNNABLE, README])
def test_page_runs(path: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    page = parse(path)
    env: dict[str, str] = {}
    if "postgres" in page.directives or path == README:
        from conftest import pg_store

        env["STET_STORE"] = str(pg_store(request.getfixturevalue("pg_server"), "docs"))
    run_page(page, tmp_path, env)


def test_there_are_pages() -> None:
    assert len(RUNNABLE) >= 10, PAGES


@pytest.mark.parametrize("path", [*PAGES, README])
def test_blocks_are_known_and_justified(path: str) -> None:
    """A typo in a fence (``pyhton``) would silently stop a block from running."""
    page = parse(path)
    for b in page.blocks:
        where = f"{path}:{b.fence_line + 1}"
        assert b.lang in {"python", "console"} | SHOWN_ONLY, \
            f"{where}: unknown code block language {b.lang!r}"
        if b.no_run:
            before = [line for line in page.text[: b.fence_line] if line.strip()]
            assert before and _NO_RUN_WHY.match(before[-1]), \
                f"{where}: a no-run block needs <!-- no-run: why --> right before it"
        if b.lang == "console":
            assert b.lines and b.lines[0].startswith("$ "), \
                f"{where}: a console block starts with a `$ command` line"


def test_nav_lists_every_page() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for path in PAGES:
        rel = Path(path).relative_to("docs").as_posix()
        assert rel in nav, f"{rel} is not in mkdocs.yml's nav"


# Documented where they are defined, for a reason: StoreStatus is not exported by stet (a
# status() returns one), and stet.backends imports PostgresBackend only when asked for it.
PRIVATE_PATHS_DOCUMENTED = {"stet._status.StoreStatus"}


def test_the_reference_documents_public_names_not_private_modules() -> None:
    text = "\n".join((DOCS / "reference" / name).read_text(encoding="utf-8")
                     for name in ("api.md", "backends.md"))
    documented = set(re.findall(r"^::: (\S+)$", text, re.MULTILINE))
    private = {d for d in documented if any(p.startswith("_") for p in d.split("."))}
    assert private == PRIVATE_PATHS_DOCUMENTED
    for name in ("stet.once", "stet.status", "stet.reset", "stet.sweep", "stet.load",
                 "stet.grid", "stet.backends.BaseBackend", "stet.backends.CsvBackend",
                 "stet.backends.JsonBackend", "stet.backends.SqliteBackend",
                 "stet.backends.ParquetBackend"):
        assert name in documented, name


def test_the_paths_the_original_reference_names_still_import() -> None:
    """Code written for the original API reference runs unchanged."""
    import importlib

    import stet
    import stet.backends

    for path, obj in (("stet._decorator.once", stet.once), ("stet._utils.status", stet.status),
                      ("stet._utils.reset", stet.reset),
                      ("stet.backends._base.BaseBackend", stet.backends.BaseBackend)):
        module, _, name = path.rpartition(".")
        assert getattr(importlib.import_module(module), name) is obj, path


def test_output_matching() -> None:
    assert matches(["a", "...", "z"], ["a", "b", "c", "z"])
    assert matches(["a", "...", "z"], ["a", "z"])
    assert matches(["x = ...s"], ["x = 0.5 s"])
    assert not matches(["a", "z"], ["a", "b", "z"])
    assert not matches(["a"], ["a", "b"])
