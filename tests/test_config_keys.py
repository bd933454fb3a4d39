"""Configs as arguments: dotted key paths, OmegaConf containers, per-run interpolations
and the JSON copy of mapping arguments (issue 13, item 2).

Real stores in temporary directories, real OmegaConf containers; a store's records are
read back with the backend (and SQLite's own ``json_extract``), not through stet's code
under test alone.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stet
from conftest import IN_CI
from stet.backends import get_backend

try:
    from omegaconf import ListConfig, OmegaConf
except ImportError:
    if IN_CI:
        raise  # CI installs stet[hydra], which brings omegaconf
    pytest.skip("omegaconf is not installed (pip install 'stet[hydra]')",
                allow_module_level=True)

SRC = Path(stet.__file__).resolve().parents[1]


class Frozen(Mapping[str, Any]):
    """A mapping that is neither a dict nor a config."""

    def __init__(self, **items: Any) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def records(store: Path) -> list[dict[str, Any]]:
    with get_backend(store) as backend:
        return backend.load()


def counting(store: Path, key: list[str] | None = None) -> tuple[Any, list[Any]]:
    calls: list[Any] = []

    @stet.once(store=store, key=key)
    def train(cfg: Any, note: str = "") -> None:
        calls.append(cfg)

    return train, calls


# -- (a) dotted key paths ------------------------------------------------------------


@pytest.mark.parametrize("make", [dict, OmegaConf.create, lambda d: Frozen(**d)],
                         ids=["dict", "DictConfig", "Mapping"])
def test_a_dotted_key_keys_a_run_by_values_inside_a_mapping_argument(
        tmp_path: Path, make: Any) -> None:
    store = tmp_path / "runs.csv"
    train, calls = counting(store, key=["cfg.lr", "cfg.seed"])
    train(make({"lr": 0.1, "seed": 1, "workers": 4}))
    train(make({"lr": 0.1, "seed": 1, "workers": 8}))  # only outside the key: the same run
    train(make({"lr": 0.1, "seed": 2, "workers": 4}))
    assert len(calls) == 2
    rows = records(store)
    assert [(r["cfg.lr"], r["cfg.seed"]) for r in rows] == [("0.1", "1"), ("0.1", "2")]
    assert all("cfg" not in r and "cfg.workers" not in r for r in rows)


def test_a_nested_dotted_key_reaches_into_nested_configs(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    train, calls = counting(store, key=["cfg.opt.lr"])
    train(OmegaConf.create({"opt": {"lr": 0.01, "name": "adam"}}))
    train({"opt": {"lr": 0.01, "name": "sgd"}})  # a plain dict: the same run
    assert len(calls) == 1
    assert records(store)[0]["cfg.opt.lr"] == "0.01"
    assert train.is_done({"opt": {"lr": 0.01}})


def test_a_dotted_key_whose_first_part_is_not_a_parameter_is_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"'conf\.lr', a path into 'conf', which is not a "
                                        r"parameter of .*parameters are: cfg"):

        @stet.once(key=["conf.lr"])
        def train(cfg: Any) -> None: ...

    with pytest.raises(TypeError, match="empty part"):

        @stet.once(key=["cfg..lr"])
        def train2(cfg: Any) -> None: ...


@pytest.mark.parametrize("cfg", [{"lr": 0.1}, OmegaConf.create({"lr": 0.1}),
                                 {"lr": 0.1, "opt": 3}],
                         ids=["dict", "DictConfig", "not-a-mapping"])
def test_an_argument_without_the_keyed_path_is_refused_before_the_function_runs(
        tmp_path: Path, cfg: Any) -> None:
    store = tmp_path / "runs.csv"
    train, calls = counting(store, key=["cfg.lr", "cfg.opt.momentum"])
    with pytest.raises(TypeError, match=r"key path 'cfg\.opt\.momentum': cfg"):
        train(cfg)
    assert calls == []
    assert not store.exists() or records(store) == []


def test_a_struct_config_without_the_keyed_path_is_refused_naming_the_path(
        tmp_path: Path) -> None:
    cfg = OmegaConf.create({"lr": 0.1, "layers": [{"width": 8}]})
    OmegaConf.set_struct(cfg, True)  # as Hydra gives it
    train, calls = counting(tmp_path / "runs.csv", key=["cfg.opt.lr"])
    with pytest.raises(TypeError, match=r"key path 'cfg\.opt\.lr': cfg has no 'opt'"):
        train(cfg)
    train, calls = counting(tmp_path / "runs.csv", key=["cfg.layers.0.width"])
    train(cfg)
    train({"lr": 0.5, "layers": [{"width": 8}]})  # a list index in a path
    assert len(calls) == 1


def test_a_dotted_key_into_a_keyword_argument_taken_by_kwargs(tmp_path: Path) -> None:
    calls = []

    @stet.once(store=tmp_path / "runs.csv", key=["cfg.lr"])
    def train(**kwargs: Any) -> None:
        calls.append(kwargs)

    train(cfg={"lr": 0.1, "seed": 0})
    train(cfg=OmegaConf.create({"lr": 0.1, "seed": 1}))
    assert len(calls) == 1
    with pytest.raises(TypeError, match=r"'cfg\.lr' were not passed"):
        train(other=1)


def test_a_mandatory_config_value_left_missing_is_refused_naming_its_path(
        tmp_path: Path) -> None:
    train, calls = counting(tmp_path / "runs.csv", key=["cfg.lr"])
    with pytest.raises(TypeError, match=r"'cfg\.lr'.*no value"):
        train(OmegaConf.create({"lr": "???"}))
    assert calls == []


def test_a_sweep_plans_and_runs_settings_keyed_by_dotted_paths(tmp_path: Path) -> None:
    train, calls = counting(tmp_path / "runs.csv", key=["cfg.lr"])
    settings_ = [{"cfg": OmegaConf.create({"lr": lr, "out": "x"})} for lr in (0.1, 0.2)]
    assert stet.sweep(train, settings_).ran == 2
    assert train.pending([*settings_, {"cfg": {"lr": 0.3}}]) == [{"cfg": {"lr": 0.3}}]
    assert len(calls) == 2


# -- (b) OmegaConf containers are the plain containers they resolve to ------------------


def test_a_dictconfig_is_keyed_as_the_dict_it_resolves_to_whatever_its_order(
        tmp_path: Path) -> None:
    yaml_a = "lr: 0.1\nlayers: [{width: 8, act: relu}, {width: 4, act: tanh}]\nseed: ${lr}\n"
    yaml_b = "seed: ${lr}\nlayers: [{act: relu, width: 8}, {act: tanh, width: 4}]\nlr: 0.1\n"
    a, b = OmegaConf.create(yaml_a), OmegaConf.create(yaml_b)
    plain = {"lr": 0.1, "seed": 0.1, "layers": [{"act": "relu", "width": 8},
                                                {"act": "tanh", "width": 4}]}
    assert stet.canonical(a) == stet.canonical(b) == stet.canonical(plain)
    train, calls = counting(tmp_path / "runs.json")
    train(a)
    train(b)
    train(plain)
    assert len(calls) == 1


def test_a_listconfig_is_keyed_as_a_list_and_keeps_its_order() -> None:
    assert stet.canonical(ListConfig([1, "a", {"y": 2, "x": 1}])) == "[1, 'a', {'x': 1, 'y': 2}]"
    assert stet.canonical(ListConfig([2, 1])) != stet.canonical(ListConfig([1, 2]))


def test_the_key_text_of_a_plain_dict_is_what_it_was_so_stores_keep_skipping(
        tmp_path: Path) -> None:
    """A store written before (here by hand, as stet wrote it) holds a dict argument as
    its repr-like canonical text: its runs must still skip, called with a dict or with
    the equal DictConfig."""
    store = tmp_path / "old.csv"
    text = "{'lr': 0.1, 'opt': {'name': 'sgd'}, 'seed': 1}"
    store.write_text(f'cfg,_stet_func,_stet_timestamp\n"{text}",counting.<locals>.train,'
                     f"2026-01-01T00:00:00+00:00\n", encoding="utf-8")
    assert stet.canonical({"seed": 1, "opt": {"name": "sgd"}, "lr": 0.1}) == text
    train, calls = counting(store, key=["cfg"])
    train({"seed": 1, "lr": 0.1, "opt": {"name": "sgd"}})
    train(OmegaConf.create({"opt": {"name": "sgd"}, "seed": 1, "lr": 0.1}))
    assert calls == []


_SCALARS = st.one_of(st.integers(-10, 10), st.floats(allow_nan=False, width=32),
                     st.text(max_size=3), st.booleans(), st.none())
_CONFIGS = st.recursive(
    st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), _SCALARS, max_size=4),
    lambda inner: st.dictionaries(st.text("abcxyz", min_size=1, max_size=3),
                                  inner | st.lists(inner, max_size=2), max_size=3),
    max_leaves=8)


@settings(max_examples=40, deadline=None)
@given(_CONFIGS, st.randoms(use_true_random=False))
def test_any_dictconfig_in_any_key_order_has_the_text_of_its_plain_dict(
        data: dict[str, Any], rnd: Any) -> None:
    def shuffled(value: Any) -> Any:
        if isinstance(value, dict):
            items = list(value.items())
            rnd.shuffle(items)
            return {k: shuffled(v) for k, v in items}
        if isinstance(value, list):
            return [shuffled(v) for v in value]
        return value

    assert stet.canonical(OmegaConf.create(shuffled(data))) == stet.canonical(data)


def test_import_stet_and_keying_plain_dicts_never_import_omegaconf(tmp_path: Path) -> None:
    code = ("import sys, stet\n"
            "@stet.once(store='r.csv', key=['cfg.a'])\n"
            "def f(cfg): pass\n"
            "f({'a': 1}); print(stet.canonical({'b': [1]}))\n"
            "assert 'omegaconf' not in sys.modules, 'omegaconf was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, timeout=60,
                   env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})


# -- (c) per-run interpolations ------------------------------------------------------


@pytest.mark.parametrize("out", [
    "${hydra:runtime.output_dir}",
    "${now:%Y-%m-%d_%H-%M-%S}",
    "runs/${now:%H}/x",  # inside a string
    "${paths.log}",  # through a reference
    "${.stamp}",  # through a relative reference
], ids=["hydra", "now", "in-a-string", "reference", "relative"])
def test_a_keyed_value_from_a_per_run_interpolation_is_refused_naming_its_path(
        tmp_path: Path, out: str) -> None:
    cfg = OmegaConf.create({"lr": 0.1, "seed": 1, "output_dir": out,
                            "stamp": "${now:%f}",
                            "paths": {"log": "${hydra:runtime.output_dir}/log"}})
    train, calls = counting(tmp_path / "runs.csv")
    with pytest.raises(stet.UnstableValueError) as err:
        train(cfg)
    message = str(err.value)
    assert "'cfg.output_dir'" in message  # the first per-run value, in the config's order
    assert "key=['cfg.lr', 'cfg.seed']" in message  # how to leave it out
    assert calls == []
    assert not (tmp_path / "runs.csv").exists()


def test_a_dotted_key_to_a_per_run_value_is_refused_and_one_around_it_is_not(
        tmp_path: Path) -> None:
    cfg = OmegaConf.create({"lr": 0.1, "out": {"dir": "${hydra:runtime.output_dir}"}})
    train, calls = counting(tmp_path / "a.csv", key=["cfg.out.dir"])
    with pytest.raises(stet.UnstableValueError, match=r"'cfg\.out\.dir'.*\$\{hydra:"):
        train(cfg)
    train, calls = counting(tmp_path / "b.csv", key=["cfg.out"])
    with pytest.raises(stet.UnstableValueError, match=r"'cfg\.out\.dir'"):
        train(cfg)
    # Left out of the key, it is never resolved (outside a Hydra job it could not be).
    train, calls = counting(tmp_path / "c.csv", key=["cfg.lr"])
    train(cfg)
    train(cfg)
    assert len(calls) == 1


def test_other_interpolations_are_keyed_as_resolved(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"base": 0.1, "lr": "${base}", "name": "run_${base}"})
    assert stet.canonical(cfg) == "{'base': 0.1, 'lr': 0.1, 'name': 'run_0.1'}"


# -- (d) the JSON copy of mapping arguments --------------------------------------------


def test_mapping_arguments_are_recorded_as_json_with_sorted_keys_and_exact_numbers(
        tmp_path: Path) -> None:
    store = tmp_path / "runs.csv"
    train, _ = counting(store)
    cfg = OmegaConf.create({"seed": 1, "lr": 1.0, "opt": {"name": "sgd", "eps": 1e-08},
                            "bad": float("nan"), "layers": [3, 2]})
    train(cfg, note="a")
    train({"b": 2, "a": "x"}, note="b")
    train([1, 2], note="c")  # not a mapping: no JSON copy
    rows = records(store)
    assert rows[0]["_stet_json"] == ('{"cfg":{"bad":"nan","layers":[3,2],"lr":1.0,'
                                     '"opt":{"eps":1e-08,"name":"sgd"},"seed":1}}')
    assert json.loads(rows[1]["_stet_json"]) == {"cfg": {"a": "x", "b": 2}}
    assert "_stet_json" not in rows[2]
    # The key text (the identity) is what it always was.
    assert rows[1]["cfg"] == "{'a': 'x', 'b': 2}"


def test_load_expands_mapping_arguments_into_columns(tmp_path: Path) -> None:
    store = tmp_path / "runs.parquet"
    train, _ = counting(store)
    train(OmegaConf.create({"lr": 0.1, "opt": {"name": "sgd", "steps": 10}}))
    train({"lr": 0.01, "opt": {"name": "adam", "steps": 20}})
    df = stet.load(store)
    assert list(df.columns[:6]) == ["cfg", "note", "cfg.lr", "cfg.opt.name",
                                    "cfg.opt.steps", "_stet_func"]
    assert df["cfg.lr"].tolist() == [0.1, 0.01]
    assert df["cfg.opt.steps"].dtype.kind == "i"
    assert "_stet_json" not in df.columns
    raw = stet.load(train, expand=False)
    assert "cfg.lr" not in raw.columns
    assert json.loads(raw["_stet_json"][0])["cfg"]["opt"] == {"name": "sgd", "steps": 10}


def test_sqlite_can_query_inside_a_mapping_argument(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    train, _ = counting(store)
    for lr in (0.1, 0.01, 0.001):
        train(OmegaConf.create({"lr": lr, "opt": {"momentum": 0.9}}), note=str(lr))
    stet.load(store)  # (also folds nothing away)
    with sqlite3.connect(store) as db:
        got = db.execute("SELECT json_extract(_stet_json, '$.cfg.lr') FROM stet_records "
                         "WHERE json_extract(_stet_json, '$.cfg.opt.momentum') = 0.9 "
                         "ORDER BY 1").fetchall()
    assert got == [(0.001,), (0.01,), (0.1,)]


def test_every_store_format_keeps_and_expands_the_json_copy(store_path: Path) -> None:
    train, calls = counting(store_path)
    cfg = {"lr": 0.1, "name": 'a "quoted", text\nwith a newline', "opt": {"m": 0.9}}
    train(OmegaConf.create(cfg))
    train(cfg)  # the same run, in every format
    assert len(calls) == 1
    df = stet.load(store_path)
    assert (df["cfg.lr"][0], df["cfg.name"][0], df["cfg.opt.m"][0]) == (
        0.1, cfg["name"], 0.9)
