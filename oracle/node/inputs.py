"""Checks a node runs on a requester's uploads before it publishes them.

`check_spec` verifies the spec bytes against the on-chain hash and parses them;
`check_context` and `check_columns` read only the envelope header of a (possibly large)
file and check it against the spec: scheme, sizes, the context digest, the column names.
The full envelope is validated again by the evaluator in the worker. Blocking (file reads):
call them in a thread. Errors are the p2p layer's answers (`400`, `409`, `413`).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from compute.errors import SpecError
from compute.he import HETaskSpec, spec_from_json
from compute.he.envelope import FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES, ColumnsHeader, ContextHeader

from ..p2p.errors import BadRequest, Conflict, PayloadTooLarge

__all__ = ["INPUT_BLOBS", "SpecRejected", "check_columns", "check_context", "check_spec"]

INPUT_BLOBS = ("spec", "context", "columns")
_PREFIX = struct.Struct(">7sBI")
H = TypeVar("H", bound=BaseModel)


class SpecRejected(BadRequest):
    """The spec hashes to the on-chain specHash but is not a valid spec: the task can never run."""


def check_spec(data: bytes, spec_hash: str, max_bytes: int) -> HETaskSpec:
    """The spec, when `data` hashes to `spec_hash` (0x hex) and parses."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the spec is {len(data)} bytes, over this node's limit of {max_bytes}")
    digest = "0x" + hashlib.sha256(data).hexdigest()
    if digest != spec_hash.lower():
        raise BadRequest(
            f"the spec hashes to {digest}, the task's on-chain specHash is {spec_hash}", code="spec_mismatch"
        )
    try:
        return spec_from_json(data)
    except SpecError as exc:
        raise SpecRejected(f"the task's spec is invalid: {exc}", code="bad_spec") from None


def _header(path: Path, model: type[H], what: str) -> H:
    with path.open("rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise BadRequest(f"{what} is truncated", code="bad_envelope")
        magic, version, head_len = _PREFIX.unpack(prefix)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise BadRequest(
                f"{what} is not a Datum HE envelope (version {FORMAT_VERSION})", code="bad_envelope"
            )
        if head_len > MAX_HEADER_BYTES:
            raise BadRequest(f"{what} declares a header of {head_len} bytes", code="bad_envelope")
        head = f.read(head_len)
    try:
        return model.model_validate_json(head)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "header"
        raise BadRequest(
            f"{what} has an invalid header ({where}: {first['msg']})", code="bad_envelope"
        ) from None


def check_context(path: Path, size_bytes: int, spec: HETaskSpec) -> None:
    """A public context envelope within the spec's limit, for the spec's scheme."""
    limit = spec.limits.max_context_bytes
    if size_bytes > limit:
        raise PayloadTooLarge(f"the public context is {size_bytes} bytes, over the spec's limit of {limit}")
    header = _header(path, ContextHeader, "the public context")
    if header.scheme is not spec.scheme:
        raise BadRequest(
            f"the public context is for {header.scheme.value}, the spec asks for {spec.scheme.value}",
            code="scheme_mismatch",
        )


def check_columns(path: Path, size_bytes: int, spec: HETaskSpec, context_sha256: str | None) -> None:
    """Encrypted columns within the spec's limits, under the uploaded context, naming the spec's columns."""
    if context_sha256 is None:
        raise Conflict("upload the public context before the encrypted columns", code="context_first")
    limit = spec.limits.max_columns_bytes
    if size_bytes > limit:
        raise PayloadTooLarge(
            f"the encrypted columns are {size_bytes} bytes, over the spec's limit of {limit}"
        )
    header = _header(path, ColumnsHeader, "the encrypted columns")
    if header.scheme is not spec.scheme:
        raise BadRequest(
            f"the columns are {header.scheme.value} ciphertexts, the spec asks for {spec.scheme.value}",
            code="scheme_mismatch",
        )
    if header.context_digest != context_sha256:
        raise BadRequest("the columns were encrypted under another public context", code="context_mismatch")
    present = {c.name for c in header.columns}
    for name in spec.columns:
        if name not in present:
            raise BadRequest(
                f"unknown column {name!r}: the spec names it, the encrypted columns hold "
                f"{', '.join(sorted(present)) or 'none'}",
                code="unknown_column",
            )
    for meta in header.columns:
        if meta.rows > spec.limits.max_rows:
            raise PayloadTooLarge(f"column {meta.name!r} has {meta.rows} rows, over {spec.limits.max_rows}")
