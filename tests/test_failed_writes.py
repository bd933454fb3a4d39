"""A write that fails part-way (a full disk, a file size limit) leaves no cut record.

A cut append is otherwise judged by the next reader from the bytes alone, and the rule it
uses (a SIGKILLed write ends on a page boundary) does not hold for a write stopped by the
file size limit: such a cut last row could read as a whole record with its last cell cut
(a run marked done with a wrong saved result). Real processes, a real RLIMIT_FSIZE.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stet.backends import get_backend
from stet.backends._parquet import sidecar_path

_CHILD = textwrap.dedent(
    """
    import json, os, resource, shutil, sys
    import stet
    from stet.errors import StoreError

    base, work, appended, cuts = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    out = []
    for k, cut in enumerate(cuts):
        store = f"{work}/s{k}{os.path.splitext(base)[1]}"
        for suffix in ("", ".stet-log"):
            if os.path.exists(base + suffix):
                shutil.copyfile(base + suffix, store + suffix)
        before = os.path.getsize(store + appended)

        @stet.once(store=store, verbose=False, save_result=True)
        def f(x):
            return {"v": "result of " + str(x)}

        resource.setrlimit(resource.RLIMIT_FSIZE, (before + cut, hard))
        try:
            f(3)
            out.append("ok")
        except StoreError as exc:
            out.append("StoreError " + str(exc))
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print(json.dumps(out), flush=True)
    os._exit(0)  # (no Parquet fold at exit: the sidecar is what is checked)
    """
)

_MAKE = textwrap.dedent(
    """
    import sys
    import stet

    @stet.once(store=sys.argv[1], verbose=False, save_result=True)
    def f(x):
        return {"v": "result of " + str(x)}

    for x in range(3):
        f(x)
    """
)


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_an_append_cut_by_the_file_size_limit_leaves_the_store_as_it_was(
    tmp_path: Path, fmt: str
) -> None:
    base = tmp_path / f"base.{fmt}"
    make = [sys.executable, "-c", _MAKE, str(base)]
    if fmt == "parquet":  # records go to the sidecar until the exit fold: keep one there
        make[2] = _MAKE.replace("import stet", "import os, stet") + "\nos._exit(0)\n"
    subprocess.run(make, check=True, timeout=120)
    appended = ".stet-log" if fmt == "parquet" else ""
    assert Path(str(base) + appended).exists()
    # Cuts all along the new record: in its first cells, inside and just after the
    # saved result's quotes, and just before its newline.
    last = Path(str(base) + appended).read_bytes().rstrip(b"\n]").splitlines()[-1]
    n = len(last) + 1  # (the next record is as long, give or take a digit)
    cuts = sorted({*range(1, n - 4, 7), n - 4, n - 3, n - 2})
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, "-c", _CHILD, str(base), str(work), appended,
                        json.dumps(cuts)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    outcomes = json.loads(r.stdout.splitlines()[-1])
    before = Path(str(base) + appended).read_bytes()
    for k, outcome in enumerate(outcomes):
        store = work / f"s{k}.{fmt}"
        written = Path(str(store) + appended)
        if outcome == "ok":  # (the record fitted under the limit)
            assert written.read_bytes().startswith(before[: len(before) - 4])
            continue
        assert outcome.startswith("StoreError") and str(store) in outcome, outcome
        assert "not saved" in outcome
        assert written.read_bytes() == before, f"cut at {cuts[k]} left {written.read_bytes()!r}"
        with get_backend(store) as b:
            records = b.load()
        assert sorted(r["x"] for r in records) == ["0", "1", "2"]
        assert all(json.loads(r["_stet_result"]) == {"v": f"result of {r['x']}"}
                   for r in records)
    assert sum(o != "ok" for o in outcomes) >= len(cuts) - 3
    if fmt == "parquet":
        assert sidecar_path(base).exists()
