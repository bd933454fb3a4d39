"""The contract's matching rules (docs/explanation/identity.md, "Matching") and its
arbitrary field names and values: what decides that a record is a call's run."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import stet
from stet._schema import FUNC_FIELD, TIMESTAMP_FIELD, is_bookkeeping
from stet.backends import Store
from stet.errors import StoreError

OpenStore = Callable[[], Store]

#: Field names that are something else to some store: SQL row ids and keywords, names
#: equal but for case, quoting and identifier syntax, invisible and very long names.
NASTY_NAMES: list[str] = [
    "rowid", "ROWID", "oid", "_rowid_", "id", "ID", "a", "A", "key", "value", "select",
    'a"; DROP TABLE stet_records; --', "x); DELETE FROM stet_records; --", "with space",
    "it's", 'say "hi"', "comma,name", "[bracket]", "`tick`", "a.b", ".", "?", ":x", "$x",
    "ünïcødé", "\u212a", "K", "\u200b", "\ufeff", "n" * 200, "N" * 200,
]

#: How many examples each property test draws (``STET_CONTRACT_EXAMPLES``).
EXAMPLES = int(os.environ.get("STET_CONTRACT_EXAMPLES", "25"))


def _user(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not is_bookkeeping(k)}


def _texts(records: list[dict[str, Any]]) -> list[str]:
    """Records as a sorted list of texts, whatever order each one's fields come in."""
    return sorted(repr(sorted(r.items())) for r in records)


def _run(store: Store, func: str, fields: dict[str, str]) -> bool:
    """What the decorator asks: is this run of ``func`` recorded?"""
    names = tuple(sorted(fields))
    return store.contains_run(func, names, tuple(fields[n] for n in names))


def _names() -> st.SearchStrategy[str]:
    """Any non-empty name without NUL (not stet's own), lone surrogates included."""
    surrogate = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
    chars = st.one_of(st.characters(blacklist_characters="\x00"), surrogate)
    return st.one_of(
        st.sampled_from(NASTY_NAMES),
        st.text(alphabet="aAbBiIdDrRoOwW_.\"'` []", min_size=1, max_size=6),
        st.text(chars, min_size=1, max_size=12),
    ).filter(lambda n: not is_bookkeeping(n))


def _values() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.text(st.characters(min_codepoint=0, max_codepoint=0xDFFF)),
        st.sampled_from(["", " ", "None", "null", "NA", "1", "01", "1.0", '"', "\n",
                         "a,b", "\u200b", "x" * 3000]),
        st.integers(), st.floats(), st.booleans(), st.none(),
    )


class MatchingContract:
    """A run is (function, key fields); a record matches a call when its function is
    empty or the call's and it holds every key field with identical text."""

    def test_a_record_of_another_function_is_not_this_functions_run(
        self, store: Store
    ) -> None:
        store.append_record({FUNC_FIELD: "f", "alpha": "0.1", TIMESTAMP_FIELD: "t"})
        assert _run(store, "f", {"alpha": "0.1"})
        assert not _run(store, "g", {"alpha": "0.1"})
        assert store.has({"alpha": 0.1})  # has() asks about any function
        calls: list[str] = []

        @stet.once(store=store, verbose=False, name="g")
        def g(alpha: float) -> None:
            calls.append("g")

        g(0.1)
        g(0.1)
        assert calls == ["g"]
        assert sorted(r[FUNC_FIELD] for r in store.load()) == ["f", "g"]

    def test_a_record_without_a_function_name_counts_for_every_function(
        self, open_store: OpenStore
    ) -> None:
        with open_store() as store, open_store() as by_hand:
            by_hand.record({"alpha": 0.1, "seed": 1})
            calls: list[str] = []

            @stet.once(store=store, verbose=False)
            def f(alpha: float, seed: int) -> None:
                calls.append("f")

            @stet.once(store=store, verbose=False)
            def g(alpha: float, seed: int) -> None:
                calls.append("g")

            f(0.1, 1), g(0.1, 1), f(0.1, 2)
            assert calls == ["f"]
            by_hand.record({"alpha": "0.5", "seed": "3"})  # after the decorator read it
            g(0.5, 3)
            assert calls == ["f"]

    def test_extra_fields_in_a_record_still_match_a_narrower_key(
        self, store: Store
    ) -> None:
        store.append_record({FUNC_FIELD: "exp", "alpha": "0.1", "seed": "1", "n": "5",
                             TIMESTAMP_FIELD: "t"})
        assert _run(store, "exp", {"alpha": "0.1", "seed": "1"})
        assert _run(store, "exp", {"alpha": "0.1"})
        assert not _run(store, "exp", {"alpha": "0.2"})
        calls: list[str] = []

        @stet.once(store=store, key=["alpha"], name="exp", verbose=False)
        def narrow(alpha: float, seed: int) -> None:
            calls.append(f"narrow {alpha}")

        narrow(0.1, 99)  # alpha=0.1 is done
        narrow(0.5, 1)
        assert calls == ["narrow 0.5"]

    def test_a_wider_key_is_not_matched_by_a_record_lacking_a_field(
        self, store: Store
    ) -> None:
        store.append_record({FUNC_FIELD: "exp", "alpha": "0.1", TIMESTAMP_FIELD: "t"})
        assert not _run(store, "exp", {"alpha": "0.1", "seed": "1"})
        assert not _run(store, "exp", {"alpha": "0.1", "note": ""})
        assert not store.has({"alpha": 0.1, "note": ""})
        calls: list[str] = []

        @stet.once(store=store, key=["alpha", "seed"], name="exp", verbose=False)
        def wide(alpha: float, seed: int) -> None:
            calls.append(f"wide {alpha} {seed}")

        wide(0.1, 1)  # the record has no field seed: run
        wide(0.1, 1)  # now done
        assert calls == ["wide 0.1 1"]

    def test_an_empty_string_and_an_absent_field_differ(self, open_store: OpenStore) -> None:
        with open_store() as store, open_store() as fresh:
            store.record({"x": 1})
            store.record({"x": 2, "note": ""})
            for handle in (store, fresh):
                assert not handle.has({"x": 1, "note": ""})
                assert handle.has({"x": 2, "note": ""})
                assert not handle.has({"x": 2, "note": "None"})
                assert handle.has({"x": 1})
            by_x = {r["x"]: _user(r) for r in fresh.load()}
            assert by_x == {"1": {"x": "1"}, "2": {"x": "2", "note": ""}}

    def test_names_that_mean_something_to_a_store_are_plain_data(
        self, open_store: OpenStore
    ) -> None:
        with open_store() as store, open_store() as fresh:
            for name in NASTY_NAMES:
                store.record({name: "v", "seed": 1})
            for name in NASTY_NAMES:
                assert fresh.has({name: "v", "seed": 1}), name
                assert not fresh.has({name: "w", "seed": 1}), name
            assert fresh.has({"lr": "x"}) is False
            store.remove({NASTY_NAMES[0]: "v", "seed": 1})
            assert not fresh.has({NASTY_NAMES[0]: "v", "seed": 1})
            assert _texts([_user(r) for r in fresh.load()]) == _texts(
                [{name: "v", "seed": "1"} for name in NASTY_NAMES[1:]])

    def test_names_differing_only_in_case_are_different_fields(
        self, store: Store
    ) -> None:
        calls: list[tuple[int, int]] = []

        @stet.once(store=store, verbose=False)
        def f(N: int, n: int) -> None:  # an ordinary signature in science code
            calls.append((N, n))

        f(1, 2), f(1, 2), f(2, 1)
        assert calls == [(1, 2), (2, 1)]
        store.record({"lr": "0.1"})
        store.record({"LR": "0.2"})
        assert store.has({"lr": "0.1"}) and store.has({"LR": "0.2"})
        assert not store.has({"lr": "0.2"}) and not store.has({"LR": "0.1"})

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.too_slow,
                                     HealthCheck.function_scoped_fixture])
    @example(records=[{"rowid": "\ud800", "ROWID": None, "id": 1}])
    @example(records=[{"\ud800": "x"}, {"\udc00x": ""}])
    @example(records=[{"lr": "1", "LR": "2"}, {"lr": "2"}, {"n" * 200: "", "N" * 200: "x"}])
    @given(records=st.lists(st.dictionaries(_names(), _values(), min_size=1, max_size=4),
                            min_size=1, max_size=4))
    def test_arbitrary_field_names_and_values_are_kept_or_refused_never_confused(
        self, open_store: OpenStore, records: list[dict[str, Any]]
    ) -> None:
        """Each record is either kept (loaded back exactly, found, and found by no other
        text) or refused with a :class:`StoreError` and absent; never lost or confused."""
        with open_store() as store:
            store.clear()
            kept: list[dict[str, str]] = []
            for record in records:
                texts = {k: stet.canonical(v) for k, v in record.items()}
                try:
                    store.record(record)
                except StoreError:
                    continue
                kept.append(texts)
        with open_store() as fresh:
            loaded = [_user(r) for r in fresh.load()]
            assert _texts(loaded) == _texts(kept)
            for texts in kept:
                assert fresh.has(dict(texts))
                assert _run(fresh, "any_function", texts)
                name = min(texts)
                other = {**texts, name: texts[name] + "x"}
                held = any(all(k.get(n) == v for n, v in other.items()) for k in kept)
                assert fresh.has(dict(other)) is held
            fresh.clear()


__all__ = ["NASTY_NAMES", "MatchingContract"]
