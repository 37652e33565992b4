"""The route table, its limits, the payloads, and the handlers the node daemon plugs in."""

from dataclasses import dataclass
from typing import Annotated, Protocol

from eth_keys.datatypes import Signature
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from oracle.chain.signer import ResultDomain, SignedResult, result_digest

from .access import Access, Caller, TaskRole
from .blobs import StoredBlob

__all__ = [
    "HEADER_UPLOADER",
    "JSON",
    "OCTET_STREAM",
    "Limits",
    "NodeHandlers",
    "ResultSignature",
    "Route",
    "route_table",
]

HEADER_UPLOADER = "X-Datum-Uploader"  # on blob downloads: who uploaded it
OCTET_STREAM = "application/octet-stream"
JSON = "application/json"
SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

Hash32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{64}$")]
Signature65 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{130}$")]


@dataclass(frozen=True)
class Limits:
    """Request body limits in bytes, per kind of route."""

    blob_max_bytes: int = 1 << 30
    json_max_bytes: int = 16 << 10

    def __post_init__(self) -> None:
        if self.blob_max_bytes < 1 or self.json_max_bytes < 1:
            raise ValueError("body limits must be positive")


@dataclass(frozen=True)
class Route:
    """One endpoint: who may call it (`access` None = public, unsigned) and what it takes."""

    name: str
    method: str
    path: str
    access: Access | None
    max_body_bytes: int = 0
    content_type: str | None = None  # the request body's type; None = no body


def route_table(limits: Limits) -> tuple[Route, ...]:
    """Every route of the API (see ``docs/P2P.md``)."""
    requester_or_provider = frozenset({TaskRole.REQUESTER, TaskRole.DATA_PROVIDER})
    return (
        Route("health", "GET", "/v1/health", None),
        Route("spec", "GET", "/v1/tasks/{task_id}/spec", Access(nodes=True, roles=requester_or_provider)),
        Route(
            "put_blob",
            "PUT",
            "/v1/tasks/{task_id}/blobs/{name}",
            Access(nodes=False, roles=requester_or_provider),
            limits.blob_max_bytes,
            OCTET_STREAM,
        ),
        Route(
            "get_blob",
            "GET",
            "/v1/tasks/{task_id}/blobs/{name}",
            Access(nodes=False, roles=requester_or_provider | {TaskRole.COMMITTEE}),
        ),
        Route(
            "signatures",
            "POST",
            "/v1/tasks/{task_id}/signatures",
            Access(nodes=False, roles=frozenset({TaskRole.COMMITTEE})),
            limits.json_max_bytes,
            JSON,
        ),
        Route(
            "result",
            "GET",
            "/v1/tasks/{task_id}/result",
            Access(nodes=False, roles=frozenset({TaskRole.RECEIVER})),
        ),
    )


class ResultSignature(BaseModel):
    """A committee member's EIP-712 `Result` signature, as posted to the aggregator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    result_hash: Hash32
    public_output_hash: Hash32
    config_epoch: int = Field(ge=1, lt=2**64)
    signature: Signature65

    @classmethod
    def from_signed(
        cls, signed: SignedResult, result_hash: bytes, public_output_hash: bytes, config_epoch: int
    ) -> "ResultSignature":
        """The payload for an ``oracle.chain.signer`` signature and the Result it signs."""
        return cls(
            result_hash="0x" + result_hash.hex(),
            public_output_hash="0x" + public_output_hash.hex(),
            config_epoch=config_epoch,
            signature="0x" + signed.signature.hex(),
        )

    def signer(self, domain: ResultDomain, task_id: int) -> str | None:
        """The address whose signature this is for `task_id` (None: unusable or high-s, which
        the contract refuses)."""
        raw = bytes.fromhex(self.signature[2:])
        if raw[64] not in (27, 28) or int.from_bytes(raw[32:64], "big") > SECP256K1_HALF_N:
            return None
        digest = result_digest(
            domain,
            task_id,
            bytes.fromhex(self.result_hash[2:]),
            bytes.fromhex(self.public_output_hash[2:]),
            self.config_epoch,
        )
        try:
            key = Signature(raw[:64] + bytes([raw[64] - 27])).recover_public_key_from_msg_hash(digest)
        except (BadSignature, ValidationError, ValueError):
            return None
        return str(key.to_checksum_address())


class NodeHandlers(Protocol):
    """What the node daemon plugs into the routes. Raise `NotFound`, `Conflict`, `BadRequest`,
    `Forbidden` or `Unavailable` (``oracle.p2p.errors``) to answer with that status."""

    async def task_spec(self, task_id: int, caller: Caller) -> bytes:
        """The spec bytes of `task_id` (the fetcher checks them against the on-chain hash)."""
        ...

    async def blob_received(self, blob: StoredBlob, caller: Caller) -> None:
        """A new blob was uploaded and verified; raise to refuse it (it is then removed)."""
        ...

    async def signature_received(self, task_id: int, signature: ResultSignature, caller: Caller) -> None:
        """A committee member's Result signature, already checked to be by `caller.address`.
        Keep one per signer: a retried post delivers the same signature again."""
        ...

    async def task_result(self, task_id: int, caller: Caller) -> bytes:
        """The private result of `task_id` for its receiver."""
        ...
