"""The real runtime: one spawned engine process per party, SPU brpc links on free loopback
ports (ABY3, three parties). Few runs: each spawns three processes and links them (~5 s)."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest

from compute.errors import ProtocolAbort, SpecError
from compute.mpc import (
    Accuracy,
    PartInfo,
    PartyReport,
    Protocol,
    QueryResult,
    Reveal,
    parse_sql,
    plan_query,
    run_parties,
    run_party,
    share_part,
)
from compute.mpc.encode import encode_part
from compute.mpc.link import CommitteeLink
from compute.mpc.local import committee_links, run_concurrently
from compute.mpc.plan import Plan
from compute.mpc.shares import make_shares, plan_layout

from .helpers import PEOPLE, REGIONS, assert_within, frame, people


def test_a_query_on_a_real_three_process_aby3_committee() -> None:
    parts = [people(700, 31), people(500, 32), people(600, 33)]
    sql = "SELECT count(*), mean(income), stddev(debt), max(age) FROM people WHERE age >= 30 GROUP BY region"
    query = parse_sql(sql, [PEOPLE], min_group_size=20, reveal=Reveal.to(1), accuracy=Accuracy(1e-6))
    run = run_parties(
        query, {"people": parts}, protocol=Protocol.ABY3, recv_timeout_ms=30_000, deadline_s=300
    )
    receiver, others = run.outcomes[1], (run.outcomes[0], run.outcomes[2])
    assert isinstance(receiver, QueryResult) and receiver is run.result
    for report in others:  # the other parties learn the per-group flags and nothing else
        assert isinstance(report, PartyReport)
        assert report.group_ok == (True, True, True)
        assert set(vars(report)) == {"rank", "groups", "group_ok", "numerics", "query_digest"}
    df = frame(parts)
    sub = df[df.age >= 30]
    for region in REGIONS:
        g = sub[sub.region == region]
        assert receiver.value("count(*)", region) == len(g)
        assert_within(receiver, "mean(people.income)", region, g.income.mean())
        assert_within(receiver, "stddev_samp(people.debt)", region, g.debt.std())
        assert receiver.value("max(people.age)", region) == g.age.max()
    assert list(run.stages) == ["linked", "compiled", "inputs-shared", "computed", "revealed"]


def _victim(plan: Plan, link: CommitteeLink, hosts: tuple[int, ...], rows: int) -> None:
    run_party(plan, protocol=Protocol.ABY3, link=link, hosts=hosts, data={2: people(rows, 43)})


def test_a_party_killed_mid_session_aborts_the_others_without_output() -> None:
    rows = 12_000
    sql = (
        "SELECT quantile(income, 0.5), quantile(debt, 0.9), histogram(age, [18, 40, 60, 90]) "
        "FROM people GROUP BY region"
    )
    query = parse_sql(sql, [PEOPLE], min_group_size=5, reveal=Reveal.to(0), accuracy=Accuracy(1e-6))
    plan = plan_query(query, [PartInfo("people", f"p{i}", rows) for i in range(3)])
    hosts = (0, 1, 2)
    links = committee_links(3, recv_timeout_ms=5_000, deadline_s=120)
    victim = multiprocessing.get_context("spawn").Process(target=_victim, args=(plan, links[2], hosts, rows))
    victim.start()
    computing = threading.Event()
    killed_at: list[float] = []

    def survivor(rank: int) -> QueryResult | PartyReport:
        def progress(stage: str) -> None:
            if stage == "inputs-shared" and rank == 0:
                computing.set()

        data = {rank: people(rows, 41 + rank)}
        return run_party(
            plan, protocol=Protocol.ABY3, link=links[rank], hosts=hosts, data=data, progress=progress
        )

    def killer() -> None:
        if computing.wait(90):  # every party holds its shares: the MPC program is running
            victim.kill()
            killed_at.append(time.monotonic())

    out = run_concurrently([lambda: survivor(0), lambda: survivor(1), killer])
    returned_at = time.monotonic()
    victim.join()
    assert killed_at, "the MPC never started"
    assert all(isinstance(o, ProtocolAbort) for o in out[:2]), out[:2]
    assert returned_at - killed_at[0] < 30  # bounded by the link's receive timeout, not a hang


def test_wrong_shaped_shares_from_an_external_provider_stop_every_party() -> None:
    query = parse_sql(
        "SELECT mean(income) FROM people",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.to(0),
        accuracy=Accuracy(1e-4),
    )
    plan = plan_query(query, [PartInfo("people", "bank", 60), PartInfo("people", "broker", 50)])
    broker = people(50, 52)
    good = share_part(plan, Protocol.ABY3, 1, broker)
    truncated = {k: v[:49] for k, v in encode_part(plan, 1, broker).items()}
    bad = make_shares(plan_layout(plan), Protocol.ABY3, 1, truncated)
    blobs = {0: good[0], 1: good[1], 2: bad[2]}
    links = committee_links(3, recv_timeout_ms=20_000, deadline_s=120)
    hosts = (0, None)  # the bank sits with party 0; the broker is an external provider
    out = run_concurrently(
        [
            lambda r=r: run_party(
                plan,
                protocol=Protocol.ABY3,
                link=links[r],
                hosts=hosts,
                data={0: people(60, 51)} if r == 0 else None,
                shares={1: blobs[r]},
            )
            for r in range(3)
        ]
    )
    assert isinstance(out[2], SpecError)
    assert (
        "part 1 (people/broker) input p1.num: shares have shape (49, 1), the program expects (50, 1)"
        in str(out[2])
    )
    for o in out[:2]:
        assert isinstance(o, ProtocolAbort), o
        assert "party 2 refused its inputs" in str(o)


def test_bad_columns_fail_before_any_process_starts() -> None:
    query = parse_sql(
        "SELECT mean(income) FROM people",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.to(0),
        accuracy=Accuracy(1e-4),
    )
    bad = people(30, 1)
    bad["income"] = np.full(30, -1.0)
    started = time.monotonic()
    with pytest.raises(SpecError, match="outside its declared range"):
        run_parties(query, {"people": [people(30, 2), bad]})
    assert time.monotonic() - started < 2


def test_two_party_cheetah_with_an_external_provider_and_a_public_answer() -> None:
    bank, broker = people(150, 61), people(100, 62)
    query = parse_sql(
        "SELECT count(*), mean(income), sum(debt) FROM people WHERE age < 60",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.everyone(),
        accuracy=Accuracy(1e-3),
    )
    plan = plan_query(query, [PartInfo("people", "bank", 150), PartInfo("people", "broker", 100)])
    blobs = share_part(plan, Protocol.CHEETAH, 1, broker)  # the broker's own process: one blob per party
    links = committee_links(2, recv_timeout_ms=30_000, deadline_s=120)
    out = run_concurrently(
        [
            lambda r=r: run_party(
                plan,
                protocol=Protocol.CHEETAH,
                link=links[r],
                hosts=(0, None),
                data={0: bank} if r == 0 else None,
                shares={1: blobs[r]},
            )
            for r in range(2)
        ]
    )
    sel = frame([bank, broker]).query("age < 60")
    for result in out:  # a public answer: both parties reconstruct it
        assert isinstance(result, QueryResult), result
        assert result.value("count(*)") == len(sel)
        assert_within(result, "mean(people.income)", "*", sel.income.mean())
        assert_within(result, "sum(people.debt)", "*", sel.debt.sum())
