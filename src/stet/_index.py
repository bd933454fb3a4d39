"""The in-memory index of completed runs.

Every record is kept as one 128-bit digest of its run (:mod:`stet._digest`) in a set, and
its field set is counted: a call whose key fields are exactly a record's is answered by
one or two set probes. A call may also match a record that holds *more* fields (a key
narrowed with ``key=``, a parameter since removed), or ask about any function
(``contains_any``): for such a *probe* the index builds a set of ``(function, value...)``
tuples from every record holding the probe's fields, once, and keeps it up to date as
records arrive. The records for it come from ``reread`` (the store, read again) when the
index was given one, otherwise from the rows the index then keeps itself (small indexes:
failure logs).

An index can be saved and loaded as its digests, field-set counts and record count
(:meth:`Index.state`, :meth:`Index.load_state`); :mod:`stet._snapshot` keeps them in a
file beside a store.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from ._digest import Digester
from ._schema import FUNC_FIELD, RESERVED_PREFIX, key_names

__all__ = ["Index", "IndexState", "bulk"]

Row = tuple[str, ...]
Reread = Callable[[], Iterable[Mapping[str, str]]]


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Loading a million records allocates millions of strings and integers, none of them
    cyclic; without this the collector rescans them over and over (about 40% of the time).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class IndexState:
    """What an index is made of, without its rows: saved to and loaded from a snapshot.

    ``groups``: record count per sorted key-field names; ``nofunc``: the field sets some
    record of which names no function; ``digests``: one per record (fewer when records
    repeat a run); ``count``: records.
    """

    __slots__ = ("count", "digests", "groups", "nofunc")

    def __init__(self, groups: dict[tuple[str, ...], int], nofunc: set[tuple[str, ...]],
                 digests: set[int], count: int) -> None:
        self.groups, self.nofunc, self.digests, self.count = groups, nofunc, digests, count


class Index:
    """Set of done runs as digests, with lazily built probe sets for partial matches."""

    def __init__(self, reread: Reread | None = None) -> None:
        #: Reads every record of the store again (to build a probe set); ``None``: the
        #: index keeps its rows to build them from.
        self.reread = reread
        self._init()

    def _init(self) -> None:
        self._digests: set[int] = set()
        self._digesters: dict[tuple[str, ...], Digester] = {}
        # sorted key-field names -> records holding exactly those fields
        self.groups: dict[tuple[str, ...], int] = {}
        self._nofunc: set[tuple[str, ...]] = set()  # groups with a record of no function
        # rows of (func, value...) per group, kept only when there is no reread
        self._rows: dict[tuple[str, ...], list[Row]] = {}
        # (probe field names (sorted), any function?) -> set of (func, value...) / (value...)
        self._probes: dict[tuple[tuple[str, ...], bool], set[Row]] = {}
        # group names -> [(probe set, positions)] for the probes that group feeds
        self._feeds: dict[tuple[str, ...], list[tuple[set[Row], tuple[int, ...] | None]]] = {}
        self._wider: dict[tuple[str, ...], bool] = {}  # names -> has a strict superset group
        self._intern: dict[str, str] = {}
        #: Digests added since :meth:`load_state` (``None``: none was loaded).
        self.added: list[int] | None = None
        self.count = 0

    def clear(self) -> None:
        self._init()

    # ------------------------------------------------------------------ state
    def state(self) -> IndexState:
        return IndexState(self.groups, self._nofunc, self._digests, self.count)

    def load_state(self, state: IndexState) -> None:
        """Start from a saved state (the index must be empty); what is added from now on
        is also listed in :attr:`added`."""
        self._init()
        self.groups = dict(state.groups)
        self._nofunc = set(state.nofunc)
        self._digests = state.digests
        self.count = state.count
        self.added = []

    # ----------------------------------------------------------------- adding
    def _digester(self, names: tuple[str, ...]) -> Digester:
        d = self._digesters.get(names)
        if d is None:
            d = self._digesters[names] = Digester.of(names)
            if names not in self.groups:
                self.groups[names] = 0
                self._wider.clear()
                self._feeds.pop(names, None)
        return d

    def add_rows(self, header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> None:
        """Add rows aligned with ``header``; ``None`` marks a field the row does not hold."""
        if not rows:
            return
        key_pos = [i for i, f in enumerate(header) if not f.startswith(RESERVED_PREFIX)]
        func_pos = header.index(FUNC_FIELD) if FUNC_FIELD in header else -1
        full = [r for r in rows if None not in r]
        if full:
            self.add_columns(header, list(zip(*full, strict=True)))
        for row in rows:
            if None in row:
                func = (row[func_pos] or "") if func_pos >= 0 else ""
                present: list[tuple[str, str]] = sorted(
                    (header[i], v) for i in key_pos if (v := row[i]) is not None
                )
                self._add(tuple(k for k, _ in present), (func, *(v for _, v in present)))

    def add_columns(self, header: Sequence[str], columns: Sequence[Sequence[str]]) -> None:
        """Add records given column by column (no absent fields), aligned with ``header``."""
        if not columns or not columns[0]:
            return
        key_pos = sorted(
            (i for i, f in enumerate(header) if not f.startswith(RESERVED_PREFIX)),
            key=header.__getitem__,
        )
        names = tuple(header[i] for i in key_pos)
        n = len(columns[0])
        if FUNC_FIELD in header:
            funcs: Sequence[str] = columns[header.index(FUNC_FIELD)]
        else:
            funcs = [""] * n
        rows = zip(funcs, *(columns[i] for i in key_pos), strict=True)
        self._add_many(names, rows, n, funcs)

    def add_index_rows(self, names: tuple[str, ...], rows: list[Row]) -> None:
        """Add rows already laid out as ``(func, value...)`` for sorted field ``names``."""
        if rows:
            self._add_many(names, rows, len(rows), [r[0] for r in rows])

    def add(self, record: Mapping[str, str]) -> None:
        """Add one record (a mapping of field name to canonical text)."""
        names = key_names(record)
        self._add(names, (record.get(FUNC_FIELD) or "", *(record[n] for n in names)))

    def _add(self, names: tuple[str, ...], row: Row) -> None:
        self._add_many(names, [row], 1, (row[0],))

    def _add_many(self, names: tuple[str, ...], rows: Iterable[Row], n: int,
                  funcs: Sequence[str]) -> None:
        """Add ``n`` rows ``(func, value...)`` of field set ``names``; ``funcs``: their
        function names."""
        digest = self._digester(names).row
        feeds = self._feeds_of(names)
        keep = bool(feeds) or self.reread is None  # rows are needed as tuples
        if keep:
            intern = self._intern.setdefault
            rows = [tuple([intern(v, v) for v in r]) for r in rows]
        if self.added is not None:
            digests = list(map(digest, rows))
            self._digests.update(digests)
            self.added.extend(digests)
        else:
            self._digests.update(map(digest, rows))
        if keep:
            assert isinstance(rows, list)
            self._fed(names, rows, feeds)
        self.groups[names] += n
        self.count += n
        if names not in self._nofunc and "" in funcs:
            self._nofunc.add(names)

    def _feeds_of(self, names: tuple[str, ...]) -> list[tuple[set[Row], tuple[int, ...] | None]]:
        if not self._probes:
            return []
        feeds = self._feeds.get(names)
        if feeds is None:
            feeds = self._feeds[names] = []
            name_set = set(names)
            for (probe, anyfunc), target in self._probes.items():
                if name_set.issuperset(probe):
                    feeds.append((target, _positions(names, probe, anyfunc)))
        return feeds

    def _fed(self, names: tuple[str, ...], rows: list[Row],
             feeds: list[tuple[set[Row], tuple[int, ...] | None]]) -> None:
        if self.reread is None:
            self._rows.setdefault(names, []).extend(rows)
        for target, pos in feeds:
            if pos is None:
                target.update(rows)
            else:
                target.update(tuple(r[p] for p in pos) for r in rows)

    # ---------------------------------------------------------------- lookups
    def probe(self, names: tuple[str, ...], anyfunc: bool = False) -> set[Row]:
        """The set of ``(func, value...)`` (``anyfunc``: ``(value...)``) of every record
        holding the fields ``names``, built on first use and kept up to date."""
        target = self._probes.get((names, anyfunc))
        if target is not None:
            return target
        target = self._probes[(names, anyfunc)] = set()
        self._feeds.clear()  # (rebuilt with this probe on the next add)
        wanted = set(names)
        if self.reread is None:
            for gnames, rows in self._rows.items():
                if wanted.issubset(gnames):
                    pos = _positions(gnames, names, anyfunc)
                    target.update(rows if pos is None else (tuple(r[p] for p in pos)
                                                            for r in rows))
            return target
        with bulk():
            for record in self.reread():
                if not wanted.issubset(record):
                    continue
                values = tuple(record[n] for n in names)
                target.add(values if anyfunc else (record.get(FUNC_FIELD) or "", *values))
        return target

    def contains(self, func: str, names: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        """Whether a record of ``func`` (or of no function) holds these field texts."""
        digester = self._digesters.get(names)
        if digester is None and self.groups.get(names):  # (groups loaded from a snapshot)
            digester = self._digester(names)
        if digester is not None:
            digests = self._digests
            if digester.run(func, texts) in digests:
                return True
            if names in self._nofunc and func and digester.row(("", *texts)) in digests:
                return True
        wider = self._wider.get(names)
        if wider is None:
            name_set = set(names)
            wider = self._wider[names] = any(
                n and len(g) > len(names) and name_set.issubset(g)
                for g, n in self.groups.items())
        if not wider:
            return False
        target = self.probe(names)
        return (func, *texts) in target or ("", *texts) in target

    def contains_any(self, names: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        """Whether a record of any function holds these field texts."""
        return texts in self.probe(names, anyfunc=True)


def _positions(
    group: tuple[str, ...], probe: tuple[str, ...], anyfunc: bool
) -> tuple[int, ...] | None:
    """Positions in a group row that give a probe row; ``None`` when they are the same."""
    if anyfunc:
        return tuple(group.index(n) + 1 for n in probe)
    if group == probe:
        return None
    return (0, *(group.index(n) + 1 for n in probe))
