"""Planning: bind a query to the provider parts, choose the fixed-point parameters and fix
every public constant of the MPC program (input layout, normalisations, thresholds, loop
counts) and the error bound of every output. Everything here runs before any MPC and
raises SpecError on anything it cannot do within the stated bounds.

Parameter choice: for FM64, then FM128, take the largest fraction bits f the row count
allows (`numerics.fraction_bit_range`) and keep the first field whose bounds all meet
`accuracy.max_error` times each aggregate's scale. FM64 is about twice as cheap.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from compute.errors import SpecError
from compute.mpc.aggregates import AggregatePlan, aggregate_plan
from compute.mpc.expressions import And, Arith, ColRef, Compare, Or, Predicate
from compute.mpc.filters import Test, compile_where
from compute.mpc.forms import FormBuilder
from compute.mpc.limits import MAX_PARTS, MAX_ROWS
from compute.mpc.numerics import (
    Field,
    Numerics,
    fraction_bit_range,
)
from compute.mpc.query import Partition, Query
from compute.mpc.schema import is_identifier

PLAN_VERSION = 1


@dataclass(frozen=True)
class PartInfo:
    """One provider's rows of one table: public metadata (row counts are visible as shapes)."""

    table: str
    provider: str
    rows: int

    def __post_init__(self) -> None:
        if not is_identifier(self.table):
            raise SpecError(f"part table {self.table!r} is not an identifier")
        if (
            not isinstance(self.provider, str)
            or not 0 < len(self.provider) <= 64
            or not self.provider.isprintable()
        ):
            raise SpecError("a provider id is a printable string of 1..64 chars")
        if type(self.rows) is not int or not 1 <= self.rows <= MAX_ROWS:
            raise SpecError(f"part {self.table}/{self.provider}: rows must be in [1, {MAX_ROWS}]")


@dataclass(frozen=True)
class TableLayout:
    """Input columns of one table: normalised numbers, then one-hot blocks of categories, then
    (`row_flag`) one all-true column: without GROUP BY it makes the row count a secret, so
    that dividing by it is a true division (SPU multiplies by a rounded reciprocal when the
    divisor is public or provably constant)."""

    table: str
    numbers: tuple[str, ...]
    categories: tuple[tuple[str, int], ...]
    row_flag: bool = False

    def number_index(self, column: str) -> int:
        """Position of a number column in the table's number matrix."""
        return self.numbers.index(column)

    def category_offset(self, column: str) -> int:
        """First one-hot column of a category column in the table's category matrix."""
        offset = 0
        for name, width in self.categories:
            if name == column:
                return offset
            offset += width
        raise SpecError(f"{self.table}.{column} is not an input category")

    @property
    def category_width(self) -> int:
        """Total bool columns (one-hots and the row flag)."""
        return sum(w for _, w in self.categories) + int(self.row_flag)


@dataclass(frozen=True)
class InputSpec:
    """One secret input of the program: a part's number matrix (float64) or one-hot matrix (bool)."""

    name: str
    part: int
    kind: str  # "num" (float64) | "cat" (bool) | "int" (int64, custom functions only)
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Plan:
    """A query bound to its provider parts, with every public parameter of the program fixed."""

    query: Query
    parts: tuple[PartInfo, ...]
    numerics: Numerics
    layouts: tuple[TableLayout, ...]
    inputs: tuple[InputSpec, ...]
    aggregates: tuple[AggregatePlan, ...]
    where: Test | None
    where_tolerance: float
    total_rows: int

    def layout(self, table: str) -> TableLayout:
        """The input layout of `table`."""
        for lay in self.layouts:
            if lay.table == table:
                return lay
        raise SpecError(f"no layout for table {table!r}")

    @property
    def groups(self) -> tuple[str, ...]:
        """Group labels in output order."""
        return self.query.groups

    def to_json(self) -> dict[str, object]:
        """What determines the plan: the query, the parts and the parameters."""
        return {
            "version": PLAN_VERSION,
            "query": self.query.to_json(),
            "parts": [[p.table, p.provider, p.rows] for p in self.parts],
            "numerics": self.numerics.to_json(),
        }

    def digest(self) -> bytes:
        """SHA-256 of the canonical plan JSON; every party checks it in the handshake."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(text.encode("ascii")).digest()


def plan_query(query: Query, parts: tuple[PartInfo, ...] | list[PartInfo]) -> Plan:
    """Bind `query` to `parts` (in row order), choose numerics, fix the program's constants."""
    if not isinstance(query, Query):
        raise SpecError("plan_query takes a Query")
    parts = tuple(parts)
    total = _check_parts(query, parts)
    if total < query.min_group_size:
        raise SpecError(
            f"refused: the joined table has {total} rows, fewer than min_group_size={query.min_group_size}"
        )
    layouts = _layouts(query)
    inputs = _inputs(parts, layouts)
    numerics, aggregates, where, tolerance = _choose(query, total)
    return Plan(query, parts, numerics, layouts, inputs, aggregates, where, tolerance, total)


def _check_parts(query: Query, parts: tuple[PartInfo, ...]) -> int:
    if not 1 <= len(parts) <= MAX_PARTS or not all(isinstance(p, PartInfo) for p in parts):
        raise SpecError(f"a query runs on 1..{MAX_PARTS} PartInfo parts")
    names = {t.name for t in query.tables}
    seen: set[tuple[str, str]] = set()
    rows: dict[str, int] = {name: 0 for name in names}
    for p in parts:
        if p.table not in names:
            raise SpecError(f"part {p.table}/{p.provider}: table {p.table!r} is not in the query")
        if (p.table, p.provider) in seen:
            raise SpecError(f"provider {p.provider!r} has two parts of table {p.table}")
        seen.add((p.table, p.provider))
        rows[p.table] += p.rows
    missing = sorted(name for name, count in rows.items() if count == 0)
    if missing:
        raise SpecError(f"no provider part for table(s) {', '.join(missing)}")
    if query.partition is Partition.VERTICAL and len(set(rows.values())) != 1:
        detail = ", ".join(f"{t}: {r}" for t, r in sorted(rows.items()))
        raise SpecError(f"vertical tables must have aligned rows (equal counts), got {detail}")
    total = next(iter(rows.values()))
    if total > MAX_ROWS:
        raise SpecError(f"{total} rows exceed the limit {MAX_ROWS}")
    return total


def _layouts(query: Query) -> tuple[TableLayout, ...]:
    numbers: dict[str, set[str]] = {t.name: set() for t in query.tables}
    categories: dict[str, set[str]] = {t.name: set() for t in query.tables}

    def expr_columns(e: object) -> None:
        if isinstance(e, ColRef):
            numbers[e.table].add(e.column)
        elif isinstance(e, Arith):
            expr_columns(e.left)
            expr_columns(e.right)
        elif hasattr(e, "operand"):
            expr_columns(e.operand)

    def pred_columns(p: Predicate) -> None:
        if isinstance(p, Compare):
            if isinstance(p.expr, ColRef) and not query.column(p.expr).is_number:
                categories[p.expr.table].add(p.expr.column)
            else:
                expr_columns(p.expr)
        elif isinstance(p, And | Or):
            for t in p.terms:
                pred_columns(t)
        else:
            pred_columns(p.term)

    for agg in query.select:
        for arg in agg.args:
            expr_columns(arg)
    if query.where is not None:
        pred_columns(query.where)
    if query.group_by is not None:
        categories[query.group_by.table].add(query.group_by.column)
    layouts = []
    for table in query.tables:
        order = [c.name for c in table.columns]
        nums = tuple(
            sorted(
                (c for c in numbers[table.name] if table.column(c).lo != table.column(c).hi), key=order.index
            )
        )
        cats = tuple(
            (c, len(table.column(c).categories)) for c in sorted(categories[table.name], key=order.index)
        )
        row_flag = query.group_by is None and table is query.tables[0]
        layouts.append(TableLayout(table.name, nums, cats, row_flag))
    return tuple(layouts)


def _inputs(parts: tuple[PartInfo, ...], layouts: tuple[TableLayout, ...]) -> tuple[InputSpec, ...]:
    by_table = {lay.table: lay for lay in layouts}
    specs = []
    for i, part in enumerate(parts):
        lay = by_table[part.table]
        if lay.numbers:
            specs.append(InputSpec(f"p{i}.num", i, "num", (part.rows, len(lay.numbers))))
        if lay.category_width:
            specs.append(InputSpec(f"p{i}.cat", i, "cat", (part.rows, lay.category_width)))
    return tuple(specs)


# -- numerics choice -----------------------------------------------------------------------
def _choose(query: Query, total: int) -> tuple[Numerics, tuple[AggregatePlan, ...], Test | None, float]:
    acc = query.accuracy
    if acc.field is not None:
        assert acc.fraction_bits is not None
        low, high = fraction_bit_range(acc.field, total)
        if not low <= acc.fraction_bits <= high:
            raise SpecError(
                f"{acc.field} with {acc.fraction_bits} fraction bits cannot hold {total} rows "
                f"(usable: {low}..{high})"
            )
        candidates = [Numerics.with_bits(acc.field, acc.fraction_bits)]
    else:
        candidates = []
        for field in (Field.FM64, Field.FM128):
            low, high = fraction_bit_range(field, total)
            if low <= high:
                candidates.append(Numerics.with_bits(field, high))
    if not candidates:
        raise SpecError(f"{total} rows exceed what FM128 can divide by")
    worst = ""
    for numerics in candidates:
        builder = FormBuilder(query, numerics)
        aggs = tuple(aggregate_plan(query, builder, numerics, a, total) for a in query.select)
        misses = [(p.bound / p.scale, p) for p in aggs if p.scale > 0 and p.bound > acc.max_error * p.scale]
        if not misses:
            where, tolerance = (None, 0.0) if query.where is None else compile_where(query, builder, numerics)
            return numerics, aggs, where, tolerance
        rel, plan = max(misses, key=lambda m: m[0])
        worst = (
            f"{numerics.field} with f={numerics.fraction_bits} bounds {plan.aggregate.label} "
            f"within {rel:.3g} of its scale"
        )
    raise SpecError(f"no fixed-point parameters meet max_error={acc.max_error:g}: {worst}")
