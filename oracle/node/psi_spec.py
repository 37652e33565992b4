"""The PSI task (kind 2) as the network runs it: the spec whose sha256 is the on-chain
`specHash`, the session messages exchanged over the p2p API, and the engine's link setup.
Design: docs/PSI_NETWORK.md.

The requester is rank 0, the provider's node rank 1. What is revealed is the spec's choice
(`SERVED` lists every combination the network runs): ``reveal=me`` (the requester gets its
matching rows), ``both`` (each side gets its own matching rows), ``size`` (the requester gets
only the intersection size), and labeled PSI (``labels``: the requester also gets the listed
columns of the provider's matching rows). Nothing here carries a key, a row or a dataset file.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from compute.errors import SpecError
from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    HeParams,
    KeyRules,
    LabeledAlgorithm,
    LabeledSpec,
    LinkConfig,
    Protocol,
    PsiSpec,
    Reveal,
)
from compute.spu_link import pick_link_port

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
    "SERVED",
    "SPEC_BLOB",
    "PsiTaskSpec",
    "SessionAnswer",
    "SessionOffer",
    "free_port",
    "link_config",
    "new_session_id",
    "parse_message",
    "psi_servable",
    "served_problem",
    "session_task",
    "spec_uri",
]

PSI_KIND = 2
REQUESTER_RANK, PROVIDER_RANK = 0, 1
PROTOCOLS = ("ecdh", "rr22", "kkrt", "he")
REVEALS = ("me", "both", "size")
LABELED_PROTOCOLS = ("ecdh", "he")  # ecdh + labels = labeled DH-OPRF PSI (alias `dh-oprf`)
LABEL_BATCH = 6144  # max_query_keys is the query size rounded up to this (HE's batch size)
MAX_LABELS = 16
# (protocol, labeled, reveal) the network runs; anything else is refused before any payment
SERVED: tuple[tuple[str, bool, str], ...] = (
    *((p, False, r) for p in ("ecdh", "rr22", "kkrt", "he") for r in ("me", "both")),
    ("ecdh", False, "size"),
    ("ecdh", True, "me"),
    ("he", True, "me"),
)
SPEC_BLOB = "spec"
OFFER_BLOB = "psi-offer"
ANSWER_BLOB = "psi-answer"
RECEIPT_BLOB = "psi-receipt"
ATTESTATION_BLOB = "psi-attestation"
MAX_MESSAGE_BYTES = 64 << 10  # any PSI session message (all are small JSON)

LinkAddress = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$")]
SessionId = Annotated[str, StringConstraints(pattern=r"^t[0-9]{1,20}-[0-9a-f]{32}$")]
ColumnName = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,128}$")]

M = TypeVar("M", bound=BaseModel)


class PsiTaskSpec(BaseModel):
    """What both parties run. Every privacy-relevant choice is a required field of `build`.

    `labels` (provider columns the requester learns for its matches), `label_bytes` (the
    padded size of one label record) and `max_query_keys` (the requester's distinct key
    count rounded up to `LABEL_BATCH`) are set for labeled PSI only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["datum.psi.v1"] = Field(alias="schema")
    dataset_id: Annotated[int, Field(ge=1, lt=2**64)]
    protocol: Literal["ecdh", "rr22", "kkrt", "he"]
    reveal: Literal["me", "both", "size"]
    case: Literal["exact", "casefold"]
    empty: Literal["reject", "drop"]
    duplicates: Literal["reject", "first", "all"]
    labels: Annotated[tuple[ColumnName, ...], Field(max_length=MAX_LABELS)] = ()
    label_bytes: Annotated[int, Field(ge=0, le=1 << 16)] = 0
    max_query_keys: Annotated[int, Field(ge=0, le=1 << 24)] = 0
    recv_timeout_ms: Annotated[int, Field(ge=1_000, le=3_600_000)] = 30_000
    connect_timeout_ms: Annotated[int, Field(ge=1_000, le=600_000)] = 30_000
    deadline_s: Annotated[int, Field(ge=10, le=86_400)] = 1_800

    @model_validator(mode="after")
    def _served(self) -> PsiTaskSpec:
        problem = served_problem(self.protocol, self.labels, self.reveal)
        if problem is not None:
            raise ValueError(problem)
        if self.labels:
            if len(set(self.labels)) != len(self.labels):
                raise ValueError("labels name a column twice")
            if self.label_bytes < 1 or self.max_query_keys < 1:
                raise ValueError("labeled PSI needs label_bytes and max_query_keys")
            if self.duplicates == "all":
                raise ValueError("labeled PSI needs one label per provider key: duplicates reject or first")
        elif self.label_bytes or self.max_query_keys:
            raise ValueError("label_bytes and max_query_keys are for labeled PSI only")
        return self

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
        labels: tuple[str, ...] = (),
        label_bytes: int = 0,
        query_keys: int = 0,
    ) -> PsiTaskSpec:
        """A spec from CLI-style strings; `SpecError` naming what is not served.

        Labeled PSI: `labels` are the provider's columns, `query_keys` the requester's
        distinct key count (rounded up to `LABEL_BATCH` in the spec), the provider's key
        rule is `reject` (a registered dataset has distinct keys).
        """
        if protocol == "dh-oprf":
            if not labels:
                raise SpecError("--protocol dh-oprf is labeled PSI: pass --labels")
            protocol = "ecdh"
        problem = served_problem(protocol, labels, reveal)
        if problem is not None:
            raise SpecError(problem)
        fields: dict[str, object] = {
            "schema": "datum.psi.v1",
            "dataset_id": dataset_id,
            "protocol": protocol,
            "reveal": reveal,
            "case": case,
            "empty": empty,
            "duplicates": duplicates,
        }
        if labels:
            batches = max(1, -(-query_keys // LABEL_BATCH))
            fields |= {
                "duplicates": "reject",
                "labels": list(labels),
                "label_bytes": label_bytes,
                "max_query_keys": batches * LABEL_BATCH,
            }
        return parse_message(cls, _json(fields), "the spec")

    def canonical_json(self) -> bytes:
        """Sorted keys, no whitespace: the bytes whose sha256 is the on-chain specHash."""
        return _json(self.model_dump(by_alias=True))

    def spec_hash(self) -> bytes:
        """sha256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json()).digest()

    def key_rules(self) -> KeyRules:
        """The key normalization both sides apply."""
        return KeyRules(CaseRule(self.case), EmptyKeyRule(self.empty), DuplicateRule(self.duplicates))

    @property
    def labeled(self) -> bool:
        """True for labeled PSI (`labeled_spec`), False for plain PSI (`engine_spec`)."""
        return bool(self.labels)

    @property
    def mode(self) -> str:
        """A short name of what runs, for logs and outputs: e.g. `rr22/both`, `ecdh+labels/me`."""
        return f"{self.protocol}{'+labels' if self.labels else ''}/{self.reveal}"

    def engine_spec(self) -> PsiSpec:
        """The `compute.psi` spec of plain PSI: the requester (rank 0) receives, and with
        ``reveal=both`` the provider (rank 1) too; ``size`` runs the DH cardinality protocol."""
        if self.labels:
            raise SpecError("a labeled PSI spec runs `labeled_spec`")
        receivers = (REQUESTER_RANK, PROVIDER_RANK) if self.reveal == "both" else (REQUESTER_RANK,)
        reveal = Reveal.SIZE if self.reveal == "size" else Reveal.ROWS
        he = HeParams() if self.protocol == "he" else None
        return PsiSpec(Protocol(self.protocol), reveal, receivers, self.key_rules(), he)

    def labeled_spec(self) -> LabeledSpec:
        """The `compute.psi` spec of labeled PSI (DH-OPRF for ecdh, polynomial HE for he)."""
        if not self.labels:
            raise SpecError("a plain PSI spec runs `engine_spec`")
        algorithm = LabeledAlgorithm.DH if self.protocol == "ecdh" else LabeledAlgorithm.HE
        he = HeParams() if algorithm is LabeledAlgorithm.HE else None
        return LabeledSpec(
            algorithm, self.key_rules(), tuple(self.labels), self.label_bytes, self.max_query_keys, he
        )


def served_problem(protocol: str, labels: tuple[str, ...], reveal: str) -> str | None:
    """Why the network does not run this combination (a message for the CLI), or None."""
    if protocol not in PROTOCOLS:
        return f"--protocol {protocol} is not served by the network (use {', '.join(PROTOCOLS)})"
    if reveal not in REVEALS:
        return f"--reveal {reveal} is not served by the network (use {', '.join(REVEALS)})"
    if labels and protocol not in LABELED_PROTOCOLS:
        return (
            f"--labels is not served with --protocol {protocol} (libpsi has no labeled mode): "
            "use --protocol ecdh (labeled DH-OPRF) or he"
        )
    if labels and reveal != "me":
        return f"--labels runs with --reveal me only (the provider learns the query size), not {reveal}"
    if reveal == "size" and protocol != "ecdh":
        return (
            f"--reveal size is served by the DH cardinality protocol: use --protocol ecdh "
            f"({protocol} reveals the intersecting elements)"
        )
    if (protocol, bool(labels), reveal) not in SERVED:
        return f"--protocol {protocol} --reveal {reveal} is not served by the network"
    return None


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
    """A TCP port on `host` that was free a moment ago (the engine binds it next), drawn at
    random (compute.spu_link.pick_link_port) so that parties on one host rarely collide."""
    return pick_link_port(host)


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
