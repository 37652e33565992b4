"""The stated error bound of a result, computed by the owner from its plaintext columns.

The owner replays the formula through the evaluator with a tracking backend that mirrors
the ciphertext backends operation by operation (same factors, same rescaling decisions)
and carries, per row, an upper bound `m` on |Dec| and `e` on its absolute error. The
result's bound is `|factor| * (e + 2^-52 m)`.

    add (common factor)   m = m1 + m2        e = e1 + e2
    rescale by ratio r    m = |r| m          e = |r| e + REL |r| m + E_MUL
    + constant            m = m + |c / f|    e = e
    ct * ct (CKKS)        m = m1 m2          e = e1 m2 + e2 m1 + e1 e2 + REL m1 m2 + E_MUL
    sum, dot              sums over rows (dot: weights as a rescale), + E_SUM per ciphertext

Paillier: integer columns are exact (e = 0); fixed-point columns start at e = 0.5 (the
rounding of x * scale); the integer multipliers of an alignment scale e exactly; nothing
else adds error (REL = E_MUL = E_SUM = 0).

CKKS (N=8192, scale 2^40, primes 60/40/40/60), constants measured on this stack with a
margin of 6x or more: fresh encryption E_FRESH = 5e-8 per slot (measured <= 8e-9),
rescaling noise E_MUL = 5e-8 per slot, the systematic scale drift of one rescale
REL = 2e-6 (measured 1.3e-7 and 6.7e-7 for the two primes), slot-sum rotation noise
E_SUM = 1e-6 per ciphertext (measured < 1e-9). A CKKS plaintext must stay below 2^97, 2^57
and 2^17 at depth 0, 1 and 2 (the modulus left above the scale, with margin): past that
decryption is garbage, and `error_bound` raises `ComputeError` instead of stating a bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.errors import ComputeError
from compute.he.ckks import chunk_sizes
from compute.he.encoding import encode_column
from compute.he.envelope import ColumnMeta
from compute.he.evaluate import FormulaEvaluator
from compute.he.paillier import align, fraction_gcd
from compute.he.scheme import CKKS_MAX_DEPTH, Scheme, scaled_side
from compute.he.spec import HETaskSpec

F64 = npt.NDArray[np.float64]

CKKS_E_FRESH = 5e-8
CKKS_E_MUL = 5e-8
CKKS_REL = 2e-6
CKKS_E_SUM = 1e-6
CKKS_CAPACITY_BITS = (97, 57, 17)  # by depth
FLOAT_REL = 2.0**-52


@dataclass(frozen=True, slots=True)
class _Tracked:
    m: F64  # per row (shape (rows,)) or shape (1,) for a scalar
    e: F64
    rows: int | None
    factor: Fraction
    depth: int


def error_bound(spec: HETaskSpec, columns: Mapping[str, Any]) -> float | F64:
    """Upper bound on |decrypt(result) - exact result| for `spec` on these plaintext columns.

    A float for scalars (0.0 for public results), an array for column results.
    """
    metas: dict[str, tuple[ColumnMeta, list[bytes]]] = {}
    for name in spec.columns:
        col = encode_column(name, columns[name], spec.scheme, spec.scale, spec.limits)
        rows = len(col.values)
        chunks = chunk_sizes(rows) if spec.scheme is Scheme.CKKS else (rows,)
        meta = ColumnMeta(name=name, rows=rows, encoding=col.encoding, divisor=col.divisor, chunks=chunks)
        metas[name] = (meta, [])
    result = FormulaEvaluator(_TrackingBackend(spec.scheme, columns), metas).visit(spec.expr)
    if isinstance(result, Fraction):
        return 0.0
    bound = float(abs(result.factor)) * (result.e + FLOAT_REL * result.m)
    return float(bound[0]) if result.rows is None else bound


class _TrackingBackend:
    """Plaintext stand-in for PaillierBackend / CkksBackend that tracks (m, e)."""

    def __init__(self, scheme: Scheme, columns: Mapping[str, Any]) -> None:
        self._ckks = scheme is Scheme.CKKS
        self._plain = columns
        self._rel = CKKS_REL if self._ckks else 0.0
        self._e_mul = CKKS_E_MUL if self._ckks else 0.0
        self._e_sum = CKKS_E_SUM if self._ckks else 0.0

    def load_column(self, meta: ColumnMeta, blobs: Sequence[bytes]) -> _Tracked:
        x = np.abs(np.asarray(self._plain[meta.name], dtype=np.float64))
        if self._ckks:
            return _Tracked(x + CKKS_E_FRESH, np.full(x.shape, CKKS_E_FRESH), meta.rows, Fraction(1), 0)
        fresh = 0.5 if meta.encoding == "fixed" else 0.0
        return _Tracked(
            x * meta.divisor + fresh, np.full(x.shape, fresh), meta.rows, Fraction(1, meta.divisor), 0
        )

    def result_blobs(self, value: _Tracked) -> list[bytes]:
        return []

    def neg(self, a: _Tracked) -> _Tracked:
        return _Tracked(a.m, a.e, a.rows, -a.factor, a.depth)

    def mul_const(self, a: _Tracked, c: Fraction) -> _Tracked:
        if c == 0:
            zero = np.zeros_like(a.m)
            return self._checked(
                _Tracked(zero, zero + self._e_mul, a.rows, Fraction(1), self._spend(a.depth))
            )
        return _Tracked(a.m, a.e, a.rows, a.factor * c, a.depth)

    def add_const(self, a: _Tracked, c: Fraction) -> _Tracked:
        if c == 0:
            return a
        shift = c / a.factor
        if self._ckks:
            return self._checked(_Tracked(a.m + abs(float(shift)), a.e, a.rows, a.factor, a.depth))
        k = shift.denominator
        return _Tracked(a.m * k + abs(float(shift.numerator)), a.e * k, a.rows, a.factor / k, a.depth)

    def add(self, a: _Tracked, b: _Tracked) -> _Tracked:
        if self._ckks:
            if a.factor != b.factor:
                if scaled_side(a.depth, b.depth) == "a":
                    a = self._rescaled(a, b.factor)
                else:
                    b = self._rescaled(b, a.factor)
            return self._checked(_Tracked(a.m + b.m, a.e + b.e, a.rows, a.factor, max(a.depth, b.depth)))
        ka, kb, g = align(a.factor, b.factor)
        m = abs(ka) * a.m + abs(kb) * b.m
        return _Tracked(m, abs(ka) * a.e + abs(kb) * b.e, a.rows, g if ka > 0 else -g, 0)

    def mul(self, a: _Tracked, b: _Tracked) -> _Tracked:
        m = a.m * b.m
        e = a.e * b.m + b.e * a.m + a.e * b.e + self._rel * m + self._e_mul
        depth = self._spend(max(a.depth, b.depth))
        return self._checked(_Tracked(m, e, a.rows, a.factor * b.factor, depth))

    def sum(self, a: _Tracked) -> _Tracked:
        chunks = len(chunk_sizes(a.m.shape[0]))
        e = float(a.e.sum()) + self._e_sum * chunks
        return self._checked(_Tracked(np.array([a.m.sum()]), np.array([e]), None, a.factor, a.depth))

    def mean(self, a: _Tracked) -> _Tracked:
        total = self.sum(a)
        return _Tracked(total.m, total.e, None, total.factor / a.m.shape[0], total.depth)

    def dot(self, a: _Tracked, weights: Sequence[Fraction]) -> _Tracked:
        if self._ckks:
            w = np.abs(np.array([float(v) for v in weights], dtype=np.float64))
            m = float(w @ a.m)
            chunks = len(chunk_sizes(len(w)))
            e = float(w @ a.e) + self._rel * m + self._e_mul * len(w) + self._e_sum * chunks
            return self._checked(_Tracked(np.array([m]), np.array([e]), None, a.factor, self._spend(a.depth)))
        g = Fraction(0)
        for v in weights:
            g = fraction_gcd(g, v) if g else abs(v)
        g = g or Fraction(1)
        k = np.array([float(abs(v / g)) for v in weights], dtype=np.float64)
        return _Tracked(np.array([k @ a.m]), np.array([k @ a.e]), None, a.factor * g, 0)

    def _rescaled(self, a: _Tracked, factor: Fraction) -> _Tracked:
        r = abs(float(a.factor / factor))
        e = r * a.e + self._rel * r * a.m + self._e_mul
        return self._checked(_Tracked(r * a.m, e, a.rows, factor, self._spend(a.depth)))

    def _spend(self, depth: int) -> int:
        if depth + 1 > CKKS_MAX_DEPTH:
            raise ComputeError(f"the formula exceeds the CKKS multiplicative depth ({CKKS_MAX_DEPTH})")
        return depth + 1

    def _checked(self, a: _Tracked) -> _Tracked:
        if self._ckks:
            cap = 2.0 ** CKKS_CAPACITY_BITS[a.depth]
            if float(np.max(a.m)) >= cap:
                raise ComputeError(
                    f"CKKS capacity exceeded: values reach {float(np.max(a.m)):.3g} at multiplicative "
                    f"depth {a.depth}, where CKKS holds less than 2^{CKKS_CAPACITY_BITS[a.depth]}: "
                    "scale the inputs down"
                )
        return a
