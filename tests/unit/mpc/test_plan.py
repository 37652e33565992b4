"""Planning, before any MPC: parameter choice per query, refusals, provider-side checks."""

from __future__ import annotations

import numpy as np
import pytest

from compute.errors import SpecError
from compute.mpc import Accuracy, Field, PartInfo, Query, Reveal, parse_sql, plan_query
from compute.mpc.encode import encode_part
from compute.mpc.numerics import fraction_bit_range

from .helpers import PEOPLE, PRICES, UNITS, people


def query(sql: str, accuracy: Accuracy, min_group_size: int = 10) -> Query:
    return parse_sql(
        sql, [PEOPLE, PRICES, UNITS], min_group_size=min_group_size, reveal=Reveal.to(0), accuracy=accuracy
    )


def parts(*rows: int) -> list[PartInfo]:
    return [PartInfo("people", f"p{i}", r) for i, r in enumerate(rows)]


def test_field_and_fraction_bits_follow_rows_and_target() -> None:
    loose = query("SELECT mean(income), sum(debt) FROM people", Accuracy(1e-4))
    small = plan_query(loose, parts(1000, 1000, 1000))
    assert small.numerics.field is Field.FM64
    assert small.numerics.fraction_bits == fraction_bit_range(Field.FM64, 3000)[1]
    big = plan_query(loose, parts(400_000, 400_000, 400_000))
    assert big.numerics.field is Field.FM128  # 1.2M rows: FM64 cannot divide by the count
    tight = plan_query(query("SELECT mean(income) FROM people", Accuracy(1e-8)), parts(1000))
    assert tight.numerics.field is Field.FM128
    for plan in (small, big, tight):
        for agg in plan.aggregates:
            assert agg.bound <= plan.query.accuracy.max_error * agg.scale


def test_impossible_targets_and_bad_forced_parameters_are_refused() -> None:
    with pytest.raises(SpecError, match="no fixed-point parameters meet max_error=1e-15"):
        plan_query(query("SELECT corr(income, score) FROM people", Accuracy(1e-15)), parts(100))
    forced = query("SELECT mean(income) FROM people", Accuracy(1e-4, Field.FM64, 12))
    with pytest.raises(SpecError, match="cannot hold 30000 rows"):
        plan_query(forced, parts(30_000))
    ok = plan_query(query("SELECT mean(income) FROM people", Accuracy(1e-3, Field.FM64, 18)), parts(30_000))
    assert (ok.numerics.field, ok.numerics.fraction_bits) == (Field.FM64, 18)
    with pytest.raises(SpecError, match="both"):
        Accuracy(1e-3, Field.FM64, None)


def test_parts_must_fit_the_partition_and_min_group_size() -> None:
    with pytest.raises(SpecError, match="fewer than min_group_size=10"):
        plan_query(query("SELECT count(*) FROM people", Accuracy(1e-3)), parts(4, 5))
    vertical = query("SELECT sum(a.unit_price * b.units) FROM a JOIN b", Accuracy(1e-3))
    with pytest.raises(SpecError, match="aligned rows"):
        plan_query(vertical, [PartInfo("a", "x", 100), PartInfo("b", "y", 99)])
    with pytest.raises(SpecError, match="no provider part for table"):
        plan_query(vertical, [PartInfo("a", "x", 100)])
    with pytest.raises(SpecError, match="not in the query"):
        plan_query(vertical, [PartInfo("a", "x", 100), PartInfo("b", "y", 100), PartInfo("people", "z", 5)])
    plan = plan_query(vertical, [PartInfo("a", "x", 60), PartInfo("a", "x2", 40), PartInfo("b", "y", 100)])
    # numbers per part; without GROUP BY the first table's parts also carry the all-true row flag
    assert [(s.name, s.shape) for s in plan.inputs] == [
        ("p0.num", (60, 1)),
        ("p0.cat", (60, 1)),
        ("p1.num", (40, 1)),
        ("p1.cat", (40, 1)),
        ("p2.num", (100, 1)),
    ]
    assert plan.digest() != plan_query(vertical, [PartInfo("a", "x", 100), PartInfo("b", "y", 100)]).digest()


def test_integer_filters_and_histograms_are_exact_real_ones_state_a_tolerance() -> None:
    exact = plan_query(
        query("SELECT histogram(age, [20.5, 40, 90]) FROM people WHERE age > 29.5", Accuracy(1e-3)),
        parts(100),
    )
    assert exact.where_tolerance == 0 and exact.aggregates[0].tolerance == 0
    real = plan_query(
        query("SELECT histogram(score, [-1, 0, 1]) FROM people WHERE income > 5e4", Accuracy(1e-3)),
        parts(100),
    )
    assert 0 < real.where_tolerance < 1e-3 * 200_000 and 0 < real.aggregates[0].tolerance < 1e-3


def test_providers_are_checked_against_their_declarations_before_sharing() -> None:
    plan = plan_query(
        query("SELECT mean(income) FROM people WHERE age > 30 GROUP BY region", Accuracy(1e-3)), parts(50)
    )
    good = people(50, 5)
    encoded = encode_part(plan, 0, good)
    assert encoded["p0.num"].shape == (50, 2) and encoded["p0.cat"].shape == (50, 3)
    assert np.all(np.abs(encoded["p0.num"]) <= 1) and np.all(encoded["p0.cat"].sum(axis=1) == 1)
    secret = 987_654.321
    bad = dict(good, income=np.where(np.arange(50) == 3, secret, good["income"]))
    with pytest.raises(SpecError, match="income has 1 values outside its declared range") as info:
        encode_part(plan, 0, bad)
    assert "987" not in str(info.value)  # errors never carry data
    with pytest.raises(SpecError, match="declared integer"):
        encode_part(plan, 0, dict(good, age=good["age"] + 0.5))
    with pytest.raises(SpecError, match="2 values outside its declared categories"):
        encode_part(plan, 0, dict(good, region=np.where(np.arange(50) < 2, "mars", good["region"])))
    with pytest.raises(SpecError, match="missing column age"):
        encode_part(plan, 0, {k: v for k, v in good.items() if k != "age"})
    with pytest.raises(SpecError, match=r"shape \(49,\), the plan expects \(50,\)"):
        encode_part(plan, 0, dict(good, income=good["income"][:49]))
    with pytest.raises(SpecError, match="not numeric"):
        encode_part(plan, 0, dict(good, income=np.array(["x"] * 50)))
    with pytest.raises(SpecError, match="non-finite"):
        encode_part(plan, 0, dict(good, income=np.full(50, np.nan)))
