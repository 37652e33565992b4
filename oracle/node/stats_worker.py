"""What runs in the node's worker processes for stats tasks: secret-sharing a provider's
columns and checking a received share blob against the plan (both import SPU).

Imported by spawned workers: `compute` only (no web3, no aiohttp).
"""

from __future__ import annotations

from typing import Any

from compute.errors import SpecError
from compute.mpc import Plan, Protocol, share_part

__all__ = ["check_share_blob", "share_columns"]


def share_columns(plan: Plan, protocol: str, part: int, columns: dict[str, Any]) -> list[bytes]:
    """`share_part`: check and encode the columns, one share blob per committee rank."""
    return share_part(plan, Protocol(protocol), part, columns)


def check_share_blob(plan: Plan, protocol: str, part: int, rank: int, blob: bytes) -> str | None:
    """None when `blob` is rank `rank`'s share of part `part` of this plan, else why not."""
    from compute.mpc.shares import blob_limit, open_blob, plan_layout

    layout = plan_layout(plan)
    if len(blob) > blob_limit(layout, part):
        return f"the share blob of part {part} is {len(blob)} bytes, over the plan's limit"
    try:
        open_blob(layout, Protocol(protocol), part, rank, blob)
    except SpecError as exc:
        return str(exc)
    return None
