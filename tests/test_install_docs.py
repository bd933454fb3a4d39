"""The install commands the README and the docs give work today.

The package index holds stet 0.0.1 and 0.0.2 only, so ``pip install stet`` (or
``'stet[extra]'``) gives a stet without ``sweep``, ``grid``, ``load`` or the ``stet``
command. Every ``pip install`` the pages show is one of: a checkout (``.``, ``-e .``,
``'.[extras]'``), the wheel built from it, a third-party package named here, or the index's
stet on a line that says it is 0.0.2. The home page's commands run for real in a throwaway
virtual environment.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: Packages other than stet the pages may tell the reader to install.
THIRD_PARTY = {"hydra-joblib-launcher", "hydra-submitit-launcher", "ipywidgets"}
_PIP = re.compile(r"pip (install|wheel)((?:[ \t]+(?:[^\s`#]+))+)")


def _commands() -> list[tuple[str, int, str, list[str]]]:
    """(page, line number, the line and the next, arguments) of every ``pip install``."""
    found = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            joined = line if not line.rstrip().endswith("`pip install") else (
                line + " " + lines[n].lstrip())  # (a code span broken over two lines)
            for m in _PIP.finditer(joined):
                if m.group(1) == "install":
                    args = [a for a in shlex.split(m.group(2).split("`")[0], comments=True)
                            if not a.startswith("-")]
                    context = line + " " + (lines[n] if n < len(lines) else "")
                    found.append((page.relative_to(ROOT).as_posix(), n, context, args))
    return found


def _extras() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(meta["project"]["optional-dependencies"])


def test_the_pages_show_install_commands() -> None:
    pages = {page for page, *_ in _commands()}
    assert {"README.md", "docs/index.md", "docs/tutorial.md"} <= pages


def test_no_page_installs_stet_from_the_index_without_saying_it_is_0_0_2() -> None:
    extras = _extras()
    bad = []
    for page, n, line, args in _commands():
        for arg in args:
            m = re.fullmatch(r"(stet|\.|dist/stet-[\w.]+-py3-none-any\.whl)(?:\[([\w,]+)\])?",
                             arg)
            if m is None:
                if arg not in THIRD_PARTY:
                    bad.append(f"{page}:{n}: an install of {arg!r} no test checks")
                continue
            unknown = set((m.group(2) or "").split(",")) - extras - {""}
            if unknown:
                bad.append(f"{page}:{n}: no extra {sorted(unknown)} in pyproject.toml")
            if m.group(1) == "stet" and "0.0.2" not in line:
                bad.append(f"{page}:{n}: {arg!r} from the index is stet 0.0.2, unsaid: {line}")
    assert not bad, "\n".join(bad)


def _home_page_commands() -> list[str]:
    text = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    section = text[text.index("## Install"):text.index("\n## ", text.index("## Install") + 3)]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [c.split("#")[0].strip() for b in blocks for c in b.splitlines()]
    return [c for c in commands if c.startswith("pip ")]


@pytest.mark.slow
def test_the_home_page_install_commands_install_this_stet_in_a_fresh_venv(
    tmp_path: Path,
) -> None:
    """Each of the home page's commands, in a copy of the checkout and a new venv
    (``--no-deps``: the extras' packages are not what is tested, and the network is slow)."""
    commands = _home_page_commands()
    assert any(c.startswith("pip wheel") for c in commands), commands
    checkout = tmp_path / "stet"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(
        ".venv", ".git", "site", "build", "dist", "*.egg-info", "__pycache__", ".*cache"))
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next(c for c in commands if c.startswith("pip wheel"))
    subprocess.run([python, "-m", *shlex.split(wheel)], cwd=checkout, check=True, timeout=300,
                   capture_output=True)
    for command in (c for c in commands if c.startswith("pip install")):
        args = shlex.split(command)[1:]
        subprocess.run([python, "-m", "pip", *args, "--no-deps", "--force-reinstall", "-q"],
                       cwd=checkout, check=True, timeout=300, capture_output=True)
        probe = subprocess.run(
            [python, "-c",
             "import stet; print(stet.__version__, callable(stet.sweep), callable(stet.grid))"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert probe.stdout.split() == ["0.1.0", "True", "True"], (command, probe.stderr)
        cli = subprocess.run([str(venv / "bin" / "stet"), "--version"], capture_output=True,
                             text=True, timeout=60)
        assert cli.returncode == 0 and "0.1.0" in cli.stdout + cli.stderr, command
        subprocess.run([python, "-m", "pip", "uninstall", "-y", "-q", "stet"], check=True,
                       timeout=120, capture_output=True)
