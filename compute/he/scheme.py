"""The schemes a node can evaluate, and their fixed parameters."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class Scheme(StrEnum):
    """Additively homomorphic Paillier variants (HEU) and approximate CKKS (TenSEAL)."""

    ZPAILLIER = "zpaillier"
    OU = "ou"
    CKKS = "ckks"

    @property
    def is_paillier(self) -> bool:
        """True for the Paillier family (exact integers, no ciphertext products)."""
        return self is not Scheme.CKKS


DEFAULT_PAILLIER_KEY_BITS = 2048
MIN_PAILLIER_KEY_BITS = 1024  # tests only; 2048 is the production default
MAX_PAILLIER_KEY_BITS = 4096

# CKKS: N = 8192 (128-bit security for up to 218 modulus bits), 4096 slots per ciphertext,
# scale 2^40 and two 40-bit rescaling primes: formulas of multiplicative depth <= 2.
CKKS_POLY_MODULUS_DEGREE = 8192
CKKS_SLOTS = CKKS_POLY_MODULUS_DEGREE // 2
CKKS_COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
CKKS_SCALE_BITS = 40
CKKS_SCALE = 2**CKKS_SCALE_BITS
CKKS_MAX_DEPTH = len(CKKS_COEFF_MOD_BIT_SIZES) - 2

# Paillier: every encoded input value satisfies |v| < 2^62 (checked by the owner when it
# encrypts); nodes use this public bound to refuse formulas that could overflow.
PAILLIER_INPUT_BOUND = 2**62
MAX_PAILLIER_SCALE = 10**18


def scaled_side(depth_a: int, depth_b: int) -> Literal["a", "b"]:
    """CKKS: which operand of a sum with unequal factors gets rescaled: the shallower, else b."""
    return "a" if depth_a < depth_b else "b"
