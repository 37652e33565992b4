"""The node's side of the DataOracle: specs carried inline in the specURI, and finalizing a
task so that an oracle consumer gets its answer in the same transaction.

A consumer contract cannot upload a spec over p2p, so an oracle task carries its spec in the
URI itself: ``datum:spec-inline:`` followed by the spec's bytes in base64url without padding.
The on-chain ``specHash`` is the SHA-256 of those bytes, as for every other spec. Design:
docs/ORACLE.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Sequence

from compute.errors import SpecError

from ..chain import oracle as chain_oracle
from ..chain import tasks
from ..chain.signer import SignedResult
from ..chain.txmanager import Sent
from .chainops import ChainOps

__all__ = [
    "INLINE_SPEC_PREFIX",
    "MAX_INLINE_SPEC_BYTES",
    "finalize_with_output",
    "inline_spec",
    "inline_spec_uri",
    "oracle_request_id",
]

log = logging.getLogger(__name__)

INLINE_SPEC_PREFIX = "datum:spec-inline:"
MAX_INLINE_SPEC_BYTES = 8_192
"""Largest inline spec. The URI is calldata of the request and is logged in `TaskRequested`
(about 16 gas per byte twice, plus 8 gas per log byte), so 8 KiB costs roughly 0.4 M gas."""

_MAX_ENCODED_CHARS = -(-MAX_INLINE_SPEC_BYTES * 4 // 3)  # base64 of the largest spec, unpadded
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def inline_spec_uri(spec_json: bytes) -> str:
    """The specURI carrying `spec_json` inline (`SpecError` when empty or above the limit)."""
    if not spec_json:
        raise SpecError("an inline spec cannot be empty")
    if len(spec_json) > MAX_INLINE_SPEC_BYTES:
        raise SpecError(
            f"the spec is {len(spec_json)} bytes; an inline spec holds at most {MAX_INLINE_SPEC_BYTES}"
        )
    return INLINE_SPEC_PREFIX + base64.urlsafe_b64encode(spec_json).decode("ascii").rstrip("=")


def inline_spec(uri: str, spec_hash: bytes) -> bytes | None:
    """The spec carried by `uri` if it is inline, checked against `spec_hash` (sha256).

    None when `uri` is not an inline spec (fetch it the usual way). `SpecError` when it is
    inline but malformed, above `MAX_INLINE_SPEC_BYTES`, or does not hash to `spec_hash`.
    """
    if not uri.startswith(INLINE_SPEC_PREFIX):
        return None
    encoded = uri[len(INLINE_SPEC_PREFIX) :]
    if len(encoded) > _MAX_ENCODED_CHARS:
        raise SpecError(
            f"inline spec of {len(encoded)} base64 characters; at most {_MAX_ENCODED_CHARS} "
            f"({MAX_INLINE_SPEC_BYTES} bytes) are accepted"
        )
    if not encoded:
        raise SpecError("inline spec URI carries no spec")
    if not _BASE64URL.fullmatch(encoded) or len(encoded) % 4 == 1:
        raise SpecError("inline spec is not unpadded base64url (alphabet A-Z a-z 0-9 - _, no '=')")
    try:
        data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SpecError(f"inline spec is not valid base64url: {exc}") from None
    if base64.urlsafe_b64encode(data).decode("ascii").rstrip("=") != encoded:
        raise SpecError("inline spec is not canonical base64url (non-zero padding bits)")
    if len(spec_hash) != 32:
        raise SpecError(f"a spec hash is 32 bytes, got {len(spec_hash)}")
    digest = hashlib.sha256(data).digest()
    if digest != spec_hash:
        raise SpecError(
            f"the inline spec hashes to 0x{digest.hex()}, the task's specHash is 0x{spec_hash.hex()}"
        )
    return data


async def oracle_request_id(ops: ChainOps, task_id: int) -> int:
    """``DataOracle.getRequestIdOfTask``: the request that opened the task, 0 for none."""
    return await asyncio.to_thread(chain_oracle.request_id_of_task, ops.chain, ops.contracts, task_id)


async def finalize_with_output(
    ops: ChainOps,
    task_id: int,
    result_hash: bytes,
    public_output: bytes,
    epoch: int,
    signatures: Sequence[SignedResult],
) -> Sent:
    """Finalize `task_id` with a public output, delivering it when an oracle consumer waits.

    When the task belongs to an oracle request not delivered yet: ``DataOracle.fulfill``
    (the result is submitted and the consumer called back in one transaction). Otherwise
    ``TaskManager.submitResult``. Reverts raise the typed `ContractRevert` subclasses (e.g.
    ``DataOracle__AlreadyDelivered`` when another member delivered first).
    """
    sigs = list(signatures)

    def run() -> Sent:
        request_id = chain_oracle.request_id_of_task(ops.chain, ops.contracts, task_id)
        if request_id != 0:
            record = chain_oracle.get_request(ops.chain, ops.contracts, request_id)
            if not record.delivered:
                log.info("task %d: fulfilling oracle request %d", task_id, request_id)
                return chain_oracle.fulfill(
                    ops.tx, ops.contracts, request_id, result_hash, public_output, epoch, sigs
                )
        return tasks.submit_result(ops.tx, ops.contracts, task_id, result_hash, public_output, epoch, sigs)

    return await asyncio.to_thread(run)
