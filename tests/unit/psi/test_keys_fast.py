"""The column-wise `index_keys` against its row-by-row definition, errors included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import SpecError
from compute.psi import CaseRule, DuplicateRule, EmptyKeyRule, KeyedRows, KeyRules, Table, index_keys
from compute.psi.keys import (
    encode_key,
    index_keys_rowwise,
    key_digest,
    key_digests,
    normalize_column,
    normalize_value,
)

# few distinct values so that duplicates, empties (after trimming) and case collisions are common
pieces = st.sampled_from(
    ["a", "A ", " b", "", "\u00a0", "ß", "SS", "x\u0301", "\u00e9", "e\u0301", "１", ",", "\x00", "\ud800"]
)
cells = st.one_of(pieces, st.text(max_size=8), st.lists(pieces, max_size=3).map("".join))
rules = st.builds(
    KeyRules, st.sampled_from(CaseRule), st.sampled_from(EmptyKeyRule), st.sampled_from(DuplicateRule)
)


def outcome(
    fn: Callable[[Table, tuple[str, ...], KeyRules], KeyedRows],
    table: Table,
    columns: tuple[str, ...],
    r: KeyRules,
) -> KeyedRows | tuple[str, str]:
    """The result, or the SpecError message (both paths must name the same first offending row)."""
    try:
        return fn(table, columns, r)
    except SpecError as exc:
        return ("SpecError", str(exc))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(cells, cells, cells), max_size=40), st.integers(1, 3), rules)
def test_columnwise_equals_rowwise(data: list[tuple[str, str, str]], width: int, r: KeyRules) -> None:
    table = Table(("a", "b", "c"), tuple(data))
    columns = ("a", "b", "c")[:width]
    assert outcome(index_keys, table, columns, r) == outcome(index_keys_rowwise, table, columns, r)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(), max_size=30), st.sampled_from(CaseRule))
def test_normalize_column_equals_normalize_value(values: list[str], case: CaseRule) -> None:
    assert normalize_column(values, case) == [normalize_value(v, case) for v in values]


@given(st.lists(st.binary(max_size=40), max_size=20))
def test_key_digests_equal_key_digest(encodings: list[bytes]) -> None:
    assert key_digests(encodings) == tuple(key_digest(e) for e in encodings)


@pytest.mark.parametrize("empty", list(EmptyKeyRule))
def test_invalid_unicode_and_its_errors_are_the_rowwise_ones(empty: EmptyKeyRule) -> None:
    table = Table(("k", "v"), (("ok", "1"), ("", "\ud800"), ("bad\ud800", "2")))
    r = KeyRules(CaseRule.EXACT, empty, DuplicateRule.REJECT)
    with pytest.raises(SpecError) as fast:
        index_keys(table, ("k",), r)
    with pytest.raises(SpecError) as slow:
        index_keys_rowwise(table, ("k",), r)
    assert str(fast.value) == str(slow.value)
    # the dropped row's invalid cell is never encoded
    drop = KeyRules(CaseRule.EXACT, EmptyKeyRule.DROP, DuplicateRule.REJECT)
    dropped = index_keys(Table(("k", "v"), (("", "\ud800"), ("x", "y"))), ("k", "v"), drop)
    assert dropped.dropped_rows == (0,) and dropped.encodings == (encode_key(["x", "y"]),)
