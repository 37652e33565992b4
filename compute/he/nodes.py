"""The formula AST: frozen nodes and their canonical rendering.

Positions (`pos`, a 0-based character offset into the source) serve error messages only:
they take no part in equality, so a formula and its canonical rendering parse to equal
trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

BinaryOp = Literal["+", "-", "*", "/"]


@dataclass(frozen=True, slots=True)
class Num:
    """A decimal literal, held exactly."""

    value: Fraction
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Col:
    """A reference to an encrypted column."""

    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Neg:
    """Unary minus."""

    operand: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class BinOp:
    """`left op right` for op in + - * /."""

    op: BinaryOp
    left: Expr
    right: Expr
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class WeightList:
    """`[w1, w2, ...]`: plaintext weights, only as the second argument of `dot`."""

    values: tuple[Fraction, ...]
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    """`func(args...)` for one of the built-in functions."""

    func: str
    args: tuple[Expr | WeightList, ...]
    pos: int = field(default=0, compare=False)


Expr = Num | Col | Neg | BinOp | Call


def format_decimal(value: Fraction) -> str:
    """Render an exact decimal without exponent (`Fraction(5, 2)` -> `2.5`).

    Literals are finite decimals by construction, so the denominator has only the
    prime factors 2 and 5; anything else is a programming error.
    """
    sign = "-" if value < 0 else ""
    num, den = abs(value.numerator), value.denominator
    digits = 0
    while (10**digits) % den:
        digits += 1
        if digits > 400:
            raise ValueError(f"{value} is not a finite decimal")
    scaled = num * (10**digits // den)
    if digits == 0:
        return f"{sign}{scaled}"
    whole, frac = divmod(scaled, 10**digits)
    frac_text = str(frac).rjust(digits, "0").rstrip("0")
    return f"{sign}{whole}.{frac_text}" if frac_text else f"{sign}{whole}"


def render(expr: Expr | WeightList) -> str:
    """The canonical text of a formula: no spaces, every operation parenthesized."""
    if isinstance(expr, Num):
        text = format_decimal(expr.value)
        return f"({text})" if expr.value < 0 else text
    if isinstance(expr, Col):
        return expr.name
    if isinstance(expr, Neg):
        return f"(-{render(expr.operand)})"
    if isinstance(expr, BinOp):
        return f"({render(expr.left)}{expr.op}{render(expr.right)})"
    if isinstance(expr, WeightList):
        return "[" + ",".join(format_decimal(v) for v in expr.values) + "]"
    return f"{expr.func}(" + ",".join(render(a) for a in expr.args) + ")"


def column_names(expr: Expr | WeightList) -> frozenset[str]:
    """Every column a formula references."""
    if isinstance(expr, Col):
        return frozenset((expr.name,))
    if isinstance(expr, Neg):
        return column_names(expr.operand)
    if isinstance(expr, BinOp):
        return column_names(expr.left) | column_names(expr.right)
    if isinstance(expr, Call):
        names: frozenset[str] = frozenset()
        for arg in expr.args:
            names |= column_names(arg)
        return names
    return frozenset()
