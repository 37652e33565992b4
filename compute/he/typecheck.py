"""Static checks of a parsed formula against the columns and the scheme, before any crypto.

Every value in a formula has a kind:

- `CONST`: known in the clear (literals, `count(...)`, and arithmetic on them);
- `COLUMN`: an encrypted column, row by row;
- `SCALAR`: an encrypted aggregate (`sum`, `mean`, `dot`).

Columns and scalars never mix (no broadcasting of an encrypted aggregate over rows);
division only by constants; ciphertext products only where the scheme allows them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction

from compute.errors import ComputeError
from compute.he.lexer import FormulaError
from compute.he.nodes import BinOp, Call, Col, Expr, Neg, Num, WeightList, column_names
from compute.he.scheme import CKKS_MAX_DEPTH, Scheme, scaled_side


class Kind(Enum):
    """What a (sub)formula evaluates to."""

    CONST = "const"
    COLUMN = "column"
    SCALAR = "scalar"


@dataclass(frozen=True, slots=True)
class FormulaInfo:
    """The outcome of a static check."""

    kind: Kind
    columns: frozenset[str]
    ckks_depth: int  # multiplicative depth as the CKKS evaluator spends it


@dataclass(frozen=True, slots=True)
class _Typed:
    kind: Kind
    depth: int  # CKKS levels spent (encrypted values)
    value: Fraction | None = None  # CONST: exact value, when it does not depend on count()
    factor: Fraction | None = None  # encrypted: the plaintext factor, when known statically


def check_formula(expr: Expr, columns: Collection[str], scheme: Scheme) -> FormulaInfo:
    """Check `expr` over the available `columns` for `scheme`.

    Raises `FormulaError` (a `SpecError`) for unknown columns and ill-kinded formulas, and
    `ComputeError` for what the scheme cannot compute (ciphertext products under Paillier,
    multiplicative depth beyond the CKKS parameters). The CKKS depth follows the rules of
    `ckks.CkksBackend`; where a factor depends on a row count it assumes the costlier case.
    """
    typed = _Checker(frozenset(columns), scheme).visit(expr)
    if scheme is Scheme.CKKS and typed.depth > CKKS_MAX_DEPTH:
        raise ComputeError(
            f"the formula needs multiplicative depth {typed.depth}; the CKKS parameters "
            f"(N=8192, scale 2^40) allow {CKKS_MAX_DEPTH}"
        )
    return FormulaInfo(typed.kind, column_names(expr), typed.depth)


class _Checker:
    def __init__(self, columns: frozenset[str], scheme: Scheme) -> None:
        self._columns = columns
        self._scheme = scheme

    def visit(self, expr: Expr) -> _Typed:
        if isinstance(expr, Num):
            return _Typed(Kind.CONST, 0, value=expr.value)
        if isinstance(expr, Col):
            if expr.name not in self._columns:
                known = ", ".join(sorted(self._columns)) or "none"
                raise FormulaError(f"unknown column {expr.name!r} (available: {known})", expr.pos)
            return _Typed(Kind.COLUMN, 0, factor=Fraction(1))
        if isinstance(expr, Neg):
            t = self.visit(expr.operand)
            return _Typed(t.kind, t.depth, _negate(t.value), _negate(t.factor))
        if isinstance(expr, BinOp):
            return self._binop(expr)
        return self._call(expr)

    def _binop(self, expr: BinOp) -> _Typed:
        left, right = self.visit(expr.left), self.visit(expr.right)
        if left.kind is Kind.CONST and right.kind is Kind.CONST:
            return _Typed(Kind.CONST, 0, value=_fold(expr, left.value, right.value))
        if expr.op in "+-":
            if left.kind is Kind.CONST or right.kind is Kind.CONST:
                enc = right if left.kind is Kind.CONST else left
                factor = _negate(enc.factor) if expr.op == "-" and enc is right else enc.factor
                return _Typed(enc.kind, enc.depth, factor=factor)
            if left.kind is not right.kind:
                raise FormulaError("cannot combine an encrypted column with an encrypted aggregate", expr.pos)
            rfactor = _negate(right.factor) if expr.op == "-" else right.factor
            return self._sum(left, _Typed(right.kind, right.depth, factor=rfactor))
        if expr.op == "/":
            if right.kind is not Kind.CONST:
                raise FormulaError("division is only by plaintext constants", expr.pos)
            if right.value == 0:
                raise FormulaError("division by zero", expr.pos)
            return self._scaled(left, None if right.value is None else 1 / right.value, known_nonzero=True)
        if left.kind is Kind.CONST or right.kind is Kind.CONST:
            const, enc = (left, right) if left.kind is Kind.CONST else (right, left)
            return self._scaled(enc, const.value, known_nonzero=False)
        if left.kind is not right.kind:
            raise FormulaError("cannot multiply an encrypted column by an encrypted aggregate", expr.pos)
        if self._scheme.is_paillier:
            raise ComputeError(
                f"{self._scheme.value} cannot multiply two ciphertexts (position {expr.pos}): Paillier is "
                "only additively homomorphic; multiply by plaintext constants or use the ckks scheme"
            )
        factor = left.factor * right.factor if left.factor is not None and right.factor is not None else None
        return _Typed(left.kind, max(left.depth, right.depth) + 1, factor=factor)

    def _scaled(self, enc: _Typed, c: Fraction | None, known_nonzero: bool) -> _Typed:
        """enc * c: free, except a product by zero (CKKS multiplies the ciphertext by 0)."""
        if c is None:
            return _Typed(enc.kind, enc.depth if known_nonzero else enc.depth + 1)
        if c == 0:
            return _Typed(enc.kind, enc.depth + 1, factor=Fraction(1))
        return _Typed(enc.kind, enc.depth, factor=None if enc.factor is None else enc.factor * c)

    def _sum(self, a: _Typed, b: _Typed) -> _Typed:
        """a + b, rescaling one side when the factors differ (or may differ)."""
        if a.factor is not None and a.factor == b.factor:
            return _Typed(a.kind, max(a.depth, b.depth), factor=a.factor)
        if scaled_side(a.depth, b.depth) == "a":
            return _Typed(a.kind, max(a.depth + 1, b.depth), factor=b.factor)
        return _Typed(a.kind, max(a.depth, b.depth + 1), factor=a.factor)

    def _call(self, expr: Call) -> _Typed:
        first = expr.args[0]
        assert not isinstance(first, WeightList)
        arg = self.visit(first)
        if arg.kind is not Kind.COLUMN:
            raise FormulaError(f"{expr.func}() expects an encrypted column, got a {arg.kind.value}", expr.pos)
        if expr.func == "count":
            return _Typed(Kind.CONST, 0)
        if expr.func == "sum":
            return _Typed(Kind.SCALAR, arg.depth, factor=arg.factor)
        if expr.func == "mean":  # factor / rows: free, but unknown here
            return _Typed(Kind.SCALAR, arg.depth)
        return _Typed(Kind.SCALAR, arg.depth + 1, factor=arg.factor)  # dot: weights times slots


def _negate(x: Fraction | None) -> Fraction | None:
    return None if x is None else -x


def _fold(expr: BinOp, left: Fraction | None, right: Fraction | None) -> Fraction | None:
    if left is None or right is None:
        if expr.op == "/" and right == 0:
            raise FormulaError("division by zero", expr.pos)
        return None
    if expr.op == "+":
        return left + right
    if expr.op == "-":
        return left - right
    if expr.op == "*":
        return left * right
    if right == 0:
        raise FormulaError("division by zero", expr.pos)
    return left / right
