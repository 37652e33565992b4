"""Typed results: values per group with their error bounds, and what non-receivers learn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.errors import SpecError
from compute.mpc import bounds
from compute.mpc.aggregates import AggregatePlan, max_std
from compute.mpc.numerics import Numerics
from compute.mpc.plan import Plan
from compute.mpc.query import Func

Value = float | int | tuple[int, ...]


@dataclass(frozen=True)
class AggregateResult:
    """One output column: a value and an absolute error bound per group.

    Counts and histogram counts have bound 0. A histogram's counts are exact on the values
    as encoded; when `tolerance` > 0 a value within `tolerance` of an edge may be counted in
    the neighbouring bin. `assumption` states what a bound relies on (correlations).
    """

    label: str
    func: Func
    values: tuple[Value, ...]
    bounds: tuple[float, ...]
    tolerance: float = 0.0
    assumption: str | None = None
    edges: tuple[float, ...] = ()


@dataclass(frozen=True)
class QueryResult:
    """The receiver's output: one row per group, one column per aggregate.

    `where_tolerance` > 0 means a row whose filtered value lies within it of a WHERE
    constant may be classified either way (0: the filter is exact).
    """

    groups: tuple[str, ...]
    aggregates: tuple[AggregateResult, ...]
    numerics: Numerics
    min_group_size: int
    where_tolerance: float
    query_digest: str

    def column(self, label: str) -> AggregateResult:
        """The aggregate whose label is `label` (e.g. 'mean(a.income)')."""
        for agg in self.aggregates:
            if agg.label == label:
                return agg
        raise KeyError(label)

    def value(self, label: str, group: str = "*") -> Value:
        """One value."""
        return self.column(label).values[self.groups.index(group)]

    def bound(self, label: str, group: str = "*") -> float:
        """The error bound of one value."""
        return self.column(label).bounds[self.groups.index(group)]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per group: {'group': ..., label: value, ...}."""
        return [
            {"group": g, **{a.label: a.values[i] for a in self.aggregates}} for i, g in enumerate(self.groups)
        ]


@dataclass(frozen=True)
class PartyReport:
    """What a party that is not a receiver learns: the plan and the per-group flags."""

    rank: int
    groups: tuple[str, ...]
    group_ok: tuple[bool, ...]
    numerics: Numerics
    query_digest: str


@dataclass(frozen=True)
class OutputShares:
    """What a party returns under `Reveal.external()`: its report (the flags) and its shares
    of every output as one blob (`reconstruct.pack_outputs`), bound to the plan digest, the
    protocol, the field, this rank and the output names and shapes, at most
    `reconstruct.output_blob_limit(plan)` bytes. On its own a blob is random; the requester
    needs the blob of every rank (`reconstruct_result`)."""

    rank: int
    blob: bytes
    report: PartyReport


class DisclosureRefused(SpecError):
    """A group (or the filtered set) has fewer rows than min_group_size: nothing was revealed
    beyond one bit per group (count >= min_group_size)."""

    def __init__(self, small_groups: tuple[str, ...], min_group_size: int) -> None:
        names = ", ".join(small_groups)
        super().__init__(
            f"refused: group(s) {names} cover fewer than min_group_size={min_group_size} rows; "
            "only the per-group flags were revealed"
        )
        self.small_groups = small_groups
        self.min_group_size = min_group_size

    def __reduce__(self) -> tuple[type[DisclosureRefused], tuple[tuple[str, ...], int]]:
        return (DisclosureRefused, (self.small_groups, self.min_group_size))


def check_flags(plan: Plan, flags: Any) -> tuple[bool, ...]:
    """The revealed per-group flags as bools; raises DisclosureRefused if any is False."""
    ok = tuple(bool(v) for v in np.asarray(flags).reshape(-1))
    if len(ok) != len(plan.groups):
        raise SpecError("flag output has the wrong shape")
    small = tuple(g for g, good in zip(plan.groups, ok, strict=True) if not good)
    if small:
        raise DisclosureRefused(small, plan.query.min_group_size)
    return ok


def decode(plan: Plan, outputs: Sequence[Any]) -> QueryResult:
    """Turn the revealed normalised outputs (after the flags) into values and bounds."""
    if len(outputs) != len(plan.aggregates):
        raise SpecError("output count does not match the plan")
    results = tuple(
        _decode_one(plan, agg, np.asarray(raw)) for agg, raw in zip(plan.aggregates, outputs, strict=True)
    )
    return QueryResult(
        groups=plan.groups,
        aggregates=results,
        numerics=plan.numerics,
        min_group_size=plan.query.min_group_size,
        where_tolerance=plan.where_tolerance,
        query_digest=plan.query.digest().hex(),
    )


def _decode_one(plan: Plan, agg: AggregatePlan, raw: Any) -> AggregateResult:
    g = len(plan.groups)
    f = agg.func
    label = agg.aggregate.label
    if f is Func.COUNT:
        return AggregateResult(label, f, tuple(int(v) for v in raw.reshape(g)), (0.0,) * g)
    if f is Func.HISTOGRAM:
        counts = tuple(tuple(int(c) for c in row) for row in raw.reshape(g, -1))
        return AggregateResult(label, f, counts, (0.0,) * g, agg.tolerance, None, agg.aggregate.edges)
    values = raw.reshape(g).astype(np.float64)
    if f in (Func.SUM, Func.WEIGHTED_SUM):
        return _floats(label, f, values * 2.0**agg.sum_exp, agg.bound)
    form = agg.forms[0]
    if f in (Func.MEAN, Func.MIN, Func.MAX, Func.QUANTILE):
        return _floats(label, f, form.center + form.scale * values, agg.bound)
    if f in (Func.VAR_SAMP, Func.VAR_POP):
        return _floats(label, f, form.scale**2 * np.maximum(values, 0.0), agg.bound)
    if f in (Func.STD_SAMP, Func.STD_POP):
        ddof = 1 if f is Func.STD_SAMP else 0
        top = max_std(plan.query, ddof)
        errs = tuple(
            form.scale * bounds.std_error_revealed(plan.numerics, agg.var_delta, float(v), top)
            for v in values
        )
        return AggregateResult(label, f, tuple(float(form.scale * v) for v in values), errs)
    assert f is Func.CORR
    spread = plan.query.accuracy.min_spread
    note = f"each argument's standard deviation is at least {spread:g} x its declared half-width"
    clipped = np.clip(values, -1.0, 1.0)
    return AggregateResult(label, f, tuple(float(v) for v in clipped), (agg.bound,) * g, 0.0, note)


def _floats(label: str, func: Func, values: Any, bound: float) -> AggregateResult:
    return AggregateResult(label, func, tuple(float(v) for v in values), (bound,) * len(values))
