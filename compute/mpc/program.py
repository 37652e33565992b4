"""The JAX program of a plan, run under SPU unchanged (every party traces the same function).

Layout: one float64 matrix of normalised numbers and one bool matrix of category one-hots
per provider part; parts of a table are concatenated (horizontal), tables sit side by side
on aligned rows (vertical). WHERE becomes a 0/1 row mask, GROUP BY a one-hot group mask,
their conjunction the n x G matrix M. Sums are M^T @ values (one matrix product for all the
moments the query needs), counts are integer sums of M. Min/max reduce masked values with
comparisons; quantiles bisect on the value (no sorting network): each of `steps` rounds
counts, per group, the rows at or below the midpoint. Histograms compare with the edges.

Outputs: first the per-group flags `count >= min_group_size` (the only thing revealed to
every party), then each aggregate's normalised values, zeroed inside the MPC unless every
flag holds. See docs/MPC.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from compute.mpc.aggregates import AggregatePlan, quantile_level
from compute.mpc.bounds import newton_prescale
from compute.mpc.expressions import Cmp
from compute.mpc.filters import AllOf, AnyOf, CategoryTest, Constant, Negation, Test, Threshold
from compute.mpc.forms import Form, Leaf, Linear, Product, Term
from compute.mpc.limits import QUANTILE_DENOMINATOR
from compute.mpc.numerics import Numerics, sqrt_floor
from compute.mpc.plan import Plan
from compute.mpc.query import Func

Array = Any  # a traced jax array
_Key = tuple[str, Form, Form]  # ("x", f, f): stored value of f; ("xy", f, g): their product

_SENTINEL = 2.0  # beyond every stored value (|stored| <= 1)


def build_function(plan: Plan) -> Callable[..., tuple[Array, ...]]:
    """The program as a function of the plan's inputs, in `plan.inputs` order."""

    def program(*arrays: Array) -> tuple[Array, ...]:
        return _Program(plan, arrays).run()

    return program


class _Program:
    def __init__(self, plan: Plan, arrays: tuple[Array, ...]) -> None:
        self.plan = plan
        self.numerics: Numerics = plan.numerics
        self.rows = plan.total_rows
        self.num: dict[str, Array] = {}
        self.cat: dict[str, Array] = {}
        by_kind: dict[tuple[str, str], list[Array]] = {}
        for spec, array in zip(plan.inputs, arrays, strict=True):
            table = plan.parts[spec.part].table
            by_kind.setdefault((table, spec.kind), []).append(array)
        for (table, kind), blocks in by_kind.items():
            joined = blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=0)
            (self.num if kind == "num" else self.cat)[table] = joined
        self._memo: dict[Term, Array] = {}
        self.groups: Array | None = None
        self.counts: Array = None
        self.countf: Array = None

    # -- per-row values --------------------------------------------------------------------
    def stored(self, form: Form) -> Array:
        if form.term is None:
            return jnp.zeros((self.rows,), jnp.float64)
        return self._term(form.term)

    def _term(self, term: Term) -> Array:
        if term in self._memo:
            return self._memo[term]
        if isinstance(term, Leaf):
            lay = self.plan.layout(term.table)
            value = self.num[term.table][:, lay.number_index(term.column)]
        elif isinstance(term, Product):
            value = self._term(term.left) * self._term(term.right)
        else:
            value = self._linear(term)
        self._memo[term] = value
        return value

    def _linear(self, term: Linear) -> Array:
        total: Array | None = None
        for coef, child in term.terms:
            part = self._term(child)
            if coef == -1.0:
                part = -part
            elif coef != 1.0:
                part = part * coef
            total = part if total is None else total + part
        assert total is not None
        return total + term.const if term.const != 0.0 else total

    def onehot(self, table: str, column: str) -> Array:
        lay = self.plan.layout(table)
        start = lay.category_offset(column)
        width = dict(lay.categories)[column]
        return self.cat[table][:, start : start + width]

    def test(self, test: Test) -> Array:
        if isinstance(test, Constant):
            return jnp.full((self.rows,), test.value)
        if isinstance(test, CategoryTest):
            column = self.onehot(test.table, test.column)[:, test.index]
            return jnp.logical_not(column) if test.negate else column
        if isinstance(test, Negation):
            return jnp.logical_not(self.test(test.term))
        if isinstance(test, AllOf | AnyOf):
            combine = jnp.logical_and if isinstance(test, AllOf) else jnp.logical_or
            out = self.test(test.terms[0])
            for t in test.terms[1:]:
                out = combine(out, self.test(t))
            return out
        assert isinstance(test, Threshold)
        return _compare(self.stored(test.form), test.op, test.value)

    # -- the program -------------------------------------------------------------------------
    def run(self) -> tuple[Array, ...]:
        plan = self.plan
        query = plan.query
        mask = None if plan.where is None else self.test(plan.where)
        if query.group_by is None:
            # The provider's all-true row flag: it keeps the count a secret, so that dividing
            # by it is a true division (SPU turns division by a public or provably constant
            # value into a product with its reciprocal rounded to f bits: the ~8% FM64 error).
            first = plan.layouts[0]
            flag = self.cat[first.table][:, first.category_width - 1]
            counted = flag[:, None] if mask is None else jnp.logical_and(flag, mask)[:, None]
            self.groups = None if mask is None else counted
        else:
            groups = self.onehot(query.group_by.table, query.group_by.column)
            self.groups = groups if mask is None else jnp.logical_and(groups, mask[:, None])
            counted = self.groups
        self.counts = jnp.sum(counted.astype(jnp.int64), axis=0)
        self.countf = self.counts.astype(jnp.float64)
        flags = self.counts >= query.min_group_size
        released = jnp.all(flags)
        values = self._aggregates()
        outputs = [
            jnp.where(released, values[id(agg)], jnp.zeros_like(values[id(agg)])) for agg in plan.aggregates
        ]
        return (flags, *outputs)

    def masked_sum(self, values: Array) -> Array:
        """Per-group sums of the columns of `values` (n x J) -> G x J."""
        if self.groups is None:
            return jnp.sum(values, axis=0)[None, :]
        return jnp.matmul(self.groups.astype(jnp.float64).T, values)

    # -- aggregates, batched: one division, one square root, one min-reduction for all ---------
    def _aggregates(self) -> dict[int, Array]:
        aggs = self.plan.aggregates
        out: dict[int, Array] = {}
        sums, means = self._moments(aggs)
        ratio = None
        if any(a.func in (Func.VAR_SAMP, Func.STD_SAMP) for a in aggs):
            ratio = self.countf / (self.countf - 1.0)  # n / (n - 1)
        roots: list[Array] = []
        root_of: dict[int, int] = {}
        corr_parts: list[tuple[int, Array, int, int]] = []
        for agg in aggs:
            f, forms = agg.func, agg.forms
            if f is Func.COUNT:
                out[id(agg)] = self.counts
            elif f in (Func.SUM, Func.WEIGHTED_SUM):
                out[id(agg)] = self._sum(agg, sums[("x", forms[0], forms[0])])
            elif f is Func.MEAN:
                out[id(agg)] = means[("x", forms[0], forms[0])]
            elif f in (Func.VAR_SAMP, Func.VAR_POP, Func.STD_SAMP, Func.STD_POP):
                var = _spread(means, forms[0], forms[0])
                if f in (Func.VAR_SAMP, Func.STD_SAMP):
                    var = var * ratio
                if f in (Func.VAR_SAMP, Func.VAR_POP):
                    out[id(agg)] = var
                else:
                    root_of[id(agg)] = len(roots)
                    roots.append(var)
            elif f is Func.CORR:
                x, y = forms
                corr_parts.append((id(agg), _spread(means, x, y), len(roots), len(roots) + 1))
                roots += [_spread(means, x, x), _spread(means, y, y)]
        if roots:
            stacked = self._sqrt(jnp.stack(roots, axis=1))  # G x R
            for key, column in root_of.items():
                out[key] = stacked[:, column]
            if corr_parts:
                covs = jnp.stack([cov for _, cov, _, _ in corr_parts], axis=1)
                dens = jnp.stack([stacked[:, i] * stacked[:, j] for _, _, i, j in corr_parts], axis=1)
                ratios = self._divide_small(covs, dens)
                for k, (key, _, _, _) in enumerate(corr_parts):
                    out[key] = ratios[:, k]
        out.update(self._extremes(aggs))
        out.update(self._quantiles())
        for agg in aggs:
            if agg.func is Func.HISTOGRAM:
                out[id(agg)] = self._histogram(agg)
        return out

    def _moments(self, aggs: tuple[AggregatePlan, ...]) -> tuple[dict[_Key, Array], dict[_Key, Array]]:
        """Masked sums of every stored value and product the aggregates need (one matrix
        product), and their per-group means (one division by the counts)."""
        summed: list[_Key] = []
        averaged: list[_Key] = []
        for agg in aggs:
            f, forms = agg.func, agg.forms
            if f in (Func.SUM, Func.WEIGHTED_SUM):
                summed.append(("x", forms[0], forms[0]))
            elif f is Func.MEAN:
                averaged.append(("x", forms[0], forms[0]))
            elif f in (Func.VAR_SAMP, Func.VAR_POP, Func.STD_SAMP, Func.STD_POP):
                averaged += [("x", forms[0], forms[0]), ("xy", forms[0], forms[0])]
            elif f is Func.CORR:
                x, y = forms
                averaged += [("x", x, x), ("x", y, y), ("xy", x, x), ("xy", y, y), ("xy", x, y)]
        unique = list(dict.fromkeys(summed + averaged))
        if not unique:
            return {}, {}
        columns = []
        for kind, a, b in unique:
            column = self.stored(a)
            columns.append(column * self.stored(b) if kind == "xy" else column)
        totals = self.masked_sum(jnp.stack(columns, axis=1))  # G x J
        sums = {key: totals[:, j] for j, key in enumerate(unique)}
        wanted = list(dict.fromkeys(averaged))
        if not wanted:
            return sums, {}
        picked = jnp.stack([sums[key] for key in wanted], axis=1)
        quotients = picked / self.countf[:, None]
        return sums, {key: quotients[:, j] for j, key in enumerate(wanted)}

    def _sum(self, agg: AggregatePlan, total: Array) -> Array:
        form = agg.forms[0]
        alpha = form.scale * 2.0**-agg.sum_exp
        beta = form.center * 2.0**-agg.sum_exp
        if alpha != 1.0:
            total = total * alpha
        return total + self.countf * beta if beta != 0.0 else total

    def _divide_small(self, numerator: Array, divisor: Array) -> Array:
        """numerator / divisor with the numerator pre-scaled by 2^t (see bounds.newton_prescale)."""
        t = newton_prescale(self.numerics)
        if t == 0:
            return numerator / divisor
        return (numerator * 2.0**t) / divisor * 2.0**-t

    def _sqrt(self, value: Array) -> Array:
        clamped = jnp.maximum(value, sqrt_floor(self.numerics))
        y = jnp.sqrt(clamped)
        for _ in range(2):  # Newton: y <- (y + v / y) / 2
            y = (y + self._divide_small(clamped, y)) * 0.5
        return y

    def _extremes(self, aggs: tuple[AggregatePlan, ...]) -> dict[int, Array]:
        """Every min and max at once: max(x) = -min(-x), one masked min-reduction."""
        chosen = [a for a in aggs if a.func in (Func.MIN, Func.MAX)]
        if not chosen:
            return {}
        # Negation, not a product with -1.0: SPU truncates after a product with any float
        # constant, and CHEETAH's truncation may be off by one ulp (ABY3's is exact here).
        negate = [a.func is Func.MAX for a in chosen]
        values = jnp.stack(
            [
                -self.stored(a.forms[0]) if neg else self.stored(a.forms[0])
                for neg, a in zip(negate, chosen, strict=True)
            ],
            axis=1,
        )
        if self.groups is None:
            lowest = jnp.min(values, axis=0)[None, :]  # 1 x K
        else:
            masked = jnp.where(self.groups[:, :, None], values[:, None, :], _SENTINEL)  # n x G x K
            lowest = jnp.min(masked, axis=0)
        return {
            id(a): -lowest[:, k] if neg else lowest[:, k]
            for k, (neg, a) in enumerate(zip(negate, chosen, strict=True))
        }

    def _histogram(self, agg: AggregatePlan) -> Array:
        values = self.stored(agg.forms[0])
        lower = jnp.asarray(agg.thresholds[:-1], jnp.float64)
        at_least = values[:, None] >= lower[None, :]  # n x B
        within_last = values <= agg.thresholds[-1]
        beyond = jnp.concatenate([at_least[:, 1:], jnp.logical_not(within_last)[:, None]], axis=1)
        in_bin = jnp.logical_and(at_least, jnp.logical_not(beyond)).astype(jnp.int64)
        if self.groups is None:
            return jnp.sum(in_bin, axis=0)[None, :]
        return jnp.matmul(self.groups.astype(jnp.int64).T, in_bin)

    def _quantiles(self) -> dict[int, Array]:
        """Bisection for every quantile aggregate at once: G x Q brackets, max(steps) rounds."""
        plans = [a for a in self.plan.aggregates if a.func is Func.QUANTILE]
        if not plans:
            return {}
        values = jnp.stack([self.stored(a.forms[0]) for a in plans], axis=1)  # n x Q
        levels = jnp.asarray([quantile_level(a.aggregate.q or 0.0) for a in plans], jnp.int64)
        need = levels[None, :] * self.counts[:, None]  # G x Q, integer: rank * 1e6
        groups = jnp.ones((self.rows, 1), bool) if self.groups is None else self.groups
        start = 1.0 + 2.0**-8
        zero = jnp.zeros((need.shape[0], len(plans))) + values[0, 0] * 0.0  # a secret bracket
        lo, hi = zero - start, zero + start

        def step(_: int, bracket: tuple[Array, Array]) -> tuple[Array, Array]:
            low, high = bracket
            mid = (low + high) * 0.5
            below = values[:, None, :] <= mid[None, :, :]  # n x G x Q
            hits = jnp.logical_and(below, groups[:, :, None]).astype(jnp.int64)
            enough = jnp.sum(hits, axis=0) * QUANTILE_DENOMINATOR >= need
            return jnp.where(enough, low, mid), jnp.where(enough, mid, high)

        steps = max(a.steps for a in plans)
        _, hi = jax.lax.fori_loop(0, steps, step, (lo, hi))
        return {id(a): hi[:, j] for j, a in enumerate(plans)}


def _spread(means: dict[_Key, Array], x: Form, y: Form) -> Array:
    """E[xy] - E[x]E[y] per group (a population covariance or variance)."""
    return means[("xy", x, y)] - means[("x", x, x)] * means[("x", y, y)]


def _compare(values: Array, op: Cmp, threshold: float) -> Array:
    if op is Cmp.LT:
        return values < threshold
    if op is Cmp.LE:
        return values <= threshold
    if op is Cmp.GT:
        return values > threshold
    if op is Cmp.GE:
        return values >= threshold
    if op is Cmp.EQ:
        return values == threshold
    return values != threshold
