"""Typed helpers over libsodium's ristretto255 group (through rbcl).

Points and scalars are 32-byte strings. Hashing to the group is BLAKE2b-512 (with a
per-protocol personalization) into `crypto_core_ristretto255_from_hash` (Elligator 2 twice,
a uniform point). Every point that comes from a peer goes through `checked_point`.
"""

from __future__ import annotations

import hashlib

import rbcl

from compute.errors import ProtocolAbort

POINT_BYTES = 32
SCALAR_BYTES = 32


def hash_to_point(person: bytes, item: bytes) -> bytes:
    """Map bytes to a uniform group element (domain-separated by `person`, <= 16 bytes)."""
    wide = hashlib.blake2b(item, digest_size=64, person=person).digest()
    point: bytes = rbcl.crypto_core_ristretto255_from_hash(wide)
    return point


def random_scalar() -> bytes:
    """A uniform non-zero scalar."""
    scalar: bytes = rbcl.crypto_core_ristretto255_scalar_random()
    return scalar


def invert_scalar(scalar: bytes) -> bytes:
    """The multiplicative inverse of a non-zero scalar."""
    inverse: bytes = rbcl.crypto_core_ristretto255_scalar_invert(scalar)
    return inverse


def multiply(scalar: bytes, point: bytes) -> bytes:
    """scalar * point; ProtocolAbort if the point is invalid or the result is the identity."""
    try:
        product: bytes = rbcl.crypto_scalarmult_ristretto255(scalar, point)
    except RuntimeError:
        raise ProtocolAbort("invalid group element") from None
    return product


def base_multiply(scalar: bytes) -> bytes:
    """scalar * G (a public commitment to the scalar)."""
    product: bytes = rbcl.crypto_scalarmult_ristretto255_base(scalar)
    return product


def checked_point(point: bytes) -> bytes:
    """A peer's point, or ProtocolAbort when it is not a canonical non-identity encoding."""
    if len(point) != POINT_BYTES or point == bytes(POINT_BYTES):
        raise ProtocolAbort("invalid group element")
    if not rbcl.crypto_core_ristretto255_is_valid_point(point):
        raise ProtocolAbort("invalid group element")
    return point


def split_points(data: bytes, max_points: int) -> tuple[bytes, ...]:
    """Cut a concatenation of points and check each; ProtocolAbort on bad size or count."""
    if len(data) % POINT_BYTES:
        raise ProtocolAbort("point list length is not a multiple of 32")
    count = len(data) // POINT_BYTES
    if count > max_points:
        raise ProtocolAbort(f"{count} points exceed the limit of {max_points}")
    return tuple(checked_point(data[i : i + POINT_BYTES]) for i in range(0, len(data), POINT_BYTES))
