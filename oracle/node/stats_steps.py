"""A committee member's actions for a stats task (kind 3) where they differ from HE
(docs/STATS_NETWORK.md): `accepted -> inputs_ready` once the spec and every provider part's
share are held; `inputs_ready -> computed` exchanges link addresses and runs this member's
side of the MPC; `computed -> signed` signs the Result with the public output's hash; the
submission carries the public output. Accepting, aggregating signatures and reading the
chain's outcome are the shared steps (`TaskSteps`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path

from compute.errors import DatumError, SpecError
from compute.mpc import OutputShares, QueryResult

from ..chain.errors import ContractRevert
from ..chain.signer import SignedResult, public_output_hash, result_digest, sign_result
from ..p2p import P2PClient
from .context import NodeContext
from .oracle_output import encode_public_output, parse_output_spec
from .oracle_path import finalize_with_output
from .stats_committee import StatsCommittee, start_party
from .stats_spec import (
    OUTPUT_HASH_BLOB,
    STATS_KIND,
    STATUS_BLOB,
    OutputHashMessage,
    StatsTaskSpec,
    StatusMessage,
    canonical_json,
    result_json,
    result_statement,
)
from .steps import TaskSteps
from .store import OPEN_STATES, NodeTaskState, SignatureRecord, TaskRecord

__all__ = ["StatsTaskSteps"]

log = logging.getLogger(__name__)

S = NodeTaskState
SPARE_REFILL_DELAY_S = 3.0


class StatsTaskSteps(TaskSteps):
    """`TaskSteps` with kind 3's actions (the other kinds are unchanged)."""

    def __init__(
        self,
        ctx: NodeContext,
        executor: Callable[[], Executor],
        client: P2PClient,
        spawn: Callable[[Awaitable[None], str], None],
        committee: StatsCommittee,
    ) -> None:
        super().__init__(ctx, executor, client, spawn)
        self.committee = committee
        self._kind_actions[STATS_KIND] = {
            S.ACCEPTED: self._stats_gather,
            S.INPUTS_READY: self._stats_compute,
            S.COMPUTED: self._stats_sign,
        }

    # -- accepted -> inputs_ready --------------------------------------------------------------

    async def _stats_gather(self, record: TaskRecord) -> bool:
        spec = await self.committee.spec_of(record.task_id)
        if spec is not None:  # an inline spec (oracle) is known before this node accepted
            self.committee.prewarm(record.task_id)  # idempotent: the spare, or a new engine
        if spec is None or not self.committee.shares_complete(record.task_id, spec):
            return False  # the requester's spec and the providers' shares wake the task
        moved = self.ctx.store.transition(record.task_id, S.INPUTS_READY, {S.ACCEPTED})
        if moved:
            log.info("task %d: spec and %d share blob(s) held", record.task_id, len(spec.parts))
        return moved

    # -- inputs_ready -> computed --------------------------------------------------------------

    def _output_path(self, task_id: int) -> Path:
        return self.ctx.results_dir / f"{task_id}.stats-output"

    async def _stats_compute(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        view = await self.ctx.ops.task(task_id)
        if self._settle_from_chain(record, view):
            return True
        spec = await self.committee.spec_of(task_id)
        assert spec is not None
        rank = record.slot_of(self.ctx.operator)
        if rank is None:
            self.ctx.store.transition(task_id, S.FAILED, OPEN_STATES, error="no longer in the committee")
            return True
        loop = asyncio.get_running_loop()
        budget_s = float(view.deadline - await self.ctx.ops.chain_time())
        until = loop.time() + max(0.0, budget_s)
        self.ctx.store.count_evaluation(task_id)
        try:
            plan = await self.committee.plan_of(task_id, spec)
            mine = await asyncio.to_thread(self.committee.publish_link, task_id, rank)
            addresses, start_at = await self.committee.gather_links(view, mine, until)
            link = self.committee.link_for(view, spec, rank, addresses, until - loop.time(), start_at)
            shares = self.committee.shares(task_id, spec)
            log.info(
                "task %d: running the MPC as rank %d of %d (session %s)",
                task_id,
                rank,
                spec.world,
                link.session_id,
            )
            self.committee.run_started(task_id)
            try:
                outcome = await start_party(
                    plan,
                    spec,
                    link,
                    shares,
                    task_id,
                    cache_dir=self.committee.compile_cache,
                    prewarmed=self.committee.take_prewarmed(task_id),
                )
            finally:  # the next spare starts once this run's signing and submission are done
                self.committee.run_ended(task_id)
                loop.call_later(SPARE_REFILL_DELAY_S, self.committee.refill_spare)
            if isinstance(outcome, OutputShares):
                statement = await self._statement(
                    view.task_id, spec, view.spec_hash, link.session_id, plan, outcome, until
                )
                result, output = statement, b""
            elif isinstance(outcome, QueryResult):
                result = canonical_json(result_json(outcome))
                output = self._public_output(spec, outcome, result)
            else:
                raise SpecError(f"rank {rank} received no output ({type(outcome).__name__})")
        except (DatumError, TimeoutError, OSError) as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
            self.ctx.store.transition(task_id, S.FAILED, OPEN_STATES, error=reason)
            log.warning("task %d: the stats run failed on this node (%s)", task_id, type(exc).__name__)
            status = StatusMessage(task_id=task_id, rank=rank, state="failed", reason=reason)
            try:  # the requester reads it and stops waiting (the reason names no data)
                await asyncio.to_thread(
                    self.committee.publish, task_id, STATUS_BLOB, status.model_dump_json().encode()
                )
            except (DatumError, OSError) as error:
                log.warning("task %d: could not publish the failure (%s)", task_id, type(error).__name__)
            return True
        out = self.ctx.results_dir / f"{task_id}.stats"
        await asyncio.to_thread(_write, out, result)
        await asyncio.to_thread(_write, self._output_path(task_id), output)
        digest = hashlib.sha256(result).hexdigest()
        self.ctx.store.transition(
            task_id, S.COMPUTED, {S.INPUTS_READY}, result_hash="0x" + digest, result_path=str(out)
        )
        log.info(
            "task %d: stats computed, result hash %s, public output %d bytes", task_id, digest, len(output)
        )
        return True

    @staticmethod
    def _public_output(spec: StatsTaskSpec, result: QueryResult, result_bytes: bytes) -> bytes:
        if spec.public_output is None:
            return result_bytes
        return encode_public_output(result, parse_output_spec(spec.public_output))

    async def _statement(
        self,
        task_id: int,
        spec: StatsTaskSpec,
        spec_hash: bytes,
        session_id: str,
        plan: object,
        shares: OutputShares,
        until: float,
    ) -> bytes:
        """Keep this rank's output-share blob privately, exchange the blobs' hashes, and build
        the statement every member signs."""
        from compute.mpc import Plan

        assert isinstance(plan, Plan)
        private = self.committee.task_dir(task_id) / "output-share.bin"
        await asyncio.to_thread(_write, private, shares.blob)
        sha = hashlib.sha256(shares.blob).hexdigest()
        mine = OutputHashMessage(task_id=task_id, rank=shares.rank, session_id=session_id, sha256=sha)
        own = await asyncio.to_thread(
            self.committee.publish, task_id, OUTPUT_HASH_BLOB, mine.model_dump_json().encode()
        )
        view = await self.ctx.ops.task(task_id)
        raw = await self.committee.gather(view, OUTPUT_HASH_BLOB, shares.rank, own, until)
        hashes = []
        for rank, data in enumerate(raw):
            message = OutputHashMessage.parse(data)
            if (message.task_id, message.rank, message.session_id) != (task_id, rank, session_id):
                raise SpecError(f"member {view.committee[rank]} announced an output of another run")
            hashes.append(message.sha256)
        if hashes[shares.rank] != sha:
            raise SpecError("this member's published output hash is not its blob's (a stale run?)")
        return result_statement(
            task_id=task_id, session_id=session_id, spec_hash=spec_hash, plan=plan, share_sha256=hashes
        )

    # -- computed -> signed --------------------------------------------------------------------

    async def _stats_sign(self, record: TaskRecord) -> bool:
        task_id = record.task_id
        output = await asyncio.to_thread(self._output_path(task_id).read_bytes)
        output_hash = public_output_hash(output)
        epoch = await self.ctx.ops.config_epoch()
        signed = sign_result(
            bytes(self.ctx.account.key),
            self.ctx.domain,
            task_id,
            bytes.fromhex(record.result_hash[2:]),
            output_hash,
            epoch,
        )
        self.ctx.store.add_signature(
            SignatureRecord(
                task_id=task_id,
                signer=self.ctx.signer,
                operator=self.ctx.operator,
                result_hash=record.result_hash,
                output_hash="0x" + output_hash.hex(),
                epoch=epoch,
                signature="0x" + signed.signature.hex(),
            )
        )
        self.ctx.store.transition(task_id, S.SIGNED, {S.COMPUTED})
        log.info("task %d signed for config epoch %d", task_id, epoch)
        return True

    # -- signed -> submitted (with the public output) -------------------------------------------

    async def _submit(self, record: TaskRecord, own: SignatureRecord, usable: list[SignatureRecord]) -> bool:
        if record.kind != STATS_KIND:
            return await super()._submit(record, own, usable)
        task_id = record.task_id
        output = await asyncio.to_thread(self._output_path(task_id).read_bytes)
        result_hash = bytes.fromhex(own.result_hash[2:])
        digest = result_digest(self.ctx.domain, task_id, result_hash, public_output_hash(output), own.epoch)
        signed = [SignedResult(s.signer, bytes.fromhex(s.signature[2:]), digest) for s in usable]
        if not self.ctx.store.transition(task_id, S.SUBMITTED, {S.SIGNED}):
            return True
        try:
            sent = await finalize_with_output(self.ctx.ops, task_id, result_hash, output, own.epoch, signed)
        except ContractRevert as exc:
            if exc.name in ("TaskManager__UnexpectedState", "DataOracle__AlreadyDelivered"):
                log.info("task %d: another member finalized it first", task_id)
                return True
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
            self.ctx.store.update(task_id, submit_tx=sent.tx_hash)
        log.info(
            "task %d finalized by this node with %d signatures and a %d-byte public output (tx %s)",
            task_id,
            len(signed),
            len(output),
            sent.tx_hash,
        )
        return True


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)
