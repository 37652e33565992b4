"""The query model: JSON round trip and canonical hash (property-based), and validation."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import SpecError
from compute.mpc import (
    Accuracy,
    Aggregate,
    And,
    Arith,
    Cmp,
    ColRef,
    Compare,
    Const,
    DisclosureRefused,
    Field,
    Func,
    Neg,
    Not,
    Or,
    Partition,
    Query,
    Reveal,
    SqlError,
)

from .helpers import PEOPLE

NUMBERS = [ColRef("people", c) for c in ("income", "age", "score", "debt")]
REGION = ColRef("people", "region")

consts = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(Const)
exprs = st.recursive(
    st.one_of(st.sampled_from(NUMBERS), consts),
    lambda inner: st.one_of(
        st.tuples(st.sampled_from("+-*"), inner, inner).map(lambda t: Arith(t[0], t[1], t[2])),
        inner.map(Neg),
        inner.map(lambda e: Arith("/", e, Const(4.0))),
    ),
    max_leaves=4,
)
compares = st.one_of(
    st.tuples(exprs, st.sampled_from(list(Cmp)), st.integers(-100, 100)).map(
        lambda t: Compare(t[0], t[1], float(t[2]))
    ),
    st.tuples(st.sampled_from([Cmp.EQ, Cmp.NE]), st.sampled_from(["north", "south", "east"])).map(
        lambda t: Compare(REGION, t[0], t[1])
    ),
)
predicates = st.recursive(
    compares,
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=3).map(lambda ts: And(tuple(ts))),
        st.lists(inner, min_size=2, max_size=3).map(lambda ts: Or(tuple(ts))),
        inner.map(Not),
    ),
    max_leaves=5,
)
aggregates = st.one_of(
    st.just(Aggregate(Func.COUNT)),
    st.tuples(
        st.sampled_from([Func.SUM, Func.MEAN, Func.VAR_SAMP, Func.STD_POP, Func.MIN, Func.MAX]), exprs
    ).map(lambda t: Aggregate(t[0], (t[1],))),
    st.tuples(exprs, st.integers(1, 10**6)).map(lambda t: Aggregate(Func.QUANTILE, (t[0],), q=t[1] / 10**6)),
    st.tuples(exprs, st.lists(st.integers(-1000, 1000), min_size=2, max_size=6, unique=True)).map(
        lambda t: Aggregate(Func.HISTOGRAM, (t[0],), edges=tuple(float(e) for e in sorted(t[1])))
    ),
    st.tuples(st.sampled_from([Func.CORR, Func.WEIGHTED_SUM]), exprs, exprs).map(
        lambda t: Aggregate(t[0], (t[1], t[2]))
    ),
)
queries = st.builds(
    Query,
    tables=st.just((PEOPLE,)),
    partition=st.just(Partition.HORIZONTAL),
    select=st.lists(aggregates, min_size=1, max_size=5).map(tuple),
    where=st.none() | predicates,
    group_by=st.none() | st.just(REGION),
    min_group_size=st.integers(2, 1000),
    reveal=st.sampled_from([Reveal.to(0), Reveal.to(2), Reveal.everyone(), Reveal.external()]),
    accuracy=st.one_of(
        st.floats(1e-12, 1.0).map(Accuracy),
        st.integers(14, 26).map(lambda f: Accuracy(1e-3, Field.FM64, f)),
    ),
)


@settings(max_examples=200, deadline=None)
@given(queries)
def test_json_round_trip_and_canonical_hash(query: Query) -> None:
    text = query.canonical_json()
    again = Query.from_json(text)
    assert again == query
    assert again.canonical_json() == text
    assert again.digest() == query.digest()
    assert json.loads(text)["version"] == 1


def test_malformed_json_is_a_spec_error() -> None:
    good = Query(
        (PEOPLE,), Partition.HORIZONTAL, (Aggregate(Func.COUNT),), None, None, 5, Reveal.to(0), Accuracy(1e-3)
    ).to_json()
    for broken in (
        {**good, "extra": 1},
        {**good, "version": 2},
        {**good, "select": "count"},
        {**good, "partition": "diagonal"},
        {**good, "where": {"cmp": ">", "expr": {"col": ["people", "nope"]}, "value": 1}},
        {**good, "reveal": {"public": True, "receiver": 1}},
    ):
        with pytest.raises(SpecError):
            Query.from_json(broken)
    with pytest.raises(SpecError, match="does not parse"):
        Query.from_json("{")


def test_programmatic_queries_are_validated() -> None:
    def make(**changes: object) -> Query:
        fields: dict[str, object] = {
            "tables": (PEOPLE,),
            "partition": Partition.HORIZONTAL,
            "select": (Aggregate(Func.COUNT),),
            "where": None,
            "group_by": None,
            "min_group_size": 5,
            "reveal": Reveal.to(0),
            "accuracy": Accuracy(1e-3),
        }
        fields.update(changes)
        return Query(**fields)  # type: ignore[arg-type]

    with pytest.raises(SpecError, match="category column"):
        make(select=(Aggregate(Func.SUM, (REGION,)),))
    with pytest.raises(SpecError, match="division only by a nonzero constant"):
        make(select=(Aggregate(Func.SUM, (Arith("/", NUMBERS[0], NUMBERS[1]),)),))
    with pytest.raises(SpecError, match="only a category column can group"):
        make(group_by=NUMBERS[1])
    with pytest.raises(SpecError, match="no column"):
        make(where=Compare(ColRef("people", "salary"), Cmp.GT, 1.0))
    with pytest.raises(SpecError, match="vertical query joins at least two"):
        make(partition=Partition.VERTICAL)
    with pytest.raises(SpecError, match="multiple of 1e-6"):
        Aggregate(Func.QUANTILE, (NUMBERS[0],), q=0.1234567)


def test_errors_survive_the_trip_between_processes() -> None:
    refused = pickle.loads(pickle.dumps(DisclosureRefused(("east",), 10)))
    assert refused.small_groups == ("east",) and "min_group_size=10" in str(refused)
    sql = pickle.loads(pickle.dumps(SqlError("unknown column 'x'", 12)))
    assert sql.pos == 12 and str(sql) == "SQL error at position 12: unknown column 'x'"
