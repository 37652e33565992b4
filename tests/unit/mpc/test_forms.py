"""The normalised forms behind every per-row value: checked without MPC against a model of
SPU's fixed-point arithmetic (truncating encoding, one-bit-error truncation after products).

Property: for random expressions over columns with random declared ranges and random rows in
those ranges, |stored| <= 1, center + 2^exp * stored is the expression's value, and the
fixed-point evaluation stays within the form's `delta`.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.mpc import (
    Accuracy,
    Aggregate,
    Arith,
    ColRef,
    Column,
    Const,
    Func,
    Neg,
    Partition,
    Query,
    Reveal,
    TableSchema,
)
from compute.mpc.forms import FormBuilder, Leaf, Linear, Product, Term, column_norm
from compute.mpc.numerics import Field, Numerics

COLUMNS = ("x", "y", "z")


@st.composite
def ranges(draw: st.DrawFn) -> tuple[float, float, bool]:
    integer = draw(st.booleans())
    lo = draw(st.integers(-(10**6), 10**6)) / (1 if integer else draw(st.sampled_from([1, 8, 1000])))
    width = draw(st.integers(1, 10**6)) / (1 if integer else draw(st.sampled_from([1, 16, 1000])))
    return float(lo), float(lo + width), integer


def expressions(depth: int = 3) -> st.SearchStrategy[object]:
    leaves = st.one_of(
        st.sampled_from(COLUMNS).map(lambda c: ColRef("t", c)),
        st.integers(-20, 20).map(lambda v: Const(float(v) / 4)),
    )

    def extend(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.one_of(
            st.tuples(st.sampled_from("+-*"), inner, inner).map(lambda t: Arith(t[0], t[1], t[2])),  # type: ignore[arg-type]
            inner.map(lambda e: Neg(e)),  # type: ignore[arg-type]
            st.tuples(inner, st.sampled_from([3.0, -0.5, 7.0])).map(lambda t: Arith("/", t[0], Const(t[1]))),  # type: ignore[arg-type]
        )

    return st.recursive(leaves, extend, max_leaves=5)


def direct(expr: object, data: dict[str, np.ndarray]) -> np.ndarray:
    if isinstance(expr, ColRef):
        return data[expr.column]
    if isinstance(expr, Const):
        return np.full(len(data["x"]), expr.value)
    if isinstance(expr, Neg):
        return -direct(expr.operand, data)
    assert isinstance(expr, Arith)
    a, b = direct(expr.left, data), direct(expr.right, data)
    if expr.op == "+":
        return a + b
    if expr.op == "-":
        return a - b
    return a * b if expr.op == "*" else a / b


class FixedPoint:
    """SPU's fixed-point semantics: encode truncates; a product loses at most one ulp."""

    def __init__(self, bits: int, rng: np.random.Generator) -> None:
        self.scale = 2.0**bits
        self.rng = rng

    def encode(self, v: np.ndarray | float) -> np.ndarray:
        return np.trunc(np.asarray(v, dtype=np.float64) * self.scale) / self.scale

    def mul(self, a: np.ndarray, b: np.ndarray | float) -> np.ndarray:
        exact = np.floor(a * self.scale * b) / self.scale
        return exact + self.rng.integers(0, 2, np.shape(exact)) / self.scale


def evaluate(term: Term, leaves: dict[str, np.ndarray], fxp: FixedPoint | None) -> np.ndarray:
    if isinstance(term, Leaf):
        return leaves[term.column]
    if isinstance(term, Product):
        a, b = evaluate(term.left, leaves, fxp), evaluate(term.right, leaves, fxp)
        return a * b if fxp is None else fxp.mul(a, b)
    assert isinstance(term, Linear)
    total = np.zeros_like(next(iter(leaves.values())))
    for coef, child in term.terms:
        value = evaluate(child, leaves, fxp)
        if abs(coef) == 1.0:
            total = total + coef * value
        else:
            total = total + (value * coef if fxp is None else fxp.mul(value, fxp.encode(coef)))
    return total + (term.const if fxp is None else fxp.encode(term.const))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(ranges(), min_size=3, max_size=3),
    expressions(),
    st.sampled_from([(Field.FM64, 20), (Field.FM64, 24), (Field.FM128, 40)]),
    st.integers(0, 2**32 - 1),
)
def test_forms_are_normalised_exact_and_within_delta(
    declared: list[tuple[float, float, bool]], expr: object, params: tuple[Field, int], seed: int
) -> None:
    cols = tuple(
        Column.number(name, lo, hi, integer=integer)
        for name, (lo, hi, integer) in zip(COLUMNS, declared, strict=True)
    )
    query = Query(
        (TableSchema("t", cols),),
        Partition.HORIZONTAL,
        (Aggregate(Func.COUNT),),
        None,
        None,
        1,
        Reveal.to(0),
        Accuracy(1e-3),
    )
    numerics = Numerics.with_bits(*params)
    form = FormBuilder(query, numerics).form(expr)  # type: ignore[arg-type]
    rng = np.random.default_rng(seed)
    data = {}
    for col in cols:
        values = rng.uniform(col.lo, col.hi, 64)
        values[:2] = (col.lo, col.hi)  # the range's ends
        data[col.name] = np.round(values) if col.integer else values
    truth = direct(expr, data)
    assert np.all(truth >= form.lo - 1e-9 * max(1, abs(form.lo))) and np.all(
        truth <= form.hi + 1e-9 * max(1, abs(form.hi))
    )
    if form.term is None:
        assert np.allclose(truth, form.center, rtol=1e-12, atol=1e-9)
        return
    encoded = {}
    fxp = FixedPoint(numerics.fraction_bits, rng)
    for col in cols:
        center, exp = column_norm(col)
        encoded[col.name] = fxp.encode((data[col.name] - center) * 2.0**-exp)
    exact = (truth - form.center) / form.scale  # the true stored value
    slack = 1e-12 * (1 + max(abs(form.lo), abs(form.hi)) / form.scale)  # float64 rounding of the reference
    assert np.all(np.abs(exact) <= 1 + slack)
    computed = evaluate(form.term, encoded, fxp)
    assert np.max(np.abs(computed - exact)) <= form.delta + slack
