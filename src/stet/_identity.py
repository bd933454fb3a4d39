"""Run identity: canonical text of values and of bound calls.

Pure functions, no I/O. A run is identified by the function name and the canonical text
of its key fields; two calls are the same run exactly when those texts are equal.
"""

from __future__ import annotations

import enum
import math
import operator
import re
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._keypath import KeyPathError, PerRun, is_omegaconf, is_per_run, plain, split_path, walk
from ._schema import RESERVED_PREFIX

if TYPE_CHECKING:
    import inspect

__all__ = ["Binder", "PerRunValueError", "UnstableValueError", "canonical", "format_call",
           "json_text"]


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_BIG = 10**18  # ints beyond take the slow path (Python limits int-to-text conversion)


class UnstableValueError(TypeError):
    """A value has no text that is the same in every process."""


class PerRunValueError(UnstableValueError):
    """A keyed config value comes from an interpolation that differs from run to run
    (``${hydra:...}``, ``${now:...}``)."""


def canonical(value: Any) -> str:
    """Return the canonical text of ``value``: what stet stores and compares.

    Scalars give ``str(value)`` (``0.1``, ``True``, ``None``, ``3``); NumPy scalars give
    what the equal Python scalar gives; containers are ordered canonically; arrays give a
    content digest. Raises :class:`UnstableValueError` for values whose text would hold a
    memory address.
    """
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is bool or t is float or value is None:
        return repr(value)
    try:
        return _canonical_slow(value, nested=False)
    except RecursionError:
        raise UnstableValueError(_TOO_DEEP) from None


#: Why a container nested deeper than Python's recursion limit has no canonical text.
_TOO_DEEP = "it is nested too deeply (containers within containers) to have a canonical text"


def _canonical_slow(value: Any, *, nested: bool) -> str:
    if isinstance(value, str):
        return repr(str.__str__(value)) if nested else str.__str__(value)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    if isinstance(value, int):
        try:
            return int.__repr__(value)
        except ValueError:  # beyond Python's limit on int-to-decimal conversion
            return hex(value)
    if isinstance(value, float):
        return float.__repr__(value)
    hook = getattr(type(value), "__stet_key__", None)
    if hook is not None:
        return _canonical_slow(hook(value), nested=nested)
    if _is_named_callable(value):
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", "")
        if name and "<lambda>" not in name:
            return str(name)
        raise UnstableValueError("a lambda has no stable name")
    module = type(value).__module__
    if is_omegaconf(value):  # DictConfig, ListConfig: as the plain container
        try:
            return _canonical_slow(plain(value), nested=nested)
        except PerRun as found:
            raise UnstableValueError(f"{found}, which differs from run to run") from None
    if module == "numpy" or module.startswith("numpy."):
        return _canonical_numpy(value, nested=nested)
    if module == "pandas" or module.startswith("pandas."):
        return _canonical_pandas(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        inner = ", ".join(
            f"{f}={_canonical_slow(v, nested=True)}"
            for f, v in zip(value._fields, value, strict=True)
        )
        return f"{type(value).__qualname__}({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(_canonical_slow(v, nested=True) for v in value) + "]"
    if isinstance(value, tuple):
        items = [_canonical_slow(v, nested=True) for v in value]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if isinstance(value, Mapping):
        pairs = sorted(
            (_canonical_slow(k, nested=True), _canonical_slow(v, nested=True))
            for k, v in value.items()
        )
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    if isinstance(value, (set, frozenset)):
        items = sorted(_canonical_slow(v, nested=True) for v in value)
        body = "{" + ", ".join(items) + "}"
        if isinstance(value, frozenset):
            return f"frozenset({body})" if items else "frozenset()"
        return body if items else "set()"
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    # A path or a date exists only once its module is imported: looked up, not imported
    # here, so that ``import stet`` does not load pathlib and datetime (5-6 ms).
    pathlib = sys.modules.get("pathlib")
    if pathlib is not None and isinstance(value, pathlib.PurePath):
        text = value.as_posix()
        return repr(text) if nested else text
    _dt = sys.modules.get("datetime")
    if _dt is not None and isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        text = value.isoformat()
        return repr(text) if nested else text
    if _dt is not None and isinstance(value, _dt.timedelta):
        return str(value)
    if isinstance(value, complex) or type(value).__module__ in (
        "decimal", "_decimal", "fractions", "uuid",
    ):
        return str(value)
    if hasattr(type(value), "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        inner = ", ".join(
            f"{f.name}={_canonical_slow(getattr(value, f.name), nested=True)}"
            for f in dataclasses.fields(value)
        )
        return f"{type(value).__qualname__}({inner})"
    text = str(value)
    if _ADDRESS.search(text):
        raise UnstableValueError(f"its text {text!r} holds a memory address")
    return text


def _is_named_callable(value: Any) -> bool:
    """Functions, classes, builtins and NumPy's function objects (ufuncs, dispatchers)."""
    # (inspect's isbuiltin, ismodule, isclass, isfunction, ismethod, spelt out: inspect
    # is not imported by ``import stet``, see Binder)
    if isinstance(value, types.BuiltinFunctionType):
        owner = getattr(value, "__self__", None)
        if owner is not None and not isinstance(owner, (types.ModuleType, type)):
            # a method bound to an object (e.g. arr.sum): its identity is the object's
            raise UnstableValueError("it is a method bound to an object")
        return True
    if isinstance(value, (types.FunctionType, type)):
        return True
    if isinstance(value, types.MethodType):
        return False  # bound to an instance: its identity is the instance's
    kind = type(value)
    return callable(value) and kind.__module__.startswith("numpy") and kind.__name__ in (
        "ufunc", "_ArrayFunctionDispatcher", "vectorize"
    )


def _canonical_numpy(value: Any, *, nested: bool) -> str:
    import hashlib  # (with numpy; hashlib loads OpenSSL, 3-4 ms at import)

    import numpy as np

    if isinstance(value, np.generic):
        item = value.item()
        if isinstance(item, np.generic):  # longdouble, clongdouble: no Python equivalent
            if isinstance(item, np.floating) and float(item) == item:
                item = float(item)
            elif isinstance(item, np.complexfloating) and complex(item) == item:
                item = complex(item)
            else:
                return str(item)
        return _canonical_slow(item, nested=nested)
    if isinstance(value, np.ndarray):
        dtype = value.dtype.newbyteorder("=") if value.dtype.byteorder == ">" else value.dtype
        arr = np.ascontiguousarray(value, dtype=dtype)
        if dtype.hasobject:
            payload = _canonical_slow(value.tolist(), nested=True).encode()
        else:
            payload = arr.tobytes()
        h = hashlib.sha256(payload)
        kind = "ndarray"
        if isinstance(value, np.ma.MaskedArray):
            kind = "MaskedArray"
            h.update(np.ascontiguousarray(np.ma.getmaskarray(value)).tobytes())
        dt = str(dtype.descr) if dtype.names else dtype.str
        return f"{kind}(dtype={dt}, shape={tuple(value.shape)}, sha256={h.hexdigest()[:32]})"
    return _canonical_generic(value)


def _canonical_pandas(value: Any) -> str:
    import hashlib

    import pandas as pd

    if isinstance(value, (pd.DataFrame, pd.Series, pd.Index)):
        hashes = pd.util.hash_pandas_object(value, index=True).to_numpy()
        h = hashlib.sha256(hashes.tobytes())
        dtypes = value.dtypes if isinstance(value, pd.DataFrame) else value.dtype
        h.update(repr(dtypes).encode())
        if isinstance(value, pd.DataFrame):
            h.update(_canonical_slow(list(value.columns), nested=True).encode())
        kind = type(value).__name__
        return f"{kind}(shape={tuple(value.shape)}, sha256={h.hexdigest()[:32]})"
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return _canonical_generic(value)


def _canonical_generic(value: Any) -> str:
    text = str(value)
    if _ADDRESS.search(text) or "..." in text:
        raise UnstableValueError(f"its text {text!r} is not a stable, complete description")
    return text


def json_form(value: Any) -> Any:
    """``value`` as plain JSON data (the record's JSON copy of mapping arguments):
    mappings with text keys, lists, numbers, text, booleans, null. What JSON cannot hold
    (``nan``, a path, an enum) is its canonical text. ``ValueError`` if two keys of a
    mapping have the same text."""
    t = type(value)
    if value is None or t is str or t is bool or t is int:
        return value
    if t is float:
        return value if math.isfinite(value) else repr(value)
    if is_omegaconf(value):
        return json_form(plain(value))
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = k if isinstance(k, str) else canonical(k)
            if name in out:
                raise ValueError(f"two keys have the text {name!r}")
            out[name] = json_form(v)
        return out
    if isinstance(value, (list, tuple)):
        return [json_form(v) for v in value]
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        item = value.item()  # a NumPy scalar: the equal Python number
        if type(item) in (int, float, bool):
            return json_form(item)
    return canonical(value)


def json_text(mappings: Mapping[str, Any]) -> str | None:
    """The JSON text of the mapping arguments ``mappings`` (field -> value): an object
    with sorted keys, no spaces, numbers as Python writes them (``0.1``, ``1.0``);
    ``None`` if one cannot be written (it is only a copy: the key text is the identity)."""
    import json  # (loaded with the stores by then; not by ``import stet``: 1-2 ms)

    try:
        data = {f: json_form(v) for f, v in mappings.items()}
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None


def format_call(name: str, fields: Sequence[str], texts: Sequence[str]) -> str:
    """``f(alpha=0.1, seed=1)``: how a run is shown in messages."""
    return f"{name}(" + ", ".join(f"{f}={t}" for f, t in zip(fields, texts, strict=True)) + ")"


#: Parameter kinds, numbered as ``inspect.Parameter.kind`` numbers them.
_POSITIONAL_ONLY, _POSITIONAL_OR_KEYWORD, _VAR_POSITIONAL, _KEYWORD_ONLY, _VAR_KEYWORD = range(5)
_CO_VARARGS, _CO_VARKEYWORDS, _CO_COROUTINE = 0x04, 0x08, 0x80


class _Empty:
    """No default (``inspect.Parameter.empty``, without importing inspect)."""


_EMPTY: Any = _Empty

#: Attributes of a function that ``inspect.signature`` follows or reads instead of its
#: code object: a function bearing one is bound through inspect.
_SIGNATURE_HOOKS = ("__wrapped__", "__signature__", "__text_signature__", "_partialmethod",
                    "__partialmethod__")

#: (name, kind, default or _EMPTY): a parameter as Binder keeps it.
_Param = tuple[str, int, Any]


def is_plain_function(func: Any) -> bool:
    """A function defined with ``def`` or ``lambda`` whose signature is its code object's:
    no ``__wrapped__`` (functools.wraps), ``__signature__`` or other attribute that
    ``inspect.signature`` would follow."""
    return type(func) is types.FunctionType and not any(
        hasattr(func, a) for a in _SIGNATURE_HOOKS)


def is_coroutine_function(func: Any) -> bool:
    """``inspect.iscoroutinefunction(func)``, read from a plain function's code object
    without importing inspect; inspect answers for anything else (it unwraps partials
    and methods, and honours ``inspect.markcoroutinefunction``)."""
    if is_plain_function(func) and not hasattr(func, "_is_coroutine_marker"):
        return bool(func.__code__.co_flags & _CO_COROUTINE)
    import inspect

    return inspect.iscoroutinefunction(func)


def _code_parameters(func: types.FunctionType) -> list[_Param] | None:
    """The parameters ``inspect.signature`` reads from a plain function's code object,
    defaults and keyword defaults, in its order; ``None`` for a code object it would
    treat differently (names that are not identifiers, more defaults than parameters)."""
    code = func.__code__
    n_pos, n_kw, names = code.co_argcount, code.co_kwonlyargcount, code.co_varnames
    n_posonly = code.co_posonlyargcount
    defaults = func.__defaults__ or ()
    kwdefaults = func.__kwdefaults__ or {}
    first_default = n_pos - len(defaults)
    if first_default < 0:
        return None
    params: list[_Param] = [
        (names[i], _POSITIONAL_ONLY if i < n_posonly else _POSITIONAL_OR_KEYWORD,
         defaults[i - first_default] if i >= first_default else _EMPTY)
        for i in range(n_pos)
    ]
    index = n_pos + n_kw
    if code.co_flags & _CO_VARARGS:
        params.append((names[index], _VAR_POSITIONAL, _EMPTY))
        index += 1
    params.extend((n, _KEYWORD_ONLY, kwdefaults.get(n, _EMPTY))
                  for n in names[n_pos:n_pos + n_kw])
    if code.co_flags & _CO_VARKEYWORDS:
        params.append((names[index], _VAR_KEYWORD, _EMPTY))
    import keyword  # (loaded with collections, by ``import stet``)

    if not all(n.isidentifier() and not keyword.iskeyword(n) for n, _, _ in params):
        return None  # (inspect renames or refuses them)
    return params


class Binder:
    """Turns a call's arguments into its key fields and their canonical texts.

    Built once per decorated function; :meth:`bind` is the per-call hot path.
    """

    def __init__(self, func: Callable[..., Any], key: Sequence[str] | None) -> None:
        self._func = func
        params = _code_parameters(func) if is_plain_function(func) else None  # type: ignore[arg-type]
        if params is None:
            # inspect is imported for what is not a plain function (partials, callable
            # objects, wrapped functions), not by ``import stet`` (7-9 ms with ast, dis).
            import inspect

            sig = inspect.signature(func)
            self._sig: inspect.Signature | None = sig
            params = [(p.name, int(p.kind), _EMPTY if p.default is p.empty else p.default)
                      for p in sig.parameters.values()]
            self._annotations: dict[str, Any] = {}
        else:
            self._sig = None  # made from the parameters when asked for (messages, **kwargs)
            self._annotations = dict(func.__annotations__)
        self._params = params
        self._var_kw = any(kind == _VAR_KEYWORD for _, kind, _ in params)
        #: Key fields that are paths into an argument: field -> (argument, keys within).
        self._paths: dict[str, tuple[str, tuple[str, ...]]] = {}
        names = [n for n, kind, _ in params if kind != _VAR_KEYWORD]
        if key is not None:
            if isinstance(key, str):
                raise TypeError(
                    f"key= must be a list of parameter names, not the string {key!r}; "
                    f"write key=[{key!r}]"
                )
            key = list(key)
            for k in key:
                if not isinstance(k, str):
                    raise TypeError(f"key= holds {k!r}, which is not a parameter name")
                if k.startswith(RESERVED_PREFIX):
                    raise TypeError(f"key field {k!r}: names starting with {RESERVED_PREFIX!r} "
                                    "are reserved for stet's bookkeeping")
                try:
                    path = split_path(k)
                except ValueError as exc:
                    raise TypeError(f"key= holds {k!r}: {exc}") from None
                if path is not None:  # "cfg.opt.lr": a value inside the argument cfg
                    if path[0] not in names and not self._var_kw:
                        raise TypeError(
                            f"key= names {k!r}, a path into {path[0]!r}, which is not a "
                            f"parameter of {func.__qualname__}{self.signature}; parameters "
                            f"are: {', '.join(names)}"
                        )
                    self._paths[k] = path
                elif k not in names and not self._var_kw:
                    raise TypeError(
                        f"key= names {k!r}, which is not a parameter of "
                        f"{func.__qualname__}{self.signature}; parameters are: "
                        f"{', '.join(names)}"
                    )
            if len(set(key)) != len(key):
                raise TypeError(f"key= lists a name twice: {key}")
            self.fields: tuple[str, ...] | None = tuple(key)
        else:
            skip = {params[0][0]} if params and params[0][0] in ("self", "cls") else set()
            for n, _, _ in params:
                if n.startswith(RESERVED_PREFIX):
                    raise TypeError(
                        f"parameter {n!r} of {func.__qualname__}: names starting with "
                        f"{RESERVED_PREFIX!r} are reserved; leave it out with key=[...]"
                    )
            self.fields = None
            self._default_fields = tuple(n for n in names if n not in skip)
        # Fast path for the common signature: positional-or-keyword parameters only.
        self._simple = all(kind == _POSITIONAL_OR_KEYWORD for _, kind, _ in params)
        self._names = tuple(names)
        self._name_set = frozenset(names)
        self._defaults = {n: d for n, _, d in params if d is not _EMPTY}
        self._required = frozenset(
            n for n, kind, d in params
            if d is _EMPTY and kind in (_POSITIONAL_ONLY, _POSITIONAL_OR_KEYWORD, _KEYWORD_ONLY)
        )
        self._func_name = func.__qualname__
        # Cache of sorted-field orderings keyed by the call's field tuple.
        self._order: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[Any], Any] | None]]
        self._order = {}
        # The fields every call has unless **kwargs adds some: their sorted view is made
        # once, here, and found by identity in sorted_view.
        self._fixed = self.fields if self.fields is not None else (
            None if self._var_kw else self._default_fields)
        self._fixed_view = None if self._fixed is None else _ordering(self._fixed)
        self._fast_plan()

    def _fast_plan(self) -> None:
        """What :meth:`bind` needs to read the key fields straight from a call's arguments,
        for a signature of positional-or-keyword parameters and key fields that are
        parameters (not paths): no dict of arguments is built."""
        self._slots: tuple[tuple[int, str, str | None], ...] | None = None
        if not self._simple or self._paths or self._fixed is None:
            return
        index = {n: i for i, n in enumerate(self._names)}
        #: (position, name, text of the default or None) of each key field, in key order:
        #: the text of a default of a common scalar type is made once, here.
        self._slots = tuple((index[f], f, _scalar_text(self._defaults.get(f, _EMPTY)))
                            for f in self._fixed)
        self._index = index
        self._n_names = len(self._names)
        required_at = [i for i, n in enumerate(self._names) if n in self._required]
        #: How many positional arguments a call must pass to need no keyword argument.
        self._n_lead = max(required_at, default=-1) + 1
        #: The parameters without default after the first n, for n = 0 .. all.
        self._required_from = tuple(
            frozenset(self._names[i] for i in required_at if i >= n)
            for n in range(self._n_names + 1))

    def _fits(self, n: int, kwargs: dict[str, Any]) -> bool:
        """Whether ``n`` positional arguments and ``kwargs`` bind without error (the
        signature's parameters all positional-or-keyword)."""
        if n > self._n_names:
            return False
        index = self._index
        for k in kwargs:
            i = index.get(k)
            if i is None or i < n:
                return False
        return self._required_from[n] <= kwargs.keys()

    @property
    def signature(self) -> inspect.Signature:
        """The function's signature, as ``inspect.signature`` gives it (made on first use:
        for a plain function, only messages and ``**kwargs`` need it)."""
        sig = self._sig
        if sig is None:
            import inspect

            p = inspect.Parameter
            kinds = (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL,
                     p.KEYWORD_ONLY, p.VAR_KEYWORD)
            ann = self._annotations
            sig = self._sig = inspect.Signature(
                [p(n, kinds[kind], default=p.empty if d is _EMPTY else d,
                   annotation=ann.get(n, p.empty)) for n, kind, d in self._params],
                return_annotation=ann.get("return", inspect.Signature.empty),
            )
        return sig

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Bind a call to parameter names with defaults applied; ``**kwargs`` flattened."""
        if self._simple and len(args) <= len(self._names):
            values = dict(self._defaults)
            values.update(zip(self._names, args, strict=False))
            if kwargs:
                for k, v in kwargs.items():
                    if k not in self._name_set or k in self._names[: len(args)]:
                        return self._slow_arguments(args, kwargs)
                    values[k] = v
            if len(values) == len(self._names):
                return values
        return self._slow_arguments(args, kwargs)

    def _slow_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self.signature.bind(*args, **kwargs)  # raises the usual TypeError
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            param = self.signature.parameters[name]
            if param.kind is param.VAR_KEYWORD:
                for k in sorted(value):
                    if k.startswith(RESERVED_PREFIX):
                        raise TypeError(f"keyword argument {k!r}: names starting with "
                                        f"{RESERVED_PREFIX!r} are reserved for stet")
                    out[k] = value[k]
            else:
                out[name] = value
        return out

    def bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any],
        mappings: dict[str, Any] | None = None,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Return the call's key fields and their canonical texts, in key order.

        Given ``mappings``, the key fields whose values are mappings (dicts, configs) are
        put in it (field -> the plain value), for the record's JSON copy of them.
        """
        slots = self._slots
        if slots is not None:
            # The hot path: each key field read from the call's arguments, texts made for
            # the common scalars; anything else (an error, a value of another type) is
            # left to the general path below, which gives the same results.
            n = len(args)
            if self._n_lead <= n <= self._n_names if not kwargs else self._fits(n, kwargs):
                texts: list[str] = []
                add = texts.append
                for i, name, default_text in slots:
                    if i < n:
                        v = args[i]
                    elif name in kwargs:
                        v = kwargs[name]
                    elif default_text is not None:
                        add(default_text)
                        continue
                    else:
                        break
                    t = type(v)
                    if t is str:
                        add(v)
                    elif (t is float or (t is int and -_BIG < v < _BIG) or t is bool
                          or v is None):
                        add(repr(v))
                    else:
                        break
                else:
                    return self._fixed, tuple(texts)  # type: ignore[return-value]
        return self._bind(args, kwargs, mappings)

    def _bind(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], mappings: dict[str, Any] | None,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        values = self.arguments(args, kwargs)
        paths = self._paths
        if self.fields is not None:
            fields = self.fields
            if self._var_kw and any((paths[f][0] if f in paths else f) not in values
                                    for f in fields):
                missing = [f for f in fields if (paths[f][0] if f in paths else f)
                           not in values]
                raise TypeError(
                    f"{self._func_name}: key field(s) {', '.join(map(repr, missing))} were "
                    f"not passed; a key field taken by **kwargs must be given on every call"
                )
        else:
            fields = self._default_fields
            if len(values) != len(fields):
                extra = tuple(k for k in values if k not in self._name_set)
                fields = tuple(f for f in fields if f in values) + extra
        texts = []
        for f in fields:
            v = values[f] if f not in paths else self._at_path(values, f)
            t = type(v)
            if t is str:
                texts.append(v)
            elif t is float or t is bool or v is None or (t is int and -_BIG < v < _BIG):
                texts.append(repr(v))
            else:
                try:
                    try:
                        if is_omegaconf(v):
                            v = plain(v)
                        if mappings is not None and isinstance(v, Mapping):
                            mappings[f] = v
                        texts.append(_canonical_slow(v, nested=False))
                    except RecursionError:
                        raise UnstableValueError(_TOO_DEEP) from None
                except PerRun as found:
                    raise self._per_run(f, found.path, found.source, values) from None
                except KeyPathError as exc:
                    raise KeyPathError(f"{self._func_name}: key field {f!r}: {exc}") from None
                except UnstableValueError as exc:
                    raise UnstableValueError(
                        f"{self._func_name}: parameter {f!r} = {_short(v)} has no stable text "
                        f"({exc}), so stet cannot tell whether this run is done. Leave it out "
                        f"of the identity with key=[...] (listing the parameters that identify "
                        f"a run), or give its class a __stet_key__(self) method returning a "
                        f"stable value (e.g. a tuple of its settings)."
                    ) from None
        return fields, tuple(texts)

    def _at_path(self, values: dict[str, Any], field: str) -> Any:
        """The value a dotted key field names inside its argument."""
        head, parts = self._paths[field]
        try:
            return walk(values[head], head, parts)
        except PerRun as found:
            raise self._per_run(head, found.path, found.source, values) from None
        except KeyPathError as exc:
            raise KeyPathError(
                f"{self._func_name}: {exc}, so this call's run cannot be identified. Pass "
                f"a {head} that holds it, or leave {field!r} out of key=[...]"
            ) from None

    def _per_run(self, field: str, path: tuple[str, ...], source: str,
                 values: dict[str, Any]) -> PerRunValueError:
        """The error for a keyed value made by a per-run interpolation."""
        name = ".".join((field, *path))
        head = self._paths[field][0] if field in self._paths else field
        arg = values.get(head)
        offending = [*name.split("."), ""][1]
        others = ([f"{head}.{k}" for k in arg if str(k) != offending
                   and not (is_omegaconf(arg) and is_per_run(arg, k))][:4]
                  if isinstance(arg, Mapping) else [])
        example = f" (e.g. key={others!r})" if others else ""
        return PerRunValueError(
            f"{self._func_name}: key field {name!r} comes from the interpolation "
            f"{source!r}, which differs from run to run, so no run would ever be skipped. "
            f"Leave it out of the identity: list the values that identify a run with "
            f"key=[...], as dotted paths into {head}{example}, or take it out of {head}."
        )

    def sorted_view(
        self, fields: tuple[str, ...], texts: tuple[str, ...]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The same fields and texts in sorted field order (the index's probe order)."""
        cached = self._fixed_view if fields is self._fixed else self._order.get(fields)
        if cached is None:
            cached = self._order[fields] = _ordering(fields)
        names, reorder = cached
        return names, texts if reorder is None else reorder(texts)


def _scalar_text(value: Any) -> str | None:
    """The canonical text of a str, float, bool, None or int within ``_BIG`` (what
    :meth:`Binder.bind` makes inline); ``None`` for any other value."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    if t is float or (t is int and -_BIG < value < _BIG) or t is bool or value is None:
        return repr(value)
    return None


def _ordering(
    fields: tuple[str, ...],
) -> tuple[tuple[str, ...], Callable[[Any], Any] | None]:
    """``fields`` sorted, and what puts texts in that order (``None``: they are)."""
    order = tuple(sorted(range(len(fields)), key=fields.__getitem__))
    names = tuple(fields[i] for i in order)
    if order == tuple(range(len(order))):
        return names, None
    return names, operator.itemgetter(*order)  # (two fields at least: out of order)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # pragma: no cover - a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
