"""Parameter grids: lazy cartesian products of settings, combinable for any sweep shape.

``grid(alpha=[0.1, 0.5], seed=range(3))`` yields ``{'alpha': 0.1, 'seed': 0}``, ... (the
first axis varies slowest, like nested loops written in the same order). Grids combine:

- ``a + b`` (or ``a.chain(b, ...)``): every setting of ``a``, then every setting of ``b``
  (sweeps that are not rectangular: a different range of ``lr`` per model);
- ``a * b`` (or ``a.product(**axes)``): every setting of ``a`` merged with every setting
  of ``b`` (the same seeds for every model);
- ``a.where(pred)``: the settings for which ``pred(setting)`` is true.

Nothing is materialised: a grid is iterated afresh each time. Lists, tuples, ranges and
other collections can be iterated any number of times; a one-shot iterator (a generator)
is read once and remembered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any

__all__ = ["Grid", "grid"]

Setting = dict[str, Any]


class _Axis:
    """The values of one axis; a one-shot iterator is remembered as it is read."""

    __slots__ = ("_cache", "_source", "_values", "name")

    def __init__(self, name: str, values: Any) -> None:
        self.name = name
        self._cache: list[Any] | None = None
        self._source: Iterator[Any] | None = None
        if isinstance(values, (str, bytes, bytearray, Mapping)) or not isinstance(
            values, Iterable
        ):
            values = (values,)  # a single value: the axis is fixed
        if isinstance(values, Collection):
            self._values: Collection[Any] | None = values
        else:  # an iterator or generator: read it once, keep what was read
            self._values = None
            self._cache = []
            self._source = iter(values)

    def __iter__(self) -> Iterator[Any]:
        if self._values is not None:
            return iter(self._values)
        return self._replay()

    def _replay(self) -> Iterator[Any]:
        cache = self._cache
        assert cache is not None
        i = 0
        while True:
            if i < len(cache):
                yield cache[i]
                i += 1
                continue
            if self._source is None:
                return
            try:
                value = next(self._source)
            except StopIteration:
                self._source = None
                return
            cache.append(value)

    def length(self) -> int | None:
        if self._values is not None:
            return len(self._values)
        if self._source is None:
            assert self._cache is not None
            return len(self._cache)
        return None

    def materialise(self) -> tuple[Any, ...]:
        return tuple(self)


class Grid:
    """An iterable of settings (dicts of keyword arguments); see :func:`grid`."""

    def __iter__(self) -> Iterator[Setting]:
        raise NotImplementedError

    def _length(self) -> int | None:
        """The number of settings, if known without reading a generator to its end."""
        return None

    def __len__(self) -> int:
        n = self._length()
        if n is None:
            raise TypeError(
                f"{self!r} has no length: an axis is a one-shot iterator (a generator) that "
                f"has not been read to its end, or the grid is filtered with where(); "
                f"pass lists or ranges, or count with sum(1 for _ in grid)"
            )
        return n

    def __bool__(self) -> bool:
        n = self._length()
        if n is not None:
            return n > 0
        return next(iter(self), None) is not None

    def __add__(self, other: Iterable[Mapping[str, Any]]) -> Grid:
        return _Chain([self, _as_grid(other)])

    def __radd__(self, other: Iterable[Mapping[str, Any]]) -> Grid:
        return _Chain([_as_grid(other), self])

    def __mul__(self, other: Iterable[Mapping[str, Any]]) -> Grid:
        return _Product([self, _as_grid(other)])

    def __rmul__(self, other: Iterable[Mapping[str, Any]]) -> Grid:
        return _Product([_as_grid(other), self])

    def chain(self, *others: Iterable[Mapping[str, Any]]) -> Grid:
        """Every setting of this grid, then every setting of each of ``others``."""
        return _Chain([self, *map(_as_grid, others)])

    def product(self, **axes: Any) -> Grid:
        """Every setting of this grid combined with every combination of ``axes``."""
        return _Product([self, grid(**axes)])

    def where(self, predicate: Callable[[Setting], bool]) -> Grid:
        """The settings for which ``predicate(setting)`` is true."""
        return _Where(self, predicate)


def _as_grid(settings: Iterable[Mapping[str, Any]]) -> Grid:
    if isinstance(settings, Grid):
        return settings
    if isinstance(settings, Mapping):
        return _Listed([settings])  # one setting
    if isinstance(settings, (str, bytes)) or not isinstance(settings, Iterable):
        raise TypeError(
            f"a grid combines with grids, dicts and iterables of dicts, not {settings!r}"
        )
    return _Listed(settings)


class _Axes(Grid):
    """The cartesian product of named axes (the first axis varies slowest)."""

    def __init__(self, axes: dict[str, Any]) -> None:
        for name in axes:
            if not name.isidentifier():
                raise TypeError(f"grid axis {name!r} is not a valid parameter name")
        self._axes = [_Axis(name, values) for name, values in axes.items()]

    def __iter__(self) -> Iterator[Setting]:
        if not self._axes:
            yield {}
            return
        names = [a.name for a in self._axes]
        first, rest = self._axes[0], [a.materialise() for a in self._axes[1:]]
        for head in first:  # the slowest axis stays lazy (it may be long)
            for tail in itertools.product(*rest):
                yield dict(zip(names, (head, *tail), strict=True))

    def _length(self) -> int | None:
        n = 1
        for axis in self._axes:
            k = axis.length()
            if k is None:
                return None
            n *= k
        return n

    def __repr__(self) -> str:
        parts = []
        for a in self._axes:
            k = a.length()
            parts.append(f"{a.name}=<{k if k is not None else '?'} values>")
        return f"grid({', '.join(parts)})"


class _Listed(Grid):
    def __init__(self, settings: Iterable[Mapping[str, Any]]) -> None:
        self._axis = _Axis("settings", settings)

    def __iter__(self) -> Iterator[Setting]:
        for s in self._axis:
            if not isinstance(s, Mapping):
                raise TypeError(f"a setting must be a dict of keyword arguments, not {s!r}")
            yield dict(s)

    def _length(self) -> int | None:
        return self._axis.length()

    def __repr__(self) -> str:
        k = self._axis.length()
        return f"<{k if k is not None else '?'} settings>"


class _Chain(Grid):
    def __init__(self, parts: list[Grid]) -> None:
        self._parts: list[Grid] = []
        for p in parts:  # flatten (a + b) + c
            self._parts.extend(p._parts if isinstance(p, _Chain) else [p])

    def __iter__(self) -> Iterator[Setting]:
        for p in self._parts:
            yield from p

    def _length(self) -> int | None:
        total = 0
        for p in self._parts:
            n = p._length()
            if n is None:
                return None
            total += n
        return total

    def __repr__(self) -> str:
        return " + ".join(map(repr, self._parts))


class _Product(Grid):
    def __init__(self, parts: list[Grid]) -> None:
        self._parts: list[Grid] = []
        for p in parts:
            self._parts.extend(p._parts if isinstance(p, _Product) else [p])

    def __iter__(self) -> Iterator[Setting]:
        def rec(i: int, acc: Setting) -> Iterator[Setting]:
            if i == len(self._parts):
                yield dict(acc)
                return
            for s in self._parts[i]:
                clash = acc.keys() & s.keys()
                if clash:
                    raise ValueError(
                        f"grids multiplied with * share the parameter(s) "
                        f"{', '.join(sorted(clash))}; combine those with + instead"
                    )
                yield from rec(i + 1, {**acc, **s})

        return rec(0, {})

    def _length(self) -> int | None:
        n = 1
        for p in self._parts:
            k = p._length()
            if k is None:
                return None
            n *= k
        return n

    def __repr__(self) -> str:
        return " * ".join(f"({p!r})" if isinstance(p, _Chain) else repr(p)
                          for p in self._parts)


class _Where(Grid):
    def __init__(self, base: Grid, predicate: Callable[[Setting], bool]) -> None:
        self._base, self._predicate = base, predicate

    def __iter__(self) -> Iterator[Setting]:
        return (s for s in self._base if self._predicate(s))

    def __repr__(self) -> str:
        name = getattr(self._predicate, "__name__", "predicate")
        return f"{self._base!r}.where({name})"


def grid(**axes: Any) -> Grid:
    """The cartesian product of ``axes`` as settings (dicts of keyword arguments).

    Each axis is a list, tuple, range or any iterable of values; a string or other
    non-iterable value is a fixed setting (``model="resnet"``). The first axis varies
    slowest, as in nested ``for`` loops written in the same order. Nothing is built up
    front; ``len()`` works when every axis has a length.

    Grids combine into sweeps of any shape: ``+`` (or :meth:`Grid.chain`) concatenates,
    ``*`` (or :meth:`Grid.product`) takes the product of grids over different parameters,
    :meth:`Grid.where` filters::

        small = stet.grid(model="small", lr=[1e-3, 1e-2])
        big = stet.grid(model="big", lr=[1e-4])
        settings = (small + big) * stet.grid(seed=range(5))   # 15 settings

    Example:
        >>> list(grid(alpha=[0.1, 0.5], seed=range(2)))
        [{'alpha': 0.1, 'seed': 0}, {'alpha': 0.1, 'seed': 1}, {'alpha': 0.5, 'seed': 0}, \
{'alpha': 0.5, 'seed': 1}]
    """
    return _Axes(axes)
