"""The data provider's side of a PSI task, run by the node whose operator owns the dataset
(docs/PSI_NETWORK.md, steps 2-6).

* `spec_received`: the spec hashes to the on-chain specHash and names a dataset of the task.
* `offer_received`: every check before a key is fed (task, requester, consent now, the local
  copy opening the on-chain commitment, distinct keys = committed row count, the requested
  label columns exist), the labeled table prepared or reused (`psi_labels`), then the
  answer (this node's link address) is published and the engine starts.
* `receipt_received`: once the engine finished the session, the requester's receipt is
  countersigned and the attestation pushed to every committee member.

The engine (`psi_engine`: `run_psi` as rank 1, or `run_labeled` as the provider) runs in its
own process, supervised from a daemon thread, so the event loop never blocks and a stopping
node never waits for it. Logs carry task, session and dataset ids and counts only.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from compute.errors import DatumError, SpecError
from compute.psi import Table

from ..chain.tasks import TaskState, TaskView
from ..p2p import BlobStore, Caller, P2PClient, Peer, PeerError, StoredBlob
from ..p2p.errors import BadRequest, Conflict, Forbidden, NotFound, Unavailable
from .context import NodeContext
from .psi_attest import AttestationError, PsiReceipt, countersign, verify_receipt
from .psi_chain import attestation_facts, consent_problem, read_asset, requester_allowed
from .psi_datasets import DatasetMismatch, DatasetMissing, LocalDataset, check_dataset, load_dataset
from .psi_engine import EngineJob, EngineOutcome, start_engine, write_provider_result
from .psi_labels import LabelTables
from .psi_spec import (
    ANSWER_BLOB,
    ATTESTATION_BLOB,
    PROVIDER_RANK,
    PSI_KIND,
    PsiTaskSpec,
    SessionAnswer,
    SessionOffer,
    free_port,
    link_config,
    parse_message,
    session_task,
)
from .psi_store import SessionRecord, SessionState, SessionStore
from .store import BlobRecord

__all__ = ["PsiProvider"]

log = logging.getLogger(__name__)

RECEIPT_WAIT_S = 20.0  # how long a receipt upload waits for this node's engine (under client timeouts)


class PsiProvider:
    """The provider role of one node: sessions, engines, attestations."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.sessions = SessionStore(ctx.config.data_dir / "psi.sqlite3")
        self.work_dir = ctx.config.data_dir / "psi" / "work"
        self._blobs: BlobStore | None = None
        self._client: P2PClient | None = None
        self._spawn: Callable[[Awaitable[None], str], None] = lambda work, name: None
        self._finished: dict[int, asyncio.Event] = {}
        self._specs: dict[int, PsiTaskSpec] = {}
        self.label_tables = LabelTables(ctx.config.data_dir)
        for task_id in self.sessions.abort_running("the node stopped during the session"):
            log.warning("task %d: PSI session aborted: the node stopped while it ran", task_id)

    def bind(
        self, blobs: BlobStore, client: P2PClient, spawn: Callable[[Awaitable[None], str], None]
    ) -> None:
        """Attach the node's blob store, p2p client and background-task spawner."""
        self._blobs, self._client, self._spawn = blobs, client, spawn
        self.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def close(self) -> None:
        """Close the session store."""
        self.sessions.close()

    # -- spec ----------------------------------------------------------------------------------

    async def spec_received(self, blob: StoredBlob, caller: Caller, view: TaskView) -> None:
        """Check and keep the spec (its hash is on chain)."""
        data = await asyncio.to_thread(Path(blob.path).read_bytes)
        spec = _spec_for(data, view)
        self.ctx.store.record_blob(
            BlobRecord(view.task_id, blob.name, str(blob.path), blob.sha256, blob.size_bytes)
        )
        self._specs[view.task_id] = spec
        log.info("task %d: PSI spec accepted (dataset %d, %s)", view.task_id, spec.dataset_id, spec.protocol)

    async def spec_of(self, task_id: int) -> PsiTaskSpec | None:
        """The task's accepted spec, if any."""
        if task_id in self._specs:
            return self._specs[task_id]
        blob = self.ctx.store.blobs(task_id).get("spec")
        if blob is None:
            return None
        spec = PsiTaskSpec.model_validate_json(await asyncio.to_thread(Path(blob.path).read_bytes))
        self._specs[task_id] = spec
        return spec

    # -- offer ---------------------------------------------------------------------------------

    async def offer_received(self, blob: StoredBlob, caller: Caller, view: TaskView) -> None:
        """Run every check, publish the answer and start the engine; `Conflict` when refused."""
        task_id = view.task_id
        offer = _parse(SessionOffer, await asyncio.to_thread(Path(blob.path).read_bytes), "the offer")
        if session_task(offer.session_id) != task_id:
            raise BadRequest("the offer's session id names another task", code="bad_offer")
        self._check_requester(caller, view)
        spec = await self.spec_of(task_id)
        if spec is None:
            raise Conflict(f"upload the spec of task {task_id} first", code="spec_first")
        known = self.sessions.get(task_id)
        if known is not None:
            raise Conflict(f"task {task_id} had its session already ({known.state})", code="session_exists")
        now = await self.ctx.ops.chain_time()
        if view.state not in (TaskState.REQUESTED, TaskState.ACTIVE) or now >= view.deadline:
            raise Conflict(f"task {task_id} is closed", code="task_closed")
        try:
            table, rows, local = await self._checked_dataset(spec, view, now)
            job = await self._job(task_id, spec, table, local)
        except _Refusal as exc:
            self.sessions.insert(
                SessionRecord(task_id, SessionState.REFUSED, spec.dataset_id, error=exc.message)
            )
            log.warning("task %d: PSI session refused (%s)", task_id, exc.code)
            raise Conflict(exc.message, code=exc.code) from None
        host = self.ctx.config.listen_host
        port = free_port(host)
        while f"{host}:{port}" == offer.requester_link:  # same host: never the requester's port
            port = free_port(host)
        answer = SessionAnswer(session_id=offer.session_id, provider_link=f"{host}:{port}")
        link = link_config(spec, PROVIDER_RANK, offer, answer, float(view.deadline - now))
        record = SessionRecord(
            task_id, SessionState.RUNNING, spec.dataset_id, offer.session_id, view.requester, rows
        )
        if not self.sessions.insert(record):
            raise Conflict(f"task {task_id} had its session already", code="session_exists")
        assert self._blobs is not None
        await asyncio.to_thread(
            self._blobs.put_bytes, task_id, ANSWER_BLOB, answer.model_dump_json().encode(), self.ctx.signer
        )
        finished = self._finished[task_id] = asyncio.Event()
        future = start_engine(job, link, self.work_dir, task_id)
        self._spawn(self._follow_engine(task_id, spec, table, future, finished), f"psi-engine-{task_id}")
        log.info(
            "task %d: PSI session %s started as provider of dataset %d (%s, %d keys)",
            task_id,
            offer.session_id,
            spec.dataset_id,
            spec.mode,
            rows,
        )

    async def _job(self, task_id: int, spec: PsiTaskSpec, table: Table, local: LocalDataset) -> EngineJob:
        """What the engine runs; for labeled PSI the label columns are checked and the table
        prepared (or the stored one reused)."""
        if not spec.labeled:
            return EngineJob(spec, table, local.key)
        missing = [c for c in spec.labels if c not in table.columns]
        if missing:
            raise _Refusal(
                f"dataset {spec.dataset_id} has no column {missing[0]!r} (label columns: "
                f"{', '.join(c for c in table.columns if c != local.key)})",
                "unknown_label_column",
            )
        commitment = str(local.document.get("content_commitment", ""))
        try:
            prepared = await asyncio.to_thread(self.label_tables.prepared, spec, table, local.key, commitment)
        except SpecError as exc:
            raise _Refusal(f"dataset {spec.dataset_id}: {exc}", "label_too_long") from None
        log.info(
            "task %d: label table of dataset %d %s (%s, key epoch %d; built %d, reused %d since start)",
            task_id,
            spec.dataset_id,
            "built" if prepared.built else "reused",
            spec.labeled_spec().algorithm.value,
            prepared.epoch,
            self.label_tables.built,
            self.label_tables.reused,
        )
        return EngineJob(spec, table, local.key, prepared.provider)

    def _check_requester(self, caller: Caller, view: TaskView) -> None:
        if caller.address.lower() != view.requester.lower():
            raise Forbidden("only the task's requester runs its PSI session", code="not_requester")

    async def _checked_dataset(
        self, spec: PsiTaskSpec, view: TaskView, now: int
    ) -> tuple[Table, int, LocalDataset]:
        dataset_id = spec.dataset_id
        if dataset_id not in view.dataset_ids:
            raise _Refusal(f"dataset {dataset_id} is not one of the task's datasets", "dataset_not_in_task")
        asset = await read_asset(self.ctx.ops, dataset_id)
        if asset.owner.lower() != self.ctx.operator.lower():
            raise _Refusal(f"dataset {dataset_id} is not served by this node", "not_provider")
        listed = asset.open or await requester_allowed(self.ctx.ops, dataset_id, view.requester)
        problem = consent_problem(asset, listed=listed, now=now)
        if problem is not None:
            raise _Refusal(problem, "consent_refused")
        try:
            local = load_dataset(self.ctx.config.data_dir, dataset_id)
            table, rows = await asyncio.to_thread(
                check_dataset,
                local,
                chain_id=self.ctx.chain_id,
                metadata_hash=asset.metadata_hash,
                row_count=asset.row_count,
                rules=spec.key_rules(),
            )
        except DatasetMismatch as exc:
            raise _Refusal(str(exc), exc.code) from None
        except DatasetMissing as exc:
            raise _Refusal(str(exc), "dataset_missing") from None
        except SpecError as exc:
            raise _Refusal(f"dataset {dataset_id}: {exc}", "dataset_unreadable") from None
        return table, rows, local

    async def _follow_engine(
        self,
        task_id: int,
        spec: PsiTaskSpec,
        table: Table,
        future: asyncio.Future[EngineOutcome],
        finished: asyncio.Event,
    ) -> None:
        try:
            result = await future
        except DatumError as exc:
            self.sessions.transition(task_id, SessionState.ABORTED, error=_one_line(exc))
            log.warning("task %d: PSI session aborted (%s: %s)", task_id, type(exc).__name__, _one_line(exc))
        except Exception as exc:
            self.sessions.transition(task_id, SessionState.ABORTED, error=type(exc).__name__)
            log.exception("task %d: PSI engine failed", task_id)
        else:
            if result.rows is not None:  # reveal=both: the provider's own side, for its operator only
                await asyncio.to_thread(
                    write_provider_result,
                    self.ctx.config.data_dir,
                    spec.dataset_id,
                    task_id,
                    table.columns,
                    result.rows,
                )
            self.sessions.transition(task_id, SessionState.DONE)
            if result.query_size is not None:
                log.info(
                    "task %d: PSI session done (provider side, %d keys, labeled query of %d keys)",
                    task_id,
                    result.own_size,
                    result.query_size,
                )
            else:
                log.info("task %d: PSI session done (provider side, %d keys)", task_id, result.own_size)
        finally:
            finished.set()

    # -- receipt -------------------------------------------------------------------------------

    async def receipt_received(self, blob: StoredBlob, caller: Caller, view: TaskView) -> None:
        """Countersign the requester's receipt once this node's engine finished the session."""
        task_id = view.task_id
        self._check_requester(caller, view)
        receipt = _parse(PsiReceipt, await asyncio.to_thread(Path(blob.path).read_bytes), "the receipt")
        session = self.sessions.get(task_id)
        if session is None or session.state is SessionState.REFUSED:
            raise NotFound(f"this node ran no PSI session for task {task_id}", code="no_session")
        facts = await attestation_facts(self.ctx.ops, self.ctx.chain_id, view)
        try:
            verify_receipt(receipt, facts, session.session_id)
        except AttestationError as exc:
            raise BadRequest(str(exc), code="bad_receipt") from None
        if receipt.dataset_id != session.dataset_id:
            raise BadRequest("the receipt names another dataset", code="bad_receipt")
        finished = self._finished.get(task_id)
        if session.state is SessionState.RUNNING and finished is not None:
            try:
                await asyncio.wait_for(finished.wait(), RECEIPT_WAIT_S)
            except TimeoutError:
                raise Unavailable(
                    "the provider's engine is still running; retry", code="still_running"
                ) from None
            session = self.sessions.get(task_id)
            assert session is not None
        if session.state is not SessionState.DONE:
            raise Conflict(
                f"the provider's side of session {session.session_id} did not complete ({session.state}: "
                f"{session.error or 'no detail'})",
                code="provider_aborted",
            )
        attestation = countersign(self.ctx.account, receipt, session.provider_rows)
        payload = attestation.to_bytes()
        self.sessions.transition(
            task_id, SessionState.ATTESTED, attestation_sha256=attestation.result_hash().hex()
        )
        log.info("task %d: receipt of session %s countersigned", task_id, session.session_id)
        self._spawn(self._push(view, payload), f"psi-attest-{task_id}")

    async def _push(self, view: TaskView, payload: bytes) -> None:
        assert self._client is not None
        client = self._client

        async def one(operator: str) -> None:
            node = await self.ctx.ops.node(operator)
            await client.upload_blob(
                Peer.of_node(node, self.ctx.chain_id), view.task_id, ATTESTATION_BLOB, payload
            )

        members = [op for op in view.committee if int(op, 16) != 0]
        outcomes = await asyncio.gather(*(one(op) for op in members), return_exceptions=True)
        for operator, outcome in zip(members, outcomes, strict=True):
            if isinstance(outcome, PeerError | ConnectionError | TimeoutError):
                log.warning(
                    "task %d: attestation not delivered to member %s (%s)",
                    view.task_id,
                    operator,
                    type(outcome).__name__,
                )
            elif isinstance(outcome, BaseException):
                log.error("task %d: pushing the attestation failed: %r", view.task_id, outcome)
            else:
                log.info("task %d: attestation delivered to member %s", view.task_id, operator)


class _Refusal(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message, self.code = message, code


def _parse(model: Any, data: bytes, what: str) -> Any:
    try:
        return parse_message(model, data, what)
    except SpecError as exc:
        raise BadRequest(str(exc), code="bad_message") from None


def _spec_for(data: bytes, view: TaskView) -> PsiTaskSpec:
    if view.kind != PSI_KIND:
        raise BadRequest(f"task {view.task_id} is not a PSI task", code="wrong_kind")
    if hashlib.sha256(data).digest() != view.spec_hash:
        raise BadRequest(
            f"the spec does not hash to task {view.task_id}'s on-chain specHash", code="spec_mismatch"
        )
    spec: PsiTaskSpec = _parse(PsiTaskSpec, data, "the spec")
    if spec.dataset_id not in view.dataset_ids:
        raise BadRequest(f"the spec names dataset {spec.dataset_id}, not one of the task's", code="bad_spec")
    return spec


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
