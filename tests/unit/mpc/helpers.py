"""Shared data and reference computations for the MPC engine tests.

Three providers hold rows of the same table (horizontal), or two providers hold aligned
columns of the same rows (vertical). References are plain pandas/numpy on the plaintext.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from compute.mpc import Accuracy, Column, QueryResult, Reveal, TableSchema

REGIONS = ("north", "south", "east")

PEOPLE = TableSchema(
    "people",
    (
        Column.number("income", 0, 200_000),
        Column.number("age", 18, 90, integer=True),
        Column.category("region", REGIONS),
        Column.number("score", -5, 5),
        Column.number("debt", -50_000, 50_000),
    ),
)

PRICES = TableSchema("a", (Column.number("unit_price", 0, 500), Column.category("shop", ("web", "store"))))
UNITS = TableSchema("b", (Column.number("units", 0, 1000, integer=True), Column.number("discount", 0, 0.5)))

TO_ZERO = Reveal.to(0)
TIGHT = Accuracy(1e-5)


def people(n: int, seed: int) -> dict[str, Any]:
    """One provider's rows: incomes 20k..150k, ages 18..90, a score correlated with income."""
    rng = np.random.default_rng(seed)
    income = rng.uniform(20_000, 150_000, n)
    return {
        "income": income,
        "age": rng.integers(18, 91, n),
        "region": rng.choice(REGIONS, n),
        "score": np.clip(income / 30_000 - 2.5 + rng.normal(0, 0.6, n), -5, 5),
        "debt": rng.normal(0, 12_000, n).clip(-50_000, 50_000),
    }


def frame(parts: list[dict[str, Any]]) -> pd.DataFrame:
    """The plaintext union of providers' rows (the reference's view)."""
    return pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)


def assert_within(result: QueryResult, label: str, group: str, expected: float) -> None:
    """|result - expected| <= stated bound (plus float64 rounding of the reference)."""
    value = result.value(label, group)
    bound = result.bound(label, group)
    assert isinstance(value, float)
    slack = 1e-12 * max(1.0, abs(expected))
    assert abs(value - expected) <= bound + slack, f"{label}[{group}]: {value} vs {expected}, bound {bound}"
