"""Output-share blobs in one process (no MPC): made with SPU's Io like a party's output shares,
packed per rank, checked and reconstructed by `reconstruct_result`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from compute.errors import SpecError
from compute.mpc import Accuracy, PartInfo, Protocol, Reveal, parse_sql, plan_query, reconstruct_result
from compute.mpc.engine import runtime_config
from compute.mpc.plan import Plan
from compute.mpc.reconstruct import output_blob_limit, pack_outputs
from compute.mpc.result import decode

from .helpers import PEOPLE

RUN = bytes(range(16))


def _plan(protocol: Protocol) -> Plan:
    query = parse_sql(
        "SELECT count(*), mean(income), histogram(age, [18, 30, 50, 90]) FROM people GROUP BY region",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.external(),
        accuracy=Accuracy(1e-4),
    )
    return plan_query(query, [PartInfo("people", "a", 300), PartInfo("people", "b", 200)])


def _blobs(plan: Plan, protocol: Protocol, raw: list[Any], run: bytes = RUN) -> dict[int, bytes]:
    import spu
    import spu.libspu as libspu

    io = spu.Io(protocol.world, runtime_config(protocol, plan.numerics))
    per_output = [io.make_shares(np.asarray(x), libspu.Visibility.VIS_SECRET) for x in raw]
    return {
        rank: pack_outputs(plan, protocol, rank, run, [shares[rank] for shares in per_output])
        for rank in range(protocol.world)
    }


RAW = [
    np.array([40, 55, 61], np.int64),
    np.array([0.25, -0.5, 0.125]),
    np.arange(9, dtype=np.int64).reshape(3, 3),
]


@pytest.mark.parametrize("protocol", [Protocol.ABY3, Protocol.CHEETAH])
def test_blobs_reconstruct_and_decode_like_a_committee_receiver(protocol: Protocol) -> None:
    plan = _plan(protocol)
    blobs = _blobs(plan, protocol, RAW)
    assert all(len(b) <= output_blob_limit(plan) for b in blobs.values())
    got = reconstruct_result(plan, protocol, blobs)
    want = decode(plan, RAW)
    assert got.rows() == want.rows() and got.aggregates == want.aggregates
    assert got.value("count(*)", "south") == 55
    assert got.value("histogram(people.age, [18, 30, 50, 90])", "east") == (6, 7, 8)


def test_a_blob_of_the_wrong_shape_is_refused() -> None:
    plan = _plan(Protocol.ABY3)
    bad = _blobs(plan, Protocol.ABY3, [RAW[0], np.zeros(4), RAW[2]])
    with pytest.raises(
        SpecError, match=r"rank 0, output out2: shares have shape \(4,\), the plan expects 3 values"
    ):
        reconstruct_result(plan, Protocol.ABY3, bad)
    with pytest.raises(SpecError, match="output shares do not match the plan"):
        _blobs(plan, Protocol.ABY3, RAW[:2])


def test_blobs_of_two_runs_do_not_mix_and_keys_must_be_ranks() -> None:
    plan = _plan(Protocol.ABY3)
    one, two = _blobs(plan, Protocol.ABY3, RAW), _blobs(plan, Protocol.ABY3, RAW, run=bytes(16))
    with pytest.raises(SpecError, match="rank 2 come from a different run"):
        reconstruct_result(plan, Protocol.ABY3, {0: one[0], 1: one[1], 2: two[2]})
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['3'\]"):
        reconstruct_result(plan, Protocol.ABY3, {**one, 3: one[0]})
    with pytest.raises(SpecError, match="not an output-share blob"):
        reconstruct_result(plan, Protocol.ABY3, {**one, 1: b"X" * 200})
