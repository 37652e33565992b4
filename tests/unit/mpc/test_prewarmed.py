"""`Prewarmed`: engine processes started (and SPU/JAX imported) before the run is known."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.errors import ComputeError, SpecError
from compute.mpc import Accuracy, Prewarmed, Protocol, QueryResult, Reveal, parse_sql, plan_query, run_parties
from compute.mpc.simulate import parts_of

from .helpers import PEOPLE, assert_within, frame, people


def test_a_committee_runs_in_prewarmed_processes() -> None:
    handles = [Prewarmed(), Prewarmed()]
    try:
        assert all(h.ready(120) for h in handles)
        pids = [h.process.pid for h in handles]
        parts = [people(80, 91), people(60, 92)]
        query = parse_sql(
            "SELECT count(*), mean(income) FROM people WHERE age > 30",
            [PEOPLE],
            min_group_size=5,
            reveal=Reveal.to(1),
            accuracy=Accuracy(1e-4),
        )
        run = run_parties(
            query,
            {"people": parts},
            protocol=Protocol.CHEETAH,
            recv_timeout_ms=30_000,
            deadline_s=180,
            prewarmed=handles,
        )
        assert isinstance(run.outcomes[1], QueryResult)
        sel = frame(parts).query("age > 30")
        assert run.result.value("count(*)") == len(sel)
        assert_within(run.result, "mean(people.income)", "*", sel.income.mean())
        # the runs happened in those processes, which served their one run and exited
        assert [h.process.pid for h in handles] == pids
        assert all(h.used and h.process.exitcode is not None for h in handles)
        with pytest.raises(ComputeError, match="serves one run"):
            handles[0].submit(())
        with pytest.raises(SpecError, match="one engine process per party"):
            run_parties(query, {"people": parts}, protocol=Protocol.CHEETAH, prewarmed=handles[:1])
    finally:
        for h in handles:
            h.close()


def test_an_unused_prewarmed_process_is_closed() -> None:
    handle = Prewarmed()
    handle.close()
    assert handle.process.exitcode is not None


def test_a_prewarmed_process_compiles_ahead_into_the_cache(tmp_path: Path) -> None:
    parts = [people(70, 93), people(50, 94)]
    query = parse_sql(
        "SELECT count(*), mean(income) FROM people",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.to(0),
        accuracy=Accuracy(1e-4),
    )
    plan = plan_query(query, parts_of(query, {"people": parts})[0])
    handles = [Prewarmed(), Prewarmed()]
    try:
        assert all(h.ready(120) for h in handles)
        assert not list(tmp_path.iterdir())
        assert all(h.wait_compiled(0) for h in handles)  # nothing to wait for yet
        assert all(h.precompile(plan, Protocol.CHEETAH, tmp_path) for h in handles)
        assert all(h.wait_compiled(120) for h in handles)  # a member publishes its link only now
        assert len(list(tmp_path.iterdir())) == 1  # the executable is in the cache already
        stages: list[tuple[int, str]] = []
        run = run_parties(
            query,
            {"people": parts},
            protocol=Protocol.CHEETAH,
            recv_timeout_ms=30_000,
            deadline_s=180,
            cache_dir=tmp_path,
            prewarmed=handles,
            progress=lambda rank, stage: stages.append((rank, stage)),
        )
        # both parties found the executable compiled ahead: a cache hit, not a compile
        assert {rank for rank, stage in stages if stage == "cache-hit"} == {0, 1}
        assert len(list(tmp_path.iterdir())) == 1
        assert run.result.value("count(*)") == 120
        assert not handles[0].precompile(plan, Protocol.CHEETAH, tmp_path)  # the run was handed over
    finally:
        for h in handles:
            h.close()
