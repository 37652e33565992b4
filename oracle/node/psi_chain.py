"""The chain facts a PSI task is checked against: the datasets' records and consent, and
who may attest for them. Reads run in threads (`ChainOps`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from eth_utils.address import to_checksum_address

from ..chain.tasks import TaskView, task_history
from .chainops import ChainOps
from .psi_attest import AttestationFacts
from .psi_spec import PSI_KIND, psi_servable
from .stats_spec import STATS_KIND, stats_servable

__all__ = [
    "AssetView",
    "attestation_facts",
    "consent_problem",
    "read_asset",
    "requester_allowed",
    "servable_request",
]


@dataclass(frozen=True)
class AssetView:
    """The parts of `IDataRegistry.Asset` a provider (PSI or stats) and a member check."""

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


async def read_asset(ops: ChainOps, dataset_id: int) -> AssetView:
    """The asset record (`DataRegistry__UnknownAsset` when absent)."""
    raw = await asyncio.to_thread(ops.chain.call, ops.contracts.data, "getAsset", dataset_id)
    owner, _price, is_model, revoked, rows, metadata_hash, policy, _uri = raw
    return AssetView(
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


async def requester_allowed(ops: ChainOps, dataset_id: int, requester: str) -> bool:
    """Whether `requester` is on the dataset's allow-list."""
    answer = await asyncio.to_thread(
        ops.chain.call, ops.contracts.data, "isRequesterAllowed", dataset_id, to_checksum_address(requester)
    )
    return bool(answer)


def consent_problem(asset: AssetView, *, listed: bool, now: int) -> str | None:
    """Why the dataset's consent does not cover a PSI session now, or None when it does.

    The use budget is not checked here: the task spent its use when it was requested.
    """
    if asset.is_model:
        return f"asset {asset.dataset_id} is a model, not a dataset"
    if asset.revoked:
        return f"dataset {asset.dataset_id} was revoked by its owner"
    if not asset.allowed_kinds >> PSI_KIND & 1:
        return f"the consent of dataset {asset.dataset_id} does not allow psi"
    if asset.expires_at and now > asset.expires_at:
        return f"the consent of dataset {asset.dataset_id} expired at {asset.expires_at}"
    if not asset.open and not listed:
        return f"the requester is not allowed to use dataset {asset.dataset_id}"
    return None


async def attestation_facts(ops: ChainOps, chain_id: int, view: TaskView) -> AttestationFacts:
    """Who may sign what for this task: its requester, each dataset's owner and owner's node."""
    keys: dict[int, tuple[str, ...]] = {}
    rows: dict[int, int] = {}
    for dataset_id in view.dataset_ids:
        asset = await read_asset(ops, int(dataset_id))
        signers = [asset.owner]
        node = await ops.node(asset.owner)
        if node.registered:
            signers.append(to_checksum_address(node.signer))
        keys[int(dataset_id)] = tuple(signers)
        rows[int(dataset_id)] = asset.row_count
    return AttestationFacts(
        chain_id=chain_id,
        task_manager=str(ops.contracts.tasks.address),
        task_id=view.task_id,
        spec_hash=view.spec_hash,
        requester=view.requester,
        provider_keys=keys,
        row_counts=rows,
    )


async def servable_request(ops: ChainOps, view: TaskView) -> bool:
    """`psi_servable` and `stats_servable` for a task known by id only (a refilled slot): its
    URI from TaskRequested."""
    if view.kind not in (PSI_KIND, STATS_KIND):
        return True
    history = await asyncio.to_thread(task_history, ops.chain, ops.contracts, view.task_id)
    requested = next((e for e in history if e.name == "TaskRequested"), None)
    if requested is None:
        return False
    spec_hash, uri = bytes(requested.args["specHash"]), str(requested.args["specURI"])
    return psi_servable(view.kind, spec_hash, uri) and stats_servable(view.kind, spec_hash, uri)
