"""The data provider's side of a stats task (kind 3), run by the node whose operator owns a
dataset named in the task; it need not be a committee member (docs/STATS_NETWORK.md).

On the spec (uploaded by the requester, or inline in the task's URI) the node checks, for
each of its datasets in the spec, before anything leaves it: the dataset is one of the
task's, consent now (not revoked, kind stats allowed, requester open or allow-listed, not
expired), the query's min_group_size >= the dataset's on-chain minGroupSize, its local copy
opens the on-chain commitment with the same declared table and the committed row count, and
every value lies within its declaration. Then `share_part` (in a worker process) makes one
share blob per committee rank, and each blob is PUT (signed with the node key) to the member
of that slot once the member accepted the task. A refusal is recorded with a code and reason
(`<data_dir>/stats/provider/<task>.json`) and answered `409` to the spec upload.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from compute.errors import SpecError

from ..chain.tasks import TaskState, TaskView
from ..p2p import P2PClient, Peer, PeerError, PeerRejected
from ..p2p.errors import BadRequest, Conflict, Forbidden, Unavailable
from .context import NodeContext
from .psi_chain import AssetView, read_asset, requester_allowed
from .psi_datasets import DatasetMismatch, DatasetMissing, load_dataset
from .stats_chain import stats_consent_problem
from .stats_spec import StatsTaskSpec, share_blob
from .stats_worker import read_and_share

__all__ = ["ProviderOutcome", "StatsProvider"]

log = logging.getLogger(__name__)

PUSH_RETRY_S = 0.5


@dataclass(frozen=True)
class ProviderOutcome:
    """What this node did as a provider of a task: `shared`, `refused` (with code) or `pushed`."""

    task_id: int
    state: str
    parts: tuple[int, ...]
    code: str = ""
    reason: str = ""


class _Refusal(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


class StatsProvider:
    """The provider role of one node for stats tasks."""

    def __init__(self, ctx: NodeContext, executor: Callable[[], Executor]) -> None:
        self.ctx = ctx
        self._executor = executor
        self._client: P2PClient | None = None
        self._spawn: Callable[[Awaitable[None], str], None] = lambda work, name: None
        self._own: Callable[[TaskView, int, bytes], Awaitable[None]] | None = None
        self._started: set[int] = set()
        self.status_dir = ctx.config.data_dir / "stats" / "provider"

    def bind(
        self,
        client: P2PClient,
        spawn: Callable[[Awaitable[None], str], None],
        own_share: Callable[[TaskView, int, bytes], Awaitable[None]] | None = None,
    ) -> None:
        """Attach the node's p2p client and background-task spawner; `own_share` takes the
        share for this node's own committee slot without an upload (`accept_own_share`)."""
        self._client, self._spawn, self._own = client, spawn, own_share
        self.status_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def outcome(self, task_id: int) -> ProviderOutcome | None:
        """The recorded outcome for a task, if this node acted as its provider."""
        path = self.status_dir / f"{task_id}.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return ProviderOutcome(raw["task_id"], raw["state"], tuple(raw["parts"]), raw["code"], raw["reason"])

    def _record(self, outcome: ProviderOutcome) -> None:
        path = self.status_dir / f"{outcome.task_id}.json"
        temp = path.with_name(f".{path.name}.part")
        temp.write_text(json.dumps(outcome.__dict__ | {"parts": list(outcome.parts)}))
        os.replace(temp, path)

    async def own_parts(self, spec: StatsTaskSpec) -> dict[int, AssetView]:
        """The assets of every part, keyed by part index (all of them: the plan needs every
        part's row count)."""
        assets = await asyncio.gather(*(read_asset(self.ctx.ops, d) for d in spec.dataset_ids))
        return dict(enumerate(assets))

    async def spec_received(self, spec: StatsTaskSpec, view: TaskView) -> None:
        """Act as provider for this node's datasets in `spec` (none: nothing to do).

        Runs every check, shares, and starts the pushes; `Conflict` (409) with a code when it
        refuses. Idempotent per task: a second delivery of the spec changes nothing.
        """
        task_id = view.task_id
        assets = await self.own_parts(spec)
        mine = tuple(i for i, a in assets.items() if a.owner.lower() == self.ctx.operator.lower())
        if not mine or task_id in self._started:
            return
        known = self.outcome(task_id)
        if known is not None:
            if known.state == "refused":
                raise Conflict(known.reason, code=known.code)
            return
        self._started.add(task_id)
        try:
            blobs = await self._checked_shares(spec, view, assets, mine)
        except _Refusal as exc:
            self._record(ProviderOutcome(task_id, "refused", mine, exc.code, exc.message))
            log.warning("task %d: stats provider refused (%s)", task_id, exc.code)
            raise Conflict(exc.message, code=exc.code) from None
        self._record(ProviderOutcome(task_id, "shared", mine))
        log.info("task %d: shares of part(s) %s made for %d members", task_id, list(mine), spec.world)
        self._spawn(self._push_all(view, blobs), f"stats-push-{task_id}")

    async def _checked_shares(
        self, spec: StatsTaskSpec, view: TaskView, assets: dict[int, AssetView], mine: tuple[int, ...]
    ) -> dict[int, list[bytes]]:
        task_id = view.task_id
        now = await self.ctx.ops.chain_time()
        if view.state not in (TaskState.REQUESTED, TaskState.ACTIVE) or now >= view.deadline:
            raise _Refusal(f"task {task_id} is closed", "task_closed")
        for d in spec.dataset_ids:
            if d not in view.dataset_ids:
                raise _Refusal(f"dataset {d} is not one of task {task_id}'s datasets", "dataset_not_in_task")
        query = spec.engine_query()
        try:
            plan = spec.plan({a.dataset_id: a.row_count for a in assets.values()})
        except SpecError as exc:
            raise _Refusal(f"the query cannot run on these datasets: {exc}", "bad_plan") from None
        blobs: dict[int, list[bytes]] = {}
        for part in mine:
            asset = assets[part]
            listed = asset.open or await requester_allowed(self.ctx.ops, asset.dataset_id, view.requester)
            problem = stats_consent_problem(
                asset, listed=listed, now=now, min_group_size=query.min_group_size
            )
            if problem is not None:
                code = "min_group_size" if "min_group_size" in problem else "consent_refused"
                raise _Refusal(problem, code)
            table = query.schema(spec.parts[part].table)
            try:
                local = load_dataset(self.ctx.config.data_dir, asset.dataset_id)
            except DatasetMismatch as exc:
                raise _Refusal(str(exc), exc.code) from None
            except DatasetMissing as exc:
                raise _Refusal(str(exc), "dataset_missing") from None
            loop = asyncio.get_running_loop()
            shared = await loop.run_in_executor(
                self._executor(),
                functools.partial(
                    read_and_share,
                    local,
                    chain_id=self.ctx.chain_id,
                    metadata_hash=asset.metadata_hash,
                    row_count=asset.row_count,
                    table=table,
                    plan=plan,
                    protocol=spec.protocol,
                    part=part,
                ),
            )
            if shared.code:
                raise _Refusal(shared.reason, shared.code)
            blobs[part] = list(shared.blobs)
            log.info(
                "task %d: part %d (%d rows) read and checked in %.2f s, shared in %.2f s "
                "(%d bytes per member)",
                task_id,
                part,
                asset.row_count,
                shared.read_s,
                shared.share_s,
                len(shared.blobs[0]),
            )
        return blobs

    async def _push_all(self, view: TaskView, blobs: dict[int, list[bytes]]) -> None:
        members = list(view.committee)
        jobs = [
            self._push(view, slot, operator, part, shares[slot])
            for part, shares in blobs.items()
            for slot, operator in enumerate(members)
        ]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        failed = [o for o in outcomes if isinstance(o, BaseException)]
        for error in failed:
            log.warning(
                "task %d: a share was not delivered (%s: %s)", view.task_id, type(error).__name__, error
            )
        if not failed:
            self._record(ProviderOutcome(view.task_id, "pushed", tuple(blobs)))
            log.info("task %d: every share delivered", view.task_id)

    async def _push(self, view: TaskView, slot: int, operator: str, part: int, blob: bytes) -> None:
        assert self._client is not None
        task_id = view.task_id
        node = await self.ctx.ops.node(operator)
        peer = Peer.of_node(node, self.ctx.chain_id)
        while True:
            now = await self.ctx.ops.chain_time()
            if now >= view.deadline:
                raise TimeoutError(f"deadline passed before member {operator} took part {part}")
            current = await self.ctx.ops.task(task_id)
            if current.state not in (TaskState.REQUESTED, TaskState.ACTIVE):
                raise RuntimeError(f"task {task_id} is {current.state.name}")
            if current.committee[slot].lower() != operator.lower():
                raise RuntimeError(f"slot {slot} was refilled; its new member gets no share")
            if current.accepted_mask >> slot & 1:
                try:
                    if self._own is not None and operator.lower() == self.ctx.operator.lower():
                        await self._own(current, part, blob)  # this node's own slot: no upload
                    else:
                        await self._client.upload_blob(peer, task_id, share_blob(part), blob)
                except (PeerRejected, BadRequest, Forbidden, Conflict):
                    raise
                except (PeerError, ConnectionError, TimeoutError, Unavailable) as exc:
                    log.info("task %d: member %s not ready for part %d (%s)", task_id, operator, part, exc)
                else:
                    log.info("task %d: share of part %d delivered to slot %d", task_id, part, slot)
                    return
            await asyncio.sleep(PUSH_RETRY_S)
