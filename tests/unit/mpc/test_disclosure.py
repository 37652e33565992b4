"""Disclosure control: group sizes are computed inside the MPC; only one bit per group
(count >= min_group_size) is revealed before the results, and nothing else when a group is
too small: the program itself zeroes every output unless all flags hold."""

from __future__ import annotations

import numpy as np
import pytest

from compute.errors import SpecError
from compute.mpc import Accuracy, DisclosureRefused, parse_sql, plan_query, simulate
from compute.mpc.encode import encode_inputs
from compute.mpc.engine import Protocol, simulate_compiled
from compute.mpc.simulate import compile_plan, parts_of

from .helpers import PEOPLE, TO_ZERO, frame, people


def small_east(n: int, seed: int) -> dict[str, np.ndarray]:
    rows = people(n, seed)
    rows["region"] = np.where(rows["region"] == "east", "north", rows["region"])
    rows["region"][:2] = "east"  # two east rows per provider: six in all
    return rows


def test_a_group_below_min_group_size_refuses_the_query() -> None:
    data = {"people": [small_east(200, 1), small_east(150, 2), small_east(100, 3)]}
    sql = "SELECT mean(income) FROM people GROUP BY region"
    refused = parse_sql(sql, [PEOPLE], min_group_size=7, reveal=TO_ZERO, accuracy=Accuracy(1e-3))
    with pytest.raises(DisclosureRefused) as info:
        simulate(refused, data)
    assert info.value.small_groups == ("east",)
    assert isinstance(info.value, SpecError)
    allowed = parse_sql(sql, [PEOPLE], min_group_size=6, reveal=TO_ZERO, accuracy=Accuracy(1e-3))
    result = simulate(allowed, data)
    df = frame(data["people"])
    assert abs(
        result.value("mean(people.income)", "east") - df[df.region == "east"].income.mean()
    ) <= result.bound("mean(people.income)", "east")


def test_a_filtered_set_below_min_group_size_reveals_only_its_flag() -> None:
    data = {"people": [people(300, 4), people(300, 5)]}
    df = frame(data["people"])
    assert 0 < int((df.income > 149_000).sum()) < 25
    query = parse_sql(
        "SELECT sum(income), max(age), quantile(debt, 0.5) FROM people WHERE income > 149000",
        [PEOPLE],
        min_group_size=25,
        reveal=TO_ZERO,
        accuracy=Accuracy(1e-3),
    )
    parts, columns = parts_of(query, data)
    plan = plan_query(query, parts)
    outputs = simulate_compiled(
        compile_plan(plan), Protocol.ABY3, plan.numerics, encode_inputs(plan, columns)
    )
    flags, *values = outputs
    assert flags.tolist() == [False]
    assert all(np.all(np.asarray(v) == 0) for v in values)  # zeroed inside the MPC, not just hidden
    with pytest.raises(DisclosureRefused, match=r"group\(s\) \* cover fewer than min_group_size=25"):
        simulate(query, data)


def test_counts_are_revealed_only_when_asked_for() -> None:
    data = {"people": [people(120, 6), people(80, 7)]}
    query = parse_sql(
        "SELECT mean(age) FROM people GROUP BY region",
        [PEOPLE],
        min_group_size=5,
        reveal=TO_ZERO,
        accuracy=Accuracy(1e-3),
    )
    result = simulate(query, data)
    assert [a.label for a in result.aggregates] == ["mean(people.age)"]
    assert all(isinstance(v, float) for v in result.column("mean(people.age)").values)
