"""The chain facts a stats task is checked against: each dataset's record and consent now
(including its minimum group size), read with `psi_chain.read_asset`."""

from __future__ import annotations

from .psi_chain import AssetView
from .stats_spec import STATS_KIND

__all__ = ["stats_consent_problem"]


def stats_consent_problem(asset: AssetView, *, listed: bool, now: int, min_group_size: int) -> str | None:
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
