"""What each side can see: the node holds no secret key and cannot decrypt; the bytes it
receives and produces carry no plaintext patterns; only the spec's columns leave the owner."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tenseal as ts

from compute.errors import SpecError
from compute.he import HETaskSpec, OwnerKeys, Scheme, encrypt_columns, evaluate, load_public_context
from compute.he.envelope import ColumnsHeader, ContextHeader, pack, unpack

from .helpers import ckks_spec

# distinctive values whose byte patterns would stand out in a leak
INTS = np.array([0x1122334455667788, -0x0A0B0C0D0E0F1011, 0x3344556677889900, 987654321987], dtype=np.int64)
REALS = np.array([1234.5678125, -98765.4321, 3.141592653589793, 2.718281828459045])


def patterns(values: npt.NDArray[Any]) -> list[bytes]:
    """Byte patterns a plaintext leak would show: each value's 8-byte encodings and text, and
    for reals the whole column as float32 (one value's 4-byte float32 turns up in ~330 KB of
    random ciphertext by chance about once in a few hundred runs; CI hit it)."""
    found = []
    for v in values.tolist():
        arr = np.array([v], dtype=values.dtype)
        found += [arr.tobytes(), arr.byteswap().tobytes(), repr(v).encode()]
        if values.dtype.kind == "f":
            found += [f"{v:.6f}".encode()]
    if values.dtype.kind == "f":
        found += [values.astype(np.float32).tobytes()]
    return found


def test_paillier_public_side_cannot_decrypt(paillier_keys: OwnerKeys) -> None:
    node = load_public_context(paillier_keys.public_context).handle
    assert hasattr(node, "encryptor") and hasattr(node, "evaluator")
    assert not hasattr(node, "decryptor") and not hasattr(node, "secret_key")
    assert hasattr(paillier_keys.secret, "decryptor")  # the owner's side does
    secret = bytes(paillier_keys.secret.secret_key().serialize())
    assert secret not in paillier_keys.public_context
    assert secret[16:48] not in paillier_keys.public_context


def test_ckks_public_context_has_no_secret_key(ckks_keys: OwnerKeys) -> None:
    node = load_public_context(ckks_keys.public_context).handle
    assert not node.is_private() and not node.has_secret_key()
    vec = ts.ckks_vector(node, [1.0, 2.0, 3.0])  # encryption works with the public context...
    with pytest.raises(ValueError, match="secret_key"):
        vec.decrypt()  # ...decryption does not
    assert ckks_keys.secret.is_private()


def test_node_refuses_a_context_carrying_a_secret_key(ckks_keys: OwnerKeys) -> None:
    leaky = bytes(ckks_keys.secret.serialize(save_secret_key=True))
    header = ContextHeader(
        scheme=Scheme.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=(60, 40, 40, 60), scale_bits=40
    )
    with pytest.raises(SpecError, match="carries a secret key"):
        load_public_context(pack(header, [leaky]))


def test_paillier_ciphertexts_hide_the_values(ou_keys: OwnerKeys) -> None:
    spec = HETaskSpec(Scheme.OU, "x + 1", ("x",), scale=1)
    blob = encrypt_columns(ou_keys, {"x": INTS}, spec)
    out = evaluate(ou_keys.public_context, blob, spec.formula)
    for leak in patterns(INTS) + patterns(INTS + 1):
        assert leak not in blob and leak not in out


def test_ckks_ciphertexts_hide_the_values(ckks_keys: OwnerKeys) -> None:
    spec = ckks_spec("x * 2", ("x",))
    blob = encrypt_columns(ckks_keys, {"x": REALS}, spec)
    out = evaluate(ckks_keys.public_context, blob, spec.formula)
    for leak in patterns(REALS) + patterns(REALS * 2):
        assert leak not in blob and leak not in out


def test_headers_carry_shapes_not_data(ou_keys: OwnerKeys) -> None:
    spec = HETaskSpec(Scheme.OU, "sum(x)", ("x",), scale=1)
    out = evaluate(ou_keys.public_context, encrypt_columns(ou_keys, {"x": INTS}, spec), spec.formula)
    head_len = struct.unpack_from(">I", out, 8)[0]
    header = json.loads(out[12 : 12 + head_len])
    assert set(header) == {
        "blobs", "chunks", "columns_digest", "context_digest", "factor", "formula",
        "kind", "public_value", "rows", "scheme", "value",
    }  # fmt: skip
    assert str(int(INTS.sum())) not in json.dumps(header)


def test_only_the_spec_columns_leave_the_owner(ou_keys: OwnerKeys) -> None:
    spec = HETaskSpec(Scheme.OU, "sum(age)", ("age",), scale=1)
    private = {"age": np.array([30, 40]), "ssn": np.array([123456789, 987654321])}
    blob = encrypt_columns(ou_keys, private, spec)
    header, blobs = unpack(blob, ColumnsHeader, len(blob), "columns")
    assert [c.name for c in header.columns] == ["age"] and len(blobs) == 1
    assert b"ssn" not in blob
    with pytest.raises(SpecError, match="unknown column 'ssn'"):
        evaluate(ou_keys.public_context, blob, "sum(ssn)")
