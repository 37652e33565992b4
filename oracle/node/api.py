"""The node's answers to the p2p routes (`oracle.p2p.NodeHandlers`).

Uploads are checked before they are published (docs/NODE_DAEMON.md, "Protocol" step 3),
Result signatures are kept one per signer, and the private result goes to the task's
receiver only (the route's access rule). Every refusal is a p2p error with a message that
says what to fix; none echoes data.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from compute.he import HETaskSpec, spec_from_json

from ..chain.errors import ContractRevert
from ..p2p import Caller, ResultSignature, StoredBlob
from ..p2p.errors import ApiError, BadRequest, Conflict, NotFound, Unavailable
from .context import NodeContext
from .inputs import INPUT_BLOBS, SpecRejected, check_columns, check_context, check_spec
from .store import OPEN_STATES, BlobRecord, NodeTaskState, SignatureRecord, TaskRecord

__all__ = ["NodeApi"]

log = logging.getLogger(__name__)

_HAS_RESULT = {
    NodeTaskState.COMPUTED,
    NodeTaskState.SIGNED,
    NodeTaskState.SUBMITTED,
    NodeTaskState.FINALIZED,
}


class NodeApi:
    """Implements `oracle.p2p.NodeHandlers` over the node's task store."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self._specs: dict[int, HETaskSpec] = {}
        self._accepting = True

    def stop_accepting(self) -> None:
        """Refuse new uploads from now on (shutdown)."""
        self._accepting = False

    # -- helpers -----------------------------------------------------------------------------

    async def _spec_hash(self, task_id: int, record: TaskRecord | None) -> str:
        if record is not None and record.spec_hash:
            return record.spec_hash
        try:
            view = await self.ctx.ops.task(task_id)
        except ContractRevert as exc:
            raise NotFound(f"task {task_id}: {exc}", code="no_such_task") from None
        return "0x" + view.spec_hash.hex()

    async def spec_of(self, task_id: int) -> HETaskSpec | None:
        """The task's parsed spec, once its spec blob was accepted."""
        spec = self._specs.get(task_id)
        if spec is not None:
            return spec
        blob = self.ctx.store.blobs(task_id).get("spec")
        if blob is None:
            return None
        data = await asyncio.to_thread(Path(blob.path).read_bytes)
        spec = spec_from_json(data)
        self._specs[task_id] = spec
        return spec

    def _fail(self, task_id: int, record: TaskRecord | None, error: str) -> None:
        if record is None:
            self.ctx.store.insert(TaskRecord(task_id=task_id, state=NodeTaskState.FAILED, error=error))
        else:
            self.ctx.store.transition(task_id, NodeTaskState.FAILED, OPEN_STATES, error=error)
        log.warning("task %d failed: its spec does not parse", task_id)

    # -- NodeHandlers ------------------------------------------------------------------------

    async def task_spec(self, task_id: int, caller: Caller) -> bytes:
        """The spec bytes the requester uploaded (anyone may check them against the chain)."""
        blob = self.ctx.store.blobs(task_id).get("spec")
        if blob is None:
            raise NotFound(f"this node holds no spec for task {task_id}", code="no_spec")
        return await asyncio.to_thread(Path(blob.path).read_bytes)

    async def blob_received(self, blob: StoredBlob, caller: Caller) -> None:
        """Check an input blob against the task's spec before it is published."""
        task_id, name = blob.task_id, blob.name
        if not self._accepting:
            raise Unavailable("the node is shutting down", code="shutting_down")
        if name not in INPUT_BLOBS:
            raise BadRequest(
                f"unknown blob {name!r}: an HE task takes {', '.join(INPUT_BLOBS)}", code="unknown_blob"
            )
        record = self.ctx.store.get(task_id)
        if record is None:
            # Inputs bind to a request only once this node has seen it confirmed: a request a
            # reorg removes must not leave its inputs behind for the next task with its id.
            raise Unavailable(
                f"task {task_id} is not confirmed on this node yet; upload after it accepts",
                code="not_confirmed",
            )
        if record.state not in OPEN_STATES:
            raise Conflict(f"task {task_id} is {record.state} on this node", code="task_closed")
        path = Path(blob.path)
        if name == "spec":
            spec_hash = await self._spec_hash(task_id, record)
            data = await asyncio.to_thread(path.read_bytes)
            try:
                spec = check_spec(data, spec_hash, self.ctx.config.limits.max_spec_bytes)
            except SpecRejected as exc:
                self._fail(task_id, record, exc.message)
                raise
            self._specs[task_id] = spec
        else:
            known = await self.spec_of(task_id)
            if known is None:
                raise Conflict(f"upload the spec of task {task_id} first", code="spec_first")
            try:
                if name == "context":
                    await asyncio.to_thread(check_context, path, blob.size_bytes, known)
                else:
                    context = self.ctx.store.blobs(task_id).get("context")
                    context_sha = context.sha256 if context is not None else None
                    await asyncio.to_thread(check_columns, path, blob.size_bytes, known, context_sha)
            except ApiError as exc:  # the requester may upload a correct blob until the deadline
                if record is not None:
                    self.ctx.store.update(task_id, error=f"{name} refused: {exc.message}")
                log.info("task %d: %s refused (%s)", task_id, name, exc.code)
                raise
        self.ctx.store.record_blob(BlobRecord(task_id, name, str(path), blob.sha256, blob.size_bytes))
        log.info(
            "task %d: blob %s accepted (%d bytes, sha256 %s)", task_id, name, blob.size_bytes, blob.sha256
        )
        self.ctx.kick(task_id, 0.0)

    async def signature_received(self, task_id: int, signature: ResultSignature, caller: Caller) -> None:
        """Keep a member's Result signature (the first one per signer) and wake the task."""
        operator = caller.operator or caller.address
        record = SignatureRecord(
            task_id=task_id,
            signer=caller.address,
            operator=operator,
            result_hash=signature.result_hash.lower(),
            output_hash=signature.public_output_hash.lower(),
            epoch=signature.config_epoch,
            signature=signature.signature.lower(),
        )
        kept = self.ctx.store.add_signature(record)
        if kept is not None and (kept.result_hash, kept.output_hash, kept.epoch) != (
            record.result_hash,
            record.output_hash,
            record.epoch,
        ):
            log.warning(
                "task %d: member %s signed two different results (%s, %s)",
                task_id,
                operator,
                kept.result_hash,
                record.result_hash,
            )
        log.info("task %d: signature of member %s received", task_id, operator)
        if self.ctx.store.get(task_id) is not None:
            self.ctx.kick(task_id, 0.0)

    async def task_result(self, task_id: int, caller: Caller) -> bytes:
        """The result envelope, for the task's receiver (it checks it against the chain)."""
        record = self.ctx.store.get(task_id)
        if record is None or record.state not in _HAS_RESULT or not record.result_path:
            raise NotFound(f"this node holds no result of task {task_id}", code="no_result")
        log.info("task %d: result fetched by %s", task_id, caller.address)
        return await asyncio.to_thread(Path(record.result_path).read_bytes)
