"""Configs as arguments: dotted key paths into them, and OmegaConf containers.

``key=["cfg.lr"]`` keys a run by one value inside a mapping argument: the key field is
named by the path (``cfg.lr``) and holds that value's canonical text. An OmegaConf
container (``DictConfig``, ``ListConfig``) is keyed as the plain container it resolves to,
so a ``DictConfig`` is as order-free as a ``dict``. A value that an interpolation makes
different in every run (``${hydra:...}``, ``${now:...}``) would make every call a new run:
it is refused, naming its path, before the function runs.

omegaconf is never imported here unless a value is one of its containers (recognised by
its class's module), so ``import stet`` does not pay for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["KeyPathError", "PerRun", "is_omegaconf", "is_per_run", "plain", "split_path",
           "walk"]

#: A resolver whose value differs from run to run: Hydra's (the job's directory, number,
#: overrides) and ``now``. Other resolvers cannot be told apart; they are keyed as resolved.
_PER_RUN = re.compile(r"\$\{\s*(hydra|now)\s*:")
#: A plain reference inside an interpolation: ``${a.b}``, ``${.x}``, ``${..x}``, ``${a[0]}``.
_REFERENCE = re.compile(r"\$\{\s*([^${}:\s]+)\s*\}")


class PerRun(Exception):  # a finding, which stet._identity turns into its error
    """A keyed value comes from an interpolation that differs per run; ``path`` is where
    it is inside the argument (a tuple of keys), ``source`` the interpolation."""

    def __init__(self, path: tuple[str, ...], source: str) -> None:
        super().__init__(f"{'.'.join(path) or 'the value'} comes from {source!r}")
        self.path, self.source = path, source


class KeyPathError(TypeError):
    """A dotted key path that the argument does not hold."""


def split_path(key: str) -> tuple[str, tuple[str, ...]] | None:
    """``"cfg.opt.lr"`` -> ``("cfg", ("opt", "lr"))``; ``None`` for a plain name;
    ``ValueError`` for an empty part (``"cfg..lr"``, ``"cfg."``)."""
    if "." not in key:
        return None
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"key path {key!r} has an empty part")
    return parts[0], tuple(parts[1:])


def is_omegaconf(value: Any) -> bool:
    """Whether ``value`` is an OmegaConf container (without importing omegaconf)."""
    kind = type(value)
    return kind.__module__.startswith("omegaconf.") and kind.__name__ in _CONTAINERS


_CONTAINERS = ("DictConfig", "ListConfig")


def walk(value: Any, head: str, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` inside the argument ``head``: a :class:`KeyPathError` naming
    the path if the argument does not hold it, :class:`PerRun` if it comes from
    a per-run interpolation."""
    done: list[str] = []
    shown = ".".join((head, *parts))
    for part in parts:
        if is_omegaconf(value):
            _check_node(value, part, tuple(done))
            try:
                found = _has_node(value, part)
                if found:
                    value = value[int(part) if _is_list(value) else part]
            except Exception as exc:  # a mandatory value not given (???), a bad index
                raise KeyPathError(f"key path {shown!r}: {head}.{'.'.join((*done, part))} "
                                   f"has no value ({type(exc).__name__}: {exc})") from None
        elif isinstance(value, Mapping):
            found = part in value
            if found:
                value = value[part]
        elif isinstance(value, (list, tuple)) and part.isdigit():
            found = int(part) < len(value)
            if found:
                value = value[int(part)]
        else:
            where = ".".join((head, *done)) if done else head
            raise KeyPathError(
                f"key path {shown!r}: {where} is a {type(value).__name__}, not a mapping "
                f"(a dict or a config) that could hold {part!r}")
        if not found:
            where = ".".join((head, *done)) if done else head
            raise KeyPathError(f"key path {shown!r}: {where} has no {part!r}")
        done.append(part)
    return value


def _is_list(container: Any) -> bool:
    return type(container).__name__ == "ListConfig"


def _has_node(container: Any, key: str) -> bool:
    if _is_list(container):
        return key.isdigit() and int(key) < len(container)
    try:
        return container._get_node(key) is not None
    except Exception:  # a struct config (as Hydra's) raises for a key it lacks
        return False


def plain(value: Any) -> Any:
    """The plain ``dict``/``list`` an OmegaConf container resolves to, after refusing any
    value in it that a per-run interpolation gives (:class:`PerRun`)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    _check_tree(value, ())
    try:
        return OmegaConf.to_container(value, resolve=True)
    except MissingMandatoryValue as exc:  # '???': a value that was never given
        raise KeyPathError(f"a config value is missing ({exc})") from None


def _check_tree(container: Any, path: tuple[str, ...]) -> None:
    keys = range(len(container)) if _is_list(container) else list(container.keys())
    for key in keys:
        _check_node(container, str(key) if _is_list(container) else key, path)


def _check_node(container: Any, key: Any, path: tuple[str, ...],
                seen: set[tuple[int, str]] | None = None) -> None:
    """Refuse the value at ``container[key]`` (and within it) if a per-run interpolation
    makes it, directly or through references (``${other.key}``)."""
    seen = set() if seen is None else seen
    mark = (id(container), str(key))
    if mark in seen:
        return
    seen.add(mark)
    try:
        node = container._get_node(int(key) if _is_list(container) else key)
    except Exception:  # not there: walk() says so
        return
    if node is None:
        return
    here = (*path, str(key))
    if node._is_interpolation():
        raw = str(node._value())
        if _PER_RUN.search(raw):
            raise PerRun(here, raw)
        for ref in _REFERENCE.findall(raw):
            target = _locate(container, ref)
            if target is not None:
                try:
                    _check_node(*target, here, seen)
                except PerRun as inner:
                    raise PerRun(here, f"{raw} -> {inner.source}") from None
    elif is_omegaconf(node) and not node._is_none() and not node._is_missing():
        for sub in (range(len(node)) if _is_list(node) else list(node.keys())):
            _check_node(node, str(sub) if _is_list(node) else sub, here, seen)


def is_per_run(container: Any, key: str) -> bool:
    """Whether a per-run interpolation makes the value at ``container[key]``."""
    try:
        _check_node(container, key, ())
    except PerRun:
        return True
    return False


def _locate(container: Any, ref: str) -> tuple[Any, str] | None:
    """The container and key an interpolation's reference names (``None`` if it names
    nothing: OmegaConf then fails to resolve it by itself)."""
    ref = re.sub(r"\[(\d+)\]", r".\1", ref)
    try:
        if ref.startswith("."):
            ups = len(ref) - len(ref.lstrip("."))
            base = container
            for _ in range(ups - 1):
                base = base._get_parent()
            ref = ref[ups:]
        else:
            base = container._get_root()
        parts = ref.split(".")
        for part in parts[:-1]:
            base = base._get_node(int(part) if _is_list(base) else part)
            if base is None or not is_omegaconf(base):
                return None
        return (base, parts[-1]) if base is not None else None
    except Exception:  # a reference OmegaConf itself cannot follow
        return None
