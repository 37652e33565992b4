"""Envelopes: round trips, size limits, and refusal of malformed or mismatched input."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.errors import ComputeError, SpecError
from compute.he import (
    HELimits,
    HETaskSpec,
    OwnerKeys,
    Scheme,
    decrypt,
    encrypt_columns,
    evaluate,
    load_public_context,
)
from compute.he.envelope import ColumnMeta, ColumnsHeader, ResultHeader, pack, unpack

from .helpers import ckks_spec, rng

X = rng(31).integers(-100, 100, 40)
SPEC_OU = HETaskSpec(Scheme.OU, "sum(x)", ("x",), scale=1)


@pytest.fixture(scope="module")
def ou_blob(ou_keys: OwnerKeys) -> bytes:
    return encrypt_columns(ou_keys, {"x": X}, SPEC_OU)


def reframe(data: bytes, edit: object) -> bytes:
    """Re-pack an envelope after `edit(header_dict)`, keeping the blobs (a forger's tool)."""
    head_len = struct.unpack_from(">I", data, 8)[0]
    header = json.loads(data[12 : 12 + head_len])
    edit(header)  # type: ignore[operator]
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return data[:8] + struct.pack(">I", len(head)) + head + data[12 + head_len :]


# -- round trips ----------------------------------------------------------------------------
def test_public_context_round_trip(paillier_keys: OwnerKeys, ckks_keys: OwnerKeys) -> None:
    for keys in (paillier_keys, ckks_keys):
        ctx = load_public_context(keys.public_context)
        assert ctx.scheme is keys.scheme and ctx.digest == keys.context_digest


@pytest.mark.parametrize("name", ["ou_keys", "ckks_keys"])
def test_owner_keys_round_trip(name: str, request: pytest.FixtureRequest) -> None:
    keys: OwnerKeys = request.getfixturevalue(name)
    spec = SPEC_OU if keys.scheme is Scheme.OU else ckks_spec("sum(x)", ("x",))
    out = evaluate(keys.public_context, encrypt_columns(keys, {"x": X}, spec), spec.formula)
    restored = OwnerKeys.from_bytes(keys.to_bytes())
    assert restored.context_digest == keys.context_digest
    assert decrypt(restored, out, spec) == pytest.approx(int(X.sum()), abs=1e-3)


def test_columns_envelope_round_trip(ou_blob: bytes, ou_keys: OwnerKeys) -> None:
    header, blobs = unpack(ou_blob, ColumnsHeader, len(ou_blob), "columns")
    assert header.scheme is Scheme.OU and header.context_digest == ou_keys.context_digest
    assert header.columns == (ColumnMeta(name="x", rows=40, encoding="int", divisor=1, chunks=(40,)),)
    assert pack(header, blobs) == ou_blob


def test_ckks_columns_are_chunked(ckks_keys: OwnerKeys) -> None:
    blob = encrypt_columns(ckks_keys, {"x": np.arange(9000.0)}, ckks_spec("sum(x)", ("x",)))
    header, blobs = unpack(blob, ColumnsHeader, len(blob), "columns")
    assert header.columns[0].chunks == (4096, 4096, 808) and len(blobs) == 3
    broken = reframe(blob, lambda h: h["columns"][0].update(chunks=[4096, 4000, 904]))
    with pytest.raises(SpecError, match="chunking"):
        evaluate(ckks_keys.public_context, broken, "sum(x)")


# -- size limits ------------------------------------------------------------------------------
def test_oversized_inputs_are_refused_before_parsing(ou_keys: OwnerKeys, ou_blob: bytes) -> None:
    with pytest.raises(SpecError, match="over the limit of 100"):
        evaluate(ou_keys.public_context, ou_blob, "sum(x)", limits=HELimits(max_columns_bytes=100))
    with pytest.raises(SpecError, match="public context is .* over the limit of 100"):
        evaluate(ou_keys.public_context, ou_blob, "sum(x)", limits=HELimits(max_context_bytes=100))
    with pytest.raises(SpecError, match="over the limit"):
        evaluate(b"\0" * 1000, ou_blob, "sum(x)", limits=HELimits(max_context_bytes=999))
    with pytest.raises(SpecError, match="39 rows|1..39"):
        encrypt_columns(ou_keys, {"x": X}, HETaskSpec(Scheme.OU, "sum(x)", ("x",), 1, HELimits(max_rows=39)))
    with pytest.raises(SpecError, match="bad row count"):
        evaluate(ou_keys.public_context, ou_blob, "sum(x)", limits=HELimits(max_rows=39))


def test_oversized_result_is_refused(ou_keys: OwnerKeys, ou_blob: bytes) -> None:
    with pytest.raises(ComputeError, match="over the limit"):
        evaluate(ou_keys.public_context, ou_blob, "x + 1", limits=HELimits(max_result_bytes=1000))
    out = evaluate(ou_keys.public_context, ou_blob, "x + 1")
    spec = HETaskSpec(Scheme.OU, "x + 1", ("x",), 1, HELimits(max_result_bytes=1000))
    with pytest.raises(SpecError, match="result is .* over the limit"):
        decrypt(ou_keys, out, spec)


# -- malformed and mismatched input -------------------------------------------------------
@pytest.mark.parametrize(
    ("mangle", "fragment"),
    [
        (lambda b: b"", "truncated"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"NOTDATUM" + b[8:], "not a Datum HE envelope"),
        (lambda b: b[:7] + b"\x02" + b[8:], "version 2"),
        (lambda b: b[:8] + struct.pack(">I", 2**31) + b[12:], "does not fit"),
        (lambda b: b[:-1], "blob sizes"),
        (lambda b: b + b"\0", "blob sizes"),
        (lambda b: reframe(b, lambda h: h.update(extra=1)), "invalid header"),
        (lambda b: reframe(b, lambda h: h.update(kind="result")), "invalid header"),
        (lambda b: reframe(b, lambda h: h.update(scheme="ckks")), "ckks ciphertexts"),
        (lambda b: reframe(b, lambda h: h.update(context_digest="0" * 64)), "another public context"),
        (lambda b: reframe(b, lambda h: h["columns"][0].update(rows=41, chunks=[41])), "shape"),
        (lambda b: reframe(b, lambda h: h["columns"][0].update(name="x y")), "invalid header"),
        (lambda b: reframe(b, lambda h: h["columns"][0].update(encoding="real")), "bad encoding"),
        (lambda b: reframe(b, lambda h: h["columns"].append(h["columns"][0])), "blob count|duplicate"),
    ],
)
def test_malformed_columns_are_refused(
    ou_keys: OwnerKeys, ou_blob: bytes, mangle: object, fragment: str
) -> None:
    with pytest.raises(SpecError, match=fragment):
        evaluate(ou_keys.public_context, mangle(ou_blob), "sum(x)")  # type: ignore[operator]


def test_non_canonical_header_is_refused(ou_keys: OwnerKeys, ou_blob: bytes) -> None:
    head_len = struct.unpack_from(">I", ou_blob, 8)[0]
    spaced = json.dumps(json.loads(ou_blob[12 : 12 + head_len]), indent=1).encode()
    forged = ou_blob[:8] + struct.pack(">I", len(spaced)) + spaced + ou_blob[12 + head_len :]
    with pytest.raises(SpecError, match="canonical"):
        evaluate(ou_keys.public_context, forged, "sum(x)")


def test_forged_array_shape_is_refused(ou_keys: OwnerKeys, ou_blob: bytes) -> None:
    header, blobs = unpack(ou_blob, ColumnsHeader, len(ou_blob), "columns")
    assert blobs[0][:2] == b"\x94\x28"  # msgpack [rows=40, ...]
    forged_blob = b"\x94\xcd\x03\xe8" + blobs[0][2:]  # claims 1000 rows
    meta = header.columns[0].model_copy(update={"rows": 1000, "chunks": (1000,)})
    forged = pack(header.model_copy(update={"columns": (meta,)}), [forged_blob])
    with pytest.raises(SpecError, match="unreadable ciphertext array|shape"):
        evaluate(ou_keys.public_context, forged, "sum(x)")


def test_columns_from_another_key_are_refused(
    ou_blob: bytes, zp_keys: OwnerKeys, ckks_keys: OwnerKeys
) -> None:
    with pytest.raises(SpecError, match="ou ciphertexts, the context is zpaillier"):
        evaluate(zp_keys.public_context, ou_blob, "sum(x)")
    with pytest.raises(SpecError, match="the context is ckks"):
        evaluate(ckks_keys.public_context, ou_blob, "sum(x)")


def test_result_must_match_spec_and_keys(ou_keys: OwnerKeys, zp_keys: OwnerKeys, ou_blob: bytes) -> None:
    out = evaluate(ou_keys.public_context, ou_blob, "sum(x)")
    with pytest.raises(SpecError, match="not the spec's"):
        decrypt(ou_keys, out, HETaskSpec(Scheme.OU, "sum(x) + 1", ("x",), 1))
    with pytest.raises(SpecError, match="scheme"):
        decrypt(zp_keys, out, SPEC_OU)
    forged = reframe(out, lambda h: h.update(context_digest="1" * 64))
    with pytest.raises(SpecError, match="another public context"):
        decrypt(ou_keys, forged, SPEC_OU)
    with pytest.raises(SpecError, match="invalid header"):
        decrypt(ou_keys, reframe(out, lambda h: h.update(value="matrix")), SPEC_OU)
    assert unpack(out, ResultHeader, len(out), "result")[0].value == "scalar"


def test_malformed_public_contexts_are_refused(ou_keys: OwnerKeys, ou_blob: bytes) -> None:
    ctx = ou_keys.public_context
    cases = [
        reframe(ctx, lambda h: h.update(key_bits=512)),
        reframe(ctx, lambda h: h.update(scheme="zpaillier")),
        reframe(ctx, lambda h: h.update(scheme="ckks")),
        ctx[:-40] + bytes([ctx[-40] ^ 0xFF]) + ctx[-39:],
    ]
    assert all(bad != ctx for bad in cases)
    for bad in cases:
        with pytest.raises(SpecError):
            evaluate(bad, ou_blob, "sum(x)")


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_random_corruption_never_escapes_as_another_error(
    ou_keys: OwnerKeys, ou_blob: bytes, data: st.DataObject
) -> None:
    blob = bytearray(ou_blob)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        evaluate(
            ou_keys.public_context, bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob), "sum(x)"
        )
    except (SpecError, ComputeError):
        pass
