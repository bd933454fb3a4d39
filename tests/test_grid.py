"""stet.grid: lazy cartesian products of settings, and their combinations."""

from __future__ import annotations

import itertools

import pytest

import stet


def test_product_order_first_axis_slowest() -> None:
    g = stet.grid(alpha=[0.1, 0.5], seed=range(3))
    assert list(g) == [
        {"alpha": 0.1, "seed": 0}, {"alpha": 0.1, "seed": 1}, {"alpha": 0.1, "seed": 2},
        {"alpha": 0.5, "seed": 0}, {"alpha": 0.5, "seed": 1}, {"alpha": 0.5, "seed": 2},
    ]
    assert len(g) == 6
    assert list(g) == list(g)  # iterated afresh, same every time


def test_fixed_values_and_empty_grids() -> None:
    g = stet.grid(model="resnet", lr=[1e-3, 1e-2], opts={"a": 1})
    assert list(g) == [{"model": "resnet", "lr": 1e-3, "opts": {"a": 1}},
                       {"model": "resnet", "lr": 1e-2, "opts": {"a": 1}}]
    assert len(g) == 2
    assert list(stet.grid()) == [{}]
    empty = stet.grid(alpha=[], seed=range(3))
    assert list(empty) == [] and len(empty) == 0 and not empty


def test_each_setting_is_a_fresh_dict() -> None:
    g = stet.grid(a=[1, 2])
    first = next(iter(g))
    first["a"] = 99
    assert list(g) == [{"a": 1}, {"a": 2}]


def test_generators_are_read_once_and_remembered() -> None:
    calls = []

    def seeds():
        for s in range(3):
            calls.append(s)
            yield s

    g = stet.grid(alpha=[1, 2], seed=seeds())
    with pytest.raises(TypeError, match="no length"):
        len(g)
    assert len(list(g)) == 6
    assert list(g) == list(stet.grid(alpha=[1, 2], seed=range(3)))
    assert calls == [0, 1, 2]  # the generator was read once
    assert len(g) == 6  # known once it was read to its end


def test_lazy_first_axis_may_be_infinite() -> None:
    g = stet.grid(seed=itertools.count(), alpha=[0.1, 0.2])
    assert list(itertools.islice(g, 5)) == [
        {"seed": 0, "alpha": 0.1}, {"seed": 0, "alpha": 0.2}, {"seed": 1, "alpha": 0.1},
        {"seed": 1, "alpha": 0.2}, {"seed": 2, "alpha": 0.1}]
    assert bool(g)


def test_plus_concatenates_for_non_rectangular_sweeps() -> None:
    small = stet.grid(model="small", lr=[1e-3, 1e-2])
    big = stet.grid(model="big", lr=[1e-4])
    g = small + big
    assert list(g) == [{"model": "small", "lr": 1e-3}, {"model": "small", "lr": 1e-2},
                       {"model": "big", "lr": 1e-4}]
    assert len(g) == 3
    assert len(small.chain(big, [{"model": "huge", "lr": 1.0}])) == 4
    assert list([{"x": 1}] + stet.grid(x=[2])) == [{"x": 1}, {"x": 2}]  # noqa: RUF005
    assert list(stet.grid(x=[2]) + {"x": 3}) == [{"x": 2}, {"x": 3}]


def test_times_is_the_product_of_grids() -> None:
    models = stet.grid(model="small", lr=[1e-3, 1e-2]) + stet.grid(model="big", lr=[1e-4])
    g = models * stet.grid(seed=range(2))
    assert len(g) == 6
    assert list(g)[:2] == [{"model": "small", "lr": 1e-3, "seed": 0},
                           {"model": "small", "lr": 1e-3, "seed": 1}]
    assert list(models.product(seed=range(2))) == list(g)
    with pytest.raises(ValueError, match="share the parameter"):
        list(stet.grid(a=[1]) * stet.grid(a=[2]))


def test_where_filters() -> None:
    g = stet.grid(a=range(4), b=range(4)).where(lambda s: s["a"] < s["b"])
    assert len(list(g)) == 6
    with pytest.raises(TypeError, match="no length"):
        len(g)
    assert all(s["a"] < s["b"] for s in g)


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="not a valid parameter name"):
        stet.grid(**{"a b": [1]})
    with pytest.raises(TypeError, match="combines with"):
        stet.grid(a=[1]) + 5  # type: ignore[operator]
    with pytest.raises(TypeError, match="dict of keyword arguments"):
        list(stet.grid(a=[1]) + [1, 2])  # type: ignore[list-item]  # noqa: RUF005


def test_repr_is_readable() -> None:
    assert repr(stet.grid(a=[1, 2], b=range(3))) == "grid(a=<2 values>, b=<3 values>)"
    assert "+" in repr(stet.grid(a=[1]) + stet.grid(a=[2]))
