"""Chain-backed authorization: node standing from the NodeRegistry, task parties from the
TaskManager and DataRegistry. web3 calls block, so they run in worker threads (at most
`max_concurrent_reads` at once); answers are cached for `ttl_s` in a bounded LRU.
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
    """`TaskParties` from the chain: requester (= receiver), committee operators, dataset owners."""

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
        self._cache: TtlCache[int, TaskPartySet | None] = TtlCache(ttl_s, max_entries, clock)

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

    async def roles_of(self, task_id: int, address: str) -> frozenset[TaskRole]:
        """Roles of `address` in `task_id` (none for an unknown task), at most `ttl_s` old."""
        parties = await self._cache.get(
            task_id,
            lambda: self._reader.read(f"the parties of task {task_id}", lambda: self._read_parties(task_id)),
        )
        return parties.roles_of(address) if parties else frozenset()
