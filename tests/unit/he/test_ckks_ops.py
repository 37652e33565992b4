"""Every formula operation under TenSEAL CKKS against numpy, within the stated error bound.

The bound (`error_bound`) is checked from both sides: the result lies within it, and it is
not vacuous (at most 1e-5 relative to the magnitude of the terms; in practice far less).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from compute.errors import ComputeError, SpecError
from compute.he import OwnerKeys, decrypt, encrypt_columns, error_bound, evaluate

from .helpers import ckks_spec, rng

N = 5000  # two ciphertexts per column: 4096 + 904 slots
_r = rng(5)
DATA = {
    "age": _r.integers(18, 90, N).astype(np.int64),
    "income": np.round(_r.normal(50_000, 20_000, N), 2),
    "x": _r.normal(0, 3, N),
    "y": _r.normal(1, 2, N),
}
COLS = tuple(DATA)
W = _r.normal(0, 1, N).round(3)


@pytest.fixture(scope="module")
def blob(ckks_keys: OwnerKeys) -> bytes:
    return encrypt_columns(ckks_keys, DATA, ckks_spec("sum(x)", COLS))


def check(keys: OwnerKeys, blob: bytes, formula: str, expected: Any, magnitude: Any) -> None:
    spec = ckks_spec(formula, COLS)
    got = decrypt(keys, evaluate(keys.public_context, blob, spec.formula), spec)
    bound = error_bound(spec, DATA)
    err = np.abs(np.asarray(got) - expected)
    assert np.all(err <= bound), f"{formula}: error {np.max(err)} over bound {np.max(bound)}"
    assert np.all(bound <= 1e-5 * (1 + np.asarray(magnitude))), f"{formula}: bound {np.max(bound)} is vacuous"


d = DATA
CASES: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
    ("sum(income)", lambda: d["income"].sum(), lambda: np.abs(d["income"]).sum()),
    ("mean(income)", lambda: d["income"].mean(), lambda: np.abs(d["income"]).mean()),
    ("sum(x*y)", lambda: (d["x"] * d["y"]).sum(), lambda: np.abs(d["x"] * d["y"]).sum()),
    (
        "dot(x, [{}])".format(",".join(str(w) for w in W)),
        lambda: float(d["x"] @ W),
        lambda: float(np.abs(d["x"]) @ np.abs(W)),
    ),
    (
        "2.5*age + 0.3*income - 7",
        lambda: 2.5 * d["age"] + 0.3 * d["income"] - 7,
        lambda: 2.5 * d["age"] + 0.3 * np.abs(d["income"]) + 7,
    ),
    ("x + y", lambda: d["x"] + d["y"], lambda: np.abs(d["x"]) + np.abs(d["y"])),
    ("x - 2*y", lambda: d["x"] - 2 * d["y"], lambda: np.abs(d["x"]) + 2 * np.abs(d["y"])),
    ("-x / 4 + 1", lambda: -d["x"] / 4 + 1, lambda: np.abs(d["x"]) / 4 + 1),
    ("x*y - 3", lambda: d["x"] * d["y"] - 3, lambda: np.abs(d["x"] * d["y"]) + 3),
    ("x*y*x", lambda: d["x"] ** 2 * d["y"], lambda: np.abs(d["x"] ** 2 * d["y"])),
    (
        "sum(age - 2*income) / 3",
        lambda: (d["age"] - 2 * d["income"]).sum() / 3,
        lambda: (d["age"] + 2 * d["income"]).sum() / 3,
    ),
    (
        "mean(x) + mean(y)",
        lambda: d["x"].mean() + d["y"].mean(),
        lambda: np.abs(d["x"]).mean() + np.abs(d["y"]).mean(),
    ),
]


@pytest.mark.parametrize(("formula", "expected", "magnitude"), CASES, ids=[c[0][:24] for c in CASES])
def test_ops_match_numpy_within_bound(
    ckks_keys: OwnerKeys,
    blob: bytes,
    formula: str,
    expected: Callable[[], Any],
    magnitude: Callable[[], Any],
) -> None:
    check(ckks_keys, blob, formula, expected(), magnitude())


def test_count_is_public_and_exact(ckks_keys: OwnerKeys, blob: bytes) -> None:
    spec = ckks_spec("count(x) * 2", COLS)
    out = evaluate(ckks_keys.public_context, blob, spec.formula)
    assert decrypt(ckks_keys, out, spec) == 2 * N
    assert error_bound(spec, DATA) == 0.0


def test_dot_of_4096_values(ckks_keys: OwnerKeys) -> None:
    x = rng(9).uniform(-1, 1, 4096)
    w = rng(10).uniform(-1, 1, 4096).round(4)
    spec = ckks_spec("dot(x, [{}])".format(",".join(str(v) for v in w)), ("x",))
    out = evaluate(ckks_keys.public_context, encrypt_columns(ckks_keys, {"x": x}, spec), spec.formula)
    got = decrypt(ckks_keys, out, spec)
    bound = error_bound(spec, {"x": x})
    assert isinstance(bound, float) and isinstance(got, float)
    assert abs(got - float(x @ w)) <= bound <= 1e-5 * float(np.abs(x) @ np.abs(w))


def test_depth_beyond_parameters_is_refused(ckks_keys: OwnerKeys, blob: bytes) -> None:
    with pytest.raises(ComputeError, match="multiplicative depth"):
        evaluate(ckks_keys.public_context, blob, "sum(x*y*x*y)")
    with pytest.raises(ComputeError, match="multiplicative depth"):
        ckks_spec("x*y*x + y*y*y*y", COLS)


def test_capacity_overflow_is_reported_not_bounded() -> None:
    big = {"x": np.full(10, 1e4), "y": np.full(10, 1e4)}
    with pytest.raises(ComputeError, match="capacity"):
        error_bound(ckks_spec("x*y*x", ("x", "y")), big)  # 1e12 at depth 2 > 2^17


def test_nan_and_non_numeric_columns_are_refused(ckks_keys: OwnerKeys) -> None:
    spec = ckks_spec("sum(x)", ("x",))
    with pytest.raises(SpecError, match="NaN"):
        encrypt_columns(ckks_keys, {"x": np.array([1.0, np.nan])}, spec)
    with pytest.raises(SpecError, match="not numeric"):
        encrypt_columns(ckks_keys, {"x": np.array(["a", "b"])}, spec)
    with pytest.raises(SpecError, match="one-dimensional"):
        encrypt_columns(ckks_keys, {"x": np.ones((2, 2))}, spec)
    with pytest.raises(SpecError, match="missing column"):
        encrypt_columns(ckks_keys, {"z": np.ones(2)}, spec)
