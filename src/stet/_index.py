"""The in-memory index of completed runs.

Records are folded in as they are read; a lookup is one or two hash probes. Records are
grouped by the set of key fields they hold; for every combination of fields that callers
ask about (a *probe*), the index keeps a set of ``(function, value, ...)`` tuples built
from every group that holds those fields, and keeps it up to date as records arrive.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from ._schema import FUNC_FIELD, RESERVED_PREFIX, key_names

__all__ = ["Index"]

Row = tuple[str, ...]


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Loading a million records allocates millions of strings and tuples, none of them
    cyclic; without this the collector rescans them over and over (about 40% of the time).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Index:
    """Set of done runs, grouped by field set, with lazily built probe sets."""

    def __init__(self) -> None:
        # sorted key-field names -> rows of (func, value...) in that order
        self._groups: dict[tuple[str, ...], list[Row]] = {}
        # (probe field names (sorted), any function?) -> set of (func, value...) or (value...)
        self._probes: dict[tuple[tuple[str, ...], bool], set[Row]] = {}
        # group names -> [(probe names, positions)] for probes that group feeds
        self._feeds: dict[tuple[str, ...], list[tuple[set[Row], tuple[int, ...] | None]]] = {}
        self._intern: dict[str, str] = {}
        self.count = 0

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]

    # ----------------------------------------------------------------- adding
    def add_rows(self, header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> None:
        """Add rows aligned with ``header``; ``None`` marks a field the row does not hold."""
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        if not any(None in col for col in columns):
            self.add_columns(header, columns)
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
            funcs: Sequence[str] = self._shared(columns[header.index(FUNC_FIELD)])
        else:
            funcs = [""] * n
        cols = [funcs] + [self._shared(columns[i]) for i in key_pos]
        new_rows: list[Row] = list(zip(*cols, strict=True))
        self._group(names).extend(new_rows)
        for target, pos in self._feeds.get(names, ()):
            if pos is None:
                target.update(new_rows)
            else:
                target.update(zip(*(cols[p] for p in pos), strict=True))
        self.count += n

    def add_index_rows(self, names: tuple[str, ...], rows: list[Row]) -> None:
        """Add rows already laid out as ``(func, value...)`` for sorted field ``names``."""
        if not rows:
            return
        self._group(names).extend(rows)
        for target, pos in self._feeds.get(names, ()):
            if pos is None:
                target.update(rows)
            else:
                target.update(tuple(r[p] for p in pos) for r in rows)
        self.count += len(rows)

    def _shared(self, column: Sequence[str]) -> Sequence[str]:
        """The column with repeated values sharing one string object (memory), when a
        sample says values repeat; columns of distinct values are kept as they are."""
        sample = column[:256]
        if len(set(sample)) > len(sample) // 4:
            return column
        intern = self._intern.setdefault
        return list(map(intern, column, column))

    def add(self, record: Mapping[str, str]) -> None:
        """Add one record (a mapping of field name to canonical text)."""
        names = key_names(record)
        self._add(names, (record.get(FUNC_FIELD) or "", *(record[n] for n in names)))

    def _add(self, names: tuple[str, ...], row: Row) -> None:
        intern = self._intern.setdefault
        row = tuple(intern(v, v) for v in row)
        self._group(names).append(row)
        for target, pos in self._feeds.get(names, ()):
            target.add(row if pos is None else tuple(row[p] for p in pos))
        self.count += 1

    def _group(self, names: tuple[str, ...]) -> list[Row]:
        group = self._groups.get(names)
        if group is None:
            group = self._groups[names] = []
            feeds = self._feeds[names] = []
            name_set = set(names)
            for (probe, anyfunc), target in self._probes.items():
                if name_set.issuperset(probe):
                    feeds.append((target, _positions(names, probe, anyfunc)))
        return group

    # ---------------------------------------------------------------- lookups
    def probe(self, names: tuple[str, ...], anyfunc: bool = False) -> set[Row]:
        """The set of ``(func, value...)`` (``anyfunc``: ``(value...)``) for ``names``."""
        target = self._probes.get((names, anyfunc))
        if target is None:
            target = self._probes[(names, anyfunc)] = set()
            wanted = set(names)
            for gnames, rows in self._groups.items():
                if wanted.issubset(gnames):
                    pos = _positions(gnames, names, anyfunc)
                    self._feeds[gnames].append((target, pos))
                    if pos is None:
                        target.update(rows)
                    else:
                        target.update(tuple(r[p] for p in pos) for r in rows)
        return target

    def contains(self, func: str, names: tuple[str, ...], texts: tuple[str, ...]) -> bool:
        """Whether a record of ``func`` (or of no function) holds these field texts."""
        target = self._probes.get((names, False))
        if target is None:
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
