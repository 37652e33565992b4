"""The owner encrypts the spec's columns under its public context."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tenseal as ts

from compute.errors import SpecError
from compute.he.ckks import chunk_sizes
from compute.he.encoding import EncodedColumn, encode_columns
from compute.he.envelope import ColumnMeta, ColumnsHeader, pack
from compute.he.keys import OwnerKeys, load_public_context
from compute.he.scheme import CKKS_SLOTS
from compute.he.spec import HETaskSpec


def encrypt_columns(keys: OwnerKeys | bytes, columns: Mapping[str, Any], spec: HETaskSpec) -> bytes:
    """Encrypt exactly `spec.columns` of `columns` (name -> 1-D numpy array).

    `keys` is the owner's `OwnerKeys` or any public context envelope (encryption needs
    only the public key). Other entries of `columns` are ignored: they never leave.
    """
    if isinstance(keys, OwnerKeys):
        scheme, context_digest, handle = keys.scheme, keys.context_digest, keys.secret
    else:
        public = load_public_context(keys, spec.limits)
        scheme, context_digest, handle = public.scheme, public.digest, public.handle
    if scheme is not spec.scheme:
        raise SpecError(f"the keys are for {scheme.value}, the spec asks for {spec.scheme.value}")
    encoded = encode_columns(columns, spec.columns, spec.scheme, spec.scale, spec.limits)
    metas: list[ColumnMeta] = []
    blobs: list[bytes] = []
    for col in encoded:
        if scheme.is_paillier:
            chunks: tuple[int, ...] = (len(col.values),)
            blobs.append(_encrypt_paillier(handle, col))
        else:
            chunks = chunk_sizes(len(col.values))
            blobs.extend(_encrypt_ckks(handle, col))
        metas.append(
            ColumnMeta(
                name=col.name, rows=len(col.values), encoding=col.encoding, divisor=col.divisor, chunks=chunks
            )
        )
    data = pack(ColumnsHeader(scheme=scheme, context_digest=context_digest, columns=tuple(metas)), blobs)
    if len(data) > spec.limits.max_columns_bytes:
        raise SpecError(
            f"encrypted columns take {len(data)} bytes, over the spec's limit of "
            f"{spec.limits.max_columns_bytes}"
        )
    return data


def _encrypt_paillier(kit: Any, col: EncodedColumn) -> bytes:
    encoder = kit.integer_encoder(scale=1)  # NOT the default 1e6 scale: values are already integers
    return bytes(kit.encryptor().encrypt(kit.array(col.values, encoder)).serialize())


def _encrypt_ckks(ctx: Any, col: EncodedColumn) -> list[bytes]:
    values = col.values.tolist()
    return [
        bytes(ts.ckks_vector(ctx, values[start : start + CKKS_SLOTS]).serialize())
        for start in range(0, len(values), CKKS_SLOTS)
    ]
