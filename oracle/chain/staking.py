"""Operator side of the NodeRegistry: register, stake, unbond, withdraw, and read nodes and
their election weights at any block (for re-checking a committee off chain)."""

from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.types import BlockIdentifier

from incentives.committee import elect, node_weight, task_seed

from .contracts import DatumContracts, ensure_allowance
from .rpc import Chain
from .txmanager import Sent, TxManager

__all__ = [
    "PAGE_SIZE",
    "NodeInfo",
    "add_stake",
    "election_weights",
    "get_node",
    "list_nodes",
    "recompute_committee",
    "register_node",
    "request_unbond",
    "withdraw_unbonded",
]

PAGE_SIZE = 100  # NodeRegistry.MAX_PAGE


@dataclass(frozen=True)
class NodeInfo:
    """`INodeRegistry.Node` plus its operator address."""

    operator: str
    signer: str
    index: int
    capabilities: int
    stake_wei: int
    unbonding_wei: int
    unbond_release_at: int
    endpoint: str

    @property
    def registered(self) -> bool:
        """Index 0 means the operator never registered."""
        return self.index != 0

    @classmethod
    def from_abi(cls, operator: str, node: Any) -> "NodeInfo":
        """Build from the ABI tuple (signer, index, capabilities, stake, unbonding, releaseAt, endpoint)."""
        signer, index, capabilities, stake, unbonding, release_at, endpoint = node
        return cls(operator, signer, index, capabilities, stake, unbonding, release_at, endpoint)


def register_node(
    tx: TxManager,
    chain: Chain,
    c: DatumContracts,
    *,
    signer: str,
    endpoint: str,
    capabilities: int,
    stake_wei: int,
) -> tuple[int, Sent]:
    """Approve and register `tx`'s account as an operator; returns its 1-based index."""
    ensure_allowance(tx, chain, c.token, c.nodes.address, stake_wei)
    sent = tx.send(c.nodes, "register", Web3.to_checksum_address(signer), endpoint, capabilities, stake_wei)
    (event,) = c.events_in(c.nodes, sent.receipt, "NodeRegistered")
    return int(event.args["index"]), sent


def add_stake(tx: TxManager, chain: Chain, c: DatumContracts, amount_wei: int) -> Sent:
    """Approve and add `amount_wei` to the caller's active stake."""
    ensure_allowance(tx, chain, c.token, c.nodes.address, amount_wei)
    return tx.send(c.nodes, "addStake", amount_wei)


def request_unbond(tx: TxManager, c: DatumContracts, amount_wei: int) -> Sent:
    """Move `amount_wei` of active stake into unbonding (restarts the delay)."""
    return tx.send(c.nodes, "requestUnbond", amount_wei)


def withdraw_unbonded(tx: TxManager, c: DatumContracts) -> tuple[int, Sent]:
    """Withdraw the unbonded stake once the delay has passed; returns the amount."""
    sent = tx.send(c.nodes, "withdrawUnbonded")
    (event,) = c.events_in(c.nodes, sent.receipt, "StakeWithdrawn")
    return int(event.args["amountWei"]), sent


def get_node(chain: Chain, c: DatumContracts, operator: str, block: BlockIdentifier = "latest") -> NodeInfo:
    """The node record of `operator` (index 0 when not registered)."""
    address = Web3.to_checksum_address(operator)
    return NodeInfo.from_abi(address, chain.call(c.nodes, "getNode", address, block=block))


def list_nodes(chain: Chain, c: DatumContracts, block: BlockIdentifier = "latest") -> list[NodeInfo]:
    """Every registered node at `block`, by index, read page by page."""
    nodes: list[NodeInfo] = []
    while True:
        operators, records = chain.call(c.nodes, "getNodes", len(nodes), PAGE_SIZE, block=block)
        nodes += [NodeInfo.from_abi(op, rec) for op, rec in zip(operators, records, strict=True)]
        if len(operators) < PAGE_SIZE:
            return nodes


def election_weights(chain: Chain, c: DatumContracts, block: BlockIdentifier = "latest") -> list[int]:
    """Election weights at `block`: ``weights[i - 1]`` is node i's (stake if >= minimum, else 0)."""
    min_stake = int(chain.call(c.nodes, "getMinStake", block=block))
    return [node_weight(n.stake_wei, min_stake) for n in list_nodes(chain, c, block)]


def recompute_committee(chain: Chain, c: DatumContracts, task_id: int, request_block: int) -> list[int]:
    """The committee (node indices) of `task_id` as elected at request, recomputed off chain.

    Uses the request block's prevrandao and the weights at the end of the previous block,
    which equal the weights the election saw when the request was its block's first
    transaction touching stakes (always true on an automining devnet).
    """
    seed = task_seed(chain.prevrandao(request_block), task_id)
    task = chain.call(c.tasks, "getTask", task_id, block=request_block)
    k = int(task[3])  # committeeSize
    return elect(seed, election_weights(chain, c, request_block - 1), k)
