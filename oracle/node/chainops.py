"""The daemon's chain calls, as coroutines: each blocking web3 call runs in a thread.

Reads go through `oracle.chain` (typed reverts, bounded retries of transient RPC errors);
writes through one `TxManager` (its nonce lock keeps concurrent tasks' transactions in order).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from eth_utils.address import to_checksum_address

from ..chain import staking, tasks
from ..chain.contracts import DatumContracts
from ..chain.rpc import Chain
from ..chain.signer import SignedResult
from ..chain.staking import NodeInfo
from ..chain.tasks import TaskView
from ..chain.txmanager import Sent, TxManager

__all__ = ["ChainOps"]

ZERO_ADDRESS = "0x" + "00" * 20


class ChainOps:
    """One node's view of the chain and its one sending key."""

    def __init__(self, chain: Chain, contracts: DatumContracts, tx: TxManager) -> None:
        self.chain = chain
        self.contracts = contracts
        self.tx = tx
        self._nodes: dict[str, NodeInfo] = {}

    async def task(self, task_id: int) -> TaskView:
        """The task as stored now."""
        return await asyncio.to_thread(tasks.get_task, self.chain, self.contracts, task_id)

    async def chain_time(self) -> int:
        """The latest block's timestamp (what deadlines are compared with)."""
        block = await asyncio.to_thread(self.chain.raw_block, "latest")
        return int(block.get("timestamp", "0x0"), 16)

    async def config_epoch(self) -> int:
        """The TaskManager's current config epoch."""
        return int(await asyncio.to_thread(self.chain.call, self.contracts.tasks, "getConfigEpoch"))

    async def accept(self, task_id: int) -> Sent:
        """``acceptTask(taskId)`` from this node's key."""
        return await asyncio.to_thread(tasks.accept_task, self.tx, self.contracts, task_id)

    async def submit(
        self, task_id: int, result_hash: bytes, epoch: int, signatures: Sequence[SignedResult]
    ) -> Sent:
        """``submitResult`` with an empty public output (the HE result is private)."""
        return await asyncio.to_thread(
            tasks.submit_result, self.tx, self.contracts, task_id, result_hash, b"", epoch, list(signatures)
        )

    async def election_check(self, task_id: int, request_block: int) -> tuple[list[int], list[int]]:
        """(committee recomputed off chain, committee stored on chain), as node indices."""

        def run() -> tuple[list[int], list[int]]:
            recomputed = staking.recompute_committee(self.chain, self.contracts, task_id, request_block)
            stored = self.chain.call(
                self.contracts.tasks, "getCommitteeIndices", task_id, block=request_block
            )
            return recomputed, [int(i) for i in stored]

        return await asyncio.to_thread(run)

    async def node(self, operator: str) -> NodeInfo:
        """A committee member's registry record (endpoint and signing key), cached per operator."""
        key = to_checksum_address(operator)
        info = self._nodes.get(key)
        if info is None:
            info = await asyncio.to_thread(staking.get_node, self.chain, self.contracts, key)
            self._nodes[key] = info
        return info

    async def operator_of(self, signer: str) -> str | None:
        """The operator `signer` signs for, None when it is no registered node's key."""
        operator = await asyncio.to_thread(
            self.chain.call, self.contracts.nodes, "getOperatorBySigner", to_checksum_address(signer)
        )
        return None if int(str(operator), 16) == 0 else to_checksum_address(str(operator))
