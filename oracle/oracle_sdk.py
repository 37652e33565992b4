"""The dApp developer's SDK for the DataOracle: build the inline statistics spec a consumer
contract passes to ``DataOracle.request``, deploy and fund the example `CreditScoreLender`,
ask it for a credit limit, and read a request's status with its public output decoded.

A consumer contract cannot upload a spec over p2p, so its spec travels inline in the
specURI (`oracle.node.oracle_path`); the nodes publish the aggregates named by the spec's
`public_output` (`oracle.node.oracle_output`). ``datum oracle ...`` is a thin layer over this.
Design: docs/ORACLE.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from web3 import Web3
from web3.contract import Contract

from compute.errors import ConfigError, SpecError
from compute.mpc import Query, TableSchema, parse_sql

from .chain import oracle as chain_oracle
from .chain import tasks
from .chain.artifacts import ArtifactStore
from .chain.contracts import DatumContracts
from .chain.deploy import Deployment, deploy_credit_lender
from .chain.oracle import OracleFulfilment, OracleRequest
from .chain.rpc import Chain
from .chain.tasks import TaskView
from .chain.txmanager import Sent, TxManager
from .node.oracle_output import OutputType, PublicOutputSpec, decode_public_output, parse_output_spec
from .node.oracle_path import inline_spec, inline_spec_uri
from .node.stats_spec import StatsTaskSpec

__all__ = [
    "InlineSpec",
    "OracleStatus",
    "canonical_value_names",
    "deploy_example",
    "inline_of",
    "oracle_status",
    "output_spec_of",
    "prepare_oracle_spec",
    "request_credit_limit",
    "wait_for_fulfilment",
]

DRAFT_MAX_ERROR = 1e-3  # the stats SDK's default, only to read the query's labels and scales
MIN_MAX_ERROR = 1e-15  # the engine's smallest accepted target


@dataclass(frozen=True)
class InlineSpec:
    """A spec ready for ``DataOracle.request``: its bytes, specHash (sha256), inline URI, the
    output spec and (when planned) the engine's stated absolute bound of each published value."""

    spec_json: bytes
    spec_hash: bytes
    spec_uri: str
    output: PublicOutputSpec
    bounds: dict[str, float] | None = None  # stated absolute error of each published value

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "spec_hash": "0x" + self.spec_hash.hex(),
            "spec_uri": self.spec_uri,
            "spec_bytes": len(self.spec_json),
            "public_output": self.output.model_dump(),
            "bounds": self.bounds,
        }


def canonical_value_names(query: Query, values: Sequence[str]) -> list[str]:
    """The aggregate labels of `values` as the engine prints them (``mean(income)`` becomes
    ``mean(bank.income)``), each optionally followed by ``@group``; `SpecError` when one is
    not selected by `query` or names an unknown group."""
    selected = [a.label for a in query.select]
    tables = ", ".join(t.name for t in query.tables)
    out = []
    for raw in values:
        text, sep, group = raw.strip().partition("@")
        try:
            (agg,) = parse_sql(
                f"SELECT {text} FROM {tables}",
                list(query.tables),
                min_group_size=query.min_group_size,
                reveal=query.reveal,
                accuracy=query.accuracy,
            ).select
        except ValueError as exc:  # SpecError / SqlError, or more than one aggregate
            raise SpecError(f"value {raw!r} is not one aggregate of the query's tables: {exc}") from None
        if agg.label not in selected:
            raise SpecError(
                f"value {raw!r} ({agg.label}) is not selected by the query: {', '.join(selected)}"
            )
        if sep and group not in query.groups:
            raise SpecError(f"value {raw!r}: the query has no group {group!r} ({', '.join(query.groups)})")
        out.append(agg.label + (f"@{group}" if sep else ""))
    return out


def inline_of(spec: StatsTaskSpec) -> InlineSpec:
    """A stats spec with a public output, in the form a consumer passes to ``DataOracle.request``."""
    if spec.output != "public" or spec.public_output is None:
        raise SpecError("an oracle spec publishes its answer: output 'public' with a public_output block")
    data = spec.canonical_json()
    return InlineSpec(data, spec.spec_hash(), inline_spec_uri(data), parse_output_spec(spec.public_output))


async def prepare_oracle_spec(
    chain: Chain,
    contracts: DatumContracts,
    *,
    dataset_ids: Sequence[int],
    tables: Sequence[TableSchema],
    sql: str,
    values: Sequence[str],
    decimals: int,
    types: Sequence[OutputType] | None = None,
    protocol: Literal["aby3", "cheetah"] = "aby3",
    table_of: dict[int, str] | None = None,
    min_group_size: int | None = None,
    max_error: float | None = None,
) -> InlineSpec:
    """The canonical `datum.stats.v1` spec of a public statistic for an oracle consumer, built
    by the stats network's own builder (`oracle.client_stats.prepare_stats`: datasets read
    from the chain, min_group_size defaulting to their largest consent minimum, the query
    planned) with ``output: "public"`` and a `public_output` naming `values`.

    `values` name the published aggregates (``mean(income)``, ``count(*)@north``), written
    back with the engine's labels; `types` default to uint256 each. `max_error` is the
    engine's accuracy target, relative to each aggregate's scale (docs/MPC.md); by default
    the tightest that makes every published value's stated absolute bound at most half a
    unit of its last decimal. The result carries those stated bounds. `SpecError` for
    everything refused (e.g. no fixed-point parameters meet the target).
    """
    from .client_stats import prepare_stats  # the stats SDK loads the p2p client: only here

    common: dict[str, Any] = {
        "dataset_ids": dataset_ids,
        "tables": tables,
        "sql": sql,
        "output": "public",
        "protocol": protocol,
        "table_of": table_of,
        "min_group_size": min_group_size,
    }
    draft = await prepare_stats(chain, contracts, **common, max_error=max_error or DRAFT_MAX_ERROR)
    names = canonical_value_names(draft.spec.engine_query(), values)
    output = parse_output_spec(
        {"values": names, "types": list(types) if types else ["uint256"] * len(names), "decimals": decimals}
    )
    labels = {label for label, _ in output.addresses()}
    if max_error is None:
        half_unit = 0.5 * 10.0**-decimals
        scales = [p.scale for p in draft.plan.aggregates if p.aggregate.label in labels and p.scale > 0]
        max_error = min([1.0, *(half_unit / scale for scale in scales)])
        max_error = max(max_error, MIN_MAX_ERROR)
    prepared = await prepare_stats(
        chain, contracts, **common, max_error=max_error, public_output=output.model_dump()
    )
    stated = {p.aggregate.label: p.bound for p in prepared.plan.aggregates}
    built = inline_of(prepared.spec)
    bounds = {name: stated[label] for name, (label, _) in zip(output.values, output.addresses(), strict=True)}
    return InlineSpec(built.spec_json, built.spec_hash, built.spec_uri, built.output, bounds)


def output_spec_of(spec_json: bytes) -> PublicOutputSpec | None:
    """The `public_output` of a stats spec's JSON, None when it has none (`SpecError` when
    it has an invalid one)."""
    try:
        raw = json.loads(spec_json)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("public_output") is None:
        return None
    return parse_output_spec(raw["public_output"])


def deploy_example(
    tx: TxManager,
    chain: Chain,
    store: ArtifactStore,
    deployment: Deployment,
    bank_dataset_a: int,
    bank_dataset_b: int,
    limit_bps: int,
    fund_wei: int,
) -> Deployment:
    """Deploy `CreditScoreLender` (owned by `tx`'s account) over two datasets, send it
    `fund_wei` tokens for fees, and return the manifest with its address."""
    c = DatumContracts(chain.w3, deployment, store)
    for dataset_id in (bank_dataset_a, bank_dataset_b):
        chain.call(c.data, "getAsset", dataset_id)  # DataRegistry__UnknownAsset when absent
    updated = deploy_credit_lender(tx, store, deployment, bank_dataset_a, bank_dataset_b, limit_bps)
    lender = updated.contracts.credit_score_lender
    assert lender is not None
    if fund_wei:
        balance = int(chain.call(c.token, "balanceOf", tx.address))
        if balance < fund_wei:
            raise ConfigError(f"{tx.address} holds {balance} wei of the token, cannot fund {fund_wei}")
        tx.send(c.token, "transfer", lender, fund_wei)
    return updated


def request_credit_limit(
    tx: TxManager,
    c: DatumContracts,
    lender: Contract,
    *,
    applicant: str,
    spec_hash: bytes,
    spec_uri: str,
    fee_wei: int,
    deadline: int,
    committee_size: int,
    quorum: int,
) -> tuple[int, int, Sent]:
    """``CreditScoreLender.requestCreditLimit`` as its owner; returns (request id, task id, tx)."""
    sent = tx.send(
        lender,
        "requestCreditLimit",
        Web3.to_checksum_address(applicant),
        spec_hash,
        spec_uri,
        fee_wei,
        deadline,
        committee_size,
        quorum,
    )
    (event,) = c.events_in(c.oracle, sent.receipt, "OracleRequested")
    return int(event.args["requestId"]), int(event.args["taskId"]), sent


@dataclass(frozen=True)
class OracleStatus:
    """A request, its task, its fulfilment (None while undelivered) and the decoded output."""

    request: OracleRequest
    task: TaskView
    fulfilment: OracleFulfilment | None
    output_spec: PublicOutputSpec | None
    decoded: dict[str, Decimal] | None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (decimals as strings, exact)."""
        f = self.fulfilment
        return {
            "request": self.request.to_json(),
            "task_state": self.task.state.name.lower(),
            "task_deadline": self.task.deadline,
            "result_hash": "0x" + self.task.result_hash.hex(),
            "fulfilment": None
            if f is None
            else {
                "tx_hash": f.tx_hash,
                "block": f.block_number,
                "callback_succeeded": f.callback_succeeded,
                "public_output": "0x" + f.public_output.hex(),
            },
            "public_output_spec": None if self.output_spec is None else self.output_spec.model_dump(),
            "decoded": None if self.decoded is None else {k: str(v) for k, v in self.decoded.items()},
        }


def _inline_output_spec(chain: Chain, c: DatumContracts, view: TaskView) -> PublicOutputSpec | None:
    for event in tasks.task_history(chain, c, view.task_id):
        if event.name == "TaskRequested":
            try:
                data = inline_spec(str(event.args["specURI"]), view.spec_hash)
                return None if data is None else output_spec_of(data)
            except SpecError:  # not ours to judge here: status shows the raw output instead
                return None
    return None


def oracle_status(
    chain: Chain, c: DatumContracts, request_id: int, output_spec: PublicOutputSpec | None = None
) -> OracleStatus:
    """Read request `request_id`; decode its output with `output_spec`, else with the
    `public_output` of its inline spec when it has one."""
    request = chain_oracle.get_request(chain, c, request_id)
    view = tasks.get_task(chain, c, request.task_id)
    fulfilment = chain_oracle.fulfilment_of(chain, c, request_id) if request.delivered else None
    spec = output_spec or _inline_output_spec(chain, c, view)
    decoded = None
    if fulfilment is not None and spec is not None:
        try:
            decoded = decode_public_output(fulfilment.public_output, spec)
        except SpecError:
            decoded = None
    return OracleStatus(request, view, fulfilment, spec, decoded)


def wait_for_fulfilment(
    chain: Chain, c: DatumContracts, request_id: int, *, timeout_s: float, poll_s: float = 0.2
) -> OracleFulfilment:
    """Poll until request `request_id` is delivered; `ConfigError` naming the task's state on timeout."""
    stop = time.monotonic() + timeout_s
    while True:
        if chain_oracle.get_request(chain, c, request_id).delivered:
            found = chain_oracle.fulfilment_of(chain, c, request_id)
            if found is not None:
                return found
        if time.monotonic() > stop:
            record = chain_oracle.get_request(chain, c, request_id)
            state = tasks.get_task(chain, c, record.task_id).state.name.lower()
            raise ConfigError(
                f"oracle request {request_id} not delivered within {timeout_s:.0f} s (task "
                f"{record.task_id} is {state})"
            )
        time.sleep(poll_s)
