"""Reorg detection: keep the tracked block window a prefix of the canonical chain.

`find_fork` tells whether the tracked tip is still canonical and, if not, the highest
tracked block that is (the fork block). `extend_window` appends the blocks up to the head,
checking every parent link. Both read over a `ChainReader` and write nothing but headers.
"""

from __future__ import annotations

from .errors import ChainMoved, ReorgTooDeep
from .records import BlockRef
from .rpc import ChainReader
from .store import ListenerStore

__all__ = ["extend_window", "find_fork"]

FORK_SEARCH_BATCH = 16


async def find_fork(reader: ChainReader, store: ListenerStore, head: BlockRef, window: int) -> int | None:
    """None while the tracked tip is canonical; otherwise the highest tracked canonical block.

    Raises `ReorgTooDeep` when no tracked block is canonical any more.
    """
    tip = store.tip()
    if tip is None:
        return None
    if head.number == tip.number + 1 and head.parent_hash == tip.hash:
        return None  # the usual case: one new block on top of the tip
    if head.number >= tip.number:
        canonical = head if head.number == tip.number else (await reader.blocks([tip.number]))[0]
        if canonical is None:
            raise ChainMoved(f"block {tip.number} vanished while reading")
        if canonical.hash == tip.hash:
            return None
    lowest = store.lowest_header()
    assert lowest is not None
    tracked = store.header_hashes(lowest, tip.number)
    height = min(tip.number, head.number)
    while height >= lowest:
        heights = list(range(height, max(lowest, height - FORK_SEARCH_BATCH + 1) - 1, -1))
        for number, block in zip(heights, await reader.blocks(heights), strict=True):
            if block is not None and block.hash == tracked.get(number):
                return number
        height = heights[-1] - 1
    raise ReorgTooDeep(
        f"none of the tracked blocks {lowest}..{tip.number} is canonical any more: a reorg deeper "
        f"than {window} blocks, or the RPC now serves another chain (a new chain needs a new "
        "listener store)"
    )


async def extend_window(reader: ChainReader, store: ListenerStore, head: BlockRef, window: int) -> None:
    """Track the blocks from the tip (or `window` below the head) up to `head`.

    Raises `ChainMoved` when a block does not extend the one before it: the chain changed
    while it was being read, and the next probe will find the fork.
    """
    tip = store.tip()
    low = max(0, head.number - window + 1)
    if tip is not None:
        low = max(low, tip.number + 1)
    if low > head.number:
        return
    blocks = [*await reader.blocks(list(range(low, head.number))), head]
    previous = tip.hash if tip is not None and tip.number == low - 1 else None
    checked: list[BlockRef] = []
    for number, block in enumerate(blocks, start=low):
        if block is None or block.number != number:
            raise ChainMoved(f"block {number} vanished while reading")
        if previous is not None and block.parent_hash != previous:
            raise ChainMoved(f"block {number} does not extend block {number - 1}")
        previous = block.hash
        checked.append(block)
    store.add_headers(checked, keep_from=head.number - window + 1)
