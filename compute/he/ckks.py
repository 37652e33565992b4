"""CKKS (TenSEAL) on a compute node: approximate real arithmetic, ciphertext products allowed.

A column of `rows` values is packed into ceil(rows / 4096) ciphertexts (chunks of 4096
slots, the last one shorter). Element-wise operations work chunk by chunk; `sum` adds the
per-chunk slot sums.

Like the Paillier backend, a value is `Dec(ct) * factor` with an exact rational factor:
negation, products and quotients by constants and `mean` are free. Only three operations
spend one of the two rescaling levels: a ciphertext product, a dot product with plaintext
weights, and the sum of two values whose factors differ (the shallower side, or the right
one on a tie, is multiplied by the ratio of the factors). `typecheck` applies the same
rules statically; this module checks them again as it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import tenseal as ts

from compute.errors import ComputeError, SpecError
from compute.he.envelope import ColumnMeta
from compute.he.scheme import CKKS_MAX_DEPTH, CKKS_SLOTS, scaled_side


@dataclass(frozen=True, slots=True)
class CValue:
    """`Dec(chunks) * factor`; `rows` is None for a scalar (one chunk holding one value)."""

    chunks: tuple[Any, ...] = field(repr=False)
    rows: int | None
    factor: Fraction
    depth: int


def chunk_sizes(rows: int) -> tuple[int, ...]:
    """How a column of `rows` values is split over ciphertexts."""
    full, rest = divmod(rows, CKKS_SLOTS)
    return (CKKS_SLOTS,) * full + ((rest,) if rest else ())


def spend_level(depth: int) -> int:
    """The depth after one more multiplication, or `ComputeError` past the parameters."""
    if depth + 1 > CKKS_MAX_DEPTH:
        raise ComputeError(f"the formula exceeds the CKKS multiplicative depth ({CKKS_MAX_DEPTH})")
    return depth + 1


@contextmanager
def _tenseal_errors() -> Iterator[None]:
    try:
        yield
    except ValueError as exc:
        raise ComputeError(f"CKKS evaluation failed: {exc}") from None


class CkksBackend:
    """The operations of the evaluator for TenSEAL CKKS (public context only)."""

    def __init__(self, context: Any) -> None:
        self._ctx = context

    # -- inputs and outputs ------------------------------------------------------------
    def load_column(self, meta: ColumnMeta, blobs: Sequence[bytes]) -> CValue:
        """Deserialize a column's chunks, checking each one's slot count."""
        if meta.chunks != chunk_sizes(meta.rows) or len(blobs) != len(meta.chunks):
            raise SpecError(f"column {meta.name!r}: chunking does not match {meta.rows} rows")
        chunks = tuple(
            load_vector(self._ctx, b, n, f"column {meta.name!r}")
            for b, n in zip(blobs, meta.chunks, strict=True)
        )
        return CValue(chunks, meta.rows, Fraction(1), 0)

    def result_blobs(self, value: CValue) -> list[bytes]:
        """Serialized ciphertexts of a result."""
        return [bytes(c.serialize()) for c in value.chunks]

    # -- arithmetic --------------------------------------------------------------------
    def neg(self, a: CValue) -> CValue:
        return CValue(a.chunks, a.rows, -a.factor, a.depth)

    def mul_const(self, a: CValue, c: Fraction) -> CValue:
        if c == 0:
            return CValue(_map(a.chunks, lambda x: x * 0.0), a.rows, Fraction(1), spend_level(a.depth))
        return CValue(a.chunks, a.rows, a.factor * c, a.depth)

    def add_const(self, a: CValue, c: Fraction) -> CValue:
        shift = float(c / a.factor)  # value + c == (Dec + c / factor) * factor
        return a if shift == 0 else CValue(_map(a.chunks, lambda x: x + shift), a.rows, a.factor, a.depth)

    def add(self, a: CValue, b: CValue) -> CValue:
        _same_shape(a, b)
        if a.factor != b.factor:
            if scaled_side(a.depth, b.depth) == "a":
                a = self._rescaled(a, b.factor)
            else:
                b = self._rescaled(b, a.factor)
        chunks = _zip(a.chunks, b.chunks, lambda x, y: x + y)
        return CValue(chunks, a.rows, a.factor, max(a.depth, b.depth))

    def mul(self, a: CValue, b: CValue) -> CValue:
        _same_shape(a, b)
        depth = spend_level(max(a.depth, b.depth))
        return CValue(_zip(a.chunks, b.chunks, lambda x, y: x * y), a.rows, a.factor * b.factor, depth)

    def sum(self, a: CValue) -> CValue:
        _rows(a)
        with _tenseal_errors():
            total = _add_all([c.sum() for c in a.chunks])
        return CValue((total,), None, a.factor, a.depth)

    def mean(self, a: CValue) -> CValue:
        total = self.sum(a)
        return CValue(total.chunks, None, total.factor / _rows(a), total.depth)

    def dot(self, a: CValue, weights: Sequence[Fraction]) -> CValue:
        _rows(a)
        depth = spend_level(a.depth)
        floats = [float(w) for w in weights]
        with _tenseal_errors():
            parts, start = [], 0
            for c in a.chunks:
                n = c.size()
                parts.append(c.dot(floats[start : start + n]))
                start += n
            total = _add_all(parts)
        return CValue((total,), None, a.factor, depth)

    def _rescaled(self, a: CValue, factor: Fraction) -> CValue:
        """The same value with `factor`: Dec multiplied by a.factor / factor (one level)."""
        depth = spend_level(a.depth)
        ratio = float(a.factor / factor)
        return CValue(_map(a.chunks, lambda x: x * ratio), a.rows, factor, depth)


def _map(chunks: tuple[Any, ...], op: Callable[[Any], Any]) -> tuple[Any, ...]:
    with _tenseal_errors():
        return tuple(op(c) for c in chunks)


def _zip(a: tuple[Any, ...], b: tuple[Any, ...], op: Callable[[Any, Any], Any]) -> tuple[Any, ...]:
    with _tenseal_errors():
        return tuple(op(x, y) for x, y in zip(a, b, strict=True))


def _add_all(parts: list[Any]) -> Any:
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _same_shape(a: CValue, b: CValue) -> None:
    if a.rows != b.rows:
        raise SpecError(f"cannot combine encrypted columns of {a.rows} and {b.rows} rows")


def load_vector(ctx: Any, blob: bytes, size: int, what: str) -> Any:
    """Load one CKKS vector and check it holds `size` slots."""
    try:
        vec = ts.ckks_vector_from(ctx, blob)
    except Exception as exc:  # noqa: BLE001 - native parsers of untrusted bytes raise anything
        raise SpecError(f"{what}: unreadable CKKS ciphertext ({exc})") from None
    if vec.size() != size:
        raise SpecError(f"{what}: CKKS ciphertext holds {vec.size()} values, expected {size}")
    return vec


def _rows(a: CValue) -> int:
    if a.rows is None:
        raise ComputeError("an aggregate needs an encrypted column")
    return a.rows
