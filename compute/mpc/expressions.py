"""Value expressions and predicates of a query: the trees, their text and their JSON.

Expressions: columns, constants, + - * (and / by a nonzero constant), unary minus.
Predicates: `expr op constant` (or `category == 'label'`), AND, OR, NOT.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from compute.errors import SpecError
from compute.mpc.limits import MAX_DEPTH


# -- value expressions ---------------------------------------------------------------------
@dataclass(frozen=True)
class ColRef:
    """Column `column` of table `table`."""

    table: str
    column: str


@dataclass(frozen=True)
class Const:
    """A finite numeric constant."""

    value: float


@dataclass(frozen=True)
class Arith:
    """`left op right` with op one of + - * / (division only by a nonzero constant)."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg:
    """`-operand`."""

    operand: Expr


Expr = ColRef | Const | Arith | Neg


# -- predicates ----------------------------------------------------------------------------
class Cmp(StrEnum):
    """Comparison operators of WHERE."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="


@dataclass(frozen=True)
class Compare:
    """`expr op value`: a number constant, or a declared category for == and != on a category column."""

    expr: Expr
    op: Cmp
    value: float | str

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "op", Cmp(self.op))
        except ValueError:
            raise SpecError(f"unknown comparison {self.op!r}") from None


@dataclass(frozen=True)
class And:
    """All terms hold."""

    terms: tuple[Predicate, ...]


@dataclass(frozen=True)
class Or:
    """At least one term holds."""

    terms: tuple[Predicate, ...]


@dataclass(frozen=True)
class Not:
    """The term does not hold."""

    term: Predicate


Predicate = Compare | And | Or | Not


# -- rendering -----------------------------------------------------------------------------
def render_number(value: float) -> str:
    """A constant as text: integers without a decimal point."""
    return repr(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def render(e: Expr, parent: int = 0, right: bool = False) -> str:
    """SQL-like text of an expression, with only the parentheses the tree needs."""
    if isinstance(e, ColRef):
        return f"{e.table}.{e.column}"
    if isinstance(e, Const):
        text = render_number(e.value)
        return f"({text})" if e.value < 0 and parent else text
    if isinstance(e, Neg):
        return f"-{render(e.operand, 3)}"
    mine = _PRECEDENCE[e.op]
    text = f"{render(e.left, mine)} {e.op} {render(e.right, mine, True)}"
    return f"({text})" if mine < parent or (right and mine == parent) else text


def render_predicate(p: Predicate) -> str:
    """SQL-like text of a predicate."""
    if isinstance(p, Compare):
        value = repr(p.value) if isinstance(p.value, str) else render_number(p.value)
        return f"{render(p.expr)} {p.op} {value}"
    if isinstance(p, Not):
        return f"NOT ({render_predicate(p.term)})"
    joiner = " AND " if isinstance(p, And) else " OR "
    return "(" + joiner.join(render_predicate(t) for t in p.terms) + ")"


# -- JSON ----------------------------------------------------------------------------------
def json_list(value: Any) -> list[Any]:
    """`value` if it is a JSON list, else SpecError."""
    if not isinstance(value, list):
        raise SpecError("expected a JSON list")
    return value


def expr_to_json(e: Expr) -> dict[str, Any]:
    """The JSON object of an expression."""
    if isinstance(e, ColRef):
        return {"col": [e.table, e.column]}
    if isinstance(e, Const):
        return {"const": float(e.value)}
    if isinstance(e, Neg):
        return {"neg": expr_to_json(e.operand)}
    return {"op": e.op, "args": [expr_to_json(e.left), expr_to_json(e.right)]}


def expr_from_json(obj: Any, depth: int = 0) -> Expr:
    """Inverse of `expr_to_json`."""
    if depth > MAX_DEPTH or not isinstance(obj, dict) or len(obj) not in (1, 2):
        raise SpecError("malformed expression")
    if set(obj) == {"col"}:
        table, column = obj["col"]
        if not isinstance(table, str) or not isinstance(column, str):
            raise SpecError("a column reference is [table, column]")
        return ColRef(table, column)
    if set(obj) == {"const"}:
        return Const(obj["const"])
    if set(obj) == {"neg"}:
        return Neg(expr_from_json(obj["neg"], depth + 1))
    if set(obj) == {"op", "args"}:
        left, right = json_list(obj["args"])
        return Arith(obj["op"], expr_from_json(left, depth + 1), expr_from_json(right, depth + 1))
    raise SpecError("malformed expression")


def predicate_to_json(p: Predicate) -> dict[str, Any]:
    """The JSON object of a predicate."""
    if isinstance(p, Compare):
        value: Any = p.value if isinstance(p.value, str) else float(p.value)
        return {"cmp": str(p.op), "expr": expr_to_json(p.expr), "value": value}
    if isinstance(p, Not):
        return {"not": predicate_to_json(p.term)}
    return {("and" if isinstance(p, And) else "or"): [predicate_to_json(t) for t in p.terms]}


def predicate_from_json(obj: Any, depth: int) -> Predicate:
    """Inverse of `predicate_to_json`."""
    if depth > MAX_DEPTH or not isinstance(obj, dict):
        raise SpecError("malformed predicate")
    if set(obj) == {"cmp", "expr", "value"}:
        return Compare(expr_from_json(obj["expr"]), Cmp(obj["cmp"]), obj["value"])
    if set(obj) == {"not"}:
        return Not(predicate_from_json(obj["not"], depth + 1))
    if set(obj) == {"and"}:
        return And(tuple(predicate_from_json(t, depth + 1) for t in json_list(obj["and"])))
    if set(obj) == {"or"}:
        return Or(tuple(predicate_from_json(t, depth + 1) for t in json_list(obj["or"])))
    raise SpecError("malformed predicate")
