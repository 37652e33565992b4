"""The SQL subset: what it compiles to, its canonical hash, and errors with positions raised
before any MPC (no MPC library is touched by these tests)."""

from __future__ import annotations

import json

import pytest

from compute.errors import SpecError
from compute.mpc import (
    Accuracy,
    Aggregate,
    And,
    Arith,
    Cmp,
    ColRef,
    Column,
    Compare,
    Const,
    Func,
    Partition,
    Query,
    Reveal,
    SqlError,
    TableSchema,
    parse_sql,
)

from .helpers import PEOPLE, PRICES, UNITS

KW = {"min_group_size": 10, "reveal": Reveal.to(0), "accuracy": Accuracy(1e-5)}
INCOME, AGE, REGION = ColRef("people", "income"), ColRef("people", "age"), ColRef("people", "region")


def parse(sql: str) -> Query:
    return parse_sql(sql, [PEOPLE, PRICES, UNITS], **KW)


def test_grouped_query_compiles_to_the_model() -> None:
    query = parse("SELECT mean(income), count(*) FROM people WHERE age >= 30 GROUP BY region")
    expected = Query(
        tables=(PEOPLE,),
        partition=Partition.HORIZONTAL,
        select=(Aggregate(Func.MEAN, (INCOME,)), Aggregate(Func.COUNT)),
        where=Compare(AGE, Cmp.GE, 30.0),
        group_by=REGION,
        min_group_size=10,
        reveal=Reveal.to(0),
        accuracy=Accuracy(1e-5),
    )
    assert query == expected
    assert query.groups == ("north", "south", "east")


def test_join_compiles_to_a_vertical_query_with_cross_provider_arithmetic() -> None:
    query = parse("SELECT sum(a.unit_price * b.units) FROM a JOIN b")
    assert query.partition is Partition.VERTICAL
    assert [t.name for t in query.tables] == ["a", "b"]
    assert query.select == (
        Aggregate(Func.SUM, (Arith("*", ColRef("a", "unit_price"), ColRef("b", "units")),)),
    )


def test_functions_predicates_and_literals() -> None:
    query = parse(
        "select median(income), quantile(age, 0.25), histogram(age, [18, 40, 90]), corr(income, score), "
        "var_pop(debt), stddev(debt), weighted_sum(score, age), avg(-income + 2.5e3) from people "
        "where not (region = 'north' or 40 < age) and (income - debt) * 2 >= -1e4 -- trailing comment"
    )
    labels = [a.label for a in query.select]
    assert labels == [
        "quantile(people.income, 0.5)",
        "quantile(people.age, 0.25)",
        "histogram(people.age, [18, 40, 90])",
        "corr(people.income, people.score)",
        "var_pop(people.debt)",
        "stddev_samp(people.debt)",
        "weighted_sum(people.score, people.age)",
        "mean(-people.income + 2500)",
    ]
    assert isinstance(query.where, And)
    flipped = query.where.terms[0].term.terms[1]  # type: ignore[union-attr]
    assert flipped == Compare(AGE, Cmp.GT, 40.0)  # "40 < age" is "age > 40"
    assert query.where.terms[1] == Compare(  # type: ignore[union-attr]
        Arith("*", Arith("-", INCOME, ColRef("people", "debt")), Const(2.0)), Cmp.GE, -1e4
    )


def test_spellings_of_one_query_share_one_hash_and_json_round_trips() -> None:
    a = parse("SELECT avg(income) FROM people WHERE region <> 'east' AND ((age > 20))")
    b = parse("select  MEAN( people.income )\nfrom people where people.region != 'east' and age>20;")
    assert a.digest() == b.digest()
    assert a.canonical_json() == b.canonical_json()
    text = a.canonical_json()
    assert Query.from_json(text) == a
    assert Query.from_json(json.loads(text)).digest() == a.digest()
    other = parse("SELECT avg(income) FROM people WHERE region <> 'east' AND age > 21")
    assert other.digest() != a.digest()


@pytest.mark.parametrize(
    ("sql", "message", "pos"),
    [
        ("SELECT mean(incme) FROM people", "unknown column 'incme'", 12),
        ("SELECT people.wage FROM people", "'people' is not an aggregate", 7),
        ("SELECT mean(people.wage) FROM people", "unknown column people.wage", 19),
        ("SELECT median(income), mode(age) FROM people", "unsupported function 'mode'", 23),
        ("SELECT mean(income) FROM people GROUP BY age", "only a category column can group", 41),
        ("SELECT mean(income) FROM peeple", "unknown table 'peeple'", 25),
        ("SELECT mean(income FROM people", "unclosed '(' or '['", 30),
        ("SELECT mean(income) FROM people WHERE age >= ", "compare with a constant, found end of query", 45),
        ("SELECT mean(income) FROM people WHERE age >= 3 3", "unexpected '3'", 47),
        ("SELECT mean(income) FROM people WHERE region > 'x'", "category column", 38),
        ("SELECT mean(income) FROM people WHERE region = 'west'", "no category 'west'", 38),
        ("SELECT mean(income) FROM people WHERE age = income", "compare with a constant", 44),
        ("SELECT sum(income / age) FROM people", "division only by a nonzero constant", 18),
        ("SELECT sum(region) FROM people", "category column", 11),
        ("SELECT mean(income) AS m FROM people", "aliases (AS) are not supported", 20),
        ("SELECT sum(a.unit_price) FROM a JOIN b ON a.x = b.y", "JOIN has no ON", 39),
        ("SELECT sum(units) FROM a JOIN b JOIN a", "appears twice", 37),
        ("SELECT quantile(age, 1.5) FROM people", "quantile level must be in (0, 1]", 7),
        ("SELECT histogram(age, [10, 5]) FROM people", "strictly increasing", 7),
        ("SELECT corr(income) FROM people", "takes 2 argument", 7),
        ("SELECT mean(__import__('os')) FROM people", "unknown column '__import__'", 12),
        ("SELECT mean(income) FROM people WHERE age >= 1e999", "number out of range", 45),
        ("SELECT mean(income) FROM people; DROP TABLE people", "unexpected 'DROP'", 33),
        ("SELECT mean(income) FROM people WHERE age @ 3", "unexpected character '@'", 42),
    ],
)
def test_errors_carry_the_offending_position(sql: str, message: str, pos: int) -> None:
    with pytest.raises(SqlError) as info:
        parse(sql)
    assert message in str(info.value)
    assert info.value.pos == pos, str(info.value)
    assert isinstance(info.value, SpecError)


def test_ambiguous_column_needs_a_table() -> None:
    left = TableSchema("l", (Column.number("v", 0, 1),))
    right = TableSchema("r", (Column.number("v", 0, 1),))
    with pytest.raises(SqlError, match="ambiguous"):
        parse_sql("SELECT sum(v) FROM l JOIN r", [left, right], **KW)
    assert parse_sql("SELECT sum(l.v) FROM l JOIN r", [left, right], **KW).select[0].args == (
        ColRef("l", "v"),
    )


def test_too_many_groups_is_refused_before_any_mpc() -> None:
    wide = TableSchema("w", (Column.category("zip", [f"z{i}" for i in range(65)]), Column.number("v", 0, 1)))
    with pytest.raises(SqlError, match="65 groups, more than the limit 64") as info:
        parse_sql("SELECT count(*) FROM w GROUP BY zip", [wide], **KW)
    assert info.value.pos == 32


def test_privacy_parameters_are_required_and_checked() -> None:
    with pytest.raises(TypeError):
        parse_sql("SELECT count(*) FROM people", [PEOPLE])  # type: ignore[call-arg]
    with pytest.raises(SpecError, match="min_group_size"):
        parse_sql(
            "SELECT count(*) FROM people",
            [PEOPLE],
            min_group_size=0,
            reveal=Reveal.to(0),
            accuracy=Accuracy(1e-3),
        )
    with pytest.raises(SpecError, match="needs min_group_size >= 2"):
        parse_sql(
            "SELECT var(age) FROM people",
            [PEOPLE],
            min_group_size=1,
            reveal=Reveal.to(0),
            accuracy=Accuracy(1e-3),
        )
    with pytest.raises(SpecError, match="max_error"):
        Accuracy(0.0)
    with pytest.raises(SpecError, match="receiver"):
        Reveal(False, None)
