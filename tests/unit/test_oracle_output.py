"""Public outputs for oracle consumers: naming (labels, group-by), scaling and half-to-even
rounding, ABI layout, refusals, determinism, and the decode used by the SDK/CLI."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from eth_abi.abi import decode, encode
from hypothesis import given
from hypothesis import strategies as st

from compute.errors import SpecError
from compute.mpc import Accuracy, Column, Reveal, TableSchema, parse_sql, simulate
from compute.mpc.numerics import Field, Numerics
from compute.mpc.query import Func
from compute.mpc.result import AggregateResult, QueryResult
from oracle.node.oracle_output import (
    PublicOutputSpec,
    decode_public_output,
    encode_public_output,
    output_values,
    parse_output_spec,
)

NUMERICS = Numerics.with_bits(Field("FM128"), 40)


def result(groups: tuple[str, ...], **columns: tuple[Func, tuple[Any, ...]]) -> QueryResult:
    """A QueryResult with the given columns (label -> (func, one value per group))."""
    aggs = tuple(
        AggregateResult(label, func, values, (0.0,) * len(groups))
        for label, (func, values) in columns.items()
    )
    return QueryResult(groups, aggs, NUMERICS, 10, 0.0, "00" * 32)


def single(label: str, value: Any, func: Func = Func.MEAN) -> QueryResult:
    return result(("*",), **{label: (func, (value,))})


def spec(values: list[str], types: list[str], decimals: int) -> PublicOutputSpec:
    return PublicOutputSpec.model_validate({"values": values, "types": types, "decimals": decimals})


MEAN = "mean(people.income)"


def test_one_mean_is_one_abi_word_as_the_credit_lender_decodes_it() -> None:
    out = encode_public_output(single(MEAN, 52_345.678), spec([MEAN], ["uint256"], 2))
    assert len(out) == 32
    assert out == (5_234_568).to_bytes(32, "big")
    assert decode_public_output(out, spec([MEAN], ["uint256"], 2)) == {MEAN: Decimal("52345.68")}


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (2.5, 0, 2),  # half to even
        (3.5, 0, 4),
        (-2.5, 0, -2),
        (0.125, 2, 12),  # 0.125 is exact in binary: a true tie, to even
        (0.375, 2, 38),
        (1.005, 2, 100),  # the double 1.005 is 1.00499999999999989...: below the tie
        (1e-19, 18, 0),
        (123, 3, 123_000),  # integer values (counts) scale exactly
        (0.1, 18, 100_000_000_000_000_006),  # the exact binary value of 0.1, not 1e17
    ],
)
def test_scaling_rounds_the_exact_binary_value_half_to_even(value: Any, decimals: int, expected: int) -> None:
    assert output_values(single(MEAN, value), spec([MEAN], ["int256"], decimals)) == [expected]


def test_negative_values_need_int256_and_decode_back() -> None:
    res = single("min(people.debt)", -1234.5, Func.MIN)
    with pytest.raises(SpecError, match="negative.*int256"):
        encode_public_output(res, spec(["min(people.debt)"], ["uint256"], 1))
    out = encode_public_output(res, spec(["min(people.debt)"], ["int256"], 1))
    assert decode(["int256"], out) == (-12_345,)
    assert decode_public_output(out, spec(["min(people.debt)"], ["int256"], 1)) == {
        "min(people.debt)": Decimal("-1234.5")
    }


def test_overflow_is_refused() -> None:
    with pytest.raises(SpecError, match="does not fit uint256"):
        encode_public_output(single(MEAN, 1e70), spec([MEAN], ["uint256"], 18))
    with pytest.raises(SpecError, match="does not fit int256"):
        encode_public_output(single(MEAN, -1e70), spec([MEAN], ["int256"], 18))
    assert output_values(single(MEAN, 1e50), spec([MEAN], ["uint256"], 18)) == [int(Decimal(1e50)) * 10**18]


def test_non_finite_and_histogram_values_are_refused() -> None:
    with pytest.raises(SpecError, match="not finite"):
        encode_public_output(single(MEAN, float("nan")), spec([MEAN], ["int256"], 0))
    with pytest.raises(SpecError, match="not finite"):
        encode_public_output(single(MEAN, float("inf")), spec([MEAN], ["int256"], 0))
    hist = single("histogram(people.age, [18, 30])", (3, 4), Func.HISTOGRAM)
    with pytest.raises(SpecError, match="histogram"):
        encode_public_output(hist, spec(["histogram(people.age, [18, 30])"], ["uint256"], 0))


def test_group_by_values_are_named_label_at_group_in_spec_order() -> None:
    res = result(
        ("north", "south"),
        **{MEAN: (Func.MEAN, (40_000.0, 60_000.25)), "count(*)": (Func.COUNT, (12, 30))},
    )
    s = spec([f"{MEAN}@south", "count(*)@north", f"{MEAN}@north"], ["uint256", "uint256", "uint256"], 2)
    out = encode_public_output(res, s)
    assert decode(["uint256"] * 3, out) == (6_000_025, 1_200, 4_000_000)
    assert decode_public_output(out, s) == {
        f"{MEAN}@south": Decimal("60000.25"),
        "count(*)@north": Decimal(12),
        f"{MEAN}@north": Decimal(40000),
    }


def test_a_group_named_with_an_at_sign_is_addressed_after_the_first_one() -> None:
    res = result(("a@b", "c"), **{MEAN: (Func.MEAN, (1.0, 2.0))})
    assert output_values(res, spec([f"{MEAN}@a@b"], ["uint256"], 0)) == [1]


def test_missing_labels_and_groups_are_refused_with_what_exists() -> None:
    res = result(("north", "south"), **{MEAN: (Func.MEAN, (1.0, 2.0))})
    with pytest.raises(SpecError, match=r"no aggregate 'mean\(income\)'.*mean\(people.income\)"):
        encode_public_output(res, spec(["mean(income)@north"], ["uint256"], 0))
    with pytest.raises(SpecError, match="no group 'west'.*north, south"):
        encode_public_output(res, spec([f"{MEAN}@west"], ["uint256"], 0))
    with pytest.raises(SpecError, match="grouped; name one group"):
        encode_public_output(res, spec([MEAN], ["uint256"], 0))
    with pytest.raises(SpecError, match="no group 'x'"):
        encode_public_output(single(MEAN, 1.0), spec([f"{MEAN}@x"], ["uint256"], 0))
    assert output_values(single(MEAN, 1.0), spec([f"{MEAN}@*"], ["uint256"], 0)) == [1]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"values": [MEAN], "types": ["uint256"]}, "decimals"),
        ({"values": [MEAN], "types": ["uint256"], "decimals": 19}, "decimals"),
        ({"values": [MEAN], "types": ["uint256"], "decimals": -1}, "decimals"),
        ({"values": [MEAN], "types": ["uint256"], "decimals": 2.0}, "decimals"),
        ({"values": [MEAN], "types": ["uint128"], "decimals": 2}, "types"),
        ({"values": [MEAN, "count(*)"], "types": ["uint256"], "decimals": 2}, "2 values but 1 types"),
        ({"values": [], "types": [], "decimals": 2}, "values"),
        ({"values": [MEAN, MEAN], "types": ["uint256"] * 2, "decimals": 2}, "named twice"),
        ({"values": [f"{MEAN}@"], "types": ["uint256"], "decimals": 2}, "bad value name"),
        ({"values": ["@north"], "types": ["uint256"], "decimals": 2}, "bad value name"),
        ({"values": [MEAN], "types": ["uint256"], "decimals": 2, "receiver": "x"}, "receiver"),
        ({"values": ["x"] * 33, "types": ["uint256"] * 33, "decimals": 0}, "values"),
    ],
)
def test_invalid_output_specs_are_refused(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        parse_output_spec(raw)


def test_the_spec_is_frozen() -> None:
    s = spec([MEAN], ["uint256"], 2)
    with pytest.raises(ValueError):
        s.decimals = 3


def test_decode_refuses_bytes_of_the_wrong_length() -> None:
    with pytest.raises(SpecError, match="33 bytes"):
        decode_public_output(b"\x00" * 33, spec([MEAN], ["uint256"], 2))


@given(
    st.lists(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=0, max_value=18),
)
def test_encoding_is_deterministic_and_decodes_within_half_a_unit(values: list[float], decimals: int) -> None:
    labels = [f"mean(t.c{i})" for i in range(len(values))]
    res = result(("*",), **{lb: (Func.MEAN, (v,)) for lb, v in zip(labels, values, strict=True)})
    s = spec(labels, ["int256"] * len(values), decimals)
    copy = result(("*",), **{lb: (Func.MEAN, (float(v),)) for lb, v in zip(labels, values, strict=True)})
    out = encode_public_output(res, s)
    assert out == encode_public_output(copy, s)
    assert out == encode(["int256"] * len(values), output_values(res, s))
    decoded = decode_public_output(out, s)
    for label, v in zip(labels, values, strict=True):
        assert abs(decoded[label] - Decimal(v)) <= Decimal(1) / (2 * Decimal(10) ** decimals)


def test_labels_of_a_real_simulated_query_with_group_by() -> None:
    schema = TableSchema(
        "bank",
        (Column.number("income", 0, 200_000), Column.category("segment", ("young", "senior"))),
    )
    rng = np.random.default_rng(7)
    parts = [
        {"income": rng.uniform(20_000, 90_000, 40), "segment": rng.choice(["young", "senior"], 40)}
        for _ in range(2)
    ]
    query = parse_sql(
        "SELECT mean(income), count(*) FROM bank GROUP BY segment",
        [schema],
        min_group_size=5,
        reveal=Reveal.everyone(),
        accuracy=Accuracy(1e-3),
    )
    res = simulate(query, {"bank": parts})
    s = spec(
        ["mean(bank.income)@senior", "count(*)@young"],
        ["uint256", "uint256"],
        2,
    )
    decoded = decode_public_output(encode_public_output(res, s), s)
    incomes = np.concatenate([p["income"] for p in parts])
    segments = np.concatenate([p["segment"] for p in parts])
    senior = incomes[segments == "senior"].mean()
    bound = res.bound("mean(bank.income)", "senior") + 0.005  # engine bound + half a cent of rounding
    assert abs(float(decoded["mean(bank.income)@senior"]) - senior) <= bound
    assert decoded["count(*)@young"] == int((segments == "young").sum())
