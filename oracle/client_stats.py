"""The requester SDK for joint statistics (kind 3): plan a query over registered datasets,
request it, hand the spec to the committee and the providers' nodes, wait for the quorum, and
get the answer with its error bounds (docs/STATS_NETWORK.md)::

    prepared = await prepare_stats(chain, contracts, dataset_ids=(1, 2, 3), tables=(people,),
                                   sql="SELECT mean(income) FROM people", output="requester")
    async with DatumClient(chain, contracts, account) as client:
        outcome = await run_stats(client, prepared, fee_wei=10**18)
    print(outcome.result["aggregates"])

Everything that can be refused is refused before any request: an unknown table or column,
a query the engine cannot plan (too large, too many groups, an unmet accuracy target), a
dataset that does not exist, a min_group_size below a dataset's on-chain minimum. Consent
(kind allowed, requester, expiry, uses left) is checked by the chain at request time, and
again by each provider's node before it shares anything.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from web3.exceptions import ContractLogicError

from compute.errors import ConfigError, ProtocolAbort, SpecError
from compute.mpc import Accuracy, Partition, Plan, Reveal, TableSchema, parse_sql, reconstruct_result

from .chain import staking, tasks
from .chain.contracts import DatumContracts
from .chain.errors import ContractRevert
from .chain.rpc import Chain, RetryPolicy, revert_data
from .chain.tasks import TaskRequest
from .chain.txmanager import TxManager
from .client import DatumClient, Finalized, Submitted, TaskFailed
from .node.oracle_path import inline_spec_uri
from .node.stats_spec import (
    SPEC_BLOB,
    STATS_KIND,
    STATUS_BLOB,
    StatsPart,
    StatsTaskSpec,
    StatusMessage,
    result_json,
    spec_uri,
)
from .p2p import P2PClient, Peer, PeerError, PeerNotFound, PeerRejected
from .p2p.routes import HEADER_UPLOADER

__all__ = [
    "DatasetFacts",
    "PreparedStats",
    "StatsOutcome",
    "prepare_stats",
    "run_stats",
]

Output = Literal["requester", "public"]
Progress = Callable[[str, int, int], None]
QUORUM = {"aby3": 2, "cheetah": 2}


@dataclass(frozen=True)
class DatasetFacts:
    """What the chain says about one dataset a query reads."""

    dataset_id: int
    owner: str
    rows: int
    min_group_size: int


@dataclass(frozen=True)
class PreparedStats:
    """A planned query: the spec (its hash goes on chain) and the plan every node derives."""

    spec: StatsTaskSpec
    plan: Plan
    datasets: tuple[DatasetFacts, ...]

    @property
    def spec_json(self) -> bytes:
        """The canonical spec bytes."""
        return self.spec.canonical_json()


@dataclass(frozen=True)
class StatsOutcome:
    """A finished stats task: the answer (values with bounds), transactions and timings."""

    task_id: int
    output: str
    result: dict[str, Any]
    public_output: bytes
    committee: tuple[str, ...]
    signers: tuple[str, ...]
    request_tx: str
    finalize_tx: str
    result_hash: bytes
    timings_s: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape of ``datum task submit stats --wait``."""
        return {
            "task_id": self.task_id,
            "output": self.output,
            "result": self.result,
            "public_output": "0x" + self.public_output.hex(),
            "tx": {"request": self.request_tx, "finalize": self.finalize_tx},
            "committee": list(self.committee),
            "signers": list(self.signers),
            "result_hash": "0x" + self.result_hash.hex(),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


def _dataset_facts(chain: Chain, contracts: DatumContracts, dataset_id: int) -> DatasetFacts:
    try:
        owner, _price, is_model, _revoked, rows, _hash, policy, _uri = chain.call(
            contracts.data, "getAsset", dataset_id
        )
    except ContractRevert as exc:
        raise SpecError(f"dataset {dataset_id}: {exc.describe()}") from None
    if is_model:
        raise SpecError(f"asset {dataset_id} is a model, not a dataset")
    return DatasetFacts(dataset_id, str(owner), int(rows), int(policy[4]))


async def prepare_stats(
    chain: Chain,
    contracts: DatumContracts,
    *,
    dataset_ids: Sequence[int],
    tables: Sequence[TableSchema],
    sql: str,
    output: Output,
    protocol: Literal["aby3", "cheetah"] = "aby3",
    table_of: dict[int, str] | None = None,
    min_group_size: int | None = None,
    max_error: float = 1e-3,
    recv_timeout_ms: int = 30_000,
    connect_timeout_ms: int = 30_000,
    deadline_s: int = 600,
    public_output: dict[str, Any] | None = None,
) -> PreparedStats:
    """Parse and plan the query against the declared `tables` and the chain's datasets.

    `table_of` maps a dataset to its table (default: the only table, or with one table per
    dataset, the tables in dataset order). A vertical query (`FROM a JOIN b`) needs equal
    committed row counts per table (refused otherwise). `min_group_size`
    defaults to the largest on-chain minimum of the datasets and may not be below it.
    `SpecError` for everything refused.
    """
    if not dataset_ids:
        raise SpecError("name at least one dataset")
    if not tables:
        raise SpecError("declare the datasets' table schema (--schema)")
    if table_of is None:
        if len(tables) == 1:
            table_of = {d: tables[0].name for d in dataset_ids}
        elif len(tables) == len(dataset_ids):  # one table per dataset, in order (vertical)
            table_of = {d: t.name for d, t in zip(dataset_ids, tables, strict=True)}
        else:
            raise SpecError(
                f"{len(tables)} tables declared for {len(dataset_ids)} datasets: say which dataset "
                "belongs to which (ID:TABLE)"
            )
    facts = tuple(
        await asyncio.gather(*(asyncio.to_thread(_dataset_facts, chain, contracts, d) for d in dataset_ids))
    )
    floor = max(f.min_group_size for f in facts)
    if min_group_size is None:
        min_group_size = max(floor, 1)
    elif min_group_size < floor:
        worst = next(f for f in facts if f.min_group_size == floor)
        raise SpecError(
            f"min group size {min_group_size} is below dataset {worst.dataset_id}'s consent policy "
            f"(minGroupSize {floor})"
        )
    reveal = Reveal.external() if output == "requester" else Reveal.everyone()
    query = parse_sql(
        sql, list(tables), min_group_size=min_group_size, reveal=reveal, accuracy=Accuracy(max_error)
    )
    try:
        spec = StatsTaskSpec.model_validate(
            {
                "schema": "datum.stats.v1",
                "query": query.to_json(),
                "parts": [StatsPart(dataset_id=d, table=table_of[d]) for d in dataset_ids],
                "protocol": protocol,
                "output": output,
                "recv_timeout_ms": recv_timeout_ms,
                "connect_timeout_ms": connect_timeout_ms,
                "deadline_s": deadline_s,
                "public_output": public_output,
            }
        )
    except KeyError as exc:
        raise SpecError(f"dataset {exc.args[0]} has no table (ID:TABLE)") from None
    except ValueError as exc:
        raise SpecError(f"the stats spec is invalid: {exc}") from None
    if query.partition is Partition.VERTICAL:
        _check_aligned(spec, facts)
    plan = spec.plan({f.dataset_id: f.rows for f in facts})
    return PreparedStats(spec, plan, facts)


def _check_aligned(spec: StatsTaskSpec, facts: Sequence[DatasetFacts]) -> None:
    """A vertical query joins row-aligned tables: every table's committed rows (summed over
    its parts) must be equal; `SpecError` naming the datasets and their counts otherwise."""
    rows = {f.dataset_id: f.rows for f in facts}
    per_table: dict[str, list[int]] = {}
    for part in spec.parts:
        per_table.setdefault(part.table, []).append(part.dataset_id)
    totals = {table: sum(rows[d] for d in ids) for table, ids in per_table.items()}
    if len(set(totals.values())) > 1:
        detail = "; ".join(
            f"table {table} (dataset{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}): "
            f"{totals[table]} rows"
            for table, ids in per_table.items()
        )
        raise SpecError(
            "a vertical query (FROM a JOIN b) needs row-aligned tables with equal committed row "
            f"counts, got {detail}; align them first (a PSI task with --reveal both, then "
            "`datum data align` on each side) and register the aligned files"
        )


class StatsRequester:
    """The requester's steps for one stats task, over a `DatumClient`'s chain and key."""

    def __init__(self, client: DatumClient, *, peer_timeout_s: float = 60.0) -> None:
        self.client = client
        self.chain: Chain = client.chain
        self.contracts: DatumContracts = client.contracts
        self.account: LocalAccount = client.account
        self.tx: TxManager = client.tx
        self.p2p = P2PClient(self.account, timeout_s=peer_timeout_s)

    async def close(self) -> None:
        """Close the connections to the nodes."""
        await self.p2p.close()

    def _preflight(self, request: TaskRequest) -> None:
        """Simulate requestTask so consent errors surface before the escrow approval."""
        call = self.contracts.tasks.get_function_by_name("requestTask")(request.as_tuple())
        try:
            self.chain.rpc(lambda: call.call({"from": self.account.address}), "requestTask() preflight")
        except ContractLogicError as exc:
            error = self.chain.errors.decode(revert_data(exc))
            if not error.name.startswith("ERC20"):
                raise error from None

    async def request(
        self, prepared: PreparedStats, *, fee_wei: int, timeout_s: int, inline: bool = False
    ) -> Submitted:
        """Escrow and request; a consent refusal (decoded) reverts before any transaction.

        `inline`: carry the spec in the specURI (as the DataOracle does) instead of handing it
        over p2p; the nodes then take it from the request itself."""
        started = time.perf_counter()
        spec = prepared.spec

        def run() -> Submitted:
            now = int(self.chain.raw_block("latest").get("timestamp", "0x0"), 16)
            request = TaskRequest(
                kind=STATS_KIND,
                committee_size=spec.world,
                quorum=QUORUM[spec.protocol],
                deadline=now + timeout_s,
                fee_wei=fee_wei,
                spec_hash=spec.spec_hash(),
                spec_uri=inline_spec_uri(spec.canonical_json()) if inline else spec_uri(spec.spec_hash()),
                dataset_ids=spec.dataset_ids,
            )
            self._preflight(request)
            task_id, sent = tasks.request_task(self.tx, self.chain, self.contracts, request)
            (event,) = self.contracts.events_in(self.contracts.tasks, sent.receipt, "TaskRequested")
            return Submitted(
                task_id=task_id,
                request_tx=sent.tx_hash,
                request_block=sent.block_number,
                committee=tuple(str(a) for a in event.args["committee"]),
                quorum=request.quorum,
                deadline=request.deadline,
                request_s=time.perf_counter() - started,
            )

        return await asyncio.to_thread(run)

    def _public_output_of(self, tx_hash: str) -> bytes:
        """The publicOutput argument of the finalizing call (submitResult, or the oracle's fulfill)."""
        tx = self.chain.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        target = str(tx["to"]).lower()
        contract = (
            self.contracts.oracle
            if target == str(self.contracts.oracle.address).lower()
            else self.contracts.tasks
        )
        _fn, args = contract.decode_function_input(tx["input"])
        return bytes(args["publicOutput"])

    async def _peer(self, operator: str) -> Peer:
        node = await asyncio.to_thread(staking.get_node, self.chain, self.contracts, operator)
        if not node.registered:
            raise ConfigError(f"{operator} runs no registered node")
        return Peer.of_node(node, self.chain.chain_id)

    async def _accepted(self, task_id: int, slot: int, timeout_s: float) -> None:
        limit = time.monotonic() + timeout_s
        while True:
            view = await asyncio.to_thread(tasks.get_task, self.chain, self.contracts, task_id)
            if view.accepted_mask >> slot & 1:
                return
            if time.monotonic() > limit:
                raise ProtocolAbort(
                    f"task {task_id}: member of slot {slot} did not accept in {timeout_s:g} s"
                )
            await asyncio.sleep(0.1)

    async def hand_spec(
        self, submitted: Submitted, prepared: PreparedStats, *, accept_timeout_s: float
    ) -> None:
        """Upload the spec to every member (once it accepted) and every provider's node; the
        first refusal (e.g. a provider's `409 min_group_size`) aborts with its reason."""
        task_id = submitted.task_id
        targets: dict[str, int | None] = {op: slot for slot, op in enumerate(submitted.committee)}
        for facts in prepared.datasets:
            targets.setdefault(facts.owner, None)
        data = prepared.spec_json

        async def one(operator: str, slot: int | None) -> None:
            peer = await self._peer(operator)
            if slot is not None:
                await self._accepted(task_id, slot, accept_timeout_s)
            try:
                await self.p2p.upload_blob(peer, task_id, SPEC_BLOB, data)
            except PeerRejected as exc:
                raise ProtocolAbort(f"node {operator} refused the task: {exc}") from None

        outcomes = await asyncio.gather(
            *(one(op, slot) for op, slot in targets.items()), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                if isinstance(outcome, PeerError | ConnectionError):
                    raise ProtocolAbort(f"task {task_id}: {outcome}") from None
                raise outcome

    async def watch_members(self, submitted: Submitted, poll_s: float = 1.0) -> None:
        """Return never; raise `ProtocolAbort` with the reason once a member reports that its
        run failed (every member is needed, so the task cannot finalize any more). A member
        that cannot be reached is not asked again (the others report its absence)."""
        peers = {op: await self._peer(op) for op in submitted.committee}
        async with P2PClient(self.account, timeout_s=5.0, retry=RetryPolicy(attempts=1)) as probe:
            while True:
                for operator, peer in list(peers.items()):
                    try:
                        answer = await probe.get(peer, f"/v1/tasks/{submitted.task_id}/blobs/{STATUS_BLOB}")
                    except PeerNotFound:
                        continue
                    except (PeerError, ConnectionError, TimeoutError):
                        del peers[operator]
                        continue
                    if answer.headers.get(HEADER_UPLOADER, "").lower() != peer.audience.address.lower():
                        continue
                    try:
                        status = StatusMessage.parse(answer.body)
                    except SpecError:
                        continue
                    raise ProtocolAbort(f"member {operator} (rank {status.rank}) stopped: {status.reason}")
                await asyncio.sleep(poll_s)

    async def answer(
        self, final: Finalized, submitted: Submitted, prepared: PreparedStats
    ) -> tuple[dict[str, Any], bytes]:
        """The answer, checked against the chain: for `requester`, the statement (sha256 =
        resultHash) and every member's output-share blob (hashes in the statement), rebuilt
        here; for `public`, the result (sha256 = resultHash) and its public output."""
        task_id = final.task_id
        view = await asyncio.to_thread(tasks.get_task, self.chain, self.contracts, task_id)
        if prepared.spec.output == "public":
            data = await self.client.fetch_result(task_id, submitted.committee, final.result_hash)
            output = await asyncio.to_thread(self._public_output_of, final.finalize_tx)
            if keccak(output) != view.public_output_hash:
                raise TaskFailed(
                    f"task {task_id}: the finalizing transaction's output is not the one on chain"
                )
            if prepared.spec.public_output is None and output != data:
                raise TaskFailed(f"task {task_id}: the public output is not the committee's result")
            return json.loads(data), output
        blobs: dict[int, bytes] = {}
        statement: dict[str, Any] | None = None
        reasons = []
        for slot, operator in enumerate(submitted.committee):
            try:
                bundle = json.loads(await self.p2p.fetch_result(await self._peer(operator), task_id))
                raw = base64.b64decode(bundle["statement"])
                share = base64.b64decode(bundle["share"])
            except (PeerError, ConnectionError, ValueError, KeyError, TypeError) as exc:
                reasons.append(f"{operator}: {exc}")
                continue
            if hashlib.sha256(raw).digest() != final.result_hash:
                reasons.append(f"{operator}: statement does not hash to the on-chain resultHash")
                continue
            statement = json.loads(raw)
            if (
                int(bundle["rank"]) != slot
                or hashlib.sha256(share).hexdigest() != statement["share_sha256"][slot]
            ):
                reasons.append(f"{operator}: its output share is not the one the statement names")
                continue
            blobs[slot] = share
        if statement is None or len(blobs) != prepared.spec.world:
            raise TaskFailed(
                f"task {task_id}: not every member served its output share: " + "; ".join(reasons)
            )
        if statement["plan_digest"] != "0x" + prepared.plan.digest().hex():
            raise TaskFailed(f"task {task_id}: the committee ran another plan")
        try:
            result = await asyncio.to_thread(
                reconstruct_result, prepared.plan, prepared.spec.engine_protocol(), blobs
            )
        except SpecError as exc:
            raise TaskFailed(f"task {task_id}: the output shares do not rebuild the answer: {exc}") from None
        return result_json(result), b""


async def run_stats(
    client: DatumClient,
    prepared: PreparedStats,
    *,
    fee_wei: int,
    timeout_s: int = 900,
    accept_timeout_s: float = 120.0,
    progress: Progress | None = None,
    on_submitted: Callable[[Submitted], None] | None = None,
) -> StatsOutcome:
    """Request, hand over the spec, wait for the quorum result and get the answer."""
    requester = StatsRequester(client)
    try:
        submitted = await requester.request(prepared, fee_wei=fee_wei, timeout_s=timeout_s)
        if on_submitted is not None:
            on_submitted(submitted)
        try:
            started = time.perf_counter()
            await requester.hand_spec(submitted, prepared, accept_timeout_s=accept_timeout_s)
            handed = time.perf_counter() - started
            final = await _first(
                client.wait_finalized(submitted.task_id, timeout_s=timeout_s, progress=progress),
                requester.watch_members(submitted),
            )
            waited = time.perf_counter() - started - handed
            started = time.perf_counter()
            result, output = await requester.answer(final, submitted, prepared)
            answer_s = time.perf_counter() - started
        except (ProtocolAbort, PeerError, SpecError, ConfigError) as exc:
            raise TaskFailed(
                f"task {submitted.task_id} aborted: {exc}; after its deadline ({submitted.deadline}) "
                f"refund({submitted.task_id}) returns the escrow"
            ) from exc
    finally:
        await requester.close()
    return StatsOutcome(
        task_id=submitted.task_id,
        output=prepared.spec.output,
        result=result,
        public_output=output,
        committee=submitted.committee,
        signers=final.signers,
        request_tx=submitted.request_tx,
        finalize_tx=final.finalize_tx,
        result_hash=final.result_hash,
        timings_s={
            "request": submitted.request_s,
            "spec": handed,
            "wait_finalized": waited,
            "answer": answer_s,
        },
    )


async def _first(main: Coroutine[Any, Any, Finalized], watcher: Coroutine[Any, Any, None]) -> Finalized:
    """`main`'s result, unless `watcher` raises first (the loser is cancelled)."""
    done_task = asyncio.ensure_future(main)
    watch_task = asyncio.ensure_future(watcher)
    try:
        await asyncio.wait({done_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if watch_task.done() and not done_task.done():
            watch_task.result()  # raises the member's reason
        return await done_task
    finally:
        for task in (done_task, watch_task):
            task.cancel()
        await asyncio.gather(done_task, watch_task, return_exceptions=True)
