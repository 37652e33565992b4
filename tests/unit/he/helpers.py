"""Helpers shared by the HE tests (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from compute.he import HETaskSpec, OwnerKeys, Scheme, decrypt, encrypt_columns, evaluate, generate_keys

TEST_KEY_BITS = 1024  # correctness tests; production defaults to 2048


def keys_for(store: dict[Scheme, OwnerKeys], scheme: Scheme) -> OwnerKeys:
    if scheme not in store:
        bits = None if scheme is Scheme.CKKS else TEST_KEY_BITS
        store[scheme] = generate_keys(scheme, key_bits=bits)
    return store[scheme]


def run(keys: OwnerKeys, spec: HETaskSpec, columns: dict[str, Any]) -> tuple[Any, bytes]:
    """Owner encrypts, a node evaluates with the public context only, the owner decrypts."""
    blob = encrypt_columns(keys, columns, spec)
    out = evaluate(keys.public_context, blob, spec.formula, limits=spec.limits)
    return decrypt(keys, out, spec), out


def ckks_spec(formula: str, columns: tuple[str, ...]) -> HETaskSpec:
    return HETaskSpec(Scheme.CKKS, formula, columns, scale=2**40)


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)
