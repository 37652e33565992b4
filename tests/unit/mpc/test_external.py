"""`Reveal.external()`: no committee party reconstructs anything; each returns `OutputShares`
and the requester rebuilds the result with `reconstruct_result`. Real multi-process
committees (ABY3: three processes; CHEETAH: two) on loopback brpc links."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compute.errors import SpecError
from compute.mpc import (
    Accuracy,
    DisclosureRefused,
    OutputShares,
    PartInfo,
    PartyReport,
    Protocol,
    Reveal,
    parse_sql,
    plan_query,
    reconstruct_result,
    run_parties,
    run_party,
    share_part,
)
from compute.mpc.local import committee_links, run_concurrently
from compute.mpc.reconstruct import output_blob_limit

from .helpers import PEOPLE, REGIONS, assert_within, frame, people
from .test_disclosure import small_east

EXTERNAL = Reveal.external()
_RUN_ID = slice(4 + 1 + 32, 4 + 1 + 32 + 16)  # where a blob keeps its run id (reconstruct.py)


def test_external_receiver_on_a_three_process_aby3_committee(tmp_path: Path) -> None:
    parts = [people(400, 71), people(300, 72), people(350, 73)]
    sql = (
        "SELECT count(*), mean(income), stddev(debt), corr(income, score) FROM people "
        "WHERE age >= 25 GROUP BY region"
    )
    query = parse_sql(sql, [PEOPLE], min_group_size=20, reveal=EXTERNAL, accuracy=Accuracy(1e-5))
    cache = tmp_path / "cache"
    run = run_parties(query, {"people": parts}, recv_timeout_ms=30_000, deadline_s=300, cache_dir=cache)
    for rank, outcome in enumerate(run.outcomes):  # no party holds a result: only its shares
        assert isinstance(outcome, OutputShares), outcome
        assert outcome.rank == rank and outcome.report.rank == rank
        assert outcome.report.group_ok == (True, True, True)
        assert 0 < len(outcome.blob) <= output_blob_limit(run.plan)
    df = frame(parts)
    sub = df[df.age >= 25]
    for region in REGIONS:
        g = sub[sub.region == region]
        assert run.result.value("count(*)", region) == len(g)
        assert_within(run.result, "mean(people.income)", region, g.income.mean())
        assert_within(run.result, "stddev_samp(people.debt)", region, g.debt.std())
        assert_within(run.result, "corr(people.income, people.score)", region, g.income.corr(g.score))
    assert "cache-hit" not in run.stages and len(list(cache.iterdir())) == 1

    # The same plan and data again: the executable comes from the cache, same result.
    again = run_parties(query, {"people": parts}, recv_timeout_ms=30_000, deadline_s=300, cache_dir=cache)
    assert "cache-hit" in again.stages
    assert again.result.value("count(*)", "east") == run.result.value("count(*)", "east")
    for region in REGIONS:
        assert_within(again.result, "mean(people.income)", region, sub[sub.region == region].income.mean())

    # One party's blob is fresh randomness at every run: the same rank's shares of the same
    # outputs differ between the two runs, and a blob of another run is refused ...
    first = {o.rank: o.blob for o in run.outcomes if isinstance(o, OutputShares)}
    second = {o.rank: o.blob for o in again.outcomes if isinstance(o, OutputShares)}
    assert first[1][_RUN_ID.stop :] != second[1][_RUN_ID.stop :]
    with pytest.raises(SpecError, match="rank 1 come from a different run"):
        reconstruct_result(run.plan, Protocol.ABY3, {**second, 1: first[1]})
    # ... and with its run id forged to pass that check, the mix reconstructs garbage. Both
    # runs had the same plan, data and outputs, so if a party's share depended only on the
    # outputs the true values would come back; they do not: a blob is a fresh random share,
    # useless without the other ranks' blobs of the same run.
    forged = first[1][: _RUN_ID.start] + second[0][_RUN_ID] + first[1][_RUN_ID.stop :]
    mixed = reconstruct_result(run.plan, Protocol.ABY3, {**second, 1: forged})  # Io does not check
    label = "mean(people.income)"
    garbage = np.asarray(mixed.column(label).values, dtype=np.float64)
    truth = np.asarray(run.result.column(label).values, dtype=np.float64)
    bounds = np.asarray(run.result.column(label).bounds)
    assert np.all(np.abs(garbage - truth) > 1000 * bounds), (garbage, truth)


def test_external_receiver_on_a_two_process_cheetah_committee_and_bad_blobs() -> None:
    bank, broker = people(150, 81), people(120, 82)
    query = parse_sql(
        "SELECT count(*), mean(income), sum(debt), min(debt), max(age) FROM people WHERE age < 70",
        [PEOPLE],
        min_group_size=5,
        reveal=EXTERNAL,
        accuracy=Accuracy(1e-4),
    )
    plan = plan_query(query, [PartInfo("people", "bank", 150), PartInfo("people", "broker", 120)])
    shares = share_part(plan, Protocol.CHEETAH, 1, broker)  # an external provider
    links = committee_links(2, recv_timeout_ms=30_000, deadline_s=180)
    out = run_concurrently(
        [
            lambda r=r: run_party(
                plan,
                protocol=Protocol.CHEETAH,
                link=links[r],
                hosts=(0, None),
                data={0: bank} if r == 0 else None,
                shares={1: shares[r]},
            )
            for r in range(2)
        ]
    )
    assert all(isinstance(o, OutputShares) for o in out), out
    blobs = {o.rank: o.blob for o in out if isinstance(o, OutputShares)}
    result = reconstruct_result(plan, Protocol.CHEETAH, blobs)
    sel = frame([bank, broker]).query("age < 70")
    assert result.value("count(*)") == len(sel)
    assert_within(result, "mean(people.income)", "*", sel.income.mean())
    assert_within(result, "sum(people.debt)", "*", sel.debt.sum())
    assert_within(result, "min(people.debt)", "*", sel.debt.min())
    assert result.value("max(people.age)") == sel.age.max()  # exact (integer column)
    assert result.query_digest == query.digest().hex()

    with pytest.raises(SpecError, match=r"every rank 0\.\.1 .* missing rank\(s\) \[1\]"):
        reconstruct_result(plan, Protocol.CHEETAH, {0: blobs[0]})
    with pytest.raises(SpecError, match="output shares of rank 0: the blob is rank 1's"):
        reconstruct_result(plan, Protocol.CHEETAH, {0: blobs[1], 1: blobs[0]})
    with pytest.raises(SpecError, match="rank 1.*truncated"):
        reconstruct_result(plan, Protocol.CHEETAH, {0: blobs[0], 1: blobs[1][:-100]})
    with pytest.raises(SpecError, match="rank 1.*truncated"):
        reconstruct_result(plan, Protocol.CHEETAH, {0: blobs[0], 1: blobs[1][:20]})
    with pytest.raises(SpecError, match="rank 0: trailing bytes"):
        reconstruct_result(plan, Protocol.CHEETAH, {0: blobs[0] + b"\0", 1: blobs[1]})
    other = plan_query(query, [PartInfo("people", "bank", 151), PartInfo("people", "broker", 120)])
    with pytest.raises(SpecError, match="rank 0: made for a different plan"):
        reconstruct_result(other, Protocol.CHEETAH, blobs)
    with pytest.raises(SpecError, match="different protocol or committee size"):
        reconstruct_result(plan, Protocol.ABY3, {0: blobs[0], 1: blobs[1], 2: blobs[1]})
    too_big = blobs[0] + bytes(output_blob_limit(plan))
    with pytest.raises(SpecError, match="more than the .* this plan allows"):
        reconstruct_result(plan, Protocol.CHEETAH, {0: too_big, 1: blobs[1]})
    committee = plan_query(
        parse_sql(
            "SELECT count(*) FROM people",
            [PEOPLE],
            min_group_size=5,
            reveal=Reveal.to(0),
            accuracy=Accuracy(1e-4),
        ),
        plan.parts,
    )
    with pytest.raises(SpecError, match="does not reveal to an external receiver"):
        reconstruct_result(committee, Protocol.CHEETAH, blobs)


def test_a_refused_group_releases_no_output_shares() -> None:
    data = [small_east(120, 11), small_east(100, 12)]
    query = parse_sql(
        "SELECT mean(income) FROM people GROUP BY region",
        [PEOPLE],
        min_group_size=7,
        reveal=EXTERNAL,
        accuracy=Accuracy(1e-3),
    )
    with pytest.raises(DisclosureRefused) as info:
        run_parties(
            query, {"people": data}, protocol=Protocol.CHEETAH, recv_timeout_ms=30_000, deadline_s=180
        )
    assert info.value.small_groups == ("east",)
    # every party refuses (run_parties raises the first; check them one by one)
    plan = plan_query(
        query, [PartInfo("people", f"people#{i}", len(d["income"])) for i, d in enumerate(data)]
    )
    links = committee_links(2, recv_timeout_ms=30_000, deadline_s=180)
    out = run_concurrently(
        [
            lambda r=r: run_party(
                plan, protocol=Protocol.CHEETAH, link=links[r], hosts=(0, 1), data={r: data[r]}
            )
            for r in range(2)
        ]
    )
    assert all(isinstance(o, DisclosureRefused) for o in out), out
    assert not any(isinstance(o, OutputShares | PartyReport) for o in out)
    assert np.all([o.small_groups == ("east",) for o in out if isinstance(o, DisclosureRefused)])
