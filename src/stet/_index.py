"""The in-memory index of completed runs.

Records are folded in as they are read; a lookup is one or two hash probes. Records are
grouped by the set of key fields they hold; for every combination of fields that callers
ask about (a *probe*), the index keeps a set of ``(function, value, ...)`` tuples built
from every group that holds those fields, and keeps it up to date as records arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ._identity import RESERVED_PREFIX

__all__ = ["FUNC_FIELD", "Index"]

#: Bookkeeping field holding the function name ("" or absent: matches any function).
FUNC_FIELD = "_stet_func"

Row = tuple[str, ...]


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
    def add_rows(self, header: Sequence[str], rows: Iterable[Sequence[str | None]]) -> None:
        """Add rows aligned with ``header``; ``None`` marks a field the row does not hold."""
        key_pos = [i for i, f in enumerate(header) if not f.startswith(RESERVED_PREFIX)]
        key_pos.sort(key=lambda i: header[i])
        names = tuple(header[i] for i in key_pos)
        func_pos = header.index(FUNC_FIELD) if FUNC_FIELD in header else -1
        positions = ([func_pos] if func_pos >= 0 else []) + key_pos
        intern = self._intern.setdefault
        full_group: list[Row] | None = None
        for row in rows:
            vals = [row[i] for i in positions]
            if func_pos < 0:
                vals.insert(0, "")
            elif vals[0] is None:
                vals[0] = ""
            if None in vals:
                present = [j for j in range(1, len(vals)) if vals[j] is not None]
                self._add(tuple(names[j - 1] for j in present),
                          (vals[0], *(vals[j] for j in present)))  # type: ignore[arg-type]
                continue
            row_t: Row = tuple(intern(v, v) for v in vals)  # type: ignore[arg-type]
            if full_group is None:
                full_group = self._group(names)
                feeds = self._feeds.get(names, [])
            full_group.append(row_t)
            for target, pos in feeds:
                target.add(row_t if pos is None else tuple(row_t[p] for p in pos))
            self.count += 1

    def add(self, record: Mapping[str, str]) -> None:
        """Add one record (a mapping of field name to canonical text)."""
        names = tuple(sorted(k for k in record if not k.startswith(RESERVED_PREFIX)))
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
