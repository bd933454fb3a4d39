"""Binder without inspect: a plain function's parameters read from its code object, and
the fast path of ``bind``, give what binding through ``inspect.signature`` gives.

The reference is a Binder built through inspect (``is_plain_function`` patched to say no)
and bound by its general path (the arguments bound to a dict, then each field's text):
the same fields, texts, mappings and errors, word for word, for every callable kind.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stet import _identity
from stet._identity import Binder, is_coroutine_function, is_plain_function

# --------------------------------------------------------------------------------------
# helpers


@contextmanager
def _through_inspect() -> Iterator[None]:
    with mock.patch.object(_identity, "is_plain_function", lambda func: False):
        yield


def _outcome(call: Callable[[], Any]) -> Any:
    """What ``call`` returns, or the type and message of what it raises."""
    try:
        return ("ok", call())
    except Exception as exc:  # (any error must be the same)
        return ("raised", type(exc), str(exc))


def _bound(binder: Binder, args: tuple[Any, ...], kwargs: dict[str, Any],
           general: bool) -> Any:
    mappings: dict[str, Any] = {}
    if general:
        result = binder._bind(args, dict(kwargs), mappings)
    else:
        result = binder.bind(args, dict(kwargs), mappings)
    return result, mappings, binder.sorted_view(*result)


def _assert_binds_as_inspect(func: Callable[..., Any], key: list[str] | None,
                             calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
    with _through_inspect():
        ref = _outcome(lambda: Binder(func, key))
    new = _outcome(lambda: Binder(func, key))
    assert new[:1] == ref[:1]
    if ref[0] == "raised":
        assert new == ref
        return
    ref_binder: Binder = ref[1]
    binder: Binder = new[1]
    assert binder.signature == ref_binder.signature
    assert str(binder.signature) == str(ref_binder.signature)
    for args, kwargs in calls:
        expected = _outcome(lambda a=args, k=kwargs: _bound(ref_binder, a, k, general=True))
        assert _outcome(lambda a=args, k=kwargs: _bound(binder, a, k, general=False)) \
            == expected, (args, kwargs)
        # and twice: nothing a call leaves behind changes the next one
        assert _outcome(lambda a=args, k=kwargs: _bound(binder, a, k, general=False)) \
            == expected, (args, kwargs)


#: Values of every kind the hot path treats apart: scalars it writes inline, and values
#: it leaves to the general path (large ints, subclasses, containers, mappings).
_VALUES: list[Any] = [0.5, 3, "s", None, True, -0.0, math.inf, 10**20, -(10**18),
                      10**18 - 1, [1, 2], {"k": 1}, (1,), type("S", (str,), {})("t")]

_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {}), ((1,), {}), ((1, 2), {}), ((1, 2, 3), {}), ((1, 2, 3, 4, 5), {}),
    ((0.5, "x"), {}), ((10**20, [1]), {}), (({"k": 1}, None), {}),
    ((), {"a": 1}), ((), {"a": 1, "b": 2}), ((1,), {"b": 2}), ((1,), {"a": 2}),
    ((1,), {"d": 4}), ((1,), {"b": 2, "d": 4, "e": 5}), ((1,), {"x": 1}),
    ((1,), {"_stet_x": 1}), ((1, 2), {"c": 3.5, "d": "t"}), ((), {"self": 1, "a": 2}),
    ((1,), {"b": {"k": [1, 2]}}), ((1,), {"b": 10**19}),
]

# --------------------------------------------------------------------------------------
# callables of every kind


def _everything(a, b=2, /, c=3, *args, d, e=5, **kw):  # type: ignore[no-untyped-def]
    pass


def _annotated(alpha: float, seed: int, n_iter: int = 100) -> str:
    return ""


def _positional_only(a: int, b: int = 2, /) -> None:
    pass


def _keyword_only(*, a: int, b: str = "b") -> None:
    pass


def _var_only(*args: Any, **kwargs: Any) -> None:
    pass


def _self_first(self: Any, lr: float = 0.1) -> None:
    pass


def _nested() -> Callable[..., Any]:
    scale = 2

    def inner(a: int, b: float = 0.5 * scale) -> None:
        pass

    return inner


async def _coroutine(a: int, b: int = 2) -> None:
    pass


@functools.wraps(_annotated)
def _wrapped(*args: Any, **kwargs: Any) -> Any:
    return _annotated(*args, **kwargs)


def _with_signature(*args: Any, **kwargs: Any) -> None:
    pass


_with_signature.__signature__ = inspect.signature(_annotated)  # type: ignore[attr-defined]


def _with_text_signature(*args: Any) -> None:
    pass


_with_text_signature.__text_signature__ = "(a, b=2)"  # type: ignore[attr-defined]


def _too_many_defaults(a: int) -> None:
    pass


_too_many_defaults.__defaults__ = (1, 2, 3)


class _Callable:
    def __call__(self, a: int, b: int = 2) -> None:
        pass

    def method(self, a: int, *, b: int = 2) -> None:
        pass


_CALLABLES: dict[str, Callable[..., Any]] = {
    "all kinds": _everything,
    "annotated": _annotated,
    "positional-only": _positional_only,
    "keyword-only": _keyword_only,
    "*args and **kwargs only": _var_only,
    "self first": _self_first,
    "lambda": lambda a, b=1, *c: None,
    "nested function": _nested(),
    "async def": _coroutine,
    "partial, positional": functools.partial(_everything, 1),
    "partial, keyword": functools.partial(_annotated, seed=3),
    "functools.wraps": _wrapped,
    "callable object": _Callable(),
    "bound method": _Callable().method,
    "function with __signature__": _with_signature,
    "function with __text_signature__": _with_text_signature,
    "more defaults than parameters": _too_many_defaults,
    "class": _Callable,
    "builtin": len,
}

_KEYS: list[list[str] | None] = [None, ["a"], ["b", "a"], ["c", "d"], ["alpha", "seed"],
                                 ["seed", "n_iter"], ["kw.x"], ["a.k"], ["nope"], []]


@pytest.mark.parametrize("key", _KEYS, ids=str)
@pytest.mark.parametrize("name", sorted(_CALLABLES))
def test_every_kind_of_callable_binds_as_inspect_binds_it(name: str,
                                                          key: list[str] | None) -> None:
    _assert_binds_as_inspect(_CALLABLES[name], key, _CALLS)


def test_plain_functions_are_those_whose_code_object_inspect_reads() -> None:
    plain = {n for n, f in _CALLABLES.items() if is_plain_function(f)}
    assert plain == {"all kinds", "annotated", "positional-only", "keyword-only",
                     "*args and **kwargs only", "self first", "lambda", "nested function",
                     "async def", "more defaults than parameters"}
    # read from the code object, inspect not asked (it falls back for too many defaults)
    built = {n for n in plain if Binder(_CALLABLES[n], None)._sig is None}
    assert built == plain - {"more defaults than parameters"}


@pytest.mark.parametrize("name", sorted(_CALLABLES))
def test_coroutine_functions_are_told_as_inspect_tells_them(name: str) -> None:
    func = _CALLABLES[name]
    assert is_coroutine_function(func) == inspect.iscoroutinefunction(func)


def test_a_wrapped_or_partial_coroutine_function_is_one() -> None:
    @functools.wraps(_coroutine)
    async def wrapper(*args: Any) -> None:
        pass

    assert is_coroutine_function(functools.partial(_coroutine, 1))
    assert is_coroutine_function(wrapper)
    assert not is_coroutine_function(functools.partial(_annotated, 1))


def test_the_signature_of_a_plain_function_keeps_its_annotations_and_defaults() -> None:
    binder = Binder(_annotated, None)
    assert binder.signature == inspect.signature(_annotated)
    # (the annotations are text here: this module imports annotations from __future__)
    assert str(binder.signature) == "(alpha: 'float', seed: 'int', n_iter: 'int' = 100) -> 'str'"


def test_a_key_naming_no_parameter_prints_the_signature_as_inspect_does() -> None:
    text = re.escape(f"_annotated{inspect.signature(_annotated)}; parameters are: alpha, ")
    with pytest.raises(TypeError, match=text):
        Binder(_annotated, ["gamma"])


# --------------------------------------------------------------------------------------
# hypothesis: generated signatures and calls

_NAMES = ["a", "b", "c", "self", "d"]


@st.composite
def _functions(draw: st.DrawFn) -> Callable[..., Any]:
    """A function of up to five parameters of every kind, with scalar defaults."""
    names = draw(st.lists(st.sampled_from(_NAMES), unique=True, max_size=5))
    n_pos = draw(st.integers(0, len(names)))
    n_posonly = draw(st.integers(0, n_pos))
    n_defaults = draw(st.integers(0, n_pos))
    varargs = draw(st.booleans())
    varkw = draw(st.booleans())
    defaults = draw(st.lists(st.sampled_from(_VALUES[:10]), min_size=len(names),
                             max_size=len(names)))
    kw_default = draw(st.lists(st.booleans(), min_size=len(names), max_size=len(names)))
    parts: list[str] = []
    env: dict[str, Any] = {}
    for i, name in enumerate(names[:n_pos]):
        if i >= n_pos - n_defaults:
            env[f"_{name}"] = defaults[i]
            parts.append(f"{name}=_{name}")
        else:
            parts.append(name)
        if i == n_posonly - 1:
            parts.append("/")
    if varargs:
        parts.append("*more")
    elif names[n_pos:]:
        parts.append("*")
    for i, name in enumerate(names[n_pos:], start=n_pos):
        if kw_default[i]:
            env[f"_{name}"] = defaults[i]
            parts.append(f"{name}=_{name}")
        else:
            parts.append(name)
    if varkw:
        parts.append("**extra")
    exec(f"def f({', '.join(parts)}):\n    pass", env)  # (source made by the test)
    func: Callable[..., Any] = env["f"]
    return func


_ARG_VALUES = st.sampled_from(_VALUES)


@settings(max_examples=300, deadline=None)
@given(func=_functions(),
       key=st.none() | st.lists(st.sampled_from([*_NAMES, "more", "extra", "zz"]),
                                unique=True, max_size=3),
       calls=st.lists(st.tuples(st.lists(_ARG_VALUES, max_size=6).map(tuple),
                                st.dictionaries(st.sampled_from([*_NAMES, "zz", "_stet_x"]),
                                                _ARG_VALUES, max_size=4)),
                      max_size=6))
def test_generated_signatures_bind_as_inspect_binds_them(
        func: Callable[..., Any], key: list[str] | None,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
    _assert_binds_as_inspect(func, key, calls)
