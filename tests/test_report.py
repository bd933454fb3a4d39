"""``stet report``: the page is opened in a real headless Chromium and what it draws is
checked (cells, failures, points, bars), along with every request it makes (none but
itself). Stores are made by real decorated runs, in every format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import stet
from browser import Page
from stet._report import MAX_POINTS, MAX_TRACEBACK, collect
from stet._report_html import render
from stet.backends import get_backend

PY = sys.executable
LRS = [0.1, 0.01, 0.001]
SEEDS = [0, 1, 2, 3]


def stet_cmd(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "stet", *map(str, args)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, cwd=cwd, timeout=120)


def sweep(store: str | Path) -> None:
    """12 settings: 9 done with results, 3 failed (seed=3)."""

    @stet.once(store=str(store), save_result=True, verbose=False, name="train")
    def train(lr: float, seed: int) -> dict[str, Any]:
        if seed == 3:
            raise ValueError(f"diverged at lr={lr}")
        return {"loss": lr * seed + 1, "acc": {"top1": seed / 10}}

    s = stet.sweep(train, stet.grid(lr=LRS, seed=SEEDS), progress=False)
    assert (s.ran, s.failed) == (9, 3)


def report(store: str | Path, out: Path) -> None:
    r = stet_cmd("report", store, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "Wrote" in r.stdout and out.exists()


_DRAWN = """JSON.stringify({
  summary: document.getElementById('summary').textContent,
  cells: [...document.querySelectorAll('svg.heatmap g.cell')].map(g => ({
    field: g.dataset.field, value: g.dataset.value,
    state: [...g.classList].find(c => c.startsWith('state-')),
    title: g.querySelector('title').textContent})),
  grid: document.getElementById('grid') && {
    x: document.getElementById('grid').dataset.x, y: document.getElementById('grid').dataset.y,
    cells: [...document.querySelectorAll('#grid g.cell')].map(g => ({
      x: g.dataset.x, y: g.dataset.y,
      state: [...g.classList].find(c => c.startsWith('state-')),
      title: g.querySelector('title').textContent}))},
  failures: [...document.querySelectorAll('details.failure')].map(d => ({
    type: d.querySelector('.etype').textContent,
    message: d.querySelector('.message').textContent,
    traceback: d.querySelector('pre.traceback') ? d.querySelector('pre.traceback').textContent
                                                  : null})),
  plots: [...document.querySelectorAll('svg.scatter')].map(s => {
    const w = s.width.baseVal.value, h = s.height.baseVal.value;
    const pts = [...s.querySelectorAll('circle.pt')].map(c => {
      const b = c.getBBox(); return [b.x + b.width / 2, b.y + b.height / 2]; });
    return {result: s.dataset.result, field: s.dataset.field, points: pts, w: w, h: h,
            xlabel: s.querySelector('.xlabel').textContent,
            ylabel: s.querySelector('.ylabel').textContent,
            title: s.querySelector('title').textContent};
  }),
  bars: [...document.querySelectorAll('#duration-histogram rect.bar')].map(
    r => [r.getBBox().height, r.querySelector('title').textContent]),
  csp: document.querySelector('meta[http-equiv="Content-Security-Policy"]').content,
  scripts: document.scripts.length,
})"""


def drawn(page: Page) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(page.evaluate(_DRAWN))
    return out


def _runs(title: str) -> int:
    return int(re.search(r": ([0-9,]+) runs?$", title).group(1).replace(",", ""))  # type: ignore[union-attr]


def test_the_page_draws_each_value_s_state_the_failures_and_each_result(
        store_path: Path, tmp_path: Path) -> None:
    sweep(store_path)
    out = tmp_path / "sweep.html"
    report(store_path, out)
    with Page(out.as_uri()) as page:
        got = drawn(page)
        assert page.requests == [out.as_uri()] and page.failed == []
    assert got["summary"] == "12 settings: 9 done, 3 failed, 0 running, 0 pending."
    cells = {(c["field"], c["value"]): c for c in got["cells"]}
    assert set(cells) == {("lr", str(v)) for v in LRS} | {("seed", str(s)) for s in SEEDS}
    for lr in LRS:  # each learning rate: 3 seeds done, seed 3 failed
        c = cells["lr", str(lr)]
        assert (c["state"], c["title"]) == ("state-failed",
                                            f"lr = {lr}: 3 done, 1 failed (of 4)")
    for seed in SEEDS:
        c = cells["seed", str(seed)]
        want = ("state-failed", "seed = 3: 3 failed (of 3)") if seed == 3 else (
            "state-done", f"seed = {seed}: 3 done (of 3)")
        assert (c["state"], c["title"]) == want
    grid = got["grid"]  # lr by seed: one cell per setting
    assert (grid["x"], grid["y"]) == ("lr", "seed")
    assert sorted((c["x"], c["y"], c["state"], c["title"]) for c in grid["cells"]) == sorted(
        (str(lr), str(seed), "state-failed" if seed == 3 else "state-done",
         f"lr = {lr}, seed = {seed}: 1 {'failed' if seed == 3 else 'done'} (of 1)")
        for lr in LRS for seed in SEEDS)

    assert sorted((f["type"], f["message"]) for f in got["failures"]) == sorted(
        ("ValueError", f"diverged at lr={lr}") for lr in LRS)

    plots = {(p["result"], p["field"]): p for p in got["plots"]}
    assert set(plots) == {(r, f) for r in ("result.loss", "result.acc.top1")
                          for f in ("lr", "seed")}
    for (result, field), p in plots.items():
        assert len(p["points"]) == 9
        assert (p["xlabel"], p["ylabel"], p["title"]) == (field, result,
                                                          f"{result} against {field}")
        assert all(0 < x < p["w"] and 0 < y < p["h"] for x, y in p["points"])
    # up is more: the largest loss (lr=0.1, seed=2) is the highest point, in the column
    # of seed=2, the rightmost (its 3 points, one per lr, are the 3 rightmost)
    loss_seed = plots["result.loss", "seed"]["points"]
    assert min(loss_seed, key=lambda pt: pt[1]) in sorted(loss_seed)[-3:]
    assert len(got["bars"]) == 30 and sum(_runs(t) for _, t in got["bars"]) == 9
    assert max(h for h, _ in got["bars"]) > 0
    assert "default-src 'none'" in got["csp"] and got["scripts"] == 0


def test_a_run_in_progress_is_drawn_as_running(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    sweep(store)
    started, stop = tmp_path / "started", tmp_path / "stop"
    script = tmp_path / "slow.py"
    script.write_text(
        "import os, sys, time, stet\n"
        f"@stet.once(store={str(store)!r}, verbose=False, name='train')\n"
        "def train(lr, seed):\n"
        f"    open({str(started)!r}, 'w').close()\n"
        f"    while not os.path.exists({str(stop)!r}):\n"
        "        time.sleep(0.02)\n"
        "train(lr=0.5, seed=0)\n")
    worker = subprocess.Popen([PY, str(script)])
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert worker.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        out = tmp_path / "sweep.html"
        report(store, out)
    finally:
        stop.touch()
        assert worker.wait(timeout=60) == 0
    with Page(out.as_uri()) as page:
        got = drawn(page)
    assert got["summary"] == "13 settings: 9 done, 3 failed, 1 running, 0 pending."
    cells = {(c["field"], c["value"]): c for c in got["cells"]}
    assert (cells["lr", "0.5"]["state"], cells["lr", "0.5"]["title"]) == (
        "state-running", "lr = 0.5: 1 running (of 1)")
    assert cells["seed", "0"]["title"] == "seed = 0: 3 done, 1 running (of 4)"
    assert cells["seed", "0"]["state"] == "state-running"


def test_the_grid_draws_the_two_fields_asked_for(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def f(a: int, b: int, c: int) -> None:
        if (a, b) == (1, 1):
            raise RuntimeError("no")

    stet.sweep(f, stet.grid(a=[0, 1], b=[0, 1], c=[0, 1, 2]), progress=False)
    out = tmp_path / "sweep.html"
    r = stet_cmd("report", store, "-o", out, "--grid", "c,b")
    assert r.returncode == 0, r.stderr
    with Page(out.as_uri()) as page:
        grid = drawn(page)["grid"]
    assert (grid["x"], grid["y"]) == ("c", "b")
    cells = {(c["x"], c["y"]): (c["state"], c["title"]) for c in grid["cells"]}
    assert len(cells) == 6  # each cell holds the two values of a
    assert cells["0", "1"] == ("state-failed", "c = 0, b = 1: 1 done, 1 failed (of 2)")
    assert cells["2", "0"] == ("state-done", "c = 2, b = 0: 2 done (of 2)")
    for wrong, said in (("c,nope", "has the field 'nope'; key fields: a, b, c"),
                        ("c", "--grid takes two key fields"),
                        ("c,c", "two different fields")):
        r = stet_cmd("report", store, "-o", tmp_path / "other.html", "--grid", wrong)
        assert r.returncode == 2 and said in r.stderr, r.stderr
        assert not (tmp_path / "other.html").exists()


def test_a_recorded_traceback_is_shown_whole_and_text_is_never_markup(
        tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    sweep(store)
    tb = ('Traceback (most recent call last):\n  File "train.py", line 3, in train\n'
          "    raise RuntimeError(x)\nRuntimeError: <script>alert(1)</script> & more")
    with get_backend(store) as b:
        b.append_failure({"lr": "<b>0.7</b>", "seed": "0", "_stet_func": "train",
                          "_stet_timestamp": "2099-01-01T00:00:00+00:00",
                          "_stet_error_type": "RuntimeError",
                          "_stet_error": "<script>alert(1)</script> & more",
                          "_stet_traceback": tb})
    out = tmp_path / "sweep.html"
    report(store, out)
    with Page(out.as_uri()) as page:
        got = drawn(page)
        assert page.evaluate("document.querySelectorAll('b').length") == 0
    latest = got["failures"][0]  # latest first
    assert latest == {"type": "RuntimeError", "message": "<script>alert(1)</script> & more",
                      "traceback": tb}
    assert got["scripts"] == 0
    assert ("lr", "<b>0.7</b>") in {(c["field"], c["value"]) for c in got["cells"]}


def test_a_long_traceback_or_message_is_shown_by_its_end(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    sweep(store)
    tb = "".join(f"  frame {i}\n" for i in range(20_000)) + "ValueError: the end"
    with get_backend(store) as b:
        b.append_failure({"lr": "9", "seed": "0", "_stet_func": "train",
                          "_stet_timestamp": "2099-01-01T00:00:00+00:00",
                          "_stet_error_type": "ValueError", "_stet_error": "x" * 50_000 + "!",
                          "_stet_traceback": tb})
    latest = collect(store).failures[0]
    assert latest.traceback is not None and latest.traceback.endswith("ValueError: the end")
    assert latest.traceback.startswith("…") and len(latest.traceback) == MAX_TRACEBACK + 1
    assert latest.message.endswith("x!") and len(latest.message) == MAX_TRACEBACK + 1


def test_the_network_check_sees_a_request_when_a_page_makes_one(tmp_path: Path) -> None:
    page_file = tmp_path / "fetches.html"
    page_file.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">')
    with Page(page_file.as_uri()) as page:
        assert "http://127.0.0.1:9/x.png" in page.requests


def test_the_report_file_names_no_other_resource(tmp_path: Path) -> None:
    store = tmp_path / "runs.json"
    sweep(store)
    out = tmp_path / "sweep.html"
    report(store, out)
    text = out.read_text(encoding="utf-8")
    assert "://" not in text and " src=" not in text and "href=\"#" in text
    assert re.findall(r'href="([^"]*)"', text) == ["#progress", "#durations", "#failures",
                                                    "#results"]


def test_a_store_with_only_failures_has_a_report(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"

    @stet.once(store=str(store), verbose=False)
    def boom(x: int) -> None:
        raise KeyError("missing_key")

    stet.sweep(boom, [{"x": 1}, {"x": 2}], progress=False)
    out = tmp_path / "sweep.html"
    report(store, out)
    with Page(out.as_uri()) as page:
        got = drawn(page)
        text = page.evaluate("document.body.innerText")
    assert got["summary"] == "2 settings: 0 done, 2 failed, 0 running, 0 pending."
    assert [f["message"] for f in got["failures"]] == ["'missing_key'"] * 2
    assert got["plots"] == [] and got["bars"] == []
    assert "No completed run records a duration." in text


def test_a_plan_makes_the_settings_not_run_pending(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    sweep(store)
    plan = [{"lr": str(lr), "seed": str(s), "_stet_func": "train"} for lr in [*LRS, 1.0]
            for s in SEEDS]
    data = collect(store, plan=plan)
    assert data.counts == {"done": 9, "failed": 3, "running": 0, "pending": 4}
    assert data.by_value["lr"]["1.0"] == {"done": 0, "failed": 0, "running": 0,
                                          "pending": 4}
    out = tmp_path / "planned.html"
    out.write_text(render(data), encoding="utf-8")
    with Page(out.as_uri()) as page:
        got = drawn(page)
    assert got["summary"] == "16 settings: 9 done, 3 failed, 0 running, 4 pending."
    cells = {(c["field"], c["value"]): c for c in got["cells"]}
    assert cells["lr", "1.0"]["state"] == "state-pending"
    assert cells["seed", "0"]["title"] == "seed = 0: 3 done, 1 pending (of 4)"


# ---------------------------------------------------------------------------- errors
def test_report_refuses_to_write_onto_the_store_or_an_existing_file(tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    sweep(store)
    before = store.read_bytes(), (tmp_path / "runs.csv.failures.jsonl").read_bytes()
    for target in (store, tmp_path / "runs.csv.failures.jsonl", tmp_path / "." / "runs.csv"):
        r = stet_cmd("report", store, "-o", target, "--force")
        assert r.returncode == 2 and "never onto a store" in r.stderr, r.stderr
    assert (store.read_bytes(), (tmp_path / "runs.csv.failures.jsonl").read_bytes()) == before

    other = tmp_path / "other.csv"
    sweep(other)
    r = stet_cmd("report", store, "-o", other, "--force")
    assert r.returncode == 2 and "is a stet store" in r.stderr

    existing = tmp_path / "notes.html"
    existing.write_text("mine")
    r = stet_cmd("report", store, "-o", existing)
    assert r.returncode == 2 and "pass --force" in r.stderr
    assert existing.read_text() == "mine"
    r = stet_cmd("report", store, "-o", existing, "--force")
    assert r.returncode == 0 and "<svg" in existing.read_text()

    r = stet_cmd("report", store, "-o", tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr
    assert "Traceback" not in r.stderr


def test_report_of_a_missing_store_says_so(tmp_path: Path) -> None:
    r = stet_cmd("report", tmp_path / "nope.csv", "-o", tmp_path / "x.html")
    assert r.returncode == 1
    assert r.stderr.strip() == f"stet report: error: no stet store at '{tmp_path / 'nope.csv'}'"
    assert not (tmp_path / "x.html").exists()
    r = stet_cmd("report", tmp_path / "nope.txt", "-o", tmp_path / "x.html")
    assert r.returncode == 1 and "Traceback" not in r.stderr and ".csv" in r.stderr


def test_report_of_an_unreadable_store_says_so(tmp_path: Path) -> None:
    store = tmp_path / "runs.json"
    store.write_text("{ this is not json")
    r = stet_cmd("report", store, "-o", tmp_path / "x.html")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(store) in r.stderr
    assert not (tmp_path / "x.html").exists()


# ------------------------------------------------------------------------------ size
@pytest.mark.slow
def test_a_store_of_100000_runs_gives_a_small_page_in_seconds(tmp_path: Path) -> None:
    store = tmp_path / "big.csv"
    n = 100_000
    with get_backend(store) as b:
        b.append_records([{"lr": str(10 ** -(i % 5)), "seed": str(i // 5), "_stet_func": "f",
                           "_stet_timestamp": "2026-01-01T00:00:00+00:00",
                           "_stet_duration": str(1 + (i % 97) / 10),
                           "_stet_result": json.dumps({"loss": (i % 89) / 89})}
                          for i in range(n)])
    out = tmp_path / "big.html"
    t0 = time.monotonic()
    report(store, out)
    seconds = time.monotonic() - t0
    assert seconds < 20, seconds
    assert out.stat().st_size < 2_000_000, out.stat().st_size
    with Page(out.as_uri(), timeout=120) as page:
        got = drawn(page)
        note = page.evaluate("document.getElementById('sample-note').textContent")
        more = page.evaluate("[...document.querySelectorAll('#progress .note')]"
                             ".map(p => p.textContent).join(' ')")
    assert got["summary"] == f"{n:,} settings: {n:,} done, 0 failed, 0 running."
    assert [len(p["points"]) for p in got["plots"]] == [MAX_POINTS, MAX_POINTS]
    assert f"{MAX_POINTS:,} of the {n:,} runs" in note
    assert "Showing the first 120 of 20,000 values of seed." in more
    assert sum(_runs(t) for _, t in got["bars"]) == n
    print(f"\n{n} runs: report in {seconds:.2f} s, {out.stat().st_size / 1e6:.2f} MB",
          file=sys.stderr)


def test_a_store_without_results_or_failures_says_so(tmp_path: Path) -> None:
    """The page of a store of runs that neither failed nor saved a result is whole."""
    store = tmp_path / "runs.parquet"

    @stet.once(store=str(store), verbose=False)
    def f(x: int) -> None:
        return None

    stet.sweep(f, stet.grid(x=range(5)), progress=False)
    page = render(collect(store))
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>\n")
    assert "No failed run" in page and "No completed run saved a numeric result" in page
    assert os.fspath(store) in page
