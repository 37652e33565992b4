"""Parameters of the HE (BFV polynomial-evaluation) PSI, with their validation.

Defaults are the measured preset: N = 8192 slots (one slot per bucket), a 32-bit batching
prime t = 4294475777 (t = 1 mod 2N, t < 2^32 so that products of two residues fit in 64
bits), a 120-bit data modulus (60+60 bits plus a 60-bit special prime: 180 bits, under the
218-bit bound for 128-bit security at N = 8192), polynomials of degree <= 32 per bucket
column, 3 cuckoo hash functions and at most 6144 receiver keys per query batch (cuckoo load
0.75).
"""

from __future__ import annotations

from dataclasses import dataclass

from compute.errors import SpecError

_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def is_prime(n: int) -> bool:
    """Deterministic Miller-Rabin for n < 3.3e24 (enough for any 64-bit modulus)."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class HeParams:
    """BFV and hashing parameters shared by the HE PSI sender and receiver."""

    poly_modulus_degree: int = 8192
    plain_modulus: int = 4294475777
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60, 60)
    degree: int = 32
    hash_count: int = 3
    batch_size: int = 6144
    label_chunk_bytes: int = 3
    hash_seed: bytes = b"datum-he-psi-v1"

    def __post_init__(self) -> None:
        n, t = self.poly_modulus_degree, self.plain_modulus
        if n not in (4096, 8192, 16384, 32768):
            raise SpecError("poly_modulus_degree must be 4096, 8192, 16384 or 32768")
        if not (t < 1 << 32 and is_prime(t) and t % (2 * n) == 1):
            raise SpecError("plain_modulus must be a prime below 2^32 with t = 1 mod 2N (batching)")
        if not 1 <= self.degree <= 128:
            raise SpecError("degree must be within 1..128")
        if not 2 <= self.hash_count <= 4:
            raise SpecError("hash_count must be within 2..4")
        if not 1 <= self.batch_size <= int(0.8 * n):
            raise SpecError("batch_size must be within 1..0.8 N (cuckoo load)")
        if not 1 <= self.label_chunk_bytes or (1 << (8 * self.label_chunk_bytes)) > t:
            raise SpecError("a label chunk must fit below the plain modulus")
        if not 1 <= len(self.hash_seed) <= 64:
            raise SpecError("hash_seed must be 1..64 bytes")

    @property
    def slot_count(self) -> int:
        """Buckets per batch: one per BFV slot."""
        return self.poly_modulus_degree
