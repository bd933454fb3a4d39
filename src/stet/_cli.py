"""The ``stet`` command: look at, reset, copy and export stores from the shell.

    stet status STORE [--grid X,Y] [--func NAME] [--watch] [--interval SECONDS]
    stet ls STORE [--where FIELD=VALUE ...] [--failed] [--func NAME] [--limit N] [--all]
    stet show STORE [--where FIELD=VALUE ...] [--func NAME] [--failed]
    stet reset STORE [--where FIELD=VALUE ...] [--func NAME] [--failed] [--yes]
    stet copy SRC DST
    stet export STORE OUT.{csv,json,parquet} [--where ...] [--failed] [--func NAME] [--force]
    stet report STORE -o OUT.html [--grid X,Y] [--force]

Exit codes: 0 success, 1 an error with a store (missing, corrupt, unreadable), 2 a
mistake in the command line, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from ._load import Table, display, open_store, select, tabulate
from ._report_cli import Helpers as ReportHelpers
from ._report_cli import add_parser as add_report
from ._schema import (
    DURATION_FIELD,
    EMPTY_FIELD,
    ERROR_FIELD,
    ERROR_TYPE_FIELD,
    FUNC_FIELD,
    HOST_FIELD,
    PID_FIELD,
    RESERVED_PREFIX,
    STARTED_FIELD,
    TIMESTAMP_FIELD,
    Record,
    format_seconds,
    run_key,
)
from ._sidecar import export_temp_file, is_sidecar, same_file, sidecars
from .backends import get_backend
from .backends._base import Store
from .errors import StoreError

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in the command line (exit status 2)."""


# ------------------------------------------------------------------------ helpers
def _where(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--where takes FIELD=VALUE (e.g. --where alpha=0.1), "
                             f"not {pair!r}")
        if name in out and out[name] != value:
            raise UsageError(f"--where gives {name!r} twice ({out[name]!r} and {value!r})")
        out[name] = value
    return out


def _check_fields(where: dict[str, str], records: list[dict[str, Any]],
                  store: str) -> None:
    """Refuse a --where field that no record holds (a typo would match nothing)."""
    known: set[str] = set()
    for r in records:
        known.update(r)
    for name in where:
        if name not in known:
            keys = sorted(k for k in known if not k.startswith(RESERVED_PREFIX))
            raise UsageError(f"no record in {display(store)} has the field {name!r}; "
                             f"key fields: {', '.join(keys) or '(none)'}")


def _hint(where: dict[str, str], records: list[dict[str, Any]]) -> str:
    """A near miss: the same number written differently (``0.10`` for ``0.1``)."""
    for name, value in where.items():
        try:
            wanted = float(value)
        except ValueError:
            continue
        near = sorted({r[name] for r in records if name in r and r[name] != value
                       and _float(r[name]) == wanted})
        if near:
            return (f"; values are compared as stored text, and {name} is stored as "
                    f"{', '.join(near[:3])}")
    return ""


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _matching(records: list[dict[str, Any]], where: dict[str, str],
              func: str | None) -> list[dict[str, Any]]:
    return [r for r in select(records, func) if all(r.get(k) == v for k, v in where.items())]


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return ""
    if kind == "json":
        if isinstance(value, float):
            return repr(value)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if kind == "float" and isinstance(value, float):
        return repr(value)
    return str(value)


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _render_table(table: Table, columns: list[str], headers: dict[str, str],
                  max_width: int = 40) -> str:
    def show(value: Any, kind: str) -> str:
        if kind == "json" and isinstance(value, float):
            return f"{value:.6g}"  # results, for reading (export keeps every digit)
        return _cell(value, kind)

    cells = [[_clip(show(table.columns[c][i], table.kinds[c]), max_width) for c in columns]
             for i in range(len(table))]
    heads = [headers.get(c, c) for c in columns]
    widths = [max([len(h), *(len(row[j]) for row in cells)]) for j, h in enumerate(heads)]
    right = [table.kinds[c] in ("int", "float") or (table.kinds[c] == "json" and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in table.columns[c]
        if v is not None)) for c in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(values, widths, right, strict=True)).rstrip()

    out = [line(heads), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    return "\n".join(out)


def _color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# ------------------------------------------------------------------------ commands
def cmd_status(args: argparse.Namespace) -> int:
    from ._cli_watch import watch
    from ._status import StoreStatus, render_grid, store_status

    axes: list[str] = []
    if args.grid:
        axes = [a.strip() for a in args.grid.split(",")]
        if len(axes) != 2 or not all(axes):
            raise UsageError(f"--grid takes two key fields, e.g. --grid alpha,seed, "
                             f"not {args.grid!r}")
    if args.interval <= 0:
        raise UsageError(f"--interval takes a number of seconds above 0, not {args.interval}")

    def render(st: StoreStatus) -> str:
        if not axes:
            return str(st)
        try:
            grid = render_grid(st, axes[0], axes[1], func=args.func, color=_color())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return f"{st}\n\n{grid}"

    if args.watch:
        return watch(lambda: store_status(args.store), render, args.interval, sys.stdout)
    print(render(store_status(args.store)))
    return 0


def _selected(
    args: argparse.Namespace,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Records (or failures, with ``--failed``), those matching ``--where``/``--func``,
    and the parsed ``--where``; shared by ``ls`` and ``export``."""
    backend = open_store(args.store)
    records = backend.failures() if args.failed else backend.load()
    where = _where(args.where)
    if where:
        _check_fields(where, records, args.store)
    return records, _matching(records, where, args.func), where


def cmd_ls(args: argparse.Namespace) -> int:
    records, rows, where = _selected(args)
    total = len(rows)
    if args.limit is not None and args.limit >= 0:
        rows = rows[-args.limit:] if args.limit else []
    kind = "failure" if args.failed else "record"
    if not rows:
        print(f"(no {kind} matches{_hint(where, records)})" if where or args.func
              else f"(no {kind}s)")
        return 0
    table = tabulate(rows)
    if args.all:
        columns = list(table.columns)
    else:
        shown_book = [FUNC_FIELD, TIMESTAMP_FIELD, DURATION_FIELD]
        if args.failed:
            shown_book += [ERROR_TYPE_FIELD, ERROR_FIELD]
        columns = [*table.key_columns(), *table.result_columns(),
                   *(c for c in shown_book if c in table.columns)]
        if not args.failed:
            funcs = {v for v in table.columns.get(FUNC_FIELD, [])}
            if len(funcs) == 1 and FUNC_FIELD in columns and not args.all:
                columns.remove(FUNC_FIELD)
    headers = {FUNC_FIELD: "function", TIMESTAMP_FIELD: "finished (UTC)",
               DURATION_FIELD: "duration", ERROR_TYPE_FIELD: "error",
               ERROR_FIELD: "message", HOST_FIELD: "host", STARTED_FIELD: "started (UTC)",
               PID_FIELD: "pid"}
    for when in (TIMESTAMP_FIELD, STARTED_FIELD):  # (stored as UTC ISO text) to the second
        if when in table.columns:
            table.columns[when] = [t.replace("T", " ")[:19] if isinstance(t, str) else t
                                   for t in table.columns[when]]
    if DURATION_FIELD in table.columns and table.kinds[DURATION_FIELD] == "float":
        table.columns[DURATION_FIELD] = [
            None if d is None else format_seconds(d) for d in table.columns[DURATION_FIELD]]
    print(_render_table(table, columns, headers, max_width=40 if not args.all else 60))
    if args.failed:  # each failure's last traceback lines (stet show prints it whole)
        from ._cli_watch import traceback_tails

        tails = traceback_tails(rows)
        if tails:
            print()
            print("\n".join(tails))
    shown = len(rows)
    print(f"({shown} {kind}{'s' if shown != 1 else ''}"
          + (f" of {total} matching" if shown != total else "") + ")")
    return 0


def _runs_and_failures(args: argparse.Namespace) -> tuple[
        Store, list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """The store, its records (none with ``--failed``) and failures, and the parsed
    ``--where`` (its fields checked); shared by ``show`` and ``reset``."""
    backend = open_store(args.store)
    where = _where(args.where)
    records = [] if args.failed else backend.load()
    failures = backend.failures()
    if where:
        _check_fields(where, records + failures, args.store)
    return backend, records, failures, where


def cmd_show(args: argparse.Namespace) -> int:
    from ._cli_watch import show

    _, records, failures, where = _runs_and_failures(args)
    shown = _matching(records, where, args.func)
    shown_failures = _matching(failures, where, args.func)
    if not shown and not shown_failures:
        print(f"(no run matches{_hint(where, records + failures)})")
        return 0
    show(shown, shown_failures, sys.stdout)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    backend, records, failures, where = _runs_and_failures(args)
    n_records = len(_matching(records, where, args.func))
    n_failures = len(_matching(failures, where, args.func))
    full = not where and not args.func and not args.failed
    if not n_records and not n_failures:
        if full and backend.plans():
            backend.clear_plans()
            print(f"Nothing to remove from {display(args.store)}; its sweeps' plan is "
                  f"forgotten.")
            return 0
        print(f"Nothing to remove from {display(args.store)}{_hint(where, records + failures)}.")
        return 0
    what = []
    if n_records:
        what.append(f"{n_records} completed run{'s' if n_records != 1 else ''}")
    if n_failures:
        what.append(f"{n_failures} failure record{'s' if n_failures != 1 else ''}")
    scope = " matching " + ", ".join(f"{k}={v}" for k, v in where.items()) if where else ""
    if args.func:
        scope += f" of {args.func}"
    question = f"Remove {' and '.join(what)}{scope} from {display(args.store)}?"
    if not args.yes:
        if sys.stdin is None or not sys.stdin.isatty():
            raise UsageError(f"{question} Not without confirmation: pass --yes")
        answer = input(f"{question} [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("Nothing removed.")
            return 1
    removed = 0
    if n_records:
        if not backend.capabilities.remove_by_match:
            raise StoreError(f"{backend.describe()} ({type(backend).__name__}) cannot "
                             f"remove selected records")
        removed = backend.remove_where(args.func, where)
    dropped = backend.remove_failures(args.func, where) if n_failures else 0
    if full:
        backend.clear_plans()  # a full reset forgets the sweeps' plans too
    parts = []
    if n_records:
        parts.append(f"{removed} completed run{'s' if removed != 1 else ''}")
    if n_failures:
        parts.append(f"{dropped} failure record{'s' if dropped != 1 else ''}")
    print(f"Removed {' and '.join(parts)} from {display(args.store)}.")
    return 0


def _clash(store: str, out: str) -> str | None:
    """How writing ``out`` would write onto ``store`` (the store itself by any spelling:
    a symbolic or hard link, ``./``; or a file stet keeps beside it), else ``None``."""
    if "://" in store or "://" in out:  # URLs (PostgreSQL)
        return "the same store" if store == out else None
    path = Path(store)
    real_out = os.path.realpath(out)
    # sidecars beside the path given and beside the file it names (if it is a link)
    targets = [path, *sidecars(path), *sidecars(Path(os.path.realpath(path)))]
    for i, target in enumerate(targets):
        what = (f"the store {display(store)} itself" if i == 0 else
                f"{target}, a file stet keeps beside the store {display(store)}")
        if real_out == os.path.realpath(target) or same_file(out, target):
            return what
    if is_sidecar(Path(out)):
        return f"named like a file stet keeps beside a store ({os.path.basename(out)})"
    return None


def _clean(record: Record) -> Record:
    return {k: v for k, v in record.items() if k != EMPTY_FIELD}


def cmd_copy(args: argparse.Namespace) -> int:
    clash = _clash(args.src, args.dst)
    if clash is not None:
        raise UsageError(f"DST {display(args.dst)} is {clash}: copying a store onto itself "
                         f"(or its own files) would only damage it. Give another DST.")
    src = open_store(args.src)
    dst = get_backend(args.dst)
    records = [_clean(r) for r in src.load()]
    failures = [_clean(r) for r in src.failures()]
    have = {run_key(r) for r in dst.load()} if dst.exists() else set()
    have_failures = {tuple(sorted(r.items())) for r in dst.failures()} if dst.exists() else set()
    todo: list[Record] = []
    for r in records:
        ident = run_key(r)
        if ident in have:
            continue
        todo.append(r)
        have.add(ident)
    dst.append_records(todo)  # many per statement where the store allows
    copied, skipped = len(todo), len(records) - len(todo)
    copied_f = 0
    for f in failures:
        k = tuple(sorted(f.items()))
        if k in have_failures:
            continue
        dst.append_failure(f)
        have_failures.add(k)
        copied_f += 1
    dst.close()
    msg = f"Copied {copied} completed run{'s' if copied != 1 else ''}"
    if copied_f:
        msg += f" and {copied_f} failure record{'s' if copied_f != 1 else ''}"
    msg += f" from {display(args.src)} to {display(args.dst)}"
    if skipped:
        msg += f" ({skipped} already there)"
    print(msg + ".")
    return 0


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity; other tools reject them
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    return value


def cmd_export(args: argparse.Namespace) -> int:
    if "://" in args.out:
        raise UsageError(f"OUT {display(args.out)} is a URL; export writes a file for other "
                         f"tools. To put the runs in a PostgreSQL store, use stet copy.")
    ext = os.path.splitext(args.out)[1].lower()
    writers = {".csv": _export_csv, ".json": _export_json, ".parquet": _export_parquet}
    if ext not in writers:
        raise UsageError(f"cannot export to {args.out!r}: the extension {ext or '(none)'} is "
                         f"not one of {', '.join(writers)}")
    _check_export_target(args.store, args.out, args.force)
    _, rows, _ = _selected(args)
    table = tabulate(rows)
    _write_new(args.out, args.force, lambda fh: writers[ext](table, fh))
    print(f"Exported {len(table)} {'failure' if args.failed else 'run'}"
          f"{'s' if len(table) != 1 else ''} ({len(table.columns)} columns) to {args.out}.")
    return 0


def _check_export_target(store: str, out: str, force: bool) -> None:
    """Refuse to export onto the store, a file beside it, a store, or (without
    ``--force``) any existing file."""
    clash = _clash(store, out)
    if clash is not None:
        raise UsageError(f"OUT {out} is {clash}; export writes a new file for other tools "
                         f"and never onto a store. Give another OUT.")
    if os.path.isdir(out):
        raise UsageError(f"OUT {out} is a directory; give the path of a file to write.")
    if not os.path.lexists(out):
        return
    if not force:
        raise UsageError(f"OUT {out} exists; export does not replace files unless told: "
                         f"give another OUT, or pass --force to replace it.")
    beside = [p for p in sidecars(Path(out))[:4] if os.path.lexists(p)]
    if beside:
        raise UsageError(f"OUT {out} is a stet store (it has {beside[0].name} beside it); "
                         f"export never writes onto a store, even with --force. Give "
                         f"another OUT.")


def _write_new(out: str, force: bool, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``out`` whole or not at all: into a new temporary file beside it (never
    through a link), then put in place; without ``force`` only if ``out`` still does
    not exist. A symbolic link at ``out`` is replaced, not written through."""
    tmp = export_temp_file(out)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror} (creating {tmp}); check that "
                         f"its directory exists and is writable.") from None
    try:
        with open(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, out)
        else:
            try:
                os.link(tmp, out)  # fails if out appeared meanwhile: never replaced
            except FileExistsError:
                raise UsageError(f"OUT {out} exists; export does not replace files unless "
                                 f"told: give another OUT, or pass --force.") from None
            except OSError:  # a filesystem without hard links
                if os.path.lexists(out):
                    raise UsageError(f"OUT {out} exists; give another OUT, or pass "
                                     f"--force.") from None
                os.replace(tmp, out)
    except OSError as exc:
        raise StoreError(f"cannot write {out}: {exc.strerror or exc}; nothing was "
                         f"written (free some space, or check the directory's "
                         f"permissions).") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _export_csv(table: Table, out: IO[bytes]) -> None:
    import csv

    # A lone surrogate (no UTF-8 for it) is written as its escape, \ud800 (see _escaped).
    fh = io.TextIOWrapper(out, encoding="utf-8", errors="backslashreplace", newline="",
                          write_through=True)
    w = csv.writer(fh)
    w.writerow(list(table.columns))
    for i in range(len(table)):
        w.writerow([_cell(table.columns[c][i], table.kinds[c]) for c in table.columns])
    fh.flush()
    fh.detach()


def _export_json(table: Table, out: IO[bytes]) -> None:
    rows = []
    for i in range(len(table)):
        row: dict[str, Any] = {}
        for c, values in table.columns.items():
            if values[i] is not None:
                row[c] = _json_value(values[i])
        rows.append(row)
    fh = io.TextIOWrapper(out, encoding="utf-8", write_through=True)
    text = json.dumps(rows, ensure_ascii=False, indent=1, allow_nan=False)
    # A lone surrogate has no UTF-8 form: written as JSON's own escape, which reads back
    # as the same string (surrogates only occur inside JSON strings, so this is exact).
    fh.write(_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text))
    fh.write("\n")
    fh.flush()
    fh.detach()


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings written as its Python escape
    (``\\ud800``), as the CSV export writes it: Parquet strings must be UTF-8."""
    if isinstance(value, str):
        if value.isascii() or not _SURROGATE.search(value):
            return value
        return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
    if isinstance(value, list):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    return value


def _export_parquet(table: Table, out: IO[bytes]) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError("exporting to Parquet needs pyarrow: pip install 'stet[parquet]'"
                         ) from None
    types: dict[str, Any] = {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
                             "str": pa.string(), "time": pa.string()}
    arrays = {}
    for c, values in table.columns.items():
        kind = table.kinds[c]
        c, values = _escaped(c), _escaped(values)
        if kind in types:
            arrays[c] = pa.array(values, type=types[kind])
            continue
        try:
            arrays[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            arrays[c] = pa.array([None if v is None else json.dumps(v) for v in values],
                                 type=pa.string())
    pq.write_table(pa.table(arrays) if arrays else pa.table({}), out)


# ------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stet",
        description="Look at, reset, copy and export stet stores (what records which "
                    "runs of a sweep are done). STORE is a store path (.csv, .json, "
                    ".sqlite/.db, .parquet) or a postgresql:// URL.",
        epilog="Examples:\n"
               "  stet status runs.csv --grid alpha,seed\n"
               "  stet ls runs.csv --where seed=3\n"
               "  stet ls runs.csv --failed\n"
               "  stet show runs.csv --where seed=3\n"
               "  stet status runs.csv --watch\n"
               "  stet reset runs.csv --where alpha=0.1 --yes\n"
               "  stet copy runs.csv runs.sqlite\n"
               "  stet export runs.sqlite results.parquet\n"
               "  stet report runs.csv -o sweep.html\n\n"
               "Exit status: 0 ok, 1 store error, 2 command-line mistake.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    p.add_argument("--version", action="version", version=f"stet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def where_arg(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--where", metavar="FIELD=VALUE", action="append",
                        help=f"only {what} whose FIELD holds VALUE, compared as stored text "
                             "(repeat for several fields; bookkeeping fields such as "
                             f"{HOST_FIELD} work too)")
        sp.add_argument("--func", metavar="NAME",
                        help=f"only {what} of this function (records without a function "
                             "name, from stet 0.0.2, match any)")

    s = sub.add_parser("status", help="summary of a store; --grid draws two fields",
                       description="Completed runs, key fields, first and last run; per "
                                   "function completed / failed / running, mean duration.")
    s.add_argument("store", metavar="STORE")
    s.add_argument("--grid", metavar="X,Y",
                   help="draw the runs over two key fields as a grid of done / failed / "
                        "running / pending cells (values seen in the store)")
    s.add_argument("--func", metavar="NAME", help="only runs of this function in the grid")
    s.add_argument("--watch", action="store_true",
                   help="refresh until the planned runs are done or failed (Ctrl-C stops): "
                        "in place in a terminal, one line per refresh otherwise")
    s.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between refreshes with --watch (default 2)")
    s.set_defaults(handler=cmd_status)

    s = sub.add_parser("ls", help="list runs (or failures) as a table",
                       description="List completed runs (or, with --failed, failures) as a "
                                   "table: key fields, saved results, function, when, seconds.")
    s.add_argument("store", metavar="STORE")
    where_arg(s, "runs")
    s.add_argument("--failed", action="store_true", help="list failed runs instead")
    s.add_argument("--limit", type=int, metavar="N", help="show only the last N")
    s.add_argument("--all", action="store_true", help="show every bookkeeping column")
    s.set_defaults(handler=cmd_ls)

    s = sub.add_parser("show", help="every field of matching runs, a failure's traceback whole",
                       description="Print every field of the completed runs and failures "
                                   "matching --where/--func, in full: a failure's whole "
                                   "traceback (stet ls --failed shows its last lines).")
    s.add_argument("store", metavar="STORE")
    where_arg(s, "runs")
    s.add_argument("--failed", action="store_true", help="show only failures")
    s.set_defaults(handler=cmd_show)

    s = sub.add_parser("reset", help="forget runs so they run again",
                       description="Remove completed runs (and their failure records) from "
                                   "a store, all of them or those matching --where, so that "
                                   "they run again. Asks first unless --yes.")
    s.add_argument("store", metavar="STORE")
    where_arg(s, "runs")
    s.add_argument("--failed", action="store_true",
                   help="forget only failure records (failed runs are tried again anyway, "
                        "unless skip_failed=True)")
    s.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    s.set_defaults(handler=cmd_reset)

    s = sub.add_parser("copy", help="copy every run to another store (any format)",
                       description="Copy every completed run and failure record from SRC to "
                                   "DST, any format to any format, keeping every field "
                                   "(function name, timestamps, results). Runs DST already "
                                   "holds are not copied twice.")
    s.add_argument("src", metavar="SRC")
    s.add_argument("dst", metavar="DST")
    s.set_defaults(handler=cmd_copy)

    s = sub.add_parser("export", help="write runs to a plain .csv, .json or .parquet file",
                       description="Write the runs to a file for other tools, values typed "
                                   "(numbers as numbers), results as result.* columns. "
                                   "OUT's extension chooses the format: .csv, .json (an "
                                   "array of objects; NaN and infinity become null), "
                                   ".parquet (needs pyarrow).")
    s.add_argument("store", metavar="STORE")
    s.add_argument("out", metavar="OUT")
    where_arg(s, "runs")
    s.add_argument("--failed", action="store_true", help="export failures instead")
    s.add_argument("-f", "--force", action="store_true",
                   help="replace OUT if it exists (never a store, nor a file beside one)")
    s.set_defaults(handler=cmd_export)

    add_report(sub, ReportHelpers(UsageError, _clash, _write_new))  # (in _report_cli)
    return p


def _tolerant_streams() -> None:
    """Print what a store holds whatever the terminal's encoding: a character it cannot
    show (a lone surrogate, which no encoding holds; any non-ASCII text under an ASCII
    locale) is shown as its Python escape (``\\ud800``) instead of failing the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stet`` command; returns the exit status."""
    _tolerant_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        parser.exit(EXIT_USAGE, f"stet {args.command}: error: {exc}\n")
    except BrokenPipeError:  # `stet ls big.csv | head`
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the final flush
        return 0
    except KeyboardInterrupt:
        print(f"stet {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a traceback (SPEC §8)
        print(f"stet {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _one_line(exc: Exception) -> str:
    """What went wrong, on one line: stet's own errors say it all; others get their kind,
    and those that are not about files or values are marked as stet's fault."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename is not None else ""
        text = f"{exc.strerror}{where}"
    else:
        text = str(exc) or type(exc).__name__
    if not isinstance(exc, (StoreError, OSError, ValueError, ImportError)):
        kind = type(exc).__name__
        text = f"{kind}: {text}" if not text.startswith(kind) else text
        if not isinstance(exc, (TypeError, RecursionError, MemoryError)):
            text += " (unexpected: please report this as a bug in stet)"
    return " ".join(text.split())

