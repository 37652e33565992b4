"""WHERE compiled for the program: tests on stored (normalised) values and one-hot columns.

Integer columns stored exactly compare with integer-adjusted constants (`age > 29.5` is
`age >= 30`), so their filters are exact; other comparisons are exact on the encoded values,
and a row whose true value is within the stated tolerance of a constant may go either way.
A constant outside the declared range decides a comparison at plan time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compute.mpc.expressions import And, Cmp, ColRef, Not, Or, Predicate
from compute.mpc.forms import Form, FormBuilder
from compute.mpc.numerics import Numerics
from compute.mpc.query import Query


@dataclass(frozen=True)
class Threshold:
    """`stored(form) op value` on stored units (value already normalised)."""

    form: Form
    op: Cmp
    value: float


@dataclass(frozen=True)
class CategoryTest:
    """One-hot column `index` of category column `column` (negated for !=)."""

    table: str
    column: str
    index: int
    negate: bool


@dataclass(frozen=True)
class Constant:
    """A test decided at plan time (e.g. a threshold outside the declared range)."""

    value: bool


@dataclass(frozen=True)
class AllOf:
    """Conjunction."""

    terms: tuple[Test, ...]


@dataclass(frozen=True)
class AnyOf:
    """Disjunction."""

    terms: tuple[Test, ...]


@dataclass(frozen=True)
class Negation:
    """Negation."""

    term: Test


Test = Threshold | CategoryTest | Constant | AllOf | AnyOf | Negation


def compile_where(query: Query, builder: FormBuilder, n: Numerics) -> tuple[Test, float]:
    tolerance = [0.0]

    def walk(p: Predicate) -> Test:
        if isinstance(p, And):
            return AllOf(tuple(walk(t) for t in p.terms))
        if isinstance(p, Or):
            return AnyOf(tuple(walk(t) for t in p.terms))
        if isinstance(p, Not):
            return Negation(walk(p.term))
        if isinstance(p.expr, ColRef) and not query.column(p.expr).is_number:
            col = query.column(p.expr)
            assert isinstance(p.value, str)
            return CategoryTest(p.expr.table, p.expr.column, col.categories.index(p.value), p.op is Cmp.NE)
        assert not isinstance(p.value, str)
        form = builder.form(p.expr)
        test, tol = threshold_test(form, p.op, float(p.value), n)
        tolerance[0] = max(tolerance[0], tol)
        return test

    return walk(query.where) if query.where is not None else Constant(True), tolerance[0]


def threshold_test(form: Form, op: Cmp, value: float, n: Numerics) -> tuple[Test, float]:
    """`true value op value` as a test on stored values, and its tolerance (0 = exact)."""
    if form.is_constant:
        return Constant(_holds(form.center, op, value)), 0.0
    if form.exact_integer_leaf:
        op, int_value = _integer_threshold(op, value)
        if int_value is None:
            return Constant(op is Cmp.NE), 0.0
        value = float(int_value)
        tol = 0.0
    else:
        tol = form.scale * (form.delta + n.ulp)
    if value < form.lo or value > form.hi:  # decided by the declared range alone
        below = value < form.lo
        decided = {
            Cmp.LT: not below,
            Cmp.LE: not below,
            Cmp.GT: below,
            Cmp.GE: below,
            Cmp.EQ: False,
            Cmp.NE: True,
        }[op]
        return Constant(decided), 0.0
    return Threshold(form, op, (value - form.center) * 2.0**-form.exp), tol


def _integer_threshold(op: Cmp, value: float) -> tuple[Cmp, int | None]:
    """Rewrite a comparison of an integer value with a real constant as one with an integer."""
    if op is Cmp.GT:
        return Cmp.GE, math.floor(value) + 1
    if op is Cmp.GE:
        return Cmp.GE, math.ceil(value)
    if op is Cmp.LT:
        return Cmp.LE, math.ceil(value) - 1
    if op is Cmp.LE:
        return Cmp.LE, math.floor(value)
    return op, (int(value) if value == math.floor(value) else None)


def _holds(x: float, op: Cmp, v: float) -> bool:
    return {
        Cmp.LT: x < v,
        Cmp.LE: x <= v,
        Cmp.GT: x > v,
        Cmp.GE: x >= v,
        Cmp.EQ: x == v,
        Cmp.NE: x != v,
    }[op]
