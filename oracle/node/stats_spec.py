"""The joint-statistics task (kind 3) as the network runs it: the spec whose sha256 is the
on-chain `specHash`, the plan every node derives from it and the chain's row counts, the
committee's link messages and the result's canonical forms. Design: docs/STATS_NETWORK.md.

Nothing here carries a row, a share or an address of a provider's data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from compute.errors import SpecError
from compute.mpc import PartInfo, Plan, Protocol, Query, QueryResult, plan_query

__all__ = [
    "LINK_BLOB",
    "OUTPUT_HASH_BLOB",
    "STATUS_BLOB",
    "StatusMessage",
    "OutputHashMessage",
    "result_statement",
    "MAX_SPEC_BYTES",
    "SHARE_PREFIX",
    "SPEC_BLOB",
    "STATS_KIND",
    "STATS_SCHEMA",
    "LinkMessage",
    "StatsPart",
    "StatsTaskSpec",
    "canonical_json",
    "provider_id",
    "result_json",
    "session_id_for",
    "share_blob",
    "share_part_of",
    "spec_uri",
    "stats_servable",
]

STATS_KIND = 3
STATS_SCHEMA = "datum.stats.v1"
SPEC_BLOB = "spec"
SHARE_PREFIX = "mpc-share-"
LINK_BLOB = "mpc-link"
OUTPUT_HASH_BLOB = "mpc-output-hash"
STATUS_BLOB = "mpc-status"
STATEMENT_SCHEMA = "datum.stats.result.v1"
MAX_SPEC_BYTES = 256 << 10
MAX_MESSAGE_BYTES = 4 << 10

LinkAddress = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9.-]{1,253}:[0-9]{1,5}$")]


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, ASCII: the one byte form of a JSON value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()


def spec_uri(spec_hash: bytes) -> str:
    """The specURI of a stats task whose spec travels over p2p, named by its hash."""
    return "datum:spec:0x" + spec_hash.hex()


def stats_servable(kind: int, spec_hash: bytes, uri: str) -> bool:
    """False for a stats request this network cannot serve: its spec is neither delivered over
    p2p under its hash nor carried inline (any other kind: True, its own checks apply)."""
    if kind != STATS_KIND:
        return True
    if uri == spec_uri(bytes(spec_hash)):
        return True
    from .oracle_path import inline_spec

    try:
        return inline_spec(uri, bytes(spec_hash)) is not None
    except SpecError:
        return False


def provider_id(dataset_id: int) -> str:
    """The engine's provider id of a dataset's part."""
    return f"dataset-{dataset_id}"


def share_blob(part: int) -> str:
    """The blob name under which a member receives its share of provider part `part`."""
    return f"{SHARE_PREFIX}{part}"


def share_part_of(name: str) -> int | None:
    """The part a share blob name names, None for any other name."""
    if not name.startswith(SHARE_PREFIX):
        return None
    tail = name[len(SHARE_PREFIX) :]
    return int(tail) if tail.isdigit() and len(tail) <= 3 else None


class StatsPart(BaseModel):
    """One provider part: a registered dataset and the query table its rows belong to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset_id: int = Field(ge=1, lt=2**64)
    table: str = Field(min_length=1, max_length=64)


class StatsTaskSpec(BaseModel):
    """`datum.stats.v1`: the query, the datasets feeding it, the committee protocol and who
    learns the answer. Its canonical JSON's sha256 is the task's on-chain specHash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["datum.stats.v1"] = Field(alias="schema")
    query: dict[str, Any]
    parts: tuple[StatsPart, ...] = Field(min_length=1, max_length=8)
    protocol: Literal["aby3", "cheetah"]
    output: Literal["requester", "public"]
    recv_timeout_ms: int = Field(ge=1_000, le=600_000)
    connect_timeout_ms: int = Field(ge=1_000, le=600_000)
    deadline_s: int = Field(ge=5, le=86_400)
    public_output: dict[str, Any] | None = None

    @field_validator("query")
    @classmethod
    def _query_parses(cls, value: dict[str, Any]) -> dict[str, Any]:
        Query.from_json(value)  # SpecError -> a validation error naming the problem
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StatsTaskSpec:
        query = self.engine_query()
        ids = [p.dataset_id for p in self.parts]
        if len(set(ids)) != len(ids):
            raise ValueError("a dataset is listed twice")
        names = {t.name for t in query.tables}
        for part in self.parts:
            if part.table not in names:
                raise ValueError(f"part table {part.table!r} is not a table of the query")
        if self.output == "public" and not query.reveal.public:
            raise ValueError("output 'public' needs the query's reveal to be everyone")
        if self.output == "requester" and not query.reveal.external:
            raise ValueError("output 'requester' needs the query's reveal to be external")
        if self.public_output is not None and self.output != "public":
            raise ValueError("public_output applies to output 'public' only")
        return self

    # -- derived ---------------------------------------------------------------------------

    def engine_query(self) -> Query:
        """The engine's Query."""
        return Query.from_json(self.query)

    def engine_protocol(self) -> Protocol:
        """ABY3 (3 parties) or CHEETAH (2)."""
        return Protocol(self.protocol)

    @property
    def world(self) -> int:
        """The committee size the protocol needs."""
        return self.engine_protocol().world

    @property
    def dataset_ids(self) -> tuple[int, ...]:
        """The datasets, in part order."""
        return tuple(p.dataset_id for p in self.parts)

    def plan(self, rows: Mapping[int, int]) -> Plan:
        """The plan every node derives: parts in spec order with the chain's row counts."""
        parts = []
        for part in self.parts:
            count = rows.get(part.dataset_id)
            if count is None:
                raise SpecError(f"no row count for dataset {part.dataset_id}")
            parts.append(PartInfo(part.table, provider_id(part.dataset_id), int(count)))
        return plan_query(self.engine_query(), parts)

    def canonical_json(self) -> bytes:
        """The bytes whose sha256 is the specHash."""
        return canonical_json(self.model_dump(mode="json", by_alias=True, exclude_none=True))

    def spec_hash(self) -> bytes:
        """sha256 of the canonical JSON."""
        return hashlib.sha256(self.canonical_json()).digest()

    @staticmethod
    def parse(data: bytes) -> StatsTaskSpec:
        """Validate spec bytes; `SpecError` naming the first problem. Only the canonical form
        is accepted (its hash is what the chain holds)."""
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"the spec is {len(data)} bytes, over the limit of {MAX_SPEC_BYTES}")
        try:
            spec = StatsTaskSpec.model_validate_json(data)
        except ValueError as exc:
            raise SpecError(f"the stats spec is invalid: {_first_error(exc)}") from None
        return spec


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return f"{where}: {first.get('msg', exc)}"
    return str(exc)


class LinkMessage(BaseModel):
    """A member's `mpc-link` blob: where its engine listens for this task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: int = Field(ge=1)
    rank: int = Field(ge=0, lt=16)
    address: LinkAddress
    at: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)  # wall clock when published

    @staticmethod
    def parse(data: bytes) -> LinkMessage:
        """Validate a link message; `SpecError` otherwise."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise SpecError("the link message is too large")
        try:
            return LinkMessage.model_validate_json(data)
        except ValueError as exc:
            raise SpecError(f"the link message is invalid: {_first_error(exc)}") from None


class OutputHashMessage(BaseModel):
    """A member's `mpc-output-hash` blob: the sha256 of its output-share blob for the requester."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: int = Field(ge=1)
    rank: int = Field(ge=0, lt=16)
    session_id: str = Field(min_length=1, max_length=64)
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]

    @staticmethod
    def parse(data: bytes) -> OutputHashMessage:
        """Validate an output-hash message; `SpecError` otherwise."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise SpecError("the output-hash message is too large")
        try:
            return OutputHashMessage.model_validate_json(data)
        except ValueError as exc:
            raise SpecError(f"the output-hash message is invalid: {_first_error(exc)}") from None


class StatusMessage(BaseModel):
    """A member's `mpc-status` blob, published when its run failed: the requester stops waiting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: int = Field(ge=1)
    rank: int = Field(ge=0, lt=16)
    state: Literal["failed"]
    reason: str = Field(max_length=400)

    @staticmethod
    def parse(data: bytes) -> StatusMessage:
        """Validate a status message; `SpecError` otherwise."""
        if len(data) > MAX_MESSAGE_BYTES:
            raise SpecError("the status message is too large")
        try:
            return StatusMessage.model_validate_json(data)
        except ValueError as exc:
            raise SpecError(f"the status message is invalid: {_first_error(exc)}") from None


def result_statement(
    *, task_id: int, session_id: str, spec_hash: bytes, plan: Plan, share_sha256: Sequence[str]
) -> bytes:
    """The committee's statement for output `requester` (canonical JSON; its sha256 is the
    resultHash): the run and the sha256 of every rank's output-share blob."""
    return canonical_json(
        {
            "schema": STATEMENT_SCHEMA,
            "task_id": task_id,
            "session_id": session_id,
            "spec_hash": "0x" + spec_hash.hex(),
            "plan_digest": "0x" + plan.digest().hex(),
            "query_digest": "0x" + plan.query.digest().hex(),
            "share_sha256": list(share_sha256),
        }
    )


def session_id_for(task_id: int, spec_hash: bytes, addresses: Sequence[str]) -> str:
    """The session id every member derives from the task, the spec and everyone's link address
    (so no member picks it alone, and a new address set is a new session)."""
    h = hashlib.sha256(b"datum-stats-session-v1\0")
    h.update(f"{task_id}\0".encode() + spec_hash + b"\0" + "\0".join(addresses).encode())
    return f"t{task_id}-{h.hexdigest()[:40]}"


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError("a result value is not finite")
        return value
    if isinstance(value, tuple | list):
        return [_number(v) for v in value]
    return value


def result_json(result: QueryResult) -> dict[str, Any]:
    """A QueryResult as a JSON object (values with their bounds, per group)."""
    return {
        "groups": list(result.groups),
        "aggregates": [
            {
                "label": a.label,
                "func": str(a.func),
                "values": [_number(v) for v in a.values],
                "bounds": [float(b) for b in a.bounds],
                "tolerance": float(a.tolerance),
                "assumption": a.assumption,
                "edges": [float(e) for e in a.edges],
            }
            for a in result.aggregates
        ],
        "min_group_size": result.min_group_size,
        "where_tolerance": float(result.where_tolerance),
        "query_digest": result.query_digest,
        "numerics": {
            "field": str(result.numerics.field),
            "fraction_bits": result.numerics.fraction_bits,
            "div_iters": result.numerics.div_iters,
        },
    }
