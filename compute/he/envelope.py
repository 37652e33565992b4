"""The versioned wire envelope around contexts, encrypted columns and results.

Layout::

    b"DATUMHE" | version (1 byte) | header length (4 bytes, big endian) | header | blobs

The header is canonical JSON (sorted keys, no spaces, ASCII) validated by a pydantic model
at this edge; `blobs` lists the byte length of each library blob that follows, in order.
An envelope has exactly one valid byte form: after validation the header is re-encoded
and must equal the bytes received. Sizes are checked before anything is parsed.
"""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compute.errors import SpecError
from compute.he.scheme import Scheme

MAGIC = b"DATUMHE"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 4 * 1024 * 1024
_PREFIX = struct.Struct(">7sBI")

Digest = str  # 64 lowercase hex characters of a sha256


class _Header(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    blobs: tuple[int, ...] = ()


class ContextHeader(_Header):
    """A public context: a Paillier public key, or a CKKS context without its secret key."""

    kind: Literal["context"] = "context"
    scheme: Scheme
    key_bits: int | None = None  # Paillier
    poly_modulus_degree: int | None = None  # CKKS
    coeff_mod_bit_sizes: tuple[int, ...] | None = None  # CKKS
    scale_bits: int | None = None  # CKKS


class OwnerKeysHeader(_Header):
    """The owner's own key storage: the public context envelope, then the secret key."""

    kind: Literal["owner_keys"] = "owner_keys"
    scheme: Scheme


class ColumnMeta(BaseModel):
    """One encrypted column: `rows` values in `len(chunks)` blobs of `chunks[i]` values."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    rows: int = Field(ge=1)
    encoding: Literal["int", "fixed", "real"]  # exact integers, Paillier fixed point, CKKS reals
    divisor: int = Field(ge=1)  # Paillier: value = decrypted integer / divisor
    chunks: tuple[int, ...]


class ColumnsHeader(_Header):
    """Encrypted columns bound to one public context."""

    kind: Literal["columns"] = "columns"
    scheme: Scheme
    context_digest: Digest = Field(pattern=r"^[0-9a-f]{64}$")
    columns: tuple[ColumnMeta, ...]


class ResultHeader(_Header):
    """An evaluation result, bound to its context, its inputs and its (canonical) formula."""

    kind: Literal["result"] = "result"
    scheme: Scheme
    context_digest: Digest = Field(pattern=r"^[0-9a-f]{64}$")
    columns_digest: Digest = Field(pattern=r"^[0-9a-f]{64}$")
    formula: str
    value: Literal["column", "scalar", "public"]
    rows: int | None = None  # for a column
    factor: str = "1"  # exact fraction: value = decrypted plaintext * factor
    public_value: str | None = None  # for "public": an exact fraction "p/q" or integer "p"
    chunks: tuple[int, ...] = ()


H = TypeVar("H", bound=_Header)


def digest(data: bytes) -> Digest:
    """sha256 (hex) of an envelope: what binds results to inputs and what nodes sign."""
    return hashlib.sha256(data).hexdigest()


def pack(header: _Header, blobs: list[bytes]) -> bytes:
    """Frame `header` and `blobs` into an envelope (the header's `blobs` is filled in)."""
    full = header.model_copy(update={"blobs": tuple(len(b) for b in blobs)})
    head = _canonical(full)
    return b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)), head, *blobs])


def unpack(data: bytes, model: type[H], max_bytes: int, what: str) -> tuple[H, list[bytes]]:
    """Validate an envelope of type `model`; raise `SpecError` for anything malformed."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SpecError(f"{what} must be bytes")
    data = bytes(data)
    if len(data) > max_bytes:
        raise SpecError(f"{what} is {len(data)} bytes, over the limit of {max_bytes}")
    if len(data) < _PREFIX.size:
        raise SpecError(f"{what} is truncated ({len(data)} bytes)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise SpecError(f"{what} is not a Datum HE envelope")
    if version != FORMAT_VERSION:
        raise SpecError(f"{what} has envelope version {version}; this node reads {FORMAT_VERSION}")
    if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len > len(data):
        raise SpecError(f"{what} declares a header of {head_len} bytes that does not fit")
    head = data[_PREFIX.size : _PREFIX.size + head_len]
    try:
        header = model.model_validate_json(head)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "header"
        raise SpecError(f"{what} has an invalid header ({where}: {first['msg']})") from None
    if _canonical(header) != head:
        raise SpecError(f"{what} header is not in canonical form")
    body = memoryview(data)[_PREFIX.size + head_len :]
    if any(n < 0 for n in header.blobs) or sum(header.blobs) != len(body):
        raise SpecError(f"{what} blob sizes do not add up to its {len(body)} payload bytes")
    blobs, offset = [], 0
    for n in header.blobs:
        blobs.append(bytes(body[offset : offset + n]))
        offset += n
    return header, blobs


def _canonical(header: _Header) -> bytes:
    obj = header.model_dump(mode="json")
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
