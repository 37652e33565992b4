"""The per-task state machine's actions (docs/NODE_DAEMON.md, "Per-task state").

`TaskSteps.advance(task_id)` runs the actions the task's state allows now, one state at a
time, until the task waits (for blobs, signatures, its submission turn) or is terminal.
Every action reads the chain before it writes to it, and persists its outcome before the
next one starts, so running `advance` again (after a restart, or a duplicate event) never
repeats work that is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

from ..chain.errors import ContractRevert
from ..chain.signer import SignedResult, public_output_hash, result_digest, sign_result
from ..chain.tasks import TaskState, TaskView
from ..p2p import P2PClient, Peer, PeerError, ResultSignature
from .context import NodeContext
from .inputs import INPUT_BLOBS
from .psi_spec import PSI_KIND
from .psi_steps import PsiCommitteeSteps
from .store import OPEN_STATES, NodeTaskState, SignatureRecord, TaskRecord
from .worker import EvalOutcome, evaluate_he

__all__ = ["TaskSteps"]

log = logging.getLogger(__name__)

S = NodeTaskState
EMPTY_OUTPUT_HASH = "0x" + public_output_hash(b"").hex()


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


class TaskSteps:
    """Actions per state; `executor` runs evaluations, `client` talks to the other members."""

    def __init__(
        self,
        ctx: NodeContext,
        executor: Callable[[], Executor],
        client: P2PClient,
        spawn: Callable[[Awaitable[None], str], None],
    ) -> None:
        self.ctx = ctx
        self._executor = executor
        self._client = client
        self._spawn = spawn
        self._quorum_at: dict[int, float] = {}
        self._posted: set[int] = set()
        self._checked_election: set[int] = set()
        self._actions: dict[NodeTaskState, Callable[[TaskRecord], Awaitable[bool]]] = {
            S.SEEN: self._accept,
            S.ACCEPTED: self._gather_inputs,
            S.INPUTS_READY: self._evaluate,
            S.COMPUTED: self._sign,
            S.SIGNED: self._aggregate,
            S.SUBMITTED: self._check_submission,
        }
        self._kind_actions = {PSI_KIND: PsiCommitteeSteps(ctx).actions()}  # kinds that differ from HE

    async def advance(self, task_id: int, stopping: Callable[[], bool]) -> None:
        """Run the task's actions until it waits, ends, or the node stops."""
        while not stopping():
            record = self.ctx.store.get(task_id)
            if record is None or record.state not in OPEN_STATES:
                return
            action = self._kind_actions.get(record.kind, {}).get(record.state, self._actions[record.state])
            if not await action(record):
                return

    # -- chain outcomes ------------------------------------------------------------------------

    def _settle_from_chain(self, record: TaskRecord, view: TaskView) -> bool:
        """Move a task the chain already closed to finalized/refunded; True when it did."""
        if view.state is TaskState.FINALIZED:
            mine = record.result_hash
            theirs = _hex(view.result_hash)
            if mine and mine != theirs:
                log.warning(
                    "task %d finalized with result %s, this node computed %s", record.task_id, theirs, mine
                )
            self.ctx.store.transition(record.task_id, S.FINALIZED, OPEN_STATES)
            log.info("task %d is finalized on chain", record.task_id)
            return True
        if view.state is TaskState.REFUNDED:
            self.ctx.store.transition(record.task_id, S.REFUNDED, OPEN_STATES)
            log.info("task %d was refunded on chain", record.task_id)
            return True
        return False

    # -- seen -> accepted ----------------------------------------------------------------------

    async def _check_election(self, record: TaskRecord) -> None:
        if record.task_id in self._checked_election or not record.request_block:
            return
        self._checked_election.add(record.task_id)
        try:
            recomputed, stored = await self.ctx.ops.election_check(record.task_id, record.request_block)
        except Exception as exc:  # a check, not a gate: the chain's committee is authoritative
            log.warning("task %d: could not recompute the election (%s)", record.task_id, type(exc).__name__)
            return
        if recomputed != stored:
            log.warning(
                "task %d: committee recomputed off chain %s differs from the chain's %s",
                record.task_id,
                recomputed,
                stored,
            )
        else:
            log.info("task %d: election recomputed off chain matches %s", record.task_id, stored)

    async def _accept(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        await self._check_election(record)
        view = await self.ctx.ops.task(task_id)
        if self._settle_from_chain(record, view):
            return True
        slot = next(
            (i for i, op in enumerate(view.committee) if op.lower() == self.ctx.operator.lower()), None
        )
        if slot is None:
            self.ctx.store.transition(task_id, S.FAILED, OPEN_STATES, error="no longer in the committee")
            log.warning("task %d: this node is no longer in its committee", task_id)
            return True
        self.ctx.store.update(task_id, committee=view.committee, accept_deadline=view.accept_deadline)
        if view.accepted_mask >> slot & 1:
            self.ctx.store.transition(task_id, S.ACCEPTED, {S.SEEN})
            return True
        if await self.ctx.ops.chain_time() > view.accept_deadline:
            self.ctx.store.transition(task_id, S.EXPIRED, OPEN_STATES, error="accept window closed")
            log.warning("task %d: accept window closed before this node accepted", task_id)
            return True
        try:
            sent = await self.ctx.ops.accept(task_id)
        except ContractRevert as exc:
            if exc.name == "TaskManager__AlreadyAccepted":
                self.ctx.store.transition(task_id, S.ACCEPTED, {S.SEEN})
                return True
            if exc.name == "TaskManager__AcceptWindow":
                self.ctx.store.transition(task_id, S.EXPIRED, OPEN_STATES, error="accept window closed")
                return True
            if exc.name == "TaskManager__UnexpectedState":
                return True  # re-read: finalized or refunded meanwhile
            raise
        self.ctx.store.transition(task_id, S.ACCEPTED, {S.SEEN}, accept_tx=sent.tx_hash)
        log.info("task %d accepted in slot %d (tx %s)", task_id, slot, sent.tx_hash)
        return True

    # -- accepted -> inputs_ready --------------------------------------------------------------

    async def _gather_inputs(self, record: TaskRecord) -> bool:
        blobs = self.ctx.store.blobs(record.task_id)
        if not all(name in blobs for name in INPUT_BLOBS):
            return False  # an upload wakes the task
        moved = self.ctx.store.transition(record.task_id, S.INPUTS_READY, {S.ACCEPTED})
        if moved:
            log.info("task %d: inputs ready", record.task_id)
        return moved

    # -- inputs_ready -> computed --------------------------------------------------------------

    async def _evaluate(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        blobs = self.ctx.store.blobs(task_id)
        out = self.ctx.result_path(task_id)
        if out.is_file():  # written by a run that stopped before recording it: reuse, never recompute
            digest = await asyncio.to_thread(_file_sha256, out)
            outcome = EvalOutcome(ok=True, result_sha256=digest, size_bytes=out.stat().st_size)
            log.info("task %d: reusing the result found on disk", task_id)
        else:
            self.ctx.store.count_evaluation(task_id)
            loop = asyncio.get_running_loop()
            log.info("task %d: evaluating in a worker", task_id)
            outcome = await loop.run_in_executor(
                self._executor(),
                evaluate_he,
                blobs["spec"].path,
                blobs["context"].path,
                blobs["columns"].path,
                str(out),
            )
        if not outcome.ok:
            self.ctx.store.transition(task_id, S.FAILED, OPEN_STATES, error=outcome.error)
            log.warning("task %d failed in evaluation (see the task's error in the node store)", task_id)
            return True
        self.ctx.store.transition(
            task_id,
            S.COMPUTED,
            {S.INPUTS_READY},
            result_hash="0x" + outcome.result_sha256,
            result_path=str(out),
        )
        log.info(
            "task %d computed in %.3f s: result %d bytes, sha256 %s",
            task_id,
            outcome.seconds,
            outcome.size_bytes,
            outcome.result_sha256,
        )
        return True

    # -- computed -> signed --------------------------------------------------------------------

    async def _sign(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        epoch = await self.ctx.ops.config_epoch()
        signed = sign_result(
            bytes(self.ctx.account.key),
            self.ctx.domain,
            task_id,
            bytes.fromhex(record.result_hash[2:]),
            public_output_hash(b""),
            epoch,
        )
        self.ctx.store.add_signature(
            SignatureRecord(
                task_id=task_id,
                signer=self.ctx.signer,
                operator=self.ctx.operator,
                result_hash=record.result_hash,
                output_hash=EMPTY_OUTPUT_HASH,
                epoch=epoch,
                signature=_hex(signed.signature),
            )
        )
        self.ctx.store.transition(task_id, S.SIGNED, {S.COMPUTED})
        log.info("task %d signed for config epoch %d", task_id, epoch)
        return True

    # -- signed -> submitted -> finalized ------------------------------------------------------

    def _own_signature(self, task_id: int) -> SignatureRecord | None:
        return next(
            (s for s in self.ctx.store.signatures(task_id) if s.signer.lower() == self.ctx.signer.lower()),
            None,
        )

    async def _broadcast(self, record: TaskRecord, own: SignatureRecord) -> None:
        payload = ResultSignature(
            result_hash=own.result_hash,
            public_output_hash=own.output_hash,
            config_epoch=own.epoch,
            signature=own.signature,
        )
        for operator in record.committee:
            if operator.lower() == self.ctx.operator.lower():
                continue
            try:
                node = await self.ctx.ops.node(operator)
                await self._client.post_signature(
                    Peer.of_node(node, self.ctx.chain_id), record.task_id, payload
                )
                log.info("task %d: signature posted to member %s", record.task_id, operator)
            except (PeerError, ConnectionError, TimeoutError) as exc:
                log.warning(
                    "task %d: could not post the signature to member %s (%s)",
                    record.task_id,
                    operator,
                    type(exc).__name__,
                )

    async def _aggregate(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        own = self._own_signature(task_id)
        if own is None:  # cannot happen after _sign; recover by signing again
            raise RuntimeError(f"task {task_id} is signed but holds no own signature")
        if task_id not in self._posted:
            self._posted.add(task_id)
            self._spawn(self._broadcast(record, own), f"broadcast-{task_id}")
        matching = [
            s
            for s in self.ctx.store.signatures(task_id)
            if (s.result_hash, s.output_hash, s.epoch) == (own.result_hash, own.output_hash, own.epoch)
        ]
        if len(matching) < record.quorum:
            return False  # a posted signature wakes the task
        view = await self.ctx.ops.task(task_id)
        if self._settle_from_chain(record, view):
            return True
        accepted = {
            op.lower(): slot for slot, op in enumerate(view.committee) if view.accepted_mask >> slot & 1
        }
        usable = [s for s in matching if s.operator.lower() in accepted]
        if len(usable) < view.quorum:
            return False
        slots = sorted(accepted[s.operator.lower()] for s in usable)
        me = self.ctx.operator.lower()
        rank = slots.index(accepted[me]) if me in accepted and accepted[me] in slots else 0
        loop = asyncio.get_running_loop()
        quorum_at = self._quorum_at.setdefault(task_id, loop.time())
        everyone = len(usable) == len(accepted)  # else give the others a moment: signers are paid
        collect_s = 0.0 if everyone else self.ctx.config.collect_window_s
        wait_s = quorum_at + collect_s + rank * self.ctx.config.submit_stagger_s - loop.time()
        if wait_s > 0:
            log.info(
                "task %d: %d of %d signatures; submitting in %.1f s unless finalized (rank %d)",
                task_id,
                len(usable),
                len(accepted),
                wait_s,
                rank,
            )
            self.ctx.kick(task_id, wait_s)
            return False
        return await self._submit(record, own, usable)

    async def _submit(self, record: TaskRecord, own: SignatureRecord, usable: list[SignatureRecord]) -> bool:
        task_id = record.task_id
        result_hash = bytes.fromhex(own.result_hash[2:])
        digest = result_digest(self.ctx.domain, task_id, result_hash, public_output_hash(b""), own.epoch)
        signed = [SignedResult(s.signer, bytes.fromhex(s.signature[2:]), digest) for s in usable]
        if not self.ctx.store.transition(task_id, S.SUBMITTED, {S.SIGNED}):
            return True
        try:
            sent = await self.ctx.ops.submit(task_id, result_hash, own.epoch, signed)
        except ContractRevert as exc:
            if exc.name == "TaskManager__UnexpectedState":
                log.info("task %d: another member finalized it first", task_id)
                return True  # _check_submission reads the chain
            if exc.name == "TaskManager__Deadline":
                self.ctx.store.transition(task_id, S.EXPIRED, OPEN_STATES, error="deadline passed")
                return True
            self.ctx.store.transition(task_id, S.SIGNED, {S.SUBMITTED}, error=exc.describe())
            self._quorum_at.pop(task_id, None)
            log.warning("task %d: submission reverted with %s; will retry", task_id, exc.name)
            self.ctx.kick(task_id, self.ctx.config.submit_stagger_s + 1.0)
            return False
        if not self.ctx.store.transition(
            task_id, S.FINALIZED, {S.SUBMITTED}, submit_tx=sent.tx_hash, finalize_tx=sent.tx_hash
        ):
            # TaskFinalized (our own transaction) can reach the listener before the receipt:
            # the task is already finalized, but the record still says who submitted.
            self.ctx.store.update(task_id, submit_tx=sent.tx_hash)
        log.info(
            "task %d finalized by this node with %d signatures (tx %s)", task_id, len(signed), sent.tx_hash
        )
        return True

    async def _check_submission(self, record: TaskRecord) -> bool:
        view = await self.ctx.ops.task(record.task_id)
        if self._settle_from_chain(record, view):
            return True
        self._quorum_at.pop(record.task_id, None)
        return self.ctx.store.transition(record.task_id, S.SIGNED, {S.SUBMITTED})


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
