"""`NodeDaemon`: one operator node. One TaskGroup owns the listener, the p2p server, the
deadline watcher and one driver per task with work to do; evaluations run in a process
pool. Design: docs/NODE_DAEMON.md.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import multiprocessing
import os
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from aiohttp import web
from web3 import Web3

from compute.errors import ConfigError, DatumError

from ..chain.artifacts import ArtifactStore
from ..chain.contracts import DatumContracts, DecodedEvent
from ..chain.deploy import Deployment
from ..chain.errors import ChainError, ContractRevert
from ..chain.rpc import Chain, connect
from ..chain.staking import get_node
from ..chain.tasks import TASK_KINDS, result_domain
from ..chain.txmanager import TxManager
from ..listener import ChainLog, Listener, LogFilter
from ..p2p import (
    Audience,
    ChainAuthorizer,
    ChainTaskParties,
    Limits,
    P2PClient,
    P2PError,
    P2PServer,
    ServerConfig,
)
from .api import NodeApi
from .chainops import ChainOps
from .config import NodeConfig
from .context import NodeContext
from .psi_api import PsiApi
from .psi_chain import servable_request
from .psi_provider import PsiProvider
from .psi_spec import PSI_KIND, psi_servable
from .stats_api import StatsApi
from .stats_committee import StatsCommittee
from .stats_provider import StatsProvider
from .stats_spec import STATS_KIND, StatsTaskSpec, stats_servable
from .stats_steps import StatsTaskSteps
from .store import OPEN_STATES, NodeTaskState, TaskRecord, TaskStore
from .worker import exit_with_parent, warm_up

__all__ = ["NodeDaemon", "NodeStatus"]

log = logging.getLogger(__name__)

EVENTS = ("TaskRequested", "CommitteeElected", "TaskFinalized", "TaskRefunded")
TRANSIENT = (ChainError, P2PError, ConnectionError, TimeoutError, BrokenProcessPool)
MAX_RETRY_DELAY_S = 30.0


@dataclass(frozen=True)
class NodeStatus:
    """What a running node reports about itself."""

    operator: str
    signer: str
    endpoint: str
    open_tasks: int


class NodeDaemon:
    """Runs one node until `stop` is set (see `run`)."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self._drivers: dict[int, asyncio.Task[None]] = {}
        self._dirty: set[int] = set()
        self._retries: dict[int, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self._stopping = False
        self._pool: ProcessPoolExecutor | None = None

    # -- setup ---------------------------------------------------------------------------------

    def _connect(self) -> tuple[NodeContext, DatumContracts]:
        config = self.config
        account = config.signing_account()
        store = ArtifactStore(config.artifacts_dir)
        deployment = Deployment.load(config.deployment)
        chain = Chain(connect(config.rpc_url, config.rpc_timeout_s), store.error_table())
        if chain.chain_id != deployment.chain_id:
            raise ConfigError(
                f"the deployment is for chain {deployment.chain_id}, {config.rpc_url} serves {chain.chain_id}"
            )
        contracts = DatumContracts(chain.w3, deployment, store)
        operator = str(chain.call(contracts.nodes, "getOperatorBySigner", account.address))
        if int(operator, 16) == 0:
            raise ConfigError(f"{account.address} is not the signing key of a registered node")
        operator = Web3.to_checksum_address(operator)
        node = get_node(chain, contracts, operator)
        listen = f"http://{config.listen_host}:{config.listen_port}"
        if node.endpoint.rstrip("/") != listen:
            log.warning("registered endpoint %s differs from the listen address %s", node.endpoint, listen)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data_dir()
        ops = ChainOps(chain, contracts, TxManager(chain, account))
        ctx = NodeContext(
            config=config,
            account=account,
            operator=operator,
            chain_id=chain.chain_id,
            ops=ops,
            store=None,  # type: ignore[arg-type]  # opened on the event loop's thread by run()
            domain=result_domain(chain, contracts),
            kick=self.kick,
        )
        return ctx, contracts

    def _lock_data_dir(self) -> None:
        lock = (self.config.data_dir / "node.lock").open("w")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise ConfigError(f"another node process runs on {self.config.data_dir}") from None
        self._lock_file = lock

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.config.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=exit_with_parent,
            initargs=(os.getpid(),),
        )

    def _executor(self) -> Executor:
        if self._pool is None:
            self._pool = self._new_pool()
        return self._pool

    def _listener(self, contracts: DatumContracts, deployment_block: int) -> Listener:
        topics = tuple("0x" + contracts.topic_of(contracts.tasks, name).hex() for name in EVENTS)
        return Listener(
            self.config.rpc_url,
            self.config.rpc_ws_url,
            [LogFilter(addresses=(contracts.tasks.address,), topics=(topics,))],
            self.config.data_dir / "listener.sqlite3",
            confirmations=self.config.confirmations,
            handler=self._on_log,
            on_rollback=self._on_rollback,
            start_block=deployment_block,
            poll_interval_s=self.config.poll_interval_s,
            rpc_timeout_s=self.config.rpc_timeout_s,
        )

    # -- the run -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down in order (listener, p2p, drivers, workers)."""
        ctx, contracts = await asyncio.to_thread(self._connect)
        ctx.store = TaskStore(self.config.data_dir / "node.sqlite3")  # used on this thread only
        self.ctx = ctx
        self.contracts = contracts
        self.psi = PsiProvider(ctx)
        self.stats_committee = StatsCommittee(ctx, self._executor)
        self.stats_provider = StatsProvider(ctx, self._executor)
        # stats blobs to their checks, then PSI blobs to theirs, the rest to HE
        self.api = StatsApi(
            ctx, PsiApi(ctx, NodeApi(ctx), self.psi), self.stats_committee, self.stats_provider
        )
        listener = self._listener(contracts, contracts.deployment.deploy_block)
        server = P2PServer(
            ServerConfig(
                audience=Audience(ctx.chain_id, ctx.signer),
                data_dir=self.config.data_dir,
                result_domain=ctx.domain,
                limits=Limits(blob_max_bytes=self.config.limits.max_upload_bytes),
            ),
            self.api,
            authorizer=ChainAuthorizer(ctx.ops.chain, contracts),
            parties=ChainTaskParties(ctx.ops.chain, contracts),
        )
        runner = web.AppRunner(server.app, access_log=None)
        listener_stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            await asyncio.gather(
                *(loop.run_in_executor(self._executor(), warm_up) for _ in range(self.config.workers))
            )
            async with P2PClient(ctx.account, timeout_s=self.config.peer_timeout_s) as client:
                self.steps = StatsTaskSteps(ctx, self._executor, client, self._spawn, self.stats_committee)
                self.psi.bind(server.blobs, client, self._spawn)
                self.stats_committee.bind(server.blobs, client)
                self.stats_provider.bind(client, self._spawn, self.stats_committee.accept_own_share)
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    await runner.setup()
                    try:
                        await web.TCPSite(runner, self.config.listen_host, self.config.listen_port).start()
                    except OSError as exc:
                        raise ConfigError(
                            f"cannot listen on {self.config.listen_host}:{self.config.listen_port}: {exc}"
                        ) from None
                    log.info(
                        "node %s (signing key %s) serving on %s:%d",
                        ctx.operator,
                        ctx.signer,
                        self.config.listen_host,
                        self.config.listen_port,
                    )
                    listener_task = tg.create_task(listener.run(listener_stop), name="listener")
                    watcher_task = tg.create_task(self._deadline_watcher(stop), name="deadlines")
                    for record in ctx.store.open_tasks():
                        log.info("resuming task %d in state %s", record.task_id, record.state)
                        self.kick(record.task_id, 0.0)
                    stopped = tg.create_task(stop.wait(), name="stop")
                    await asyncio.wait({stopped, listener_task}, return_when=asyncio.FIRST_COMPLETED)
                    log.info("node stopping")
                    self._stopping = True
                    stop.set()
                    listener_stop.set()
                    await asyncio.wait({listener_task})  # 1. no new tasks
                    self.api.stop_accepting()
                    await runner.cleanup()  # 2. requests in flight finish
                    await self._finish_drivers()  # 3. every step persists before it returns
                    for task in self._background:
                        task.cancel()
                    watcher_task.cancel()
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        finally:
            self._stopping = True
            await runner.cleanup()
            if self._pool is not None:  # 4. workers
                pool, self._pool = self._pool, None
                await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
            ctx.store.close()
            self.psi.close()
            self.stats_committee.close()
            self._lock_file.close()
            log.info("node stopped")

    async def _finish_drivers(self) -> None:
        running = [t for t in self._drivers.values() if not t.done()]
        if not running:
            return
        done, pending = await asyncio.wait(running, timeout=self.config.shutdown_grace_s)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d task drivers cancelled after %.0f s", len(pending), self.config.shutdown_grace_s)
            await asyncio.wait(pending)

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        if self._tg is None or self._stopping:
            return

        async def guarded() -> None:
            try:
                await work
            except Exception:
                log.exception("background job %s failed", name)

        task = self._tg.create_task(guarded(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- drivers -------------------------------------------------------------------------------

    def kick(self, task_id: int, delay_s: float = 0.0) -> None:
        """Run the task's driver now (or after `delay_s`); a running driver runs once more."""
        if self._stopping or self._tg is None:
            return
        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, self.kick, task_id, 0.0)
            return
        if task_id in self._drivers:
            self._dirty.add(task_id)
            return
        self._drivers[task_id] = self._tg.create_task(self._drive(task_id), name=f"task-{task_id}")

    async def _drive(self, task_id: int) -> None:
        try:
            while True:
                self._dirty.discard(task_id)
                await self._step(task_id)
                if task_id not in self._dirty or self._stopping:
                    return
        finally:
            self._drivers.pop(task_id, None)

    async def _step(self, task_id: int) -> None:
        try:
            await self.steps.advance(task_id, lambda: self._stopping)
            self._retries.pop(task_id, None)
        except BrokenProcessPool:
            log.error("task %d: the worker process died; restarting the pool", task_id)
            self._pool = None
            self.ctx.store.transition(
                task_id, NodeTaskState.FAILED, OPEN_STATES, error="the worker process died"
            )
        except TRANSIENT as exc:
            attempt = self._retries.get(task_id, 0) + 1
            self._retries[task_id] = attempt
            delay = min(MAX_RETRY_DELAY_S, 0.5 * 2 ** (attempt - 1))
            log.warning(
                "task %d: %s (%s); retry %d in %.1f s", task_id, type(exc).__name__, exc, attempt, delay
            )
            self.kick(task_id, delay)
        except Exception as exc:
            log.exception("task %d: unexpected failure", task_id)
            self.ctx.store.transition(
                task_id, NodeTaskState.FAILED, OPEN_STATES, error=f"{type(exc).__name__}: {exc}"
            )

    # -- listener ------------------------------------------------------------------------------

    async def _on_log(self, chain_log: ChainLog) -> None:
        for event in self.contracts.decode_logs(self.contracts.tasks, [chain_log.to_web3()]):
            handler = {
                "TaskRequested": self._on_requested,
                "CommitteeElected": self._on_committee,
                "TaskFinalized": self._on_finalized,
                "TaskRefunded": self._on_refunded,
            }[event.name]
            await handler(event)

    def _is_member(self, committee: Sequence[str]) -> bool:
        return any(op.lower() == self.ctx.operator.lower() for op in committee)

    def _handles_kind(self, kind: int) -> bool:
        # every node checks PSI attestations (docs/PSI_NETWORK.md) and runs stats committees
        # (docs/STATS_NETWORK.md); other kinds by capability
        return kind in (PSI_KIND, STATS_KIND) or any(TASK_KINDS[c] == kind for c in self.config.capabilities)

    async def _on_requested(self, event: DecodedEvent) -> None:
        a = event.args
        task_id = int(a["taskId"])
        committee = tuple(Web3.to_checksum_address(op) for op in a["committee"])
        served = (
            self._handles_kind(int(a["kind"]))
            and psi_servable(a["kind"], a["specHash"], a["specURI"])
            and stats_servable(a["kind"], a["specHash"], a["specURI"])
        )
        if served and int(a["kind"]) == STATS_KIND:
            self._stats_inline(
                task_id, bytes(a["specHash"]), str(a["specURI"]), is_member=self._is_member(committee)
            )
        if not served or not self._is_member(committee):
            log.debug("task %d (kind %d) is not for this node", task_id, a["kind"])
            return
        if (
            self.ctx.store.get(task_id) is None
            and len(self.ctx.store.open_tasks()) >= self.config.limits.max_open_tasks
        ):
            log.warning("task %d ignored: %d tasks open already", task_id, self.config.limits.max_open_tasks)
            return
        added = self.ctx.store.insert(
            TaskRecord(
                task_id=task_id,
                state=NodeTaskState.SEEN,
                kind=int(a["kind"]),
                requester=Web3.to_checksum_address(a["requester"]),
                spec_hash="0x" + bytes(a["specHash"]).hex(),
                deadline=int(a["deadline"]),
                quorum=int(a["quorum"]),
                committee=committee,
                request_block=event.block_number,
                request_tx=event.tx_hash,
            )
        )
        if not added:
            known = self.ctx.store.get(task_id)
            log.info(
                "task %d: TaskRequested delivered again (tx %s); the node holds it as %s",
                task_id,
                event.tx_hash,
                known.state if known else "unknown",
            )
        else:
            log.info(
                "task %d requested in block %d (tx %s): this node is a member",
                task_id,
                event.block_number,
                event.tx_hash,
            )
        self.kick(task_id, 0.0)

    def _stats_inline(self, task_id: int, spec_hash: bytes, uri: str, *, is_member: bool) -> None:
        """A stats task opened with its spec inline (the DataOracle's): nobody uploads it, so a
        member keeps it from the URI and a provider node starts sharing from here."""
        spec = self.stats_committee.inline_spec_of(task_id, spec_hash, uri, is_member=is_member)
        if spec is not None:
            self._spawn(self._stats_provide(task_id, spec), f"stats-provide-{task_id}")

    async def _stats_provide(self, task_id: int, spec: StatsTaskSpec) -> None:
        view = await self.ctx.ops.task(task_id)
        try:
            await self.stats_provider.spec_received(spec, view)
        except (P2PError, ContractRevert) as exc:
            log.warning("task %d: stats provider refused the inline spec (%s)", task_id, exc)

    async def _on_committee(self, event: DecodedEvent) -> None:
        a = event.args
        task_id = int(a["taskId"])
        committee = tuple(Web3.to_checksum_address(op) for op in a["committee"])
        record = self.ctx.store.get(task_id)
        if record is not None:
            self.ctx.store.update(task_id, committee=committee, accept_deadline=int(a["acceptDeadline"]))
            self.kick(task_id, 0.0)
            return
        if not self._is_member(committee):
            return
        try:  # a refilled slot: this node replaces a no-show
            view = await self.ctx.ops.task(task_id)
        except ContractRevert:
            return
        if not self._handles_kind(view.kind) or not await servable_request(self.ctx.ops, view):
            return
        self.ctx.store.insert(
            TaskRecord(
                task_id=task_id,
                state=NodeTaskState.SEEN,
                kind=view.kind,
                requester=view.requester,
                spec_hash="0x" + view.spec_hash.hex(),
                deadline=view.deadline,
                accept_deadline=int(a["acceptDeadline"]),
                quorum=view.quorum,
                committee=committee,
            )
        )
        log.info(
            "task %d: this node was elected into a refilled slot (block %d)", task_id, event.block_number
        )
        self.kick(task_id, 0.0)

    async def _on_finalized(self, event: DecodedEvent) -> None:
        task_id = int(event.args["taskId"])
        record = self.ctx.store.get(task_id)
        if record is None:
            return
        theirs = "0x" + bytes(event.args["resultHash"]).hex()
        if record.result_hash and record.result_hash != theirs:
            log.warning(
                "task %d finalized with result %s, this node computed %s", task_id, theirs, record.result_hash
            )
        paid = any(op.lower() == self.ctx.operator.lower() for op in event.args["signers"])
        expect = OPEN_STATES | {NodeTaskState.FAILED, NodeTaskState.EXPIRED}
        self.ctx.store.transition(task_id, NodeTaskState.FINALIZED, expect)
        self.ctx.store.update(task_id, finalize_tx=event.tx_hash)
        log.info(
            "task %d finalized (tx %s); this node %s among the signers",
            task_id,
            event.tx_hash,
            "is" if paid else "is not",
        )

    async def _on_refunded(self, event: DecodedEvent) -> None:
        task_id = int(event.args["taskId"])
        if self.ctx.store.get(task_id) is None:
            return
        expect = OPEN_STATES | {NodeTaskState.FAILED, NodeTaskState.EXPIRED}
        if self.ctx.store.transition(task_id, NodeTaskState.REFUNDED, expect):
            log.info("task %d refunded to its requester (tx %s)", task_id, event.tx_hash)

    async def _on_rollback(self, fork_block: int, logs: Sequence[ChainLog]) -> None:
        log.warning(
            "reorg below block %d undid %d TaskManager logs; re-checking their tasks", fork_block, len(logs)
        )
        for chain_log in logs:
            for event in self.contracts.decode_logs(self.contracts.tasks, [chain_log.to_web3()]):
                task_id = int(event.args["taskId"])
                if self.ctx.store.get(task_id) is not None:
                    self.kick(task_id, 0.0)

    # -- deadlines -----------------------------------------------------------------------------

    async def _deadline_watcher(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.config.deadline_poll_s)
                return
            except TimeoutError:
                pass
            open_tasks = self.ctx.store.open_tasks()
            if not open_tasks:
                continue
            try:
                now = await self.ctx.ops.chain_time()
            except ChainError as exc:
                log.warning("deadline watcher cannot read the chain time (%s)", type(exc).__name__)
                continue
            for record in open_tasks:
                if record.deadline and now > record.deadline:
                    reason = "deadline passed"
                elif (
                    record.state is NodeTaskState.SEEN
                    and record.accept_deadline
                    and now > record.accept_deadline
                ):
                    reason = "accept window closed"
                else:
                    continue
                if self.ctx.store.transition(
                    record.task_id, NodeTaskState.EXPIRED, OPEN_STATES, error=reason
                ):
                    log.warning("task %d expired on this node: %s", record.task_id, reason)

    def status(self) -> NodeStatus:
        """The node's identity and load."""
        return NodeStatus(
            operator=self.ctx.operator,
            signer=self.ctx.signer,
            endpoint=f"http://{self.config.listen_host}:{self.config.listen_port}",
            open_tasks=len(self.ctx.store.open_tasks()),
        )


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a TaskGroup failure: the first Datum error, else the first one."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    return next((e for e in flat if isinstance(e, DatumError)), flat[0])
