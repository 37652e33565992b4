"""Share blobs from providers are checked against the plan before they enter the MPC."""

from __future__ import annotations

import numpy as np
import pytest

from compute.errors import SpecError
from compute.mpc import Accuracy, PartInfo, Protocol, parse_sql, plan_query, share_part
from compute.mpc.encode import encode_part
from compute.mpc.shares import make_shares, open_blob, plan_layout

from .helpers import PEOPLE, TO_ZERO, people

QUERY = parse_sql(
    "SELECT mean(income) FROM people WHERE age > 30",
    [PEOPLE],
    min_group_size=5,
    reveal=TO_ZERO,
    accuracy=Accuracy(1e-3),
)
PLAN = plan_query(QUERY, [PartInfo("people", "bank", 40), PartInfo("people", "insurer", 30)])
LAYOUT = plan_layout(PLAN)


def test_a_provider_blob_opens_for_its_rank_only() -> None:
    blobs = share_part(PLAN, Protocol.ABY3, 1, people(30, 9))
    assert len(blobs) == 3
    shares = open_blob(LAYOUT, Protocol.ABY3, 1, 2, blobs[2])
    assert len(shares) == 2  # the number matrix and the row flag
    with pytest.raises(SpecError, match="shares are for part 1, rank 2; this is rank 0"):
        open_blob(LAYOUT, Protocol.ABY3, 1, 0, blobs[2])
    with pytest.raises(SpecError, match="shares are for part 1"):
        open_blob(LAYOUT, Protocol.ABY3, 0, 2, blobs[2])
    with pytest.raises(SpecError, match="truncated|does not match|trailing"):
        open_blob(LAYOUT, Protocol.ABY3, 1, 2, blobs[2][:-5])
    other = plan_query(QUERY, [PartInfo("people", "bank", 40), PartInfo("people", "insurer", 31)])
    with pytest.raises(SpecError, match="made for a different plan"):
        open_blob(plan_layout(other), Protocol.ABY3, 1, 2, blobs[2])


def test_shares_of_the_wrong_shape_type_or_protocol_are_refused() -> None:
    good = encode_part(PLAN, 1, people(30, 9))
    short = {name: array[:29] for name, array in good.items()}
    with pytest.raises(
        SpecError,
        match=r"part 1 \(people/insurer\) input p1.num: shares have shape \(29, 2\), "
        r"the program expects \(30, 2\)",
    ):
        open_blob(LAYOUT, Protocol.ABY3, 1, 0, make_shares(LAYOUT, Protocol.ABY3, 1, short)[0])
    as_ints = dict(good, **{"p1.num": np.round(good["p1.num"] * 1000).astype(np.int64)})
    with pytest.raises(SpecError, match="shares hold DT_I64, the program expects DT_F64"):
        open_blob(LAYOUT, Protocol.ABY3, 1, 0, make_shares(LAYOUT, Protocol.ABY3, 1, as_ints)[0])
    with pytest.raises(SpecError, match="shares of type cheetah"):
        open_blob(LAYOUT, Protocol.ABY3, 1, 0, make_shares(LAYOUT, Protocol.CHEETAH, 1, good)[0])
