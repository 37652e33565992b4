"""run_psi starts its engine process before the keys are prepared: a bad input still fails
cleanly on its own side, the peer gets ProtocolAbort, and no files are left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.errors import ProtocolAbort, SpecError
from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    KeyRules,
    LinkConfig,
    PartyData,
    Protocol,
    PsiSpec,
    Reveal,
    Table,
    run_psi,
)
from compute.psi.link import EngineWorker, LinkSession

from .helpers import free_port, link_pair, run_both

REJECT = KeyRules(CaseRule.EXACT, EmptyKeyRule.REJECT, DuplicateRule.REJECT)
GOOD = PartyData(Table(("id",), (("a",), ("b",))), ("id",))


def test_bad_keys_on_one_side_abort_both_sides_and_leave_nothing(tmp_path: Path) -> None:
    spec = PsiSpec(Protocol.RR22, Reveal.ROWS, (0,), REJECT)
    duplicated = PartyData(Table(("id",), (("a",), ("a",))), ("id",))
    addresses = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    links = [LinkConfig(r, addresses, "prestart-dup", 5_000, 5_000, 120) for r in (0, 1)]
    dirs = [tmp_path / f"p{r}" for r in (0, 1)]
    for d in dirs:
        d.mkdir()
    good, bad = run_both(
        (
            lambda: run_psi(spec, data=GOOD, link=links[0], work_dir=dirs[0]),
            lambda: run_psi(spec, data=duplicated, link=links[1], work_dir=dirs[1]),
        )
    )
    assert isinstance(bad, SpecError) and "repeats the key of row 0" in str(bad)
    # the peer's engine sees the link close (or never come up) and ends within its timeouts
    assert isinstance(good, ProtocolAbort), good
    for party in tmp_path.iterdir():
        assert list(party.iterdir()) == []


def test_missing_key_column_fails_before_any_process(tmp_path: Path) -> None:
    spec = PsiSpec(Protocol.RR22, Reveal.ROWS, (0,), REJECT)
    link = link_pair("prestart-col")[0]
    with pytest.raises(SpecError, match="no column named"):
        run_psi(spec, data=PartyData(GOOD.table, ("zip",)), link=link, work_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def _pid(session: LinkSession) -> int:
    import os

    return os.getpid()


def test_a_worker_runs_one_job_and_removes_its_run_dir(tmp_path: Path) -> None:
    import threading

    links = link_pair("prestart-one")
    dirs = [tmp_path / f"p{r}" for r in (0, 1)]
    pids: list[object] = [None, None]

    def party(rank: int) -> None:
        dirs[rank].mkdir()
        with EngineWorker(links[rank], dirs[rank], b"same") as worker:
            assert (dirs[rank] / f"psi-prestart-one-r{rank}").is_dir()
            pids[rank] = worker.run(_pid, ())
            with pytest.raises(Exception, match="one job"):
                worker.run(_pid, ())

    threads = [threading.Thread(target=party, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(p, int) for p in pids) and pids[0] != pids[1]
    assert [list(d.iterdir()) for d in dirs] == [[], []]
