"""The in-memory index: one digest per run, partial matches by reading the store again."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from stet._digest import Digester, digest
from stet._index import Index

IN_CI = os.environ.get("CI") == "true"

# Texts that try to make two different runs encode alike: separators, lengths, prefixes.
awkward = st.text(alphabet=st.sampled_from(["\0", ":", "1", "a", "\ud800", "é", "0"]),
                  max_size=6)
names = st.lists(awkward, max_size=3, unique=True).map(lambda n: tuple(sorted(n)))


@st.composite
def runs(draw: st.DrawFn) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    fields = draw(names)
    texts = tuple(draw(awkward) for _ in fields)
    return draw(awkward), fields, texts


@settings(max_examples=300 if IN_CI else 2000, deadline=None)
@given(runs(), runs())
def test_two_runs_share_a_digest_only_when_they_are_the_same_run(
    a: tuple[str, tuple[str, ...], tuple[str, ...]],
    b: tuple[str, tuple[str, ...], tuple[str, ...]],
) -> None:
    assert (digest(*a) == digest(*b)) == (a == b)


def test_a_nul_in_a_text_cannot_pass_for_a_separator() -> None:
    one = Digester(("a", "b"))
    assert one.row(("f", "x\0y", "z")) != one.row(("f", "x", "y\0z"))
    assert Digester(("a\0b",)).row(("f", "x")) != Digester(("a", "b")).row(("f", "x"))
    assert digest("f\0", ("a",), ("x",)) != digest("f", ("a",), ("\0x",))


@settings(max_examples=100 if IN_CI else 500, deadline=None)
@given(st.lists(runs(), min_size=1, max_size=8))
def test_a_lookup_s_digest_is_its_run_s_whichever_run_was_asked_before(
    asked: list[tuple[str, tuple[str, ...], tuple[str, ...]]],
) -> None:
    for func, fields, texts in asked + asked[::-1]:  # (each run asked twice in a row too)
        for _ in range(2):
            assert Digester.of(fields).run(func, texts) == digest(func, fields, texts)
    func, fields, texts = asked[0]
    same = Digester.of(fields)
    assert same is Digester.of(tuple(fields))  # one digester for every index
    same.run(func, texts)
    assert same.run(func + "x", texts) == digest(func + "x", fields, texts)  # same texts


def _index(records: list[dict[str, str]], keep_rows: bool) -> Index:
    index = Index(reread=None if keep_rows else (lambda: records))
    for r in records:
        index.add(r)
    return index


RECORDS = [
    {"alpha": "0.1", "seed": "0", "_stet_func": "f"},
    {"alpha": "0.2", "seed": "1", "_stet_func": "g"},
    {"alpha": "0.3", "seed": "2"},  # no function name: matches every function
]


def test_an_exact_match_is_found_for_its_function_only() -> None:
    for keep in (True, False):
        index = _index(RECORDS, keep)
        assert index.contains("f", ("alpha", "seed"), ("0.1", "0"))
        assert not index.contains("g", ("alpha", "seed"), ("0.1", "0"))
        assert not index.contains("f", ("alpha", "seed"), ("0.1", "1"))


def test_a_record_without_a_function_name_matches_every_function() -> None:
    for keep in (True, False):
        index = _index(RECORDS, keep)
        assert index.contains("anything", ("alpha", "seed"), ("0.3", "2"))
        assert index.contains("", ("alpha", "seed"), ("0.3", "2"))


def test_a_call_on_fewer_fields_matches_a_record_that_holds_more() -> None:
    for keep in (True, False):
        index = _index(RECORDS, keep)
        assert index.contains("f", ("alpha",), ("0.1",))
        assert not index.contains("f", ("alpha",), ("0.2",))
        assert index.contains("h", ("seed",), ("2",))  # (no function name)
        index.add({"alpha": "0.9", "seed": "9", "_stet_func": "f"})  # kept up to date
        assert index.contains("f", ("alpha",), ("0.9",))


def test_any_function_finds_every_record_holding_the_texts() -> None:
    for keep in (True, False):
        index = _index(RECORDS, keep)
        assert index.contains_any(("alpha",), ("0.2",))
        assert index.contains_any(("alpha", "seed"), ("0.1", "0"))
        assert not index.contains_any(("alpha",), ("0.7",))


def test_a_saved_state_answers_as_the_index_it_came_from() -> None:
    index = _index(RECORDS, keep_rows=False)
    loaded = Index(reread=lambda: RECORDS)
    loaded.load_state(index.state())
    for func, fields, texts in [("f", ("alpha", "seed"), ("0.1", "0")),
                                ("x", ("alpha", "seed"), ("0.3", "2")),
                                ("g", ("alpha", "seed"), ("0.1", "0")),
                                ("f", ("alpha",), ("0.1",))]:
        assert loaded.contains(func, fields, texts) == index.contains(func, fields, texts)
    assert loaded.count == 3 and loaded.added == []
    loaded.add({"alpha": "0.4", "seed": "3", "_stet_func": "f"})
    assert loaded.added is not None and len(loaded.added) == 1
    assert loaded.contains("f", ("alpha", "seed"), ("0.4", "3"))


def test_columns_rows_and_records_index_alike() -> None:
    header = ["alpha", "_stet_func", "seed"]
    by_columns, by_rows, by_records = Index(), Index(), Index()
    by_columns.add_columns(header, [["0.1", "0.2"], ["f", ""], ["0", "1"]])
    by_rows.add_rows(header, [["0.1", "f", "0"], ["0.2", "", "1"], [None, "f", "5"]])
    for r in [{"alpha": "0.1", "_stet_func": "f", "seed": "0"},
              {"alpha": "0.2", "_stet_func": "", "seed": "1"}]:
        by_records.add(r)
    for index in (by_columns, by_rows, by_records):
        assert index.contains("f", ("alpha", "seed"), ("0.1", "0"))
        assert index.contains("g", ("alpha", "seed"), ("0.2", "1"))
        assert not index.contains("g", ("alpha", "seed"), ("0.1", "0"))
    assert by_rows.contains("f", ("seed",), ("5",)) and by_rows.count == 3
