"""Paillier (HEU ZPaillier and OU) on a compute node: exact rational arithmetic on ciphertexts.

An encrypted value stands for `Dec(ct) * factor` with an exact rational `factor`. Negation,
products and quotients by constants, fixed-point scales and `mean` only change the factor
(no ciphertext work). Adding two values brings them to a common factor g (the rational gcd
of both factors) by multiplying each ciphertext by the integer factor_i / g, so every
result is exact and the owner applies the factor after decryption.

Cost notes (HEU, 2048 bits): ct * negative plaintext and ct - ct need a modular inverse and
are 10-15x slower than ct * positive plaintext; products therefore use |k| and a dot product
splits its weights by sign (one scalar subtraction).

`bound` is a public upper bound on |Dec(ct)| derived from the input bound 2^62 alone (never
from the data); an operation whose bound could reach the plaintext space is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from heu import numpy as hnp
from heu import phe

from compute.errors import ComputeError, SpecError
from compute.he.envelope import ColumnMeta
from compute.he.scheme import PAILLIER_INPUT_BOUND

_MAX_UINT_MARKERS = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


@dataclass(frozen=True, slots=True)
class PValue:
    """`Dec(ct) * factor`; `ct` is a CiphertextArray (column) or a Ciphertext (scalar)."""

    ct: Any = field(repr=False)
    rows: int | None
    factor: Fraction
    bound: int


def fraction_gcd(a: Fraction, b: Fraction) -> Fraction:
    """Largest g > 0 with a / g and b / g both integers (a, b not both zero)."""
    return Fraction(
        math.gcd(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator
    )


def align(fa: Fraction, fb: Fraction) -> tuple[int, int, Fraction]:
    """Integer multipliers (ka, kb) and the common factor g with fa = ka g, fb = kb g, g > 0."""
    g = fraction_gcd(fa, fb)
    return int(fa / g), int(fb / g), g


class PaillierBackend:
    """The operations of the evaluator for HEU Paillier (public key only)."""

    def __init__(self, kit: Any) -> None:
        self._kit = kit
        self._ev = kit.evaluator()
        self._enc = kit.bigint_encoder()
        self._limit = int(str(kit.public_key().plaintext_bound()))

    # -- inputs and outputs ------------------------------------------------------------
    def load_column(self, meta: ColumnMeta, blobs: Sequence[bytes]) -> PValue:
        """Deserialize one column (one blob) after checking its declared shape."""
        if len(blobs) != 1 or meta.chunks != (meta.rows,):
            raise SpecError(f"column {meta.name!r}: a Paillier column is one blob of all its rows")
        ct = load_array(blobs[0], meta.rows, f"column {meta.name!r}")
        return PValue(ct, meta.rows, Fraction(1, meta.divisor), PAILLIER_INPUT_BOUND)

    def result_blobs(self, value: PValue) -> list[bytes]:
        """Serialized ciphertext of a result."""
        return [bytes(value.ct.serialize())]

    # -- arithmetic --------------------------------------------------------------------
    def neg(self, a: PValue) -> PValue:
        return PValue(a.ct, a.rows, -a.factor, a.bound)

    def mul_const(self, a: PValue, c: Fraction) -> PValue:
        if c == 0:  # Dec * 0: a (deterministic) encryption of zero; factors stay nonzero
            if a.rows is None:
                return PValue(self._ev.phe.mul(a.ct, self._enc.encode(0)), None, Fraction(1), 0)
            return PValue(self._ev.mul(a.ct, self._plain(0, a.rows)), a.rows, Fraction(1), 0)
        return PValue(a.ct, a.rows, a.factor * c, a.bound)

    def add(self, a: PValue, b: PValue) -> PValue:
        _same_shape(a, b)
        ka, kb, g = align(a.factor, b.factor)
        ca, cb = self._times(a, abs(ka)), self._times(b, abs(kb))
        bound = self._checked(abs(ka) * a.bound + abs(kb) * b.bound)
        ev = self._ev if a.rows is not None else self._ev.phe
        ct = ev.add(ca, cb) if (ka > 0) == (kb > 0) else ev.sub(ca, cb)
        return PValue(ct, a.rows, g if ka > 0 else -g, bound)

    def add_const(self, a: PValue, c: Fraction) -> PValue:
        if c == 0:
            return a
        shift = c / a.factor  # value + c == (Dec + shift) * factor
        k = shift.denominator  # lift Dec by k so that the shift becomes an integer
        m = shift.numerator
        ct = self._times(a, k)
        bound = self._checked(k * a.bound + abs(m))
        if a.rows is None:
            ct = self._ev.phe.add(ct, self._enc.encode(m))
        else:
            ct = self._ev.add(ct, self._plain(m, a.rows))
        return PValue(ct, a.rows, a.factor / k, bound)

    def mul(self, a: PValue, b: PValue) -> PValue:
        raise ComputeError("Paillier cannot multiply two ciphertexts: it is only additively homomorphic")

    def sum(self, a: PValue) -> PValue:
        rows = _rows(a)
        return PValue(self._ev.sum(a.ct), None, a.factor, self._checked(a.bound * rows))

    def mean(self, a: PValue) -> PValue:
        total = self.sum(a)
        return PValue(total.ct, None, total.factor / _rows(a), total.bound)

    def dot(self, a: PValue, weights: Sequence[Fraction]) -> PValue:
        rows = _rows(a)
        g = Fraction(0)
        for w in weights:
            g = fraction_gcd(g, w) if g else abs(w)
        if g == 0:  # all weights zero: Dec = 0 exactly
            zero = self._ev.sum(self._ev.mul(a.ct, self._plain(0, rows)))
            return PValue(zero, None, a.factor, 0)
        ints = [int(w / g) for w in weights]
        parts: list[PValue] = []
        for positive in (True, False):
            mags = [abs(k) if (k > 0) == positive and k != 0 else 0 for k in ints]
            if any(mags):
                bound = self._checked(a.bound * sum(mags))
                plain = self._kit.array(np.array(mags, dtype=object), self._enc)
                ct = self._ev.sum(self._ev.mul(a.ct, plain))
                parts.append(PValue(ct, None, a.factor * g * (1 if positive else -1), bound))
        return parts[0] if len(parts) == 1 else self.add(parts[0], parts[1])

    # -- helpers -----------------------------------------------------------------------
    def _times(self, a: PValue, k: int) -> Any:
        """The ciphertext of Dec * k (k >= 1)."""
        if k == 1:
            return a.ct
        self._checked(a.bound * k)
        if a.rows is None:
            return self._ev.phe.mul(a.ct, self._enc.encode(k))
        return self._ev.mul(a.ct, self._plain(k, a.rows))

    def _plain(self, m: int, rows: int) -> Any:
        return self._kit.array(np.full(rows, m, dtype=object), self._enc)

    def _checked(self, bound: int) -> int:
        if bound >= self._limit:
            raise ComputeError(
                "the result could overflow the Paillier plaintext space "
                f"(worst case 2^{bound.bit_length()}, limit 2^{self._limit.bit_length() - 1}): "
                "use fewer decimals in constants, a smaller fixed-point scale, or a larger key"
            )
        return bound


def load_array(blob: bytes, rows: int, what: str) -> Any:
    """Load an HEU CiphertextArray after checking the shape its serialization declares.

    HEU's array format is msgpack `[rows, cols, ndim, [elements...]]`; reading the three
    leading integers first keeps a forged shape from reaching the allocator.
    """
    shape = _msgpack_prefix(blob)
    if shape != (rows, 1, 1):
        raise SpecError(f"{what}: ciphertext array shape {shape} does not match {rows} rows")
    try:
        ct = hnp.CiphertextArray.load_from(blob)
    except Exception as exc:  # noqa: BLE001 - native parsers of untrusted bytes raise anything
        raise SpecError(f"{what}: unreadable ciphertext array ({exc})") from None
    if ct.ndim != 1 or ct.rows != rows:
        raise SpecError(f"{what}: ciphertext array has the wrong shape")
    return ct


def load_scalar(blob: bytes, what: str) -> Any:
    """Load one HEU Ciphertext."""
    try:
        return phe.Ciphertext.load_from(blob)
    except Exception as exc:  # noqa: BLE001 - native parsers of untrusted bytes raise anything
        raise SpecError(f"{what}: unreadable ciphertext ({exc})") from None


def _msgpack_prefix(blob: bytes) -> tuple[int, ...] | None:
    if len(blob) < 4 or blob[0] != 0x94:  # fixarray of 4
        return None
    values, i = [], 1
    for _ in range(3):
        if i >= len(blob):
            return None
        marker = blob[i]
        if marker <= 0x7F:
            values.append(marker)
            i += 1
        elif marker in _MAX_UINT_MARKERS:
            width = _MAX_UINT_MARKERS[marker]
            if i + 1 + width > len(blob):
                return None
            values.append(int.from_bytes(blob[i + 1 : i + 1 + width], "big"))
            i += 1 + width
        else:
            return None
    return tuple(values)


def _rows(a: PValue) -> int:
    if a.rows is None:
        raise ComputeError("an aggregate needs an encrypted column")
    return a.rows


def _same_shape(a: PValue, b: PValue) -> None:
    if a.rows != b.rows:
        raise SpecError(f"cannot combine encrypted columns of {a.rows} and {b.rows} rows")
