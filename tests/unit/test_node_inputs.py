"""What a node checks on uploads before publishing them: the spec against its on-chain
hash, and the headers of the context and columns envelopes against the spec."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from compute.he import HELimits, HETaskSpec, Scheme, encrypt_columns, generate_keys
from oracle.node.inputs import SpecRejected, check_columns, check_context, check_spec
from oracle.p2p.errors import BadRequest, Conflict, PayloadTooLarge

SPEC = HETaskSpec(Scheme.OU, "sum(income)", ("income",), scale=1)
INCOMES = np.arange(1, 51, dtype=np.int64)


def _hash(data: bytes) -> str:
    return "0x" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("blobs")
    keys = generate_keys(Scheme.OU, key_bits=1024)
    other = generate_keys(Scheme.OU, key_bits=1024)
    files = {
        "context": keys.public_context,
        "columns": encrypt_columns(keys, {"income": INCOMES}, SPEC),
        "salary": encrypt_columns(
            keys, {"salary": INCOMES}, HETaskSpec(Scheme.OU, "sum(salary)", ("salary",), scale=1)
        ),
        "foreign": encrypt_columns(other, {"income": INCOMES}, SPEC),
        "garbage": b"not an envelope at all",
    }
    for name, content in files.items():
        (root / name).write_bytes(content)
    return {name: root / name for name in files}


def test_the_spec_must_hash_to_the_chain_and_parse() -> None:
    data = SPEC.canonical_json()
    assert check_spec(data, _hash(data), 1 << 20).formula == SPEC.formula
    with pytest.raises(BadRequest, match="on-chain specHash") as mismatch:
        check_spec(data, "0x" + "00" * 32, 1 << 20)
    assert mismatch.value.code == "spec_mismatch"
    broken = json.loads(data)
    broken["formula"] = "sum(income"
    raw = json.dumps(broken).encode()
    with pytest.raises(SpecRejected, match="formula error at position") as bad:
        check_spec(raw, _hash(raw), 1 << 20)
    assert bad.value.status == 400 and bad.value.code == "bad_spec"
    with pytest.raises(PayloadTooLarge):
        check_spec(data, _hash(data), 10)


def test_context_and_columns_headers_are_checked_against_the_spec(blobs: dict[str, Path]) -> None:
    context_sha = hashlib.sha256(blobs["context"].read_bytes()).hexdigest()
    check_context(blobs["context"], blobs["context"].stat().st_size, SPEC)
    check_columns(blobs["columns"], blobs["columns"].stat().st_size, SPEC, context_sha)

    ckks = HETaskSpec(Scheme.CKKS, "sum(income)", ("income",), scale=2**40)
    with pytest.raises(BadRequest, match="for ou, the spec asks for ckks"):
        check_context(blobs["context"], 100, ckks)
    with pytest.raises(BadRequest, match="unknown column 'income'") as unknown:
        check_columns(blobs["salary"], blobs["salary"].stat().st_size, SPEC, context_sha)
    assert unknown.value.code == "unknown_column"
    with pytest.raises(BadRequest, match="another public context"):
        check_columns(blobs["foreign"], blobs["foreign"].stat().st_size, SPEC, context_sha)
    with pytest.raises(Conflict, match="context before"):
        check_columns(blobs["columns"], blobs["columns"].stat().st_size, SPEC, None)
    with pytest.raises(BadRequest, match="not a Datum HE envelope"):
        check_columns(blobs["garbage"], 22, SPEC, context_sha)


def test_sizes_over_the_spec_limits_are_refused(blobs: dict[str, Path]) -> None:
    tight = HETaskSpec(
        Scheme.OU, "sum(income)", ("income",), scale=1, limits=HELimits(max_columns_bytes=1_000)
    )
    size = blobs["columns"].stat().st_size
    assert size > 1_000
    with pytest.raises(PayloadTooLarge, match="over the spec's limit of 1000"):
        check_columns(blobs["columns"], size, tight, "00" * 32)
    small_context = HETaskSpec(
        Scheme.OU, "sum(income)", ("income",), scale=1, limits=HELimits(max_context_bytes=64)
    )
    with pytest.raises(PayloadTooLarge):
        check_context(blobs["context"], blobs["context"].stat().st_size, small_context)
