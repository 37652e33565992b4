"""The owner decrypts a result with its secret key, after checking the result is for its spec."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.errors import ComputeError, SpecError
from compute.he.ckks import chunk_sizes, load_vector
from compute.he.envelope import ResultHeader, unpack
from compute.he.keys import OwnerKeys
from compute.he.paillier import load_array, load_scalar
from compute.he.spec import HETaskSpec

Plain = int | float | npt.NDArray[Any]
_INT64_MAX = 2**63 - 1


def decrypt(keys: OwnerKeys, result: bytes, spec: HETaskSpec) -> Plain:
    """Decrypt a result of `spec`.

    Paillier: `int` (or an int64 array) when the result is an integer, else `float` (or a
    float64 array) of the exact rational `integer * factor`. CKKS: `float` or a
    float64 array, within the bound of `bounds.error_bound`. A public result (`count`, a
    constant) comes back the same way.
    """
    header, blobs = _checked_header(keys, result, spec)
    if header.value == "public":
        return _to_number(Fraction(header.public_value or "0"))
    if keys.scheme.is_paillier:
        exact = _paillier_exact(keys, header, blobs)
        if isinstance(exact, Fraction):
            return _to_number(exact)
        if all(v.denominator == 1 for v in exact) and all(abs(v.numerator) <= _INT64_MAX for v in exact):
            return np.array([v.numerator for v in exact], dtype=np.int64)
        return np.array([float(v) for v in exact], dtype=np.float64)
    return _ckks(keys, header, blobs)


def decrypt_exact(keys: OwnerKeys, result: bytes, spec: HETaskSpec) -> Fraction | list[Fraction]:
    """Paillier only: the exact rational result (a Fraction, or one per row)."""
    header, blobs = _checked_header(keys, result, spec)
    if header.value == "public":
        return Fraction(header.public_value or "0")
    if not keys.scheme.is_paillier:
        raise ComputeError("CKKS results are approximate: use decrypt()")
    return _paillier_exact(keys, header, blobs)


def _checked_header(keys: OwnerKeys, result: bytes, spec: HETaskSpec) -> tuple[ResultHeader, list[bytes]]:
    header, blobs = unpack(result, ResultHeader, spec.limits.max_result_bytes, "result")
    if header.scheme is not spec.scheme or keys.scheme is not spec.scheme:
        raise SpecError(
            f"result scheme {header.scheme.value}, spec {spec.scheme.value}, keys {keys.scheme.value}"
        )
    if header.formula != spec.formula:
        raise SpecError(f"the result is for formula {header.formula!r}, not the spec's {spec.formula!r}")
    if header.context_digest != keys.context_digest:
        raise SpecError("the result was computed under another public context")
    if header.value == "public":
        if header.public_value is None or blobs:
            raise SpecError("a public result carries its value and no ciphertext")
        if len(header.public_value) > 4096:
            raise SpecError("the public result is implausibly long")
        try:
            Fraction(header.public_value)
        except (ValueError, ZeroDivisionError):
            raise SpecError("the public result is not a number") from None
    elif header.value == "column":
        if header.rows is None or not 1 <= header.rows <= spec.limits.max_rows:
            raise SpecError("a column result needs a valid row count")
    return header, blobs


def _paillier_exact(keys: OwnerKeys, header: ResultHeader, blobs: list[bytes]) -> Fraction | list[Fraction]:
    kit = keys.secret
    encoder = kit.bigint_encoder()
    if len(blobs) != 1:
        raise SpecError("a Paillier result is one blob")
    scale = _factor(header)
    if header.value == "scalar":
        plain = kit.decryptor().decrypt(load_scalar(blobs[0], "result"))
        return int(encoder.decode(plain)) * scale
    assert header.rows is not None
    if header.chunks != (header.rows,):
        raise SpecError("a Paillier column result is one array of all its rows")
    plain = kit.decryptor().decrypt(load_array(blobs[0], header.rows, "result"))
    return [int(v) * scale for v in plain.to_numpy(encoder).tolist()]


def _ckks(keys: OwnerKeys, header: ResultHeader, blobs: list[bytes]) -> Plain:
    ctx = keys.secret
    factor = float(_factor(header))
    if header.value == "scalar":
        if len(blobs) != 1 or header.chunks != (1,):
            raise SpecError("a CKKS scalar result is one ciphertext of one value")
        return float(load_vector(ctx, blobs[0], 1, "result").decrypt()[0]) * factor
    assert header.rows is not None
    if header.chunks != chunk_sizes(header.rows) or len(blobs) != len(header.chunks):
        raise SpecError("CKKS result chunking does not match its row count")
    parts = [load_vector(ctx, b, n, "result").decrypt() for b, n in zip(blobs, header.chunks, strict=True)]
    return np.concatenate([np.asarray(p, dtype=np.float64) for p in parts]) * factor


def _factor(header: ResultHeader) -> Fraction:
    if len(header.factor) > 4096:
        raise SpecError("the result factor is implausibly long")
    try:
        return Fraction(header.factor)
    except (ValueError, ZeroDivisionError):
        raise SpecError("the result factor is not a fraction") from None


def _to_number(value: Fraction) -> int | float:
    return int(value) if value.denominator == 1 else float(value)
