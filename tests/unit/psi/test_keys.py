"""Key normalization, canonical encoding and duplicate/empty rules against plain Python."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import SpecError
from compute.psi import CaseRule, DuplicateRule, EmptyKeyRule, KeyRules, Table, index_keys, normalize_value
from compute.psi.keys import encode_key, key_digest

cells = st.text(max_size=12)
key_tuples = st.lists(cells, min_size=1, max_size=3)


def reference_normalize(value: str, case: CaseRule) -> str:
    text = unicodedata.normalize("NFC", value).strip()
    return unicodedata.normalize("NFC", text.casefold()) if case is CaseRule.CASEFOLD else text


@given(st.text(), st.sampled_from(CaseRule))
def test_normalization_is_idempotent_and_trimmed(value: str, case: CaseRule) -> None:
    once = normalize_value(value, case)
    assert normalize_value(once, case) == once
    assert once == once.strip()
    assert unicodedata.is_normalized("NFC", once)


def test_normalization_rules_are_the_stated_ones() -> None:
    assert normalize_value("  Cafe\u0301\t", CaseRule.EXACT) == "Caf\u00e9"
    assert normalize_value("STRASSE", CaseRule.CASEFOLD) == normalize_value("straße", CaseRule.CASEFOLD)
    assert normalize_value("STRASSE", CaseRule.EXACT) != normalize_value("straße", CaseRule.EXACT)
    assert normalize_value("\u00a0x\u3000", CaseRule.EXACT) == "x"  # Unicode spaces are trimmed
    assert normalize_value("１", CaseRule.CASEFOLD) != "1"  # no NFKC: full-width digits stay distinct


@given(key_tuples, key_tuples)
def test_encoding_is_injective(a: list[str], b: list[str]) -> None:
    assert (encode_key(a) == encode_key(b)) == (a == b)
    assert (key_digest(encode_key(a)) == key_digest(encode_key(b))) == (a == b)


def test_encoding_separates_column_boundaries() -> None:
    assert encode_key(["ab", "c"]) != encode_key(["a", "bc"])
    assert encode_key(["a,b"]) != encode_key(["a", "b"])
    assert encode_key(["a\x00"]) != encode_key(["a"])


def test_lone_surrogate_is_a_spec_error() -> None:
    with pytest.raises(SpecError):
        encode_key(["\ud800"])


rows = st.lists(
    st.tuples(st.sampled_from(["a", "A ", " b", "", "c", "ß", "SS", "x\u0301"]), cells), max_size=30
)


@settings(max_examples=200)
@given(rows, st.sampled_from(CaseRule), st.sampled_from(EmptyKeyRule), st.sampled_from(DuplicateRule))
def test_index_keys_matches_a_plain_model(
    data: list[tuple[str, str]], case: CaseRule, empty: EmptyKeyRule, duplicates: DuplicateRule
) -> None:
    table = Table(("k", "v"), tuple(data))
    rules = KeyRules(case, empty, duplicates)
    groups: dict[str, list[int]] = {}
    dropped = []
    for i, (k, _) in enumerate(data):
        norm = reference_normalize(k, case)
        if norm == "":
            dropped.append(i)
        else:
            groups.setdefault(norm, []).append(i)
    has_empty = bool(dropped)
    has_dupes = any(len(g) > 1 for g in groups.values())
    if (has_empty and empty is EmptyKeyRule.REJECT) or (has_dupes and duplicates is DuplicateRule.REJECT):
        with pytest.raises(SpecError):
            index_keys(table, ("k",), rules)
        return
    keyed = index_keys(table, ("k",), rules)
    assert keyed.dropped_rows == tuple(dropped)
    assert keyed.encodings == tuple(encode_key([k]) for k in groups)  # first-seen order
    expected = [g if duplicates is DuplicateRule.ALL else g[:1] for g in groups.values()]
    assert [list(g) for g in keyed.row_groups] == expected
    assert len(set(keyed.digests)) == len(keyed)


def test_multi_column_keys_and_missing_columns() -> None:
    table = Table(("first", "last", "city"), (("Ann", "Lee", "x"), ("ann ", "LEE", "y"), ("Ann", "", "z")))
    rules = KeyRules(CaseRule.CASEFOLD, EmptyKeyRule.DROP, DuplicateRule.FIRST)
    keyed = index_keys(table, ("first", "last"), rules)
    assert keyed.row_groups == ((0,),)  # row 1 repeats row 0's key; row 2 has an empty column
    assert keyed.dropped_rows == (2,)
    with pytest.raises(SpecError):
        index_keys(table, ("first", "zip"), rules)
    with pytest.raises(SpecError):
        index_keys(table, (), rules)
    with pytest.raises(SpecError):
        Table(("a", "a"), ())
    with pytest.raises(SpecError):
        Table(("a", "b"), (("1",),))
