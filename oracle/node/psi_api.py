"""The node's p2p handlers with PSI tasks (kind 2) dispatched to their own checks.

`PsiApi` wraps the HE `NodeApi`: a blob named ``psi-*``, or the ``spec`` of a PSI task, goes
to the provider role (spec, offer, receipt) or to the committee check (attestation); every
other call is the HE API's. Design: docs/PSI_NETWORK.md.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..chain.errors import ContractRevert
from ..chain.tasks import TaskView
from ..p2p import Caller, ResultSignature, StoredBlob
from ..p2p.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unavailable
from .api import NodeApi
from .context import NodeContext
from .psi_attest import AttestationError, verify_attestation
from .psi_chain import attestation_facts
from .psi_provider import PsiProvider
from .psi_spec import (
    ATTESTATION_BLOB,
    MAX_MESSAGE_BYTES,
    OFFER_BLOB,
    PSI_KIND,
    RECEIPT_BLOB,
    SPEC_BLOB,
)
from .store import OPEN_STATES, BlobRecord

__all__ = ["PsiApi"]

log = logging.getLogger(__name__)


class PsiApi:
    """Implements `oracle.p2p.NodeHandlers`: PSI blobs here, the rest through the HE API."""

    def __init__(self, ctx: NodeContext, inner: NodeApi, provider: PsiProvider) -> None:
        self.ctx = ctx
        self.inner = inner
        self.provider = provider
        self._kinds: dict[int, int] = {}
        self._accepting = True

    def stop_accepting(self) -> None:
        """Refuse new uploads from now on (shutdown)."""
        self._accepting = False
        self.inner.stop_accepting()

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
        """PSI blobs are checked here; anything else by the HE API."""
        name, task_id = blob.name, blob.task_id
        if not name.startswith("psi-") and (name != SPEC_BLOB or await self._kind(task_id) != PSI_KIND):
            await self.inner.blob_received(blob, caller)
            return
        if not self._accepting:
            raise Unavailable("the node is shutting down", code="shutting_down")
        if blob.size_bytes > MAX_MESSAGE_BYTES:
            raise PayloadTooLarge(f"{name} is {blob.size_bytes} bytes, over the limit of {MAX_MESSAGE_BYTES}")
        view = await self._view(task_id)
        if view.kind != PSI_KIND:
            raise BadRequest(f"task {task_id} is not a PSI task: {name} does not apply", code="wrong_kind")
        if name == SPEC_BLOB:
            await self.provider.spec_received(blob, caller, view)
        elif name == OFFER_BLOB:
            await self.provider.offer_received(blob, caller, view)
        elif name == RECEIPT_BLOB:
            await self.provider.receipt_received(blob, caller, view)
        elif name == ATTESTATION_BLOB:
            await self._attestation_received(blob, view)
        else:
            raise BadRequest(
                f"unknown blob {name!r}: a PSI task takes spec, {OFFER_BLOB}, {RECEIPT_BLOB} "
                f"and {ATTESTATION_BLOB}",
                code="unknown_blob",
            )

    async def _attestation_received(self, blob: StoredBlob, view: TaskView) -> None:
        """A committee member checks the attestation against the chain before it keeps it."""
        task_id = view.task_id
        record = self.ctx.store.get(task_id)
        if record is not None and record.state not in OPEN_STATES:
            raise Conflict(f"task {task_id} is {record.state} on this node", code="task_closed")
        data = await asyncio.to_thread(Path(blob.path).read_bytes)
        facts = await attestation_facts(self.ctx.ops, self.ctx.chain_id, view)
        try:
            attestation = verify_attestation(data, facts)
        except AttestationError as exc:
            log.warning("task %d: attestation refused (%s)", task_id, exc)
            raise BadRequest(str(exc), code="bad_attestation") from None
        self.ctx.store.record_blob(
            BlobRecord(task_id, blob.name, str(blob.path), blob.sha256, blob.size_bytes)
        )
        log.info(
            "task %d: attestation of session %s accepted (sha256 %s)",
            task_id,
            attestation.receipt.session_id,
            blob.sha256,
        )
        self.ctx.kick(task_id, 0.0)

    async def signature_received(self, task_id: int, signature: ResultSignature, caller: Caller) -> None:
        """A member's Result signature (the same for every kind)."""
        await self.inner.signature_received(task_id, signature, caller)

    async def task_result(self, task_id: int, caller: Caller) -> bytes:
        """The result for the receiver: for PSI, the attestation whose sha256 is the resultHash."""
        return await self.inner.task_result(task_id, caller)
