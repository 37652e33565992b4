"""Every formula operation under HEU Paillier (OU and ZPaillier) against plain Python/numpy.

Integer columns are exact; fixed-point reals equal the computation on round(x * scale) /
scale exactly, and so stay within `error_bound` of the real-number result.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from compute.errors import ComputeError, SpecError
from compute.he import (
    HETaskSpec,
    OwnerKeys,
    decrypt,
    decrypt_exact,
    encrypt_columns,
    error_bound,
    evaluate,
)

from .helpers import rng

N = 40
_r = rng(11)
A = _r.integers(-1000, 1000, N)
B = _r.integers(-(10**6), 10**6, N)
W = [Fraction(int(k), 4) for k in _r.integers(-9, 10, N)]  # quarters, mixed signs, zeros
INTS = {"a": A, "b": B}
COLS = ("a", "b")


def py(arr: npt.NDArray[Any]) -> list[int]:
    return [int(v) for v in arr]


@pytest.fixture(scope="module")
def int_blobs(key_store: dict[Any, OwnerKeys]) -> dict[Any, bytes]:
    return {}


def encrypted(keys: OwnerKeys, cache: dict[Any, bytes]) -> bytes:
    if keys.scheme not in cache:
        cache[keys.scheme] = encrypt_columns(keys, INTS, HETaskSpec(keys.scheme, "sum(a)", COLS, scale=1))
    return cache[keys.scheme]


SCALAR_CASES: list[tuple[str, Callable[[], Fraction]]] = [
    ("sum(a)", lambda: Fraction(sum(py(A)))),
    ("mean(a)", lambda: Fraction(sum(py(A)), N)),
    ("count(b)", lambda: Fraction(N)),
    ("sum(a - b) / 3", lambda: Fraction(sum(py(A)) - sum(py(B)), 3)),
    ("mean(b) + 1.5", lambda: Fraction(sum(py(B)), N) + Fraction(3, 2)),
    ("-sum(b) * 0.01", lambda: -Fraction(sum(py(B)), 100)),
    ("sum(a) / count(a)", lambda: Fraction(sum(py(A)), N)),
    (
        f"dot(a, [{', '.join(str(float(w)) for w in W)}])",
        lambda: sum((w * int(a) for w, a in zip(W, A, strict=True)), Fraction(0)),
    ),
    (f"dot(b, [{', '.join(['-2'] * N)}])", lambda: Fraction(-2 * sum(py(B)))),
]


@pytest.mark.parametrize(("formula", "expected"), SCALAR_CASES, ids=[c[0][:24] for c in SCALAR_CASES])
def test_scalar_results_are_exact(
    paillier_keys: OwnerKeys, int_blobs: dict[Any, bytes], formula: str, expected: Callable[[], Fraction]
) -> None:
    spec = HETaskSpec(paillier_keys.scheme, formula, COLS, scale=1)
    out = evaluate(paillier_keys.public_context, encrypted(paillier_keys, int_blobs), spec.formula)
    assert decrypt_exact(paillier_keys, out, spec) == expected()
    value = decrypt(paillier_keys, out, spec)
    want = expected()
    if want.denominator == 1:
        assert type(value) is int and value == want
    else:
        assert value == pytest.approx(float(want), rel=1e-15)


COLUMN_CASES: list[tuple[str, Callable[[int, int], Fraction]]] = [
    ("a + b", lambda a, b: Fraction(a + b)),
    ("a - b", lambda a, b: Fraction(a - b)),
    ("-a", lambda a, b: Fraction(-a)),
    ("a * -4", lambda a, b: Fraction(-4 * a)),
    ("3*a - 2*b + 5", lambda a, b: Fraction(3 * a - 2 * b + 5)),
    ("2.5*a + 0.3*b - 7", lambda a, b: Fraction(5, 2) * a + Fraction(3, 10) * b - 7),
    ("a / 4", lambda a, b: Fraction(a, 4)),
    ("7 - a", lambda a, b: Fraction(7 - a)),
    ("a*0 + b", lambda a, b: Fraction(b)),
]


@pytest.mark.parametrize(("formula", "expected"), COLUMN_CASES, ids=[c[0] for c in COLUMN_CASES])
def test_column_results_are_exact(
    paillier_keys: OwnerKeys,
    int_blobs: dict[Any, bytes],
    formula: str,
    expected: Callable[[int, int], Fraction],
) -> None:
    spec = HETaskSpec(paillier_keys.scheme, formula, COLS, scale=1)
    out = evaluate(paillier_keys.public_context, encrypted(paillier_keys, int_blobs), spec.formula)
    want = [expected(int(a), int(b)) for a, b in zip(A, B, strict=True)]
    assert decrypt_exact(paillier_keys, out, spec) == want
    value = decrypt(paillier_keys, out, spec)
    assert isinstance(value, np.ndarray) and value.shape == (N,)
    if all(w.denominator == 1 for w in want):
        assert value.dtype == np.int64 and value.tolist() == [int(w) for w in want]
    else:
        np.testing.assert_allclose(value, [float(w) for w in want], rtol=1e-15)


def test_fixed_point_reals_within_stated_bound(zp_keys: OwnerKeys) -> None:
    x = rng(3).normal(0, 50, N)
    y = rng(4).normal(1000, 300, N)
    scale = 1000
    rounded_x = [Fraction(int(v), scale) for v in np.rint(x * scale)]
    rounded_y = [Fraction(int(v), scale) for v in np.rint(y * scale)]
    cases = {
        "sum(x)": (sum(rounded_x), x.sum()),
        "mean(y) - 1.25": (sum(rounded_y) / N - Fraction(5, 4), y.mean() - 1.25),
        "dot(x, [{}])".format(",".join(["0.5", "-2"] * (N // 2))): (
            sum((v * (Fraction(1, 2) if i % 2 == 0 else -2) for i, v in enumerate(rounded_x)), Fraction(0)),
            float(x @ np.array([0.5, -2] * (N // 2))),
        ),
    }
    blob = None
    for formula, (exact, real) in cases.items():
        spec = HETaskSpec(zp_keys.scheme, formula, ("x", "y"), scale=scale)
        blob = blob or encrypt_columns(zp_keys, {"x": x, "y": y}, spec)
        out = evaluate(zp_keys.public_context, blob, spec.formula)
        assert decrypt_exact(zp_keys, out, spec) == exact  # exact fixed-point arithmetic
        bound = error_bound(spec, {"x": x, "y": y})
        assert 0 < bound < 1.0
        assert abs(decrypt(zp_keys, out, spec) - real) <= bound

    spec = HETaskSpec(zp_keys.scheme, "2*x + y", ("x", "y"), scale=scale)
    out = evaluate(zp_keys.public_context, blob or b"", spec.formula)
    got = decrypt(zp_keys, out, spec)
    bound = error_bound(spec, {"x": x, "y": y})
    assert np.all(np.abs(got - (2 * x + y)) <= bound)
    assert np.all(bound == pytest.approx(1.5 / scale))


def test_values_near_the_input_bound_stay_exact(ou_keys: OwnerKeys) -> None:
    big = np.array([2**62 - 1, -(2**62) + 1, 2**61, 12345], dtype=np.int64)
    spec = HETaskSpec(ou_keys.scheme, "sum(v) * 3 - 1", ("v",), scale=1)
    out = evaluate(ou_keys.public_context, encrypt_columns(ou_keys, {"v": big}, spec), spec.formula)
    assert decrypt(ou_keys, out, spec) == 3 * sum(int(v) for v in big) - 1
    with pytest.raises(SpecError, match="2\\^62"):
        encrypt_columns(ou_keys, {"v": np.array([2**62], dtype=np.int64)}, spec)


def test_possible_overflow_is_refused(ou_keys: OwnerKeys, int_blobs: dict[Any, bytes]) -> None:
    tiny = "*".join(["1e-30"] * 12)  # adding 1e-360 needs a multiplier of 10^360 > the plaintext space
    with pytest.raises(ComputeError, match="overflow the Paillier plaintext space"):
        evaluate(ou_keys.public_context, encrypted(ou_keys, int_blobs), f"sum(a) + {tiny}")


def test_ciphertext_product_is_refused_on_the_node(
    paillier_keys: OwnerKeys, int_blobs: dict[Any, bytes]
) -> None:
    with pytest.raises(ComputeError, match="cannot multiply two ciphertexts"):
        evaluate(paillier_keys.public_context, encrypted(paillier_keys, int_blobs), "sum(a*b)")


def test_shape_errors(ou_keys: OwnerKeys) -> None:
    spec = HETaskSpec(ou_keys.scheme, "a + c", ("a", "c"), scale=1)
    blob = encrypt_columns(ou_keys, {"a": A, "c": A[:5]}, spec)
    with pytest.raises(SpecError, match="different lengths|40 and 5 rows"):
        evaluate(ou_keys.public_context, blob, "a + c")
    with pytest.raises(SpecError, match="3 weights for 40 rows"):
        evaluate(ou_keys.public_context, blob, "dot(a, [1, 2, 3])")


def test_real_columns_need_a_scale(ou_keys: OwnerKeys) -> None:
    spec = HETaskSpec(ou_keys.scheme, "sum(x)", ("x",), scale=1)
    with pytest.raises(SpecError, match="non-integer"):
        encrypt_columns(ou_keys, {"x": np.array([1.5, 2.0])}, spec)
    out = evaluate(
        ou_keys.public_context, encrypt_columns(ou_keys, {"x": np.array([1.0, -2.0])}, spec), "sum(x)"
    )
    assert decrypt(ou_keys, out, spec) == -1
