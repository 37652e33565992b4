"""Validation of a Query against its own schemas (called when a Query is built)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from compute.errors import SpecError
from compute.mpc.expressions import (
    And,
    Arith,
    Cmp,
    ColRef,
    Compare,
    Const,
    Expr,
    Neg,
    Not,
    Or,
    Predicate,
    render,
)
from compute.mpc.limits import MAX_AGGREGATES, MAX_DEPTH, MAX_EXPR_NODES, MAX_GROUPS, MAX_TABLES
from compute.mpc.schema import TableSchema

if TYPE_CHECKING:
    from compute.mpc.query import Query


def validate_query(q: Query) -> None:
    """Raise SpecError unless `q` is well formed for its declared tables."""
    from compute.mpc.query import Accuracy, Aggregate, Func, Partition, Reveal  # query.py imports us

    if not 1 <= len(q.tables) <= MAX_TABLES or not all(isinstance(t, TableSchema) for t in q.tables):
        raise SpecError(f"a query reads 1..{MAX_TABLES} tables")
    names = [t.name for t in q.tables]
    if len(set(names)) != len(names):
        raise SpecError("duplicate table names")
    if q.partition is Partition.HORIZONTAL and len(q.tables) != 1:
        raise SpecError("a horizontal query reads exactly one table (its rows come from several providers)")
    if q.partition is Partition.VERTICAL and len(q.tables) < 2:
        raise SpecError("a vertical query joins at least two row-aligned tables")
    if not 1 <= len(q.select) <= MAX_AGGREGATES or not all(isinstance(a, Aggregate) for a in q.select):
        raise SpecError(f"select 1..{MAX_AGGREGATES} aggregates")
    if type(q.min_group_size) is not int or q.min_group_size < 1:
        raise SpecError("min_group_size must be a positive integer")
    if not isinstance(q.reveal, Reveal) or not isinstance(q.accuracy, Accuracy):
        raise SpecError("reveal and accuracy are required (Reveal, Accuracy)")
    for agg in q.select:
        for arg in agg.args:
            _check_expr(q, arg)
        if agg.func in (Func.VAR_SAMP, Func.STD_SAMP) and q.min_group_size < 2:
            raise SpecError(f"{agg.func} needs min_group_size >= 2 (it divides by n - 1)")
    if q.where is not None:
        _check_pred(q, q.where, 0, [0])
    if q.group_by is not None:
        if not isinstance(q.group_by, ColRef):
            raise SpecError("group_by must be a column")
        col = q.column(q.group_by)
        if col.is_number:
            raise SpecError(f"GROUP BY {render(q.group_by)}: only a category column can group")
        if len(col.categories) > MAX_GROUPS:
            raise SpecError(
                f"GROUP BY {render(q.group_by)}: {len(col.categories)} groups, "
                f"more than the limit {MAX_GROUPS}"
            )


def _check_expr(q: Query, expr: Expr) -> None:
    count = [0]

    def walk(e: Expr, depth: int) -> None:
        count[0] += 1
        if count[0] > MAX_EXPR_NODES or depth > MAX_DEPTH:
            raise SpecError(f"expression {render(expr)} exceeds {MAX_EXPR_NODES} nodes or depth {MAX_DEPTH}")
        if isinstance(e, ColRef):
            if not q.column(e).is_number:
                raise SpecError(f"{render(e)} is a category column: it can group or be compared with ==/!=")
        elif isinstance(e, Const):
            if (
                isinstance(e.value, bool)
                or not isinstance(e.value, int | float)
                or not math.isfinite(e.value)
            ):
                raise SpecError("constants must be finite numbers")
        elif isinstance(e, Neg):
            walk(e.operand, depth + 1)
        elif isinstance(e, Arith):
            if e.op not in ("+", "-", "*", "/"):
                raise SpecError(f"unknown operator {e.op!r}")
            if e.op == "/" and not (isinstance(e.right, Const) and e.right.value != 0):
                raise SpecError(f"{render(e)}: division only by a nonzero constant")
            walk(e.left, depth + 1)
            walk(e.right, depth + 1)
        else:
            raise SpecError(f"not an expression: {e!r}")

    walk(expr, 0)


def _check_pred(q: Query, p: Predicate, depth: int, count: list[int]) -> None:
    count[0] += 1
    if count[0] > MAX_EXPR_NODES or depth > MAX_DEPTH:
        raise SpecError(f"WHERE exceeds {MAX_EXPR_NODES} nodes or depth {MAX_DEPTH}")
    if isinstance(p, Compare):
        if isinstance(p.expr, ColRef) and not q.column(p.expr).is_number:
            col = q.column(p.expr)
            if p.op not in (Cmp.EQ, Cmp.NE) or not isinstance(p.value, str):
                raise SpecError(f"{render(p.expr)} is a category column: compare it with == or != 'category'")
            if p.value not in col.categories:
                raise SpecError(f"{render(p.expr)} has no category {p.value!r}")
            return
        _check_expr(q, p.expr)
        if isinstance(p.value, bool) or not isinstance(p.value, int | float) or not math.isfinite(p.value):
            raise SpecError(f"{render(p.expr)} is a number: compare it with a finite number")
    elif isinstance(p, And | Or):
        if len(p.terms) < 2:
            raise SpecError("AND/OR take at least two terms")
        for t in p.terms:
            _check_pred(q, t, depth + 1, count)
    elif isinstance(p, Not):
        _check_pred(q, p.term, depth + 1, count)
    else:
        raise SpecError(f"not a predicate: {p!r}")
