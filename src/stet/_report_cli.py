"""The command ``stet report STORE -o OUT.html [--grid X,Y] [--force]``.

It writes the page of :mod:`stet._report_html` with the protections ``stet export`` has:
never onto the store (by any spelling), a file stet keeps beside it or another store; an
existing file only with ``--force``; the file whole or not at all. Those protections
and the command line's own error live in :mod:`stet._cli`, which registers this command
and passes them in (:class:`Helpers`): the imports go one way, from the command line to
the report.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

from ._report import GridError, ReportData, collect
from ._report_html import render
from ._sidecar import sidecars

__all__ = ["Helpers", "add_parser", "write_report"]


class Helpers(NamedTuple):
    """What the ``stet`` command shares with its commands."""

    usage_error: type[Exception]  #: a mistake in the command line (exit status 2)
    #: how writing ``out`` would write onto ``store`` (by any spelling), else ``None``
    clash: Callable[[str, str], str | None]
    #: write a file whole or not at all: ``(out, force, write)``
    write_new: Callable[[str, bool, Callable[[IO[bytes]], None]], None]


def add_parser(sub: Any, helpers: Helpers) -> None:
    """Register ``stet report`` with the ``stet`` command's subparsers."""
    s = sub.add_parser(
        "report", help="write a sweep's report: one self-contained HTML page",
        description="Write one HTML file showing a store's sweep: progress by key field "
                    "(done / failed / running), the distribution of durations, the "
                    "failures with their errors, and each numeric saved result against "
                    "each key field. The file needs no network (no scripts, fonts or "
                    "styles from elsewhere): open it from a cluster's scratch directory.")
    s.add_argument("store", metavar="STORE")
    s.add_argument("-o", "--output", metavar="OUT.html", required=True,
                   help="the HTML file to write")
    s.add_argument("--grid", metavar="X,Y",
                   help="the two key fields to draw as a grid (default: the first two)")
    s.add_argument("-f", "--force", action="store_true",
                   help="replace OUT if it exists (never a store, nor a file beside one)")
    s.set_defaults(handler=functools.partial(cmd_report, helpers=helpers))


def _check_target(store: str, out: str, force: bool, helpers: Helpers) -> None:
    """Refuse to write the report onto the store, a file beside it, a store, a
    directory or (without ``force``) any existing file."""
    usage = helpers.usage_error
    if "://" in out:
        raise usage(f"-o {out} is a URL; the report is an HTML file: give its path.")
    clash = helpers.clash(store, out)
    if clash is not None:
        raise usage(f"-o {out} is {clash}; the report is written to a new file and never "
                    f"onto a store. Give another -o.")
    if os.path.isdir(out):
        raise usage(f"-o {out} is a directory; give the path of a file to write "
                    f"(e.g. {os.path.join(out, 'sweep.html')}).")
    if os.path.lexists(out):
        beside = [p for p in sidecars(Path(out))[:4] if os.path.lexists(p)]
        if beside:
            raise usage(f"-o {out} is a stet store (it has {beside[0].name} beside it); the "
                        f"report never replaces a store, even with --force.")
        if not force:
            raise usage(f"-o {out} exists; the report does not replace files unless told: "
                        f"give another -o, or pass --force to replace it.")


def write_report(store: str, out: str, helpers: Helpers, *, force: bool = False,
                 grid: tuple[str, str] | None = None) -> ReportData:
    """Write the report of ``store`` to the HTML file ``out``; returns what it shows."""
    _check_target(store, out, force, helpers)
    data = collect(store, grid=grid)
    page = render(data).encode("utf-8", errors="backslashreplace")

    def write(fh: IO[bytes]) -> None:
        fh.write(page)

    helpers.write_new(out, force, write)
    return data


def cmd_report(args: argparse.Namespace, helpers: Helpers) -> int:
    grid = None
    if args.grid is not None:
        axes = [a.strip() for a in args.grid.split(",")]
        if len(axes) != 2 or not all(axes):
            raise helpers.usage_error(f"--grid takes two key fields, e.g. --grid lr,seed, "
                                      f"not {args.grid!r}")
        grid = (axes[0], axes[1])
    try:
        data = write_report(args.store, args.output, helpers, force=args.force, grid=grid)
    except GridError as exc:
        raise helpers.usage_error(str(exc)) from None
    c = data.counts
    print(f"Wrote {args.output}: {c['done']} done, {c['failed']} failed, {c['running']} "
          f"running" + (f", {c['pending']} pending" if data.planned else "")
          + f" ({data.store}).")
    return 0
