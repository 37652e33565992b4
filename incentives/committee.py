"""Stake-weighted committee election, mirrored bit for bit from `NodeRegistry.electCommittee`.

Every node can recompute the committee of a task from public data: the seed (from the
request block's `prevrandao` and the task id) and the registry's weights at that block.

Node indices are 1-based as in the registry: `weights[i - 1]` is the weight of node `i`.

Draw `i` (i = 0..k-1) takes ``r = uint256(keccak256(abi.encode(seed, i))) % remaining``,
where `remaining` is the total weight minus the weights of excluded and already picked
nodes, and picks the smallest index whose prefix sum of weights (excluded and picked nodes
counting as zero) exceeds `r`.
"""

from collections.abc import Iterable, Sequence

from eth_abi.abi import encode
from eth_hash.auto import keccak

from compute.errors import DatumError

__all__ = ["NotEnoughNodes", "draw_value", "elect", "node_weight", "task_seed"]


class NotEnoughNodes(DatumError, ValueError):
    """The election asked for more members than there are eligible, non-excluded nodes.

    Mirrors `NodeRegistry__NotEnoughNodes(requested, eligible)`.
    """

    def __init__(self, requested: int, eligible: int) -> None:
        super().__init__(f"asked for {requested} committee members, only {eligible} eligible nodes")
        self.requested = requested
        self.eligible = eligible


def node_weight(stake_wei: int, min_stake_wei: int) -> int:
    """Election weight of a node: its active stake when at least the minimum, else 0."""
    return stake_wei if stake_wei >= min_stake_wei else 0


def task_seed(prevrandao: bytes | int, task_id: int) -> bytes:
    """Seed of a task's election: ``keccak256(abi.encode(block.prevrandao, taskId))``."""
    randao = prevrandao.to_bytes(32, "big") if isinstance(prevrandao, int) else prevrandao
    return keccak(encode(["bytes32", "uint256"], [randao, task_id]))


def draw_value(seed: bytes, draw: int) -> int:
    """The 256-bit random value of draw `draw`: ``uint256(keccak256(abi.encode(seed, draw)))``."""
    return int.from_bytes(keccak(encode(["bytes32", "uint256"], [seed, draw])), "big")


def elect(seed: bytes, weights: Sequence[int], k: int, exclude: Iterable[int] = ()) -> list[int]:
    """Elect `k` distinct 1-based node indices stake-weighted from `seed`.

    `weights[i - 1]` is the weight of node `i`; indices in `exclude` are never picked
    (indices outside 1..n are ignored, as the registry ignores them). Raises
    `NotEnoughNodes` when fewer than `k` nodes have a positive weight and are not excluded.
    """
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative")
    n = len(weights)
    effective = list(weights)
    for index in set(exclude):
        if 1 <= index <= n:
            effective[index - 1] = 0
    eligible = sum(1 for w in effective if w > 0)
    if k > eligible:
        raise NotEnoughNodes(k, eligible)

    remaining = sum(effective)
    picked: list[int] = []
    for draw in range(k):
        r = draw_value(seed, draw) % remaining
        prefix = 0
        for position, weight in enumerate(effective):
            prefix += weight
            if prefix > r:
                picked.append(position + 1)
                remaining -= weight
                effective[position] = 0
                break
    return picked
