"""Per-aggregate planning: the forms each aggregate reads, its bound, its scale (what
`accuracy.max_error` is relative to) and its public loop counts and thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass

from compute.errors import SpecError
from compute.mpc import bounds
from compute.mpc.expressions import Arith
from compute.mpc.forms import Form, FormBuilder
from compute.mpc.limits import QUANTILE_DENOMINATOR
from compute.mpc.numerics import MIN_FRACTION_BITS, Numerics, quantization
from compute.mpc.query import Aggregate, Func, Query


@dataclass(frozen=True)
class AggregatePlan:
    """What the program computes for one aggregate and how precise it is.

    `bound` is in the aggregate's own units (for stddev it assumes a spread of at least
    `accuracy.min_spread` x half-width; the result recomputes it from the revealed
    value). `scale` is what `accuracy.max_error` is relative to. `thresholds` are a
    histogram's stored edges; `edges_closed` marks the last edge as inclusive. `tolerance`:
    values within it of an edge may fall in the neighbour bin (0: exact).
    """

    aggregate: Aggregate
    forms: tuple[Form, ...]
    bound: float
    scale: float
    steps: int = 0
    thresholds: tuple[float, ...] = ()
    tolerance: float = 0.0
    sum_exp: int = 0
    var_delta: float = 0.0

    @property
    def func(self) -> Func:
        """The aggregate function."""
        return self.aggregate.func


def aggregate_plan(
    query: Query, builder: FormBuilder, n: Numerics, agg: Aggregate, total: int
) -> AggregatePlan:
    func = agg.func
    m = query.min_group_size
    if func is Func.COUNT:
        return AggregatePlan(agg, (), 0.0, 0.0)
    if func is Func.WEIGHTED_SUM:
        form = builder.form(Arith("*", agg.args[0], agg.args[1]))
        return _sum_plan(agg, form, n, total)
    forms = tuple(builder.form(a) for a in agg.args)
    form = forms[0]
    if func is Func.SUM:
        return _sum_plan(agg, form, n, total)
    if func is Func.MEAN:
        return AggregatePlan(agg, forms, form.scale * bounds.mean_error(n, form.delta), form.magnitude)
    if func in (Func.MIN, Func.MAX):
        return AggregatePlan(agg, forms, form.scale * form.delta, form.magnitude)
    if func in (Func.VAR_SAMP, Func.VAR_POP, Func.STD_SAMP, Func.STD_POP):
        ddof = 1 if func in (Func.VAR_SAMP, Func.STD_SAMP) else 0
        var_delta = bounds.variance_error(n, form.delta, max(m, ddof + 1), ddof)
        if func in (Func.VAR_SAMP, Func.VAR_POP):
            return AggregatePlan(
                agg, forms, form.scale**2 * var_delta, form.half_width**2, var_delta=var_delta
            )
        min_std = query.accuracy.min_spread * form.half_width / form.scale
        static = bounds.std_error_static(n, var_delta, min_std, max_std(query, ddof))
        return AggregatePlan(agg, forms, form.scale * static, form.half_width, var_delta=var_delta)
    if func is Func.QUANTILE:
        return _quantile_plan(query, agg, form, n)
    if func is Func.HISTOGRAM:
        return _histogram_plan(agg, form, n)
    assert func is Func.CORR
    fx, fy = forms
    spread = query.accuracy.min_spread
    if fx.is_constant or fy.is_constant:
        raise SpecError(f"{agg.label}: an argument is constant over its declared range")
    bound = bounds.corr_error(
        n, fx.delta, fy.delta, spread * fx.half_width / fx.scale, spread * fy.half_width / fy.scale
    )
    return AggregatePlan(agg, forms, bound, 1.0)


def _sum_plan(agg: Aggregate, form: Form, n: Numerics, total: int) -> AggregatePlan:
    magnitude = form.magnitude
    if magnitude == 0:
        return AggregatePlan(agg, (form,), 0.0, 0.0, sum_exp=0)
    exp = math.frexp(magnitude)[1]  # 2^exp > magnitude: the normalised sum of one row is below 1
    alpha = form.scale * 2.0**-exp
    beta = form.center * 2.0**-exp
    u = n.ulp
    per_row = alpha * form.delta + quantization(beta, n)
    err = total * per_row + 3 * u
    return AggregatePlan(agg, (form,), 2.0**exp * err, total * magnitude, sum_exp=exp)


def _quantile_plan(query: Query, agg: Aggregate, form: Form, n: Numerics) -> AggregatePlan:
    if form.is_constant:
        return AggregatePlan(agg, (form,), 0.0, form.magnitude)
    target = query.accuracy.max_error * form.magnitude / form.scale
    steps = MIN_FRACTION_BITS
    while steps < n.fraction_bits + 2 and bounds.bisection_width(n, steps) + form.delta > target:
        steps += 1
    bound = form.scale * (bounds.bisection_width(n, steps) + form.delta)
    return AggregatePlan(agg, (form,), bound, form.magnitude, steps=steps)


def _histogram_plan(agg: Aggregate, form: Form, n: Numerics) -> AggregatePlan:
    edges = agg.edges
    if form.exact_integer_leaf:
        lower = [math.ceil(e) for e in edges[:-1]]
        upper = math.floor(edges[-1])
        stored = tuple((v - form.center) * 2.0**-form.exp for v in [*lower, upper])
        return AggregatePlan(agg, (form,), 0.0, 0.0, thresholds=stored, tolerance=0.0)
    stored = tuple((e - form.center) * 2.0**-form.exp for e in edges)
    return AggregatePlan(
        agg, (form,), 0.0, 0.0, thresholds=stored, tolerance=form.scale * (form.delta + n.ulp)
    )


def quantile_level(q: float) -> int:
    """q as an integer numerator over QUANTILE_DENOMINATOR."""
    return round(q * QUANTILE_DENOMINATOR)


def max_std(query: Query, ddof: int) -> float:
    """Largest normalised standard deviation a group of at least min_group_size rows can have."""
    rows = max(query.min_group_size, ddof + 1)
    return math.sqrt(rows / (rows - ddof)) + 0.01
