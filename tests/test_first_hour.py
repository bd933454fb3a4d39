"""Small things that cost a newcomer minutes (issue 14, item 6), each checked for real:
Ctrl-C through a real SIGINT (and a real terminal, a pty), real files, real commands."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

import stet
from stet._logfile import StoreWarning

SWEEP = textwrap.dedent("""
    import signal, sys, time
    import stet

    signal.signal(signal.SIGINT, signal.default_int_handler)  # (even if started ignoring it)

    @stet.once(store="runs.csv", verbose=False)
    def f(x):
        time.sleep(0.2)

    CATCH
""")


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP.replace("CATCH", textwrap.dedent(body)))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "80"}


def _wait_for_runs(store: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists() and len(stet.load(store)) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{store}: fewer than {n} runs after {timeout} s")


def _interrupted(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = _script(tmp_path, body)
    p = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_runs(tmp_path / "runs.csv", 2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def test_an_uncaught_sweep_interrupted_exits_130_with_one_summary_and_no_traceback(
    tmp_path: Path,
) -> None:
    r = _interrupted(tmp_path, "stet.sweep(f, stet.grid(x=range(100)), progress='lines')")
    assert r.returncode == 130, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("settings:") == 1, r.stderr  # the summary, once
    assert "(interrupted; run the sweep again to resume)" in r.stderr


def test_a_script_catching_sweep_interrupted_or_keyboard_interrupt_still_catches_it(
    tmp_path: Path,
) -> None:
    r = _interrupted(tmp_path, """
        try:
            stet.sweep(f, stet.grid(x=range(100)), progress=False)
        except stet.SweepInterrupted as e:
            assert isinstance(e, KeyboardInterrupt)
            print("caught", e.summary.interrupted, e.summary.total)
    """)
    assert (r.returncode, r.stdout.split()) == (0, ["caught", "True", "100"]), r.stderr


def test_after_ctrl_c_in_a_terminal_the_bar_is_not_drawn_again(tmp_path: Path) -> None:
    """The terminal echoes ^C after the bar; drawing the bar again after it showed two."""
    script = _script(tmp_path, "stet.sweep(f, stet.grid(x=range(100)), progress='bar')")
    pid, fd = pty.fork()
    if pid == 0:  # the child: a sweep in a terminal of 80 columns
        os.chdir(tmp_path)
        os.execve(sys.executable, [sys.executable, str(script)], _env())
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    out, sent, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        if not sent and b"2/100" in out:
            os.write(fd, b"\x03")  # Ctrl-C typed at the terminal
            sent = True
        if select.select([fd], [], [], 0.1)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # (the child has ended)
                break
            if not data:
                break
            out += data
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = out.decode(errors="replace")
    assert sent, text
    after = text[text.index("^C"):]
    assert "|" not in after and "run/s" not in after, repr(after)  # no bar after ^C
    assert "interrupted; run the sweep again" in after
    assert os.waitstatus_to_exitcode(status) == 130


def test_a_store_warning_names_the_users_line_not_stets(tmp_path: Path) -> None:
    import warnings

    store = tmp_path / "runs.csv"

    @stet.once(store=store, verbose=False)
    def f(x: int) -> None:
        pass

    f(1)
    with store.open("ab") as fh:
        fh.write(b"2")  # what a SIGKILL mid-append leaves: part of a record
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f(3)  # the next append cuts it off, with a StoreWarning
    found = [w for w in caught if issubclass(w.category, StoreWarning)]
    assert found, [str(w.message) for w in caught]
    assert {w.filename for w in found} == {__file__}


def test_a_result_not_saved_warning_names_the_users_line(tmp_path: Path) -> None:
    import warnings

    @stet.once(store=tmp_path / "runs.csv", save_result=True, verbose=False)
    def f(x: int) -> object:
        return object()  # not JSON: recorded as done, its result not saved

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f(1)
    found = [w for w in caught if issubclass(w.category, stet.ResultNotSavedWarning)]
    assert found, [str(w.message) for w in caught]
    assert {w.filename for w in found} == {__file__}


def test_make_clean_removes_the_demo_store_and_every_file_beside_it(tmp_path: Path) -> None:
    import shutil

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "Makefile", tmp_path / "Makefile")
    script = tmp_path / "demo.py"
    script.write_text(textwrap.dedent("""
        import stet

        @stet.once(verbose=False)  # the default store, _stet_store.csv
        def f(x):
            if x == 1:
                raise ValueError(x)

        stet.sweep(f, stet.grid(x=range(3)), progress=False)
    """))
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), check=True,
                   capture_output=True, timeout=60)
    made = {p.name for p in tmp_path.iterdir()} - {"Makefile", "demo.py"}
    assert {"_stet_store.csv", "_stet_store.csv.lock", "_stet_store.csv.claims",
            "_stet_store.csv.failures.jsonl"} <= made
    subprocess.run(["make", "clean", f"VENV={tmp_path / 'no-venv'}"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "demo.py"]


def test_stet_ls_all_shows_times_to_the_second_and_durations_for_reading(
    tmp_path: Path,
) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=store, verbose=False)
    def f(x: int) -> None:
        time.sleep(x / 10)

    stet.sweep(f, stet.grid(x=[0, 2]), progress=False)
    r = subprocess.run([sys.executable, "-m", "stet", "ls", str(store), "--all"],
                       env=_env(), capture_output=True, text=True, timeout=60, check=True)
    head, _, *rows = r.stdout.splitlines()
    assert "started (UTC)" in head and "duration" in head, head
    assert "e-0" not in r.stdout and "+00:00" not in r.stdout, r.stdout
    assert re.search(r" \d+ us ", rows[0]), rows[0]  # an instant run: microseconds
    assert re.search(r" 2\d\d ms ", rows[1]), rows[1]  # 0.2 s: milliseconds
    for row in rows[:2]:
        assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", row)) == 2, row


def test_a_quick_benchmark_does_not_claim_the_million_run_open_budget_was_met() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # (as test_storm.py: its modules import so)
    spec = importlib.util.spec_from_file_location("bench_run", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = bench  # (its dataclasses look their module up)
    spec.loader.exec_module(bench)
    quick = bench.budgets_line([], bench.QUICK["sizes"])
    assert "open of 1,000,000" not in quick.split(":")[0]
    assert "was not measured" in quick and "20,000 runs" in quick
    full = bench.budgets_line([], bench.FULL["sizes"])
    assert "open of 1,000,000 runs < 1 s): all met in this run." in full
    assert "not measured" not in full


@pytest.mark.slow
def test_the_readmes_groupby_table_is_what_examples_grid_sweep_prints(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(readme) if line.startswith(">>> df.groupby("))
    end = next(i for i in range(start + 1, len(readme)) if readme[i].startswith(">>>"))
    documented = [line.rstrip() for line in readme[start + 1:end]]
    r = subprocess.run([sys.executable, str(root / "examples" / "grid_sweep.py")],
                       cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    printed = [line.rstrip() for line in r.stdout.splitlines()]
    at = printed.index(documented[0])
    assert printed[at:at + len(documented)] == documented


def test_no_page_prints_a_sweeps_summary_which_the_sweep_printed_already() -> None:
    """A sweep prints its summary unless run with ``progress=False``: only then may a
    page print it (the line just before says so)."""
    root = Path(__file__).resolve().parents[1]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md")),
             *sorted((root / "examples").glob("*.py"))]
    repeats = []
    for page in pages:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines, 1):
            if (re.search(r"print\((summary|str\(summary\))\)", line)
                    and "progress=False" not in lines[n - 2]):
                repeats.append(f"{page.relative_to(root)}:{n}")
    assert not repeats, repeats


def test_in_a_notebook_without_ipywidgets_progress_is_plain_lines_without_a_warning(
    tmp_path: Path,
) -> None:
    """stet knows a notebook by its stderr, an ``ipykernel.iostream`` stream. No kernel
    runs here (ipykernel is no dependency): stderr is a stream of a class from a module of
    that name, and ipywidgets is not installed, as in a fresh notebook environment."""
    import importlib.util

    assert importlib.util.find_spec("ipywidgets") is None
    script = tmp_path / "nb.py"
    script.write_text(textwrap.dedent("""
        import io, sys, types, warnings
        import stet

        mod = types.ModuleType("ipykernel.iostream")
        exec("import io\\nclass OutStream(io.StringIO): pass", mod.__dict__)
        sys.stderr = out = mod.OutStream()

        @stet.once(store="runs.csv", verbose=False)
        def f(x):
            pass

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stet.sweep(f, stet.grid(x=range(3)))
        sys.__stdout__.write(out.getvalue())
        sys.__stdout__.write("".join(f"WARNING {w.message}\\n" for w in caught))
    """))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "WARNING" not in r.stdout, r.stdout
    assert r.stdout.splitlines()[0] == "[stet] f: 3 settings, 0 done before, 3 to run"
    assert "\r" not in r.stdout and "run/s]" not in r.stdout  # no text bar
