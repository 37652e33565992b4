"""A committee member's actions for a PSI task (kind 2) where they differ from HE.

`accepted -> inputs_ready` once the attestation is held (the API verified it against the
chain before recording it); `inputs_ready -> computed` writes it as the task's result, its
sha256 being the resultHash. Signing, aggregation and submission are the shared steps
(docs/NODE_DAEMON.md); the public output is empty: with reveal=me nothing is public.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from .context import NodeContext
from .psi_spec import ATTESTATION_BLOB
from .store import NodeTaskState, TaskRecord

__all__ = ["PsiCommitteeSteps"]

log = logging.getLogger(__name__)

S = NodeTaskState
Action = Callable[[TaskRecord], Awaitable[bool]]


class PsiCommitteeSteps:
    """The PSI-specific actions, by state."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def actions(self) -> dict[NodeTaskState, Action]:
        """Actions that replace the HE ones for this kind."""
        return {S.ACCEPTED: self._gather, S.INPUTS_READY: self._compute}

    async def _gather(self, record: TaskRecord) -> bool:
        if ATTESTATION_BLOB not in self.ctx.store.blobs(record.task_id):
            return False  # the provider's upload wakes the task
        moved = self.ctx.store.transition(record.task_id, S.INPUTS_READY, {S.ACCEPTED})
        if moved:
            log.info("task %d: attestation held", record.task_id)
        return moved

    async def _compute(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        blob = self.ctx.store.blobs(task_id)[ATTESTATION_BLOB]
        out = self.ctx.results_dir / f"{task_id}.psi"
        data = Path(blob.path).read_bytes()  # at most 64 KiB
        if not out.is_file():
            self.ctx.store.count_evaluation(task_id)
            out.parent.mkdir(parents=True, exist_ok=True)
            temp = out.with_name(f".{out.name}.part")
            temp.write_bytes(data)
            os.replace(temp, out)
        digest = hashlib.sha256(out.read_bytes()).hexdigest()
        self.ctx.store.transition(
            task_id, S.COMPUTED, {S.INPUTS_READY}, result_hash="0x" + digest, result_path=str(out)
        )
        log.info("task %d: PSI result hash %s (the attestation's sha256)", task_id, digest)
        return True
