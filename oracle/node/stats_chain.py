"""The chain facts a stats task is checked against: each dataset's record and consent now
(including its minimum group size). Reads run in threads (`ChainOps`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from .chainops import ChainOps
from .stats_spec import STATS_KIND

__all__ = ["StatsAsset", "read_stats_asset", "stats_consent_problem"]


@dataclass(frozen=True)
class StatsAsset:
    """The parts of `IDataRegistry.Asset` a stats provider and a member check."""

    dataset_id: int
    owner: str
    revoked: bool
    is_model: bool
    row_count: int
    metadata_hash: bytes
    allowed_kinds: int
    open: bool
    expires_at: int
    remaining_uses: int
    min_group_size: int


async def read_stats_asset(ops: ChainOps, dataset_id: int) -> StatsAsset:
    """The asset record (`DataRegistry__UnknownAsset` when absent)."""
    raw = await asyncio.to_thread(ops.chain.call, ops.contracts.data, "getAsset", dataset_id)
    owner, _price, is_model, revoked, rows, metadata_hash, policy, _uri = raw
    return StatsAsset(
        dataset_id=dataset_id,
        owner=to_checksum_address(str(owner)),
        revoked=bool(revoked),
        is_model=bool(is_model),
        row_count=int(rows),
        metadata_hash=bytes(metadata_hash),
        allowed_kinds=int(policy[0]),
        open=bool(policy[1]),
        expires_at=int(policy[2]),
        remaining_uses=int(policy[3]),
        min_group_size=int(policy[4]),
    )


def stats_consent_problem(asset: StatsAsset, *, listed: bool, now: int, min_group_size: int) -> str | None:
    """Why the dataset's consent does not cover this stats query now, or None when it does.

    The use budget is not checked: the task spent its use when it was requested.
    """
    if asset.is_model:
        return f"asset {asset.dataset_id} is a model, not a dataset"
    if asset.revoked:
        return f"dataset {asset.dataset_id} was revoked by its owner"
    if not asset.allowed_kinds >> STATS_KIND & 1:
        return f"the consent of dataset {asset.dataset_id} does not allow stats"
    if asset.expires_at and now > asset.expires_at:
        return f"the consent of dataset {asset.dataset_id} expired at {asset.expires_at}"
    if not asset.open and not listed:
        return f"the requester is not allowed to use dataset {asset.dataset_id}"
    if min_group_size < asset.min_group_size:
        return (
            f"the query's min_group_size {min_group_size} is below dataset {asset.dataset_id}'s "
            f"minimum group size {asset.min_group_size}"
        )
    return None
