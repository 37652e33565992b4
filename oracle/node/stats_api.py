"""The node's p2p handlers with stats tasks (kind 3) dispatched to their own checks.

`StatsApi` wraps the node's other handlers (`PsiApi` over `NodeApi`): for a kind-3 task the
``spec`` (from the requester, to members and provider nodes) and the ``mpc-share-<part>``
blobs (from provider nodes, to members) are checked here; the result fetch returns, for
output ``requester``, the statement and this member's output-share blob. Every other call is
the wrapped API's. Design: docs/STATS_NETWORK.md.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

from ..chain.errors import ContractRevert
from ..chain.tasks import TaskView
from ..p2p import Caller, NodeHandlers, ResultSignature, StoredBlob
from ..p2p.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable
from .context import NodeContext
from .stats_committee import StatsCommittee
from .stats_provider import StatsProvider
from .stats_spec import MAX_SPEC_BYTES, SPEC_BLOB, STATS_KIND, canonical_json, share_part_of
from .store import OPEN_STATES, BlobRecord, NodeTaskState

__all__ = ["StatsApi", "result_bundle"]

log = logging.getLogger(__name__)

_HAS_RESULT = {NodeTaskState.COMPUTED, NodeTaskState.SIGNED, NodeTaskState.SUBMITTED, NodeTaskState.FINALIZED}


def result_bundle(statement: bytes, rank: int, share: bytes) -> bytes:
    """What a member serves its requester for output `requester`: the signed statement and
    its own output-share blob (canonical JSON, the bytes base64)."""
    return canonical_json(
        {
            "statement": base64.b64encode(statement).decode(),
            "rank": rank,
            "share": base64.b64encode(share).decode(),
        }
    )


class StatsApi:
    """Implements `oracle.p2p.NodeHandlers`: stats blobs here, the rest through `inner`."""

    def __init__(
        self, ctx: NodeContext, inner: NodeHandlers, committee: StatsCommittee, provider: StatsProvider
    ) -> None:
        self.ctx = ctx
        self.inner = inner
        self.committee = committee
        self.provider = provider
        self._kinds: dict[int, int] = {}
        self._accepting = True

    def stop_accepting(self) -> None:
        """Refuse new uploads from now on (shutdown)."""
        self._accepting = False
        stop = getattr(self.inner, "stop_accepting", None)
        if callable(stop):
            stop()

    async def _view(self, task_id: int) -> TaskView:
        try:
            view = await self.ctx.ops.task(task_id)
        except ContractRevert as exc:
            raise NotFound(f"task {task_id}: {exc}", code="no_such_task") from None
        self._kinds[task_id] = view.kind
        return view

    async def _kind(self, task_id: int) -> int:
        record = self.ctx.store.get(task_id)
        if record is not None and record.kind:
            return record.kind
        if task_id not in self._kinds:
            await self._view(task_id)
        return self._kinds[task_id]

    # -- NodeHandlers ------------------------------------------------------------------------

    async def task_spec(self, task_id: int, caller: Caller) -> bytes:
        """The spec bytes uploaded for the task."""
        return await self.inner.task_spec(task_id, caller)

    async def blob_received(self, blob: StoredBlob, caller: Caller) -> None:
        """Stats blobs are checked here; anything else by the wrapped API."""
        name, task_id = blob.name, blob.task_id
        is_stats_name = name.startswith("mpc-")
        if not is_stats_name and (name != SPEC_BLOB or await self._kind(task_id) != STATS_KIND):
            await self.inner.blob_received(blob, caller)
            return
        if not self._accepting:
            raise Unavailable("the node is shutting down", code="shutting_down")
        view = await self._view(task_id)
        if view.kind != STATS_KIND:
            raise BadRequest(f"task {task_id} is not a stats task: {name} does not apply", code="wrong_kind")
        part = share_part_of(name)
        if name == SPEC_BLOB:
            await self._spec_received(blob, caller, view)
        elif part is not None:
            await self.committee.share_received(blob, caller, part, view)
        else:
            raise BadRequest(
                f"unknown blob {name!r}: a stats task takes spec and mpc-share-<part>", code="unknown_blob"
            )

    async def _spec_received(self, blob: StoredBlob, caller: Caller, view: TaskView) -> None:
        task_id = view.task_id
        if caller.address.lower() != view.requester.lower():
            raise BadRequest("only the task's requester uploads its spec", code="not_requester")
        if blob.size_bytes > MAX_SPEC_BYTES:
            raise PayloadTooLarge(f"the spec is {blob.size_bytes} bytes, over the limit of {MAX_SPEC_BYTES}")
        record = self.ctx.store.get(task_id)
        if record is not None and record.state not in OPEN_STATES:
            raise Conflict(f"task {task_id} is {record.state} on this node", code="task_closed")
        data = await asyncio.to_thread(Path(blob.path).read_bytes)
        spec = self.committee.check_spec(data, view)
        await self.provider.spec_received(spec, view)  # a refusal (409) removes the blob
        self.ctx.store.record_blob(
            BlobRecord(task_id, blob.name, str(blob.path), blob.sha256, blob.size_bytes)
        )
        self.committee.remember_spec(task_id, spec)
        log.info(
            "task %d: stats spec accepted (%d part(s), %s, output %s)",
            task_id,
            len(spec.parts),
            spec.protocol,
            spec.output,
        )
        if record is not None:
            self.ctx.kick(task_id, 0.0)

    async def signature_received(self, task_id: int, signature: ResultSignature, caller: Caller) -> None:
        """A member's Result signature (the same for every kind)."""
        await self.inner.signature_received(task_id, signature, caller)

    async def task_result(self, task_id: int, caller: Caller) -> bytes:
        """For output `requester`: the statement and this member's output-share blob; else the
        wrapped API's result."""
        record = self.ctx.store.get(task_id)
        if record is None or record.kind != STATS_KIND:
            return await self.inner.task_result(task_id, caller)
        if record.state not in _HAS_RESULT or not record.result_path:
            raise NotFound(f"this node holds no result of task {task_id}", code="no_result")
        spec = await self.committee.spec_of(task_id)
        if spec is None or spec.output != "requester":
            return await self.inner.task_result(task_id, caller)
        rank = record.slot_of(self.ctx.operator)
        share_path = self.committee.task_dir(task_id) / "output-share.bin"
        statement, share = await asyncio.gather(
            asyncio.to_thread(Path(record.result_path).read_bytes), asyncio.to_thread(share_path.read_bytes)
        )
        log.info("task %d: statement and output share fetched by %s", task_id, caller.address)
        return result_bundle(statement, rank if rank is not None else -1, share)
