"""Normalised fixed-point forms of per-row values, with interval and error analysis.

Every number the MPC program holds per row is stored normalised: the true value is
`center + 2^exp * stored` with |stored| <= 1, where `center` and `exp` are public constants
fixed at plan time from the declared ranges (interval arithmetic). Providers normalise their
own columns in float64 before sharing (`column_norm`); an expression such as
`a.unit_price * b.units` is expanded into a linear combination of stored children and their
products with public coefficients. Keeping every stored magnitude at most 1 means the ring
never overflows whatever the declared ranges, and the fraction bits give the same relative
resolution to every value. `delta` bounds |computed stored - exact stored|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compute.errors import SpecError
from compute.mpc.expressions import ColRef, Const, Expr, Neg
from compute.mpc.numerics import Numerics, ceil_log2, quantization
from compute.mpc.query import Query
from compute.mpc.schema import Column

_FLOAT_EPS = 2.0**-52  # providers normalise in float64


@dataclass(frozen=True)
class Leaf:
    """A provider's normalised column."""

    table: str
    column: str


@dataclass(frozen=True)
class Product:
    """The product of two stored terms (one truncation)."""

    left: Term
    right: Term


@dataclass(frozen=True)
class Linear:
    """`const + sum(coef * term)` with public coefficients."""

    terms: tuple[tuple[float, Term], ...]
    const: float


Term = Leaf | Product | Linear


@dataclass(frozen=True)
class Form:
    """A per-row value: true = center + 2^exp * stored; `term` is None for a constant."""

    lo: float
    hi: float
    center: float
    exp: int
    delta: float
    term: Term | None

    @property
    def scale(self) -> float:
        """2^exp: one stored unit in true units."""
        return 2.0**self.exp

    @property
    def magnitude(self) -> float:
        """The largest |true value| the interval allows."""
        return max(abs(self.lo), abs(self.hi))

    @property
    def half_width(self) -> float:
        """Half the interval's width."""
        return (self.hi - self.lo) / 2

    @property
    def is_constant(self) -> bool:
        """True when the value is the same on every row."""
        return self.term is None

    @property
    def exact_integer_leaf(self) -> bool:
        """A provider's integer column stored exactly (comparisons on it are exact)."""
        return isinstance(self.term, Leaf) and self.delta == 0.0


def column_norm(col: Column) -> tuple[float, int]:
    """(center, exp) a provider uses to normalise a number column; integer columns get an
    integer center so that their stored values stay exact."""
    if not col.is_number:
        raise SpecError(f"column {col.name} is not a number")
    center: float
    if col.integer:
        center = float(math.floor((col.lo + col.hi) / 2 + 0.5))
        half = max(col.hi - center, center - col.lo)
    else:
        center = (col.lo + col.hi) / 2
        half = (col.hi - col.lo) / 2
    return float(center), (ceil_log2(half) if half > 0 else 0)


class FormBuilder:
    """Turns expressions of a query into forms for given fixed-point parameters."""

    def __init__(self, query: Query, numerics: Numerics) -> None:
        self._query = query
        self._n = numerics

    def form(self, expr: Expr) -> Form:
        """The form of `expr` (interval, normalisation, error bound, evaluation tree)."""
        if isinstance(expr, ColRef):
            return self._column(expr)
        if isinstance(expr, Const):
            return _constant(float(expr.value))
        if isinstance(expr, Neg):
            inner = self.form(expr.operand)
            return self._linear(-inner.hi, -inner.lo, -inner.center, [(-inner.scale, inner)])
        left, right = self.form(expr.left), self.form(expr.right)
        if expr.op == "+":
            return self._linear(
                left.lo + right.lo,
                left.hi + right.hi,
                left.center + right.center,
                [(left.scale, left), (right.scale, right)],
            )
        if expr.op == "-":
            return self._linear(
                left.lo - right.hi,
                left.hi - right.lo,
                left.center - right.center,
                [(left.scale, left), (-right.scale, right)],
            )
        if expr.op == "/":
            assert right.is_constant and right.center != 0
            return self._times_constant(left, 1.0 / right.center)
        if right.is_constant:
            return self._times_constant(left, right.center)
        if left.is_constant:
            return self._times_constant(right, left.center)
        return self._product(left, right)

    def _column(self, ref: ColRef) -> Form:
        col = self._query.column(ref)
        if col.lo == col.hi:
            return _constant(col.lo)
        center, exp = column_norm(col)
        exact = col.integer and exp <= self._n.fraction_bits
        delta = 0.0 if exact else self._n.ulp + _FLOAT_EPS
        return Form(col.lo, col.hi, center, exp, delta, Leaf(ref.table, ref.column))

    def _times_constant(self, inner: Form, k: float) -> Form:
        lo, hi = sorted((inner.lo * k, inner.hi * k))
        return self._linear(lo, hi, inner.center * k, [(inner.scale * k, inner)])

    def _product(self, a: Form, b: Form) -> Form:
        assert a.term is not None and b.term is not None
        corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        prod_delta = a.delta + b.delta + a.delta * b.delta + self._n.ulp
        prod = Form(-1.0, 1.0, 0.0, 0, prod_delta, Product(a.term, b.term))
        parts = [(a.center * b.scale, b), (b.center * a.scale, a), (a.scale * b.scale, prod)]
        return self._linear(min(corners), max(corners), a.center * b.center, parts)

    def _linear(self, lo: float, hi: float, const: float, parts: list[tuple[float, Form]]) -> Form:
        """The form of `const + sum(mult * stored_i)` whose true values lie in [lo, hi]."""
        live = [(m, f) for m, f in parts if f.term is not None and m != 0.0]  # constants live in `const`
        if not live or lo == hi:
            return _constant((lo + hi) / 2 if live else const)
        center = (lo + hi) / 2
        exp = ceil_log2((hi - lo) / 2)
        scale = 2.0**-exp
        if len(live) == 1 and const == center and live[0][0] * scale == 1.0:
            only = live[0][1]
            return Form(lo, hi, center, exp, only.delta, only.term)
        ulp = self._n.ulp
        terms: list[tuple[float, Term]] = []
        delta = 0.0
        for mult, f in live:
            coef = mult * scale
            assert f.term is not None
            if abs(coef) < ulp:  # below the resolution: dropped, its whole size is error
                delta += abs(coef)
                continue
            terms.append((coef, f.term))
            delta += abs(coef) * f.delta
            if abs(coef) != 1.0:
                delta += quantization(coef, self._n) + ulp
        offset = (const - center) * scale
        delta += quantization(offset, self._n)
        return Form(lo, hi, center, exp, delta, Linear(tuple(terms), offset))


def _constant(value: float) -> Form:
    return Form(value, value, value, 0, 0.0, None)
