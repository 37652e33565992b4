"""Polynomial arithmetic mod a prime t < 2^32, vectorized across BFV slots (buckets).

Arrays are uint64 with entries in [0, t); a product of two entries is below 2^64, so one
multiply then one `%` is exact. Axis 0 indexes coefficients (constant term first) or roots,
the last axis indexes buckets; `mask` marks which root slots are used in each bucket.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

U64 = np.uint64
Vec = npt.NDArray[np.uint64]


def random_residues(shape: tuple[int, ...], t: int, nonzero: bool) -> Vec:
    """Uniform residues mod t (optionally in [1, t)) from the OS CSPRNG (bias < 2^-31)."""
    count = int(np.prod(shape))
    raw = np.frombuffer(os.urandom(8 * count), dtype=U64).reshape(shape)
    if nonzero:
        return raw % U64(t - 1) + U64(1)
    return raw % U64(t)


def mulmod(a: Vec, b: Vec, t: int) -> Vec:
    """a * b mod t."""
    return (a * b) % U64(t)


def submod(a: Vec, b: Vec, t: int) -> Vec:
    """a - b mod t."""
    return (a + (U64(t) - b)) % U64(t)


def powmod(a: Vec, exponent: int, t: int) -> Vec:
    """a ** exponent mod t by square and multiply."""
    result = np.ones_like(a)
    base = a % U64(t)
    while exponent:
        if exponent & 1:
            result = mulmod(result, base, t)
        base = mulmod(base, base, t)
        exponent >>= 1
    return result


def roots_to_coeffs(roots: Vec, mask: npt.NDArray[np.bool_], t: int) -> Vec:
    """Coefficients of prod over used roots of (x - r): shape (k + 1, buckets), monic.

    A bucket with no used root gets the constant polynomial 1 (it has no zero).
    """
    k, buckets = roots.shape
    coeffs = np.zeros((k + 1, buckets), dtype=U64)
    coeffs[0] = 1
    for j in range(k):
        shifted = np.zeros_like(coeffs)
        shifted[1:] = coeffs[:-1]
        times_root = mulmod(coeffs, np.broadcast_to(roots[j], coeffs.shape), t)
        coeffs = np.where(mask[j], submod(shifted, times_root, t), coeffs)
    return coeffs


def evaluate(coeffs: Vec, x: Vec, t: int) -> Vec:
    """Horner evaluation of each bucket's polynomial at that bucket's x."""
    acc = np.zeros_like(x)
    for c in coeffs[::-1]:
        acc = (mulmod(acc, x, t) + c) % U64(t)
    return acc


def interpolate(roots: Vec, mask: npt.NDArray[np.bool_], values: Vec, t: int) -> Vec:
    """Lagrange interpolation per bucket: L(roots[j]) = values[:, j] on used roots.

    `values` has shape (channels, k, buckets); returns coefficients (channels, k, buckets)
    of polynomials of degree < (used roots). Roots within a bucket must be distinct.
    L = sum_j values_j / P'(r_j) * P(x) / (x - r_j), with P the product of (x - r).
    """
    k, buckets = roots.shape
    channels = values.shape[0]
    full = roots_to_coeffs(roots, mask, t)
    out = np.zeros((channels, k, buckets), dtype=U64)
    for j in range(k):
        if not mask[j].any():
            continue
        # synthetic division of P by (x - r_j); exact where r_j is a used root
        quotient = np.zeros((k, buckets), dtype=U64)
        carry = np.zeros(buckets, dtype=U64)
        for i in range(k, 0, -1):
            carry = (full[i] + mulmod(carry, roots[j], t)) % U64(t)
            quotient[i - 1] = carry
        denominator = evaluate(quotient, roots[j], t)
        denominator = np.where(mask[j], denominator, U64(1))
        scale = powmod(denominator, t - 2, t) * mask[j].astype(U64)
        for ch in range(channels):
            weight = mulmod(values[ch, j] % U64(t), scale, t)
            out[ch] = (out[ch] + mulmod(quotient, np.broadcast_to(weight, quotient.shape), t)) % U64(t)
    return out
