"""What a compute node runs: a formula over encrypted columns, with the public context only.

`evaluate` is deterministic: the same three inputs give byte-identical output (HEU and
TenSEAL operations without fresh randomness, canonical envelope), so every node of a
committee can sign `result_digest(output)`. It never sees a secret key: the public context
it loads has none (and a context that does is refused).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal, Protocol

from compute.errors import ComputeError, SpecError
from compute.he.ckks import CkksBackend, CValue
from compute.he.envelope import ColumnMeta, ColumnsHeader, ResultHeader, digest, pack, unpack
from compute.he.keys import PublicContext, load_public_context
from compute.he.limits import DEFAULT_LIMITS, HELimits
from compute.he.nodes import BinOp, Call, Col, Expr, Neg, Num, WeightList, column_names, render
from compute.he.paillier import PaillierBackend, PValue
from compute.he.parser import parse_formula
from compute.he.typecheck import check_formula

Value = PValue | CValue


class Backend(Protocol):
    """The ciphertext operations a scheme provides to the evaluator."""

    def load_column(self, meta: ColumnMeta, blobs: Sequence[bytes]) -> Any: ...
    def result_blobs(self, value: Any) -> list[bytes]: ...
    def neg(self, a: Any) -> Any: ...
    def add(self, a: Any, b: Any) -> Any: ...
    def add_const(self, a: Any, c: Fraction) -> Any: ...
    def mul_const(self, a: Any, c: Fraction) -> Any: ...
    def mul(self, a: Any, b: Any) -> Any: ...
    def sum(self, a: Any) -> Any: ...
    def mean(self, a: Any) -> Any: ...
    def dot(self, a: Any, weights: Sequence[Fraction]) -> Any: ...


def evaluate(
    public_context: bytes, encrypted_columns: bytes, formula: str, *, limits: HELimits = DEFAULT_LIMITS
) -> bytes:
    """Evaluate `formula` on encrypted columns; return the encrypted result envelope.

    Raises `SpecError` for malformed or oversized input and invalid formulas, and
    `ComputeError` for what the scheme cannot do.
    """
    ctx = load_public_context(public_context, limits)
    header, blobs = unpack(encrypted_columns, ColumnsHeader, limits.max_columns_bytes, "encrypted columns")
    if header.scheme is not ctx.scheme:
        raise SpecError(f"columns are {header.scheme.value} ciphertexts, the context is {ctx.scheme.value}")
    if header.context_digest != ctx.digest:
        raise SpecError("the columns were encrypted under another public context")
    columns = _index_columns(header, blobs, limits)
    expr = parse_formula(formula, limits)
    check_formula(expr, columns.keys(), ctx.scheme)
    evaluator = FormulaEvaluator(_backend(ctx), columns)
    try:
        result = evaluator.visit(expr)
    except (RuntimeError, IndexError, KeyError) as exc:  # a native library choking on its input
        raise SpecError(f"the ciphertexts are malformed or not under this public context ({exc})") from None

    def result_header(value: Literal["column", "scalar", "public"], **fields: Any) -> ResultHeader:
        return ResultHeader(
            scheme=ctx.scheme,
            context_digest=ctx.digest,
            columns_digest=digest(bytes(encrypted_columns)),
            formula=render(expr),
            value=value,
            **fields,
        )

    if isinstance(result, Fraction):
        return pack(result_header("public", public_value=str(result)), [])
    out_blobs = evaluator.backend.result_blobs(result)
    if isinstance(result, PValue):
        chunks: tuple[int, ...] = (result.rows,) if result.rows is not None else ()
    else:
        chunks = tuple(int(c.size()) for c in result.chunks)
    kind: Literal["column", "scalar"] = "column" if result.rows is not None else "scalar"
    out = pack(result_header(kind, rows=result.rows, chunks=chunks, factor=str(result.factor)), out_blobs)
    if len(out) > limits.max_result_bytes:
        raise ComputeError(f"the result takes {len(out)} bytes, over the limit of {limits.max_result_bytes}")
    return out


def result_digest(result: bytes) -> bytes:
    """SHA-256 of a result envelope (32 bytes): what committee members sign."""
    return bytes.fromhex(digest(bytes(result)))


def _backend(ctx: PublicContext) -> Backend:
    return PaillierBackend(ctx.handle) if ctx.scheme.is_paillier else CkksBackend(ctx.handle)


def _index_columns(
    header: ColumnsHeader, blobs: list[bytes], limits: HELimits
) -> dict[str, tuple[ColumnMeta, list[bytes]]]:
    if len(header.columns) > limits.max_columns:
        raise SpecError(f"{len(header.columns)} columns, over the limit of {limits.max_columns}")
    if sum(len(m.chunks) for m in header.columns) != len(blobs):
        raise SpecError("encrypted columns: blob count does not match the column chunks")
    columns: dict[str, tuple[ColumnMeta, list[bytes]]] = {}
    offset = 0
    for meta in header.columns:
        if meta.name in columns:
            raise SpecError(f"encrypted columns: duplicate column {meta.name!r}")
        if meta.rows > limits.max_rows or sum(meta.chunks) != meta.rows:
            raise SpecError(f"encrypted columns: column {meta.name!r} has a bad row count")
        expected = ("real",) if not header.scheme.is_paillier else ("int", "fixed")
        if meta.encoding not in expected or (meta.encoding != "fixed" and meta.divisor != 1):
            raise SpecError(f"encrypted columns: column {meta.name!r} has a bad encoding")
        columns[meta.name] = (meta, blobs[offset : offset + len(meta.chunks)])
        offset += len(meta.chunks)
    return columns


class FormulaEvaluator:
    """Walks the AST: plaintext constants fold exactly (Fractions); the rest is ciphertext."""

    def __init__(self, backend: Backend, columns: dict[str, tuple[ColumnMeta, list[bytes]]]) -> None:
        self.backend = backend
        self._columns = columns
        self._loaded: dict[str, Any] = {}

    def visit(self, expr: Expr) -> Any:
        if isinstance(expr, Num):
            return expr.value
        if isinstance(expr, Col):
            if expr.name not in self._loaded:
                meta, blobs = self._columns[expr.name]
                self._loaded[expr.name] = self.backend.load_column(meta, blobs)
            return self._loaded[expr.name]
        if isinstance(expr, Neg):
            inner = self.visit(expr.operand)
            return -inner if isinstance(inner, Fraction) else self.backend.neg(inner)
        if isinstance(expr, BinOp):
            return self._binop(expr, self.visit(expr.left), self.visit(expr.right))
        return self._call(expr)

    def _binop(self, expr: BinOp, left: Any, right: Any) -> Any:
        b = self.backend
        lconst, rconst = isinstance(left, Fraction), isinstance(right, Fraction)
        if expr.op == "/":
            if right == 0:
                raise SpecError(f"division by zero at position {expr.pos}")
            return left / right if lconst else b.mul_const(left, 1 / right)
        if lconst and rconst:
            return {"+": left + right, "-": left - right, "*": left * right}[expr.op]
        if expr.op == "*":
            if lconst or rconst:
                const, enc = (left, right) if lconst else (right, left)
                return b.mul_const(enc, const)
            return b.mul(left, right)
        if expr.op == "-":
            if rconst:
                return b.add_const(left, -right)
            right = b.neg(right)
        if lconst:
            return b.add_const(right, left)
        if rconst:
            return b.add_const(left, right)
        return b.add(left, right)

    def _call(self, expr: Call) -> Any:
        first = expr.args[0]
        assert not isinstance(first, WeightList)
        if expr.func == "count":
            return Fraction(self._rows(first, expr.pos))
        arg = self.visit(first)
        if expr.func == "sum":
            return self.backend.sum(arg)
        if expr.func == "mean":
            return self.backend.mean(arg)
        weights = expr.args[1]
        assert isinstance(weights, WeightList)
        rows = self._rows(first, expr.pos)
        if len(weights.values) != rows:
            raise SpecError(f"dot() at position {expr.pos} has {len(weights.values)} weights for {rows} rows")
        return self.backend.dot(arg, weights.values)

    def _rows(self, expr: Expr, pos: int) -> int:
        """Row count of a column expression, from metadata only (no ciphertext is touched)."""
        counts = {self._columns[name][0].rows for name in _names(expr)}
        if len(counts) != 1:
            raise SpecError(f"columns of different lengths combined at position {pos}")
        return counts.pop()


def _names(expr: Expr) -> set[str]:
    return set(column_names(expr))
