"""Chain-backed authorization: node standing from the NodeRegistry, task parties from the
TaskManager and DataRegistry. web3 calls block, so they run in worker threads (at most
`max_concurrent_reads` at once); answers are cached for `ttl_s` in a bounded LRU, except
"no such task", which is never cached (see `ChainTaskParties`).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from eth_utils.address import to_checksum_address

from oracle.chain.contracts import DatumContracts
from oracle.chain.errors import ChainError, ContractRevert
from oracle.chain.rpc import Chain
from oracle.chain.staking import get_node

from .access import NodeStanding, TaskPartySet, TaskRole
from .cache import TtlCache
from .errors import AuthorizerUnavailable

__all__ = ["ChainAuthorizer", "ChainTaskParties"]

log = logging.getLogger(__name__)

T = TypeVar("T")
ZERO_ADDRESS = "0x" + "00" * 20
DEFAULT_TTL_S = 30.0
DEFAULT_MISS_REFRESH_S = 1.0


class _UnknownTask(Exception):
    """Raised inside a cache load so that "no such task" is never cached."""


class _ChainReader:
    def __init__(self, chain: Chain, contracts: DatumContracts, max_concurrent_reads: int) -> None:
        self.chain = chain
        self.contracts = contracts
        self._reads = asyncio.Semaphore(max_concurrent_reads)

    async def read(self, what: str, fn: Callable[[], T]) -> T:
        async with self._reads:
            try:
                return await asyncio.to_thread(fn)
            except ChainError as exc:
                log.warning("p2p authorization: cannot read %s: %s", what, exc)
                raise AuthorizerUnavailable(f"cannot read {what} from the chain: {exc}") from exc


class ChainAuthorizer:
    """`NodeAuthorizer` over the NodeRegistry: signer -> operator -> stake vs. minimum."""

    def __init__(
        self,
        chain: Chain,
        contracts: DatumContracts,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = 10_000,
        max_concurrent_reads: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = _ChainReader(chain, contracts, max_concurrent_reads)
        self._cache: TtlCache[str, NodeStanding] = TtlCache(ttl_s, max_entries, clock)

    def _read_standing(self, signer: str) -> NodeStanding:
        chain, nodes = self._reader.chain, self._reader.contracts.nodes
        operator = str(chain.call(nodes, "getOperatorBySigner", signer))
        min_stake = int(chain.call(nodes, "getMinStake"))
        if int(operator, 16) == 0:
            return NodeStanding(signer, None, 0, min_stake)
        node = get_node(chain, self._reader.contracts, operator)
        if node.signer.lower() != signer.lower():  # re-keyed between the two reads
            return NodeStanding(signer, None, 0, min_stake)
        return NodeStanding(signer, to_checksum_address(operator), node.stake_wei, min_stake)

    async def standing_of(self, signer: str) -> NodeStanding:
        """The standing of `signer`, at most `ttl_s` old."""
        key = to_checksum_address(signer)
        return await self._cache.get(
            key, lambda: self._reader.read(f"the node of {key}", lambda: self._read_standing(key))
        )


class ChainTaskParties:
    """`TaskParties` from the chain: requester (= receiver), committee operators, dataset owners.

    A task's parties are cached for `ttl_s`. "No such task" is never cached: a task id is
    asked about before its request is mined (a requester whose RPC node is a block ahead
    of this node's, a member quicker than its peers), and the upload that follows once the
    task exists must be let in. An address holding no role in a cached set makes the set
    be read again once it is `miss_refresh_s` old (a reorg may have replaced the task, a
    refill changed its committee): a stale set refuses for at most that long, and callers
    without a role cost at most one read per task per `miss_refresh_s`.
    """

    def __init__(
        self,
        chain: Chain,
        contracts: DatumContracts,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        miss_refresh_s: float = DEFAULT_MISS_REFRESH_S,
        max_entries: int = 10_000,
        max_concurrent_reads: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if miss_refresh_s < 0:
            raise ValueError("need miss_refresh_s >= 0")
        self._reader = _ChainReader(chain, contracts, max_concurrent_reads)
        self._miss_refresh_s = miss_refresh_s
        self._clock = clock
        self._cache: TtlCache[int, tuple[float, TaskPartySet]] = TtlCache(ttl_s, max_entries, clock)

    def _read_parties(self, task_id: int) -> TaskPartySet | None:
        chain, c = self._reader.chain, self._reader.contracts
        try:
            task = chain.call(c.tasks, "getTask", task_id)
        except ContractRevert as exc:
            if exc.name == "TaskManager__UnknownTask":
                return None
            raise
        committee = chain.call(c.tasks, "getCommittee", task_id)
        datasets = chain.call(c.tasks, "getTaskDatasets", task_id)
        owners = tuple(str(chain.call(c.data, "getAsset", int(d))[0]) for d in datasets)
        return TaskPartySet(
            requester=str(task[0]),
            committee=tuple(str(a) for a in committee if str(a) != ZERO_ADDRESS),
            data_providers=owners,
        )

    async def _load(self, task_id: int) -> tuple[float, TaskPartySet]:
        parties = await self._reader.read(
            f"the parties of task {task_id}", lambda: self._read_parties(task_id)
        )
        if parties is None:
            raise _UnknownTask(task_id)
        return self._clock(), parties

    async def _parties(self, task_id: int) -> tuple[float, TaskPartySet] | None:
        try:
            return await self._cache.get(task_id, lambda: self._load(task_id))
        except _UnknownTask:
            return None

    async def roles_of(self, task_id: int, address: str) -> frozenset[TaskRole]:
        """Roles of `address` in `task_id` (none for an unknown task), from the chain."""
        entry = await self._parties(task_id)
        if entry is None:
            return frozenset()
        loaded_at, parties = entry
        roles = parties.roles_of(address)
        if not roles and self._clock() - loaded_at >= self._miss_refresh_s:
            self._cache.invalidate(task_id)
            entry = await self._parties(task_id)
            roles = entry[1].roles_of(address) if entry else frozenset()
        return roles
