"""The PSI task (kind 2) as the network runs it: the spec whose sha256 is the on-chain
`specHash`, the session messages exchanged over the p2p API, and the engine's link setup.
Design: docs/PSI_NETWORK.md.

The requester is rank 0 and the only receiver (``reveal=me``); the provider's node is rank 1.
Nothing here carries a key, a row or a dataset file.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from compute.errors import SpecError
from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    KeyRules,
    LinkConfig,
    Protocol,
    PsiSpec,
    Reveal,
)

__all__ = [
    "ANSWER_BLOB",
    "ATTESTATION_BLOB",
    "MAX_MESSAGE_BYTES",
    "OFFER_BLOB",
    "PROTOCOLS",
    "PROVIDER_RANK",
    "PSI_KIND",
    "RECEIPT_BLOB",
    "REQUESTER_RANK",
    "SPEC_BLOB",
    "PsiTaskSpec",
    "SessionAnswer",
    "SessionOffer",
    "free_port",
    "link_config",
    "new_session_id",
    "parse_message",
    "psi_servable",
    "session_task",
    "spec_uri",
]

PSI_KIND = 2
REQUESTER_RANK, PROVIDER_RANK = 0, 1
PROTOCOLS = ("ecdh", "rr22", "kkrt")
SPEC_BLOB = "spec"
OFFER_BLOB = "psi-offer"
ANSWER_BLOB = "psi-answer"
RECEIPT_BLOB = "psi-receipt"
ATTESTATION_BLOB = "psi-attestation"
MAX_MESSAGE_BYTES = 64 << 10  # any PSI session message (all are small JSON)

LinkAddress = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$")]
SessionId = Annotated[str, StringConstraints(pattern=r"^t[0-9]{1,20}-[0-9a-f]{32}$")]

M = TypeVar("M", bound=BaseModel)


class PsiTaskSpec(BaseModel):
    """What both parties run. Every privacy-relevant choice is a required field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["datum.psi.v1"] = Field(alias="schema")
    dataset_id: Annotated[int, Field(ge=1, lt=2**64)]
    protocol: Literal["ecdh", "rr22", "kkrt"]
    reveal: Literal["me"]
    case: Literal["exact", "casefold"]
    empty: Literal["reject", "drop"]
    duplicates: Literal["reject", "first", "all"]
    recv_timeout_ms: Annotated[int, Field(ge=1_000, le=3_600_000)] = 30_000
    connect_timeout_ms: Annotated[int, Field(ge=1_000, le=600_000)] = 30_000
    deadline_s: Annotated[int, Field(ge=10, le=86_400)] = 1_800

    @classmethod
    def build(
        cls,
        *,
        dataset_id: int,
        protocol: str,
        reveal: str,
        case: str = "exact",
        empty: str = "reject",
        duplicates: str = "all",
    ) -> PsiTaskSpec:
        """A spec from CLI-style strings; `SpecError` naming what is not served."""
        if reveal != "me":
            raise SpecError(f"--reveal {reveal} is not served by the network yet (use --reveal me)")
        if protocol not in PROTOCOLS:
            raise SpecError(
                f"--protocol {protocol} is not served by the network (use {', '.join(PROTOCOLS)})"
            )
        fields = {"schema": "datum.psi.v1", "dataset_id": dataset_id, "protocol": protocol, "reveal": reveal}
        return parse_message(
            cls, _json({**fields, "case": case, "empty": empty, "duplicates": duplicates}), "the spec"
        )

    def canonical_json(self) -> bytes:
        """Sorted keys, no whitespace: the bytes whose sha256 is the on-chain specHash."""
        return _json(self.model_dump(by_alias=True))

    def spec_hash(self) -> bytes:
        """sha256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json()).digest()

    def key_rules(self) -> KeyRules:
        """The key normalization both sides apply."""
        return KeyRules(CaseRule(self.case), EmptyKeyRule(self.empty), DuplicateRule(self.duplicates))

    def engine_spec(self) -> PsiSpec:
        """The `compute.psi` spec both engines run: the requester (rank 0) receives rows."""
        return PsiSpec(Protocol(self.protocol), Reveal.ROWS, (REQUESTER_RANK,), self.key_rules())


class SessionOffer(BaseModel):
    """The requester's offer: the session id and where its engine listens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: SessionId
    requester_link: LinkAddress


class SessionAnswer(BaseModel):
    """The provider node's answer: where its engine listens for that session."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    session_id: SessionId
    provider_link: LinkAddress


def spec_uri(spec_hash: bytes) -> str:
    """The specURI of a network PSI task: the spec travels over p2p, named by its hash."""
    return "datum:spec:0x" + spec_hash.hex()


def psi_servable(kind: int, spec_hash: bytes, uri: str) -> bool:
    """False for a PSI request this network cannot serve: its spec is not the one delivered
    over p2p under its hash (any other kind: True, its own checks apply)."""
    return kind != PSI_KIND or uri == spec_uri(bytes(spec_hash))


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def parse_message(model: type[M], data: bytes, what: str) -> M:
    """Validate JSON bytes as `model`; `SpecError` naming the first problem."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SpecError(f"{what} is {len(data)} bytes, over the limit of {MAX_MESSAGE_BYTES}")
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise SpecError(f"{what} is invalid at {where}: {first['msg']}") from None


def new_session_id(task_id: int) -> str:
    """A fresh session id: the task id and 128 random bits."""
    return f"t{task_id}-{secrets.token_hex(16)}"


def session_task(session_id: str) -> int:
    """The task id a session id names."""
    match = re.fullmatch(r"t([0-9]+)-[0-9a-f]{32}", session_id)
    if match is None:
        raise SpecError("malformed session id")
    return int(match.group(1))


def free_port(host: str) -> int:
    """A TCP port on `host` that was free a moment ago (the engine binds it next)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def link_config(
    spec: PsiTaskSpec, rank: int, offer: SessionOffer, answer: SessionAnswer, budget_s: float
) -> LinkConfig:
    """This party's link: both addresses, the session id, and a deadline within `budget_s`."""
    if answer.session_id != offer.session_id:
        raise SpecError("the answer names another session")
    deadline = min(float(spec.deadline_s), budget_s)
    if deadline <= 1:
        raise SpecError("the task's deadline leaves no time to run the protocol")
    return LinkConfig(
        rank,
        (offer.requester_link, answer.provider_link),
        offer.session_id,
        recv_timeout_ms=spec.recv_timeout_ms,
        connect_timeout_ms=spec.connect_timeout_ms,
        deadline_s=deadline,
    )
