"""What runs in the node's worker processes for stats tasks: reading, checking and
secret-sharing a provider's columns, and checking a received share blob against the plan
(both import SPU).

Imported by spawned workers: `compute` and the node's dataset readers only (no web3, no
aiohttp).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.errors import SpecError
from compute.mpc import Plan, Protocol, TableSchema, share_part

from .psi_datasets import DatasetMismatch, LocalDataset
from .stats_datasets import load_columns

__all__ = ["SharedPart", "check_share_blob", "read_and_share", "share_columns"]


@dataclass(frozen=True)
class SharedPart:
    """A provider part's share blobs (one per rank), or why it was refused (`code`, `reason`)."""

    blobs: tuple[bytes, ...]
    code: str = ""
    reason: str = ""
    read_s: float = 0.0
    share_s: float = 0.0


def read_and_share(
    local: LocalDataset,
    *,
    chain_id: int,
    metadata_hash: bytes,
    row_count: int,
    table: TableSchema,
    plan: Plan,
    protocol: str,
    part: int,
) -> SharedPart:
    """`load_columns` (the copy opens the commitment, the declared table and row count, every
    value within its declaration), then `share_columns`, in one worker call: the columns never
    cross back to the node process, whose event loop keeps serving meanwhile. A refusal comes
    back as a code (`DatasetMismatch.code`, or `rows_nonconforming`) and a message without
    any value."""
    started = time.perf_counter()
    try:
        columns = load_columns(
            local, chain_id=chain_id, metadata_hash=metadata_hash, row_count=row_count, table=table
        )
    except DatasetMismatch as exc:
        return SharedPart((), exc.code, str(exc))
    except SpecError as exc:
        return SharedPart((), "rows_nonconforming", str(exc))
    loaded = time.perf_counter()
    try:
        blobs = share_columns(plan, protocol, part, columns)
    except SpecError as exc:
        return SharedPart((), "rows_nonconforming", f"dataset {local.dataset_id}: {exc}")
    return SharedPart(tuple(blobs), read_s=loaded - started, share_s=time.perf_counter() - loaded)


def share_columns(plan: Plan, protocol: str, part: int, columns: dict[str, Any]) -> list[bytes]:
    """`share_part`: check and encode the columns, one share blob per committee rank."""
    return share_part(plan, Protocol(protocol), part, columns)


def check_share_blob(plan: Plan, protocol: str, part: int, rank: int, blob: bytes | Path) -> str | None:
    """None when `blob` (bytes, or the file holding them: read here in the worker) is rank
    `rank`'s share of part `part` of this plan, else why not."""
    from compute.mpc.shares import blob_limit, open_blob, plan_layout

    layout = plan_layout(plan)
    if isinstance(blob, Path):
        try:
            with blob.open("rb") as handle:
                blob = handle.read(blob_limit(layout, part) + 1)
        except OSError as exc:
            return f"the share blob of part {part} cannot be read ({exc.strerror or exc})"
    if len(blob) > blob_limit(layout, part):
        return f"the share blob of part {part} is {len(blob)} bytes, over the plan's limit"
    try:
        open_blob(layout, Protocol(protocol), part, rank, blob)
    except SpecError as exc:
        return str(exc)
    return None
