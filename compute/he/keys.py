"""Key generation (the owner) and the public context (all a compute node receives).

The owner's `OwnerKeys` hold the secret key and never leave it. `OwnerKeys.public_context`
is an envelope with the Paillier public key, or the CKKS context made public (public,
relinearization and Galois keys, no secret key). A node loading a context refuses one
that carries a secret key: the owner cannot leak it by mistake through this API.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import tenseal as ts
from heu import numpy as hnp
from heu import phe

from compute.errors import SpecError
from compute.he.envelope import ContextHeader, Digest, OwnerKeysHeader, digest, pack, unpack
from compute.he.limits import DEFAULT_LIMITS, HELimits
from compute.he.scheme import (
    CKKS_COEFF_MOD_BIT_SIZES,
    CKKS_POLY_MODULUS_DEGREE,
    CKKS_SCALE,
    CKKS_SCALE_BITS,
    DEFAULT_PAILLIER_KEY_BITS,
    MAX_PAILLIER_KEY_BITS,
    MIN_PAILLIER_KEY_BITS,
    Scheme,
)

_HEU_SCHEMA = {Scheme.ZPAILLIER: phe.SchemaType.ZPaillier, Scheme.OU: phe.SchemaType.OU}


@dataclass(frozen=True, slots=True)
class OwnerKeys:
    """The data owner's key material. `secret` is an HEU `HeKit` or a private TenSEAL context."""

    scheme: Scheme
    public_context: bytes = field(repr=False)
    secret: Any = field(repr=False)

    @property
    def context_digest(self) -> Digest:
        """sha256 of the public context envelope; results name it."""
        return digest(self.public_context)

    def to_bytes(self) -> bytes:
        """Serialize for the owner's own storage. CONTAINS THE SECRET KEY."""
        if self.scheme.is_paillier:
            secret = [bytes(self.secret.secret_key().serialize())]
        else:
            secret = [bytes(self.secret.serialize(save_secret_key=True, save_galois_keys=False))]
        return pack(OwnerKeysHeader(scheme=self.scheme), [self.public_context, *secret])

    @classmethod
    def from_bytes(cls, data: bytes, limits: HELimits = DEFAULT_LIMITS) -> OwnerKeys:
        """Inverse of `to_bytes`."""
        header, blobs = unpack(data, OwnerKeysHeader, 2 * limits.max_context_bytes, "owner keys")
        if len(blobs) != 2:
            raise SpecError("owner keys must hold a public context and a secret key")
        public = load_public_context(blobs[0], limits)
        if public.scheme is not header.scheme:
            raise SpecError("owner keys: the public context is for another scheme")
        try:
            if header.scheme.is_paillier:
                sk = phe.SecretKey.load_from(blobs[1])
                secret = hnp.HeKit(phe.setup(public.handle.public_key(), sk))
            else:
                secret = ts.context_from(blobs[1])
        except Exception as exc:  # noqa: BLE001 - native parsers of untrusted bytes raise anything
            raise SpecError(f"owner keys: unreadable secret key ({exc})") from None
        if not header.scheme.is_paillier and not secret.is_private():
            raise SpecError("owner keys: the CKKS context has no secret key")
        return cls(header.scheme, blobs[0], secret)


@dataclass(frozen=True, slots=True)
class PublicContext:
    """A loaded public context: encrypt and evaluate, never decrypt.

    `handle` is an HEU `DestinationHeKit` (encryptor and evaluator only) or a public
    TenSEAL context (no secret key).
    """

    scheme: Scheme
    digest: Digest
    header: ContextHeader
    handle: Any = field(repr=False)


def generate_keys(scheme: Scheme, *, key_bits: int | None = None) -> OwnerKeys:
    """Generate a key pair for `scheme` (Paillier: `key_bits`, default 2048; CKKS: fixed N=8192)."""
    scheme = Scheme(scheme)
    if scheme.is_paillier:
        bits = DEFAULT_PAILLIER_KEY_BITS if key_bits is None else key_bits
        if not MIN_PAILLIER_KEY_BITS <= bits <= MAX_PAILLIER_KEY_BITS:
            raise SpecError(
                f"Paillier key_bits must be in [{MIN_PAILLIER_KEY_BITS}, {MAX_PAILLIER_KEY_BITS}], got {bits}"
            )
        kit = hnp.setup(_HEU_SCHEMA[scheme], bits)
        header = ContextHeader(scheme=scheme, key_bits=bits)
        return OwnerKeys(scheme, pack(header, [bytes(kit.public_key().serialize())]), kit)
    if key_bits is not None:
        raise SpecError("ckks takes no key_bits: its parameters are fixed (N=8192, scale 2^40)")
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=CKKS_POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=list(CKKS_COEFF_MOD_BIT_SIZES),
    )
    ctx.global_scale = CKKS_SCALE
    ctx.generate_galois_keys()
    public = ctx.copy()
    public.make_context_public()
    blob = public.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
    )
    header = ContextHeader(
        scheme=scheme,
        poly_modulus_degree=CKKS_POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes=CKKS_COEFF_MOD_BIT_SIZES,
        scale_bits=CKKS_SCALE_BITS,
    )
    return OwnerKeys(scheme, pack(header, [bytes(blob)]), ctx)


# Loading is the fixed cost of an evaluation (HEU ZPaillier precomputes for ~0.6 s, a CKKS
# context is 35 MB), so a node keeps the last few it loaded, keyed by their sha256. The
# loaded objects are only read by the evaluator.
_CACHE_SIZE = 4
_cache: OrderedDict[Digest, PublicContext] = OrderedDict()
_cache_lock = threading.Lock()


def load_public_context(data: bytes, limits: HELimits = DEFAULT_LIMITS) -> PublicContext:
    """Validate and load a public context envelope (what a compute node does first)."""
    header, blobs = unpack(data, ContextHeader, limits.max_context_bytes, "public context")
    if len(blobs) != 1:
        raise SpecError("a public context holds exactly one key blob")
    key = digest(bytes(data))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    if header.scheme.is_paillier:
        handle = _load_paillier(header, blobs[0])
    else:
        handle = _load_ckks(header, blobs[0])
    loaded = PublicContext(header.scheme, key, header, handle)
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded


def _load_paillier(header: ContextHeader, blob: bytes) -> Any:
    bits = header.key_bits
    if bits is None or not MIN_PAILLIER_KEY_BITS <= bits <= MAX_PAILLIER_KEY_BITS:
        raise SpecError(f"public context: Paillier key_bits {bits} out of range")
    if header.poly_modulus_degree is not None or header.coeff_mod_bit_sizes is not None:
        raise SpecError("public context: CKKS parameters on a Paillier key")
    try:
        kit = hnp.setup(phe.PublicKey.load_from(blob))
    except Exception as exc:  # noqa: BLE001 - native parsers of untrusted bytes raise anything
        raise SpecError(f"public context: unreadable Paillier public key ({exc})") from None
    if kit.get_schema() != _HEU_SCHEMA[header.scheme]:
        raise SpecError(f"public context: the key is not a {header.scheme.value} key")
    return kit


def _load_ckks(header: ContextHeader, blob: bytes) -> Any:
    expected = (CKKS_POLY_MODULUS_DEGREE, CKKS_COEFF_MOD_BIT_SIZES, CKKS_SCALE_BITS, None)
    got = (header.poly_modulus_degree, header.coeff_mod_bit_sizes, header.scale_bits, header.key_bits)
    if got != expected:
        raise SpecError("public context: unsupported CKKS parameters (this node runs N=8192, scale 2^40)")
    try:
        ctx = ts.context_from(blob)
    except Exception as exc:  # noqa: BLE001 - native parsers of untrusted bytes raise anything
        raise SpecError(f"public context: unreadable CKKS context ({exc})") from None
    if ctx.is_private() or ctx.has_secret_key():
        raise SpecError("public context carries a secret key: refused (the owner must send a public context)")
    if not (ctx.has_public_key() and ctx.has_relin_keys() and ctx.has_galois_keys()):
        raise SpecError("public context lacks the public, relinearization or Galois keys")
    if ctx.global_scale != CKKS_SCALE:
        raise SpecError("public context: unexpected CKKS scale")
    return ctx
