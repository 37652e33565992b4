"""Inline specs (``datum:spec-inline:`` + base64url): the round trip and every refusal."""

import base64
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compute.errors import SpecError
from oracle.node.oracle_path import (
    INLINE_SPEC_PREFIX,
    MAX_INLINE_SPEC_BYTES,
    inline_spec,
    inline_spec_uri,
)

SPEC = b'{"kind":"stats","query":{"select":["mean(income)"]},"output":{"decimals":2}}'


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_round_trip_returns_the_exact_bytes() -> None:
    uri = inline_spec_uri(SPEC)
    assert uri.startswith(INLINE_SPEC_PREFIX)
    assert "=" not in uri and "+" not in uri and "/" not in uri.removeprefix(INLINE_SPEC_PREFIX)
    assert inline_spec(uri, sha(SPEC)) == SPEC


@given(st.binary(min_size=1, max_size=600))
def test_round_trip_of_any_bytes(data: bytes) -> None:
    assert inline_spec(inline_spec_uri(data), sha(data)) == data


def test_the_largest_spec_round_trips_and_one_byte_more_is_refused() -> None:
    largest = b"\xff" * MAX_INLINE_SPEC_BYTES  # 0xff bytes encode to '_' characters
    assert inline_spec(inline_spec_uri(largest), sha(largest)) == largest
    with pytest.raises(SpecError, match="at most 8192"):
        inline_spec_uri(largest + b"x")
    too_long = INLINE_SPEC_PREFIX + base64.urlsafe_b64encode(largest + b"xyz").decode().rstrip("=")
    with pytest.raises(SpecError, match="at most"):
        inline_spec(too_long, sha(largest + b"xyz"))


@pytest.mark.parametrize(
    "uri",
    [
        "datum:spec:0x" + "ab" * 32,
        "https://example.org/spec.json",
        "ipfs://spec",
        "",
        "DATUM:SPEC-INLINE:e30",
    ],
)
def test_a_uri_that_is_not_inline_gives_none(uri: str) -> None:
    assert inline_spec(uri, sha(SPEC)) is None


def test_a_hash_mismatch_is_refused_naming_both_hashes() -> None:
    uri = inline_spec_uri(SPEC)
    other = sha(SPEC + b" ")
    with pytest.raises(SpecError, match="hashes to 0x" + sha(SPEC).hex()) as err:
        inline_spec(uri, other)
    assert other.hex() in str(err.value)


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        ("", "carries no spec"),
        ("e30=", "unpadded base64url"),  # padding
        ("e3+9", "unpadded base64url"),  # standard alphabet, not url-safe
        ("e3/9", "unpadded base64url"),
        ("e3 0", "unpadded base64url"),
        ("e30\n", "unpadded base64url"),
        ("abcde", "unpadded base64url"),  # 5 characters: no byte boundary
        ("e31", "canonical"),  # non-zero padding bits ('{}' is e30)
    ],
)
def test_malformed_inline_specs_are_refused(encoded: str, reason: str) -> None:
    with pytest.raises(SpecError, match=reason):
        inline_spec(INLINE_SPEC_PREFIX + encoded, sha(b"{}"))


def test_a_hash_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(SpecError, match="32 bytes"):
        inline_spec(inline_spec_uri(SPEC), sha(SPEC)[:20])


def test_an_empty_spec_cannot_be_inlined() -> None:
    with pytest.raises(SpecError, match="empty"):
        inline_spec_uri(b"")


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        inline_spec(INLINE_SPEC_PREFIX + "!!", sha(SPEC))
