"""A committee member's side of a stats task (kind 3): the spec and plan it holds, the share
blobs it receives from the providers (checked against the plan, then kept out of the public
blob store), the link exchange with the other members and the engine run.

Share blobs: a member's share of a provider part, together with another member's share,
reconstructs the provider's columns (ABY3 replicated shares); so a received share blob is
moved at once to ``<data_dir>/stats/<task>/`` (0600 in a 0700 folder) where only this node's
own process reads it, and a `GET` of the blob by any task party finds nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from compute.errors import ComputeError, SpecError
from compute.mpc import CommitteeLink, OutputShares, PartyReport, Plan, Prewarmed, QueryResult, run_party

from ..chain.tasks import TaskView
from ..p2p import BlobStore, Caller, P2PClient, Peer, PeerError, StoredBlob
from ..p2p.errors import BadRequest, Conflict, Forbidden, Unavailable
from ..p2p.routes import HEADER_UPLOADER
from .context import NodeContext
from .psi_chain import read_asset
from .stats_spec import LINK_BLOB, SPEC_BLOB, LinkMessage, StatsTaskSpec, session_id_for, share_blob
from .stats_worker import check_share_blob
from .store import OPEN_STATES, BlobRecord

__all__ = ["StatsCommittee"]

log = logging.getLogger(__name__)

LINK_POLL_S = 0.1  # how often a member polls the others' link addresses
LINK_START_MARGIN_S = 0.4  # members open their links this long after the last address is out
ENGINE_READY_WAIT_S = 60.0
MAX_PREWARMED = 2  # engine processes waiting for a run at once (each holds SPU and JAX in memory)
PREWARM_MAX_AGE_S = 900.0  # one not used by then is ended
PartyOutput = QueryResult | PartyReport | OutputShares


class StatsCommittee:
    """Specs, plans, shares and links of the stats tasks this node is a member of."""

    def __init__(self, ctx: NodeContext, executor: Callable[[], Executor]) -> None:
        self.ctx = ctx
        self._executor = executor
        self._blobs: BlobStore | None = None
        self._client: P2PClient | None = None
        self._specs: dict[int, StatsTaskSpec] = {}
        self._plans: dict[int, Plan] = {}
        self._prewarmed: dict[int, tuple[Prewarmed, float]] = {}
        self._spare: Prewarmed | None = None
        self._running: set[int] = set()  # tasks whose MPC runs on this node now
        self._background: set[asyncio.Task[None]] = set()
        self.root = ctx.config.data_dir / "stats"

    def bind(self, blobs: BlobStore, client: P2PClient) -> None:
        """Attach the node's blob store and p2p client."""
        self._blobs, self._client = blobs, client
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.compile_cache.mkdir(exist_ok=True, mode=0o700)
        self.refill_spare()

    def close(self) -> None:
        """End every engine process started ahead (the node stops)."""
        handles = [h for h, _ in self._prewarmed.values()]
        if self._spare is not None:
            handles.append(self._spare)
        self._prewarmed.clear()
        self._spare = None
        for handle in handles:
            handle.close()

    @property
    def compile_cache(self) -> Path:
        """The engine's compile cache (one executable per plan): a repeated query shape is not
        compiled again."""
        return self.root / "compiled"

    def task_dir(self, task_id: int) -> Path:
        """This node's private folder for a task (shares, results)."""
        folder = self.root / str(task_id)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return folder

    # -- spec and plan -------------------------------------------------------------------------

    def check_spec(self, data: bytes, view: TaskView) -> StatsTaskSpec:
        """The spec, once it hashes to the on-chain specHash, parses, and fits the task."""
        if hashlib.sha256(data).digest() != view.spec_hash:
            raise BadRequest(
                f"the spec does not hash to task {view.task_id}'s on-chain specHash", code="spec_mismatch"
            )
        try:
            spec = StatsTaskSpec.parse(data)
        except SpecError as exc:
            raise BadRequest(str(exc), code="bad_spec") from None
        if tuple(sorted(spec.dataset_ids)) != tuple(sorted(view.dataset_ids)):
            raise BadRequest(
                f"the spec names datasets {list(spec.dataset_ids)}, the task {list(view.dataset_ids)}",
                code="bad_spec",
            )
        if spec.world != len(view.committee):
            raise BadRequest(
                f"{spec.protocol} needs a committee of {spec.world}, the task has {len(view.committee)}",
                code="bad_spec",
            )
        return spec

    def inline_spec_of(
        self, task_id: int, spec_hash: bytes, uri: str, *, is_member: bool
    ) -> StatsTaskSpec | None:
        """The spec carried inline in the task's URI (None when the URI names a p2p spec, or
        the inline one does not parse: the task then never gets inputs). A member records it
        as the task's spec blob."""
        from .oracle_path import inline_spec

        try:
            data = inline_spec(uri, spec_hash)
            if data is None:
                return None
            spec = StatsTaskSpec.parse(data)
        except SpecError as exc:
            log.warning("task %d: inline stats spec refused: %s", task_id, exc)
            return None
        if is_member:
            path = self.task_dir(task_id) / "spec.json"
            path.write_bytes(data)
            self.ctx.store.record_blob(
                BlobRecord(task_id, SPEC_BLOB, str(path), hashlib.sha256(data).hexdigest(), len(data))
            )
            self._specs[task_id] = spec
            self.prewarm(task_id)
        return spec

    def remember_spec(self, task_id: int, spec: StatsTaskSpec) -> None:
        """Keep the accepted spec (its blob is recorded by the caller); a member starts its
        engine process now."""
        self._specs[task_id] = spec
        self.prewarm(task_id)

    # -- the engine process, started ahead of the run ------------------------------------------

    def refill_spare(self) -> None:
        """Start the spare engine process if there is none (node setting `stats_spare_engine`):
        spawned while the node is idle (at start, and after each run of this node), it imports
        SPU and JAX and faults in `stats_engine_memory_mb` of working memory, so that the next
        task's engine is ready at once and its MPC does not pay for page faults (docs/MPC.md,
        "Engine memory"). A node holds at most one spare."""
        config = self.ctx.config
        if not (config.stats_prewarm and config.stats_spare_engine) or self._running:
            return  # while a run computes here the spare would take its CPU; its end calls again
        if self._spare is not None:
            if self._spare.process.is_alive():
                return
            self._spare.close()
            self._spare = None
        try:
            spare = Prewarmed(memory_mb=config.stats_engine_memory_mb)
        except (OSError, ComputeError) as exc:
            log.warning("could not start a spare engine process (%s)", exc)
            return
        self._spare = spare
        self._in_background(self._announce_spare(spare))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as a task of the running loop (dropped when no loop runs: unit use)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            work.close()
            return
        job = loop.create_task(work)
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    def run_started(self, task_id: int) -> None:
        """This node's MPC run of `task_id` begins (no spare starts until it ends)."""
        self._running.add(task_id)

    def run_ended(self, task_id: int) -> None:
        """This node's MPC run of `task_id` ended (`refill_spare` may start one again)."""
        self._running.discard(task_id)

    async def _announce_spare(self, spare: Prewarmed) -> None:
        if await asyncio.to_thread(spare.ready, ENGINE_READY_WAIT_S * 5):
            log.info(
                "spare engine ready (pid %s, %d MB of working memory faulted in %.1f s)",
                spare.process.pid,
                spare.memory_mb,
                spare.touch_s or 0.0,
            )

    def prewarm(self, task_id: int) -> None:
        """Give this member's task an engine process now: the spare (`refill_spare`) if there
        is one, else a new `Prewarmed` (spawned, SPU and JAX imported), so the imports overlap
        with the providers' sharing and pushes instead of delaying the link. Only on a member,
        one per task, at most `MAX_PREWARMED` at once (otherwise the run spawns its process
        as before). A process its task never used (the task closed, or it waited longer than
        `PREWARM_MAX_AGE_S`) is ended when the next task's spec arrives, or when the node
        stops. Off with the node setting `stats_prewarm = false`."""
        if not self.ctx.config.stats_prewarm:
            return
        record = self.ctx.store.get(task_id)
        if record is None or record.slot_of(self.ctx.operator) is None or task_id in self._prewarmed:
            return
        self._reap()
        if len(self._prewarmed) >= MAX_PREWARMED:
            return
        spare, self._spare = self._spare, None
        if spare is not None and spare.process.is_alive():
            self._prewarmed[task_id] = (spare, time.monotonic())
            log.info("task %d: takes the spare engine process", task_id)
        else:
            if spare is not None:
                spare.close()
            try:
                self._prewarmed[task_id] = (Prewarmed(), time.monotonic())
            except OSError as exc:
                log.warning("task %d: could not start an engine process ahead (%s)", task_id, exc)
                return
            log.info("task %d: engine process started ahead of the run", task_id)
        self._in_background(self._precompile(task_id))

    async def _precompile(self, task_id: int) -> None:
        """Have the task's engine process compile the plan into the compile cache while the
        providers' shares are still on their way (the run then takes it from the cache)."""
        entry, spec = self._prewarmed.get(task_id), self._specs.get(task_id)
        if entry is None or spec is None:
            return
        try:
            plan = await self.plan_of(task_id, spec)
        except Exception as exc:  # noqa: BLE001 - the run reports a bad plan with its reason
            log.debug("task %d: no plan to compile ahead (%s)", task_id, exc)
            return
        if entry[0].precompile(plan, spec.engine_protocol(), self.compile_cache):
            log.info("task %d: compiling the plan ahead of the run", task_id)

    def take_prewarmed(self, task_id: int) -> Prewarmed | None:
        """The task's engine process started ahead, if it is still usable (it serves one run)."""
        entry = self._prewarmed.pop(task_id, None)
        if entry is None:
            return None
        handle = entry[0]
        if handle.used or not handle.process.is_alive():
            handle.close()
            return None
        return handle

    def _reap(self) -> None:
        now = time.monotonic()
        for task_id, (handle, born) in list(self._prewarmed.items()):
            record = self.ctx.store.get(task_id)
            open_task = record is not None and record.state in OPEN_STATES
            if not open_task or now - born > PREWARM_MAX_AGE_S or not handle.process.is_alive():
                handle.close()
                del self._prewarmed[task_id]

    async def spec_of(self, task_id: int) -> StatsTaskSpec | None:
        """The task's accepted spec, if this node holds it."""
        if task_id in self._specs:
            return self._specs[task_id]
        blob = self.ctx.store.blobs(task_id).get(SPEC_BLOB)
        if blob is None:
            return None
        spec = StatsTaskSpec.parse(await asyncio.to_thread(Path(blob.path).read_bytes))
        self._specs[task_id] = spec
        return spec

    async def plan_of(self, task_id: int, spec: StatsTaskSpec) -> Plan:
        """The plan from the spec and the chain's committed row counts (cached)."""
        if task_id not in self._plans:
            assets = await asyncio.gather(*(read_asset(self.ctx.ops, d) for d in spec.dataset_ids))
            self._plans[task_id] = spec.plan({a.dataset_id: a.row_count for a in assets})
        return self._plans[task_id]

    # -- shares --------------------------------------------------------------------------------

    async def share_received(self, blob: StoredBlob, caller: Caller, part: int, view: TaskView) -> None:
        """Check a provider's share blob and move it out of the public store; raise to refuse."""
        await self._keep_share(
            view, part, Path(blob.path), blob.sha256, blob.size_bytes, caller.operator or ""
        )

    async def accept_own_share(self, view: TaskView, part: int, blob: bytes) -> None:
        """A share blob this node's provider made for this node's own slot: written to the
        task's private folder and checked exactly like an uploaded one (owner, slot, plan,
        shape), without the HTTP round trip to itself; raises what an upload would get."""
        incoming = self.task_dir(view.task_id) / f".incoming-{part}.bin"
        sha = await asyncio.to_thread(_write_private, incoming, blob)
        try:
            await self._keep_share(view, part, incoming, sha, len(blob), self.ctx.operator)
        finally:
            incoming.unlink(missing_ok=True)

    async def _keep_share(
        self, view: TaskView, part: int, path: Path, sha256: str, size: int, provider: str
    ) -> None:
        task_id = view.task_id
        record = self.ctx.store.get(task_id)
        if record is None:
            raise Unavailable(f"task {task_id} is not confirmed on this node yet", code="not_confirmed")
        if record.state not in OPEN_STATES:
            raise Conflict(f"task {task_id} is {record.state} on this node", code="task_closed")
        spec = await self.spec_of(task_id)
        if spec is None:
            raise Unavailable(f"this node holds no spec of task {task_id} yet", code="spec_first")
        if not 0 <= part < len(spec.parts):
            raise BadRequest(f"the spec has no part {part}", code="unknown_blob")
        asset = await read_asset(self.ctx.ops, spec.parts[part].dataset_id)
        if provider.lower() != asset.owner.lower():
            raise Forbidden(
                f"only the owner of dataset {asset.dataset_id} provides part {part}", code="not_provider"
            )
        rank = record.slot_of(self.ctx.operator)
        if rank is None:
            raise Forbidden(f"this node is not in task {task_id}'s committee", code="not_member")
        plan = await self.plan_of(task_id, spec)
        loop = asyncio.get_running_loop()
        problem = await loop.run_in_executor(  # the worker reads the file (no 30 MB through a pipe)
            self._executor(), check_share_blob, plan, spec.protocol, part, rank, path
        )
        if problem is not None:
            log.warning("task %d: share of part %d refused", task_id, part)
            raise BadRequest(f"share of part {part} refused: {problem}", code="bad_share")
        private = self.task_dir(task_id) / f"share-{part}.bin"
        await asyncio.to_thread(_move_private, path, private)
        self.ctx.store.record_blob(BlobRecord(task_id, share_blob(part), str(private), sha256, size))
        log.info("task %d: share of part %d accepted (rank %d, %d bytes)", task_id, part, rank, size)
        self.ctx.kick(task_id, 0.0)

    def shares_complete(self, task_id: int, spec: StatsTaskSpec) -> bool:
        """Every part's share blob is held."""
        held = self.ctx.store.blobs(task_id)
        return all(share_blob(p) in held for p in range(len(spec.parts)))

    def shares(self, task_id: int, spec: StatsTaskSpec) -> dict[int, Path]:
        """Where every part's share blob is (the engine process reads them itself)."""
        held = self.ctx.store.blobs(task_id)  # the store is used on the event loop's thread only
        return {p: Path(held[share_blob(p)].path) for p in range(len(spec.parts))}

    # -- link ----------------------------------------------------------------------------------

    def publish_link(self, task_id: int, rank: int) -> LinkMessage:
        """This member's link address for the task, in its own blob store (write-once).

        Blocking (call it in a thread): with an engine process started ahead, it first waits
        (at most `ENGINE_READY_WAIT_S` each) until that process has imported SPU and JAX and
        finished the compile it started ahead. The message
        carries when it was published: the members open their links together, at
        `LINK_START_MARGIN_S` after the last one (`gather_links`), because brpc links parties
        that dial within a few tens of ms of each other in ~0.2 s and pays a ~3 s reconnect
        delay otherwise (docs/MPC.md).
        """
        from .psi_spec import free_port

        entry = self._prewarmed.get(task_id)
        if entry is not None:
            try:
                entry[0].ready(ENGINE_READY_WAIT_S)
                entry[0].wait_compiled(ENGINE_READY_WAIT_S)  # the engine is idle when links open
            except (OSError, EOFError, ValueError):  # closed meanwhile: the run spawns its own
                pass

        host = self.ctx.config.listen_host
        message = LinkMessage(task_id=task_id, rank=rank, address=f"{host}:{free_port(host)}", at=time.time())
        return LinkMessage.parse(self.publish(task_id, LINK_BLOB, message.model_dump_json().encode()))

    def publish(self, task_id: int, name: str, payload: bytes) -> bytes:
        """Put a message of this member in its own blob store (write-once: an earlier one wins)."""
        assert self._blobs is not None
        existing = self._blobs.get(task_id, name)
        if existing is not None:
            return Path(existing.path).read_bytes()
        self._blobs.put_bytes(task_id, name, payload, self.ctx.signer)
        return payload

    async def gather(self, view: TaskView, name: str, own_rank: int, own: bytes, until: float) -> list[bytes]:
        """Every member's blob `name` by rank (polled from their blob stores until `until`, a
        loop time); each must have been written by that member's registered signing key."""
        assert self._client is not None
        found: dict[int, bytes] = {own_rank: own}
        loop = asyncio.get_running_loop()
        members = len(view.committee)
        while len(found) < members:
            for rank, operator in enumerate(view.committee):
                if rank in found:
                    continue
                node = await self.ctx.ops.node(operator)
                peer = Peer.of_node(node, self.ctx.chain_id)
                try:
                    answer = await self._client.get(peer, f"/v1/tasks/{view.task_id}/blobs/{name}")
                except (PeerError, ConnectionError, TimeoutError):
                    continue
                if answer.headers.get(HEADER_UPLOADER, "").lower() != node.signer.lower():
                    raise SpecError(f"the {name} of member {operator} is not written by its node key")
                found[rank] = answer.body
            if len(found) < members:
                if loop.time() > until:
                    missing = [view.committee[r] for r in range(members) if r not in found]
                    raise TimeoutError(f"no {name} from member(s) {missing}")
                await asyncio.sleep(LINK_POLL_S)
        return [found[r] for r in range(members)]

    async def gather_links(
        self, view: TaskView, mine: LinkMessage, until: float
    ) -> tuple[tuple[str, ...], float]:
        """Every member's link address by rank (see `gather`), and when to open the link: every
        member derives the same time, `LINK_START_MARGIN_S` after the last one published."""
        raw = await self.gather(view, LINK_BLOB, mine.rank, mine.model_dump_json().encode(), until)
        addresses, published = [], []
        for rank, data in enumerate(raw):
            message = LinkMessage.parse(data)
            if message.task_id != view.task_id or message.rank != rank:
                raise SpecError(
                    f"member {view.committee[rank]} published a link message for another task or slot"
                )
            addresses.append(message.address)
            published.append(message.at)
        return tuple(addresses), max(published) + LINK_START_MARGIN_S

    def link_for(
        self,
        view: TaskView,
        spec: StatsTaskSpec,
        rank: int,
        addresses: tuple[str, ...],
        budget_s: float,
        start_at: float | None = None,
    ) -> CommitteeLink:
        """This member's CommitteeLink: the derived session id, the spec's timeouts and the
        agreed link start (`gather_links`)."""
        deadline = min(float(spec.deadline_s), budget_s)
        if deadline <= 1:
            raise SpecError("the task's deadline leaves no time to run the query")
        return CommitteeLink(
            rank,
            addresses,
            session_id_for(view.task_id, view.spec_hash, addresses),
            recv_timeout_ms=spec.recv_timeout_ms,
            connect_timeout_ms=spec.connect_timeout_ms,
            deadline_s=deadline,
            start_at=start_at,
        )


def _move_private(source: Path, dest: Path) -> None:
    os.replace(source, dest)
    os.chmod(dest, 0o600)


def _write_private(path: Path, data: bytes) -> str:
    """Write `data` to `path` (0600); its sha256 hex."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return hashlib.sha256(data).hexdigest()


def start_party(
    plan: Plan,
    spec: StatsTaskSpec,
    link: CommitteeLink,
    shares: dict[int, Path],
    task_id: int,
    cache_dir: Path | None = None,
    prewarmed: Prewarmed | None = None,
) -> asyncio.Future[PartyOutput]:
    """Run this member's side in the engine's worker process (`prewarmed`, when started
    ahead, else a new one), supervised from a daemon thread (a stopping node never waits for
    it; the worker exits with its parent)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[PartyOutput] = loop.create_future()

    def settle(result: PartyOutput | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def stage(name: str) -> None:  # the engine's progress: stage names only, no data
        log.info("task %d: mpc stage %s (rank %d)", task_id, name, link.rank)

    def run() -> None:
        try:
            result = run_party(
                plan,
                protocol=spec.engine_protocol(),
                link=link,
                hosts=(None,) * len(plan.parts),
                shares=shares,
                progress=stage,
                cache_dir=cache_dir,
                prewarmed=prewarmed,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            outcome: tuple[PartyOutput | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed: the node stopped
            pass

    threading.Thread(target=run, name=f"stats-party-{task_id}", daemon=True).start()
    return future
