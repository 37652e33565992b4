"""Keys are generated once per session: Paillier at 1024 bits (the tests check correctness,
not security; production defaults to 2048) and CKKS at its fixed N=8192."""

from __future__ import annotations

import pytest

from compute.he import OwnerKeys, Scheme

from .helpers import keys_for


@pytest.fixture(scope="session")
def key_store() -> dict[Scheme, OwnerKeys]:
    return {}


@pytest.fixture(scope="session")
def ou_keys(key_store: dict[Scheme, OwnerKeys]) -> OwnerKeys:
    return keys_for(key_store, Scheme.OU)


@pytest.fixture(scope="session")
def zp_keys(key_store: dict[Scheme, OwnerKeys]) -> OwnerKeys:
    return keys_for(key_store, Scheme.ZPAILLIER)


@pytest.fixture(scope="session")
def ckks_keys(key_store: dict[Scheme, OwnerKeys]) -> OwnerKeys:
    return keys_for(key_store, Scheme.CKKS)


@pytest.fixture(params=[Scheme.OU, Scheme.ZPAILLIER], ids=["ou", "zpaillier"])
def paillier_keys(request: pytest.FixtureRequest, key_store: dict[Scheme, OwnerKeys]) -> OwnerKeys:
    return keys_for(key_store, request.param)
