"""The node-side speed-ups of stats tasks: a provider reads, checks and shares its part in one
worker call (refusals come back as codes), and a committee member starts its engine process
ahead of the run (only as a member, at most a few at once, ended when the task closes)."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from compute.errors import ComputeError, SpecError
from compute.mpc import (
    Accuracy,
    Column,
    CommitteeLink,
    PartInfo,
    Prewarmed,
    Protocol,
    Reveal,
    TableSchema,
    parse_sql,
    plan_query,
    share_part,
)
from compute.mpc.party import _read_blob
from compute.mpc.shares import blob_limit, open_blob, plan_layout
from oracle.node import stats_committee
from oracle.node.psi_datasets import load_dataset, store_dataset
from oracle.node.stats_committee import LINK_START_MARGIN_S, MAX_PREWARMED, StatsCommittee
from oracle.node.stats_datasets import describe_stats_csv
from oracle.node.stats_spec import LinkMessage, StatsPart, StatsTaskSpec
from oracle.node.stats_worker import check_share_blob, read_and_share
from oracle.node.store import NodeTaskState

PEOPLE = TableSchema(
    "people",
    (
        Column.number("age", 18, 90, integer=True),
        Column.number("income", 0, 200_000),
        Column.category("region", ("north", "south")),
    ),
)
ROWS = 40


def spec() -> StatsTaskSpec:
    query = parse_sql(
        "SELECT count(*), mean(income) FROM people WHERE age >= 30 GROUP BY region",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.external(),
        accuracy=Accuracy(1e-3),
    )
    return StatsTaskSpec.model_validate(
        {
            "schema": "datum.stats.v1",
            "query": query.to_json(),
            "parts": [StatsPart(dataset_id=4, table="people"), StatsPart(dataset_id=5, table="people")],
            "protocol": "aby3",
            "output": "requester",
            "recv_timeout_ms": 20_000,
            "connect_timeout_ms": 20_000,
            "deadline_s": 300,
        }
    )


def served(tmp_path: Path) -> tuple[Path, bytes]:
    file = tmp_path / "p.csv"
    file.write_text(
        "id,age,income,region\n"
        + "".join(f"{i},{20 + i},{1000.25 * i},{'north' if i % 3 else 'south'}\n" for i in range(ROWS))
    )
    meta = describe_stats_csv(file, PEOPLE)
    data_dir = tmp_path / "node"
    store_dataset(
        data_dir, chain_id=31337, dataset_id=4, source=file, key="", salt=meta.salt, document=meta.document()
    )
    return data_dir, meta.metadata_hash


def share_args(tmp_path: Path) -> dict[str, Any]:
    data_dir, metadata_hash = served(tmp_path)
    return {
        "chain_id": 31337,
        "metadata_hash": metadata_hash,
        "row_count": ROWS,
        "table": PEOPLE,
        "plan": spec().plan({4: ROWS, 5: 25}),
        "protocol": "aby3",
        "part": 0,
        "local": load_dataset(data_dir, 4),
    }


def test_a_provider_part_is_read_checked_and_shared_in_one_worker_call(tmp_path: Path) -> None:
    args = share_args(tmp_path)
    local = args.pop("local")
    shared = read_and_share(local, **args)
    assert shared.code == "" and len(shared.blobs) == 3
    assert shared.read_s >= 0 and shared.share_s >= 0
    for rank, blob in enumerate(shared.blobs):
        assert check_share_blob(args["plan"], "aby3", 0, rank, blob) is None
    again = pickle.loads(pickle.dumps(shared))  # it crosses the process pool
    assert again == shared


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"metadata_hash": b"\x01" * 32}, "metadata_mismatch"),
        ({"row_count": ROWS + 1}, "row_count_mismatch"),
        ({"table": TableSchema("people", PEOPLE.columns[:2])}, "schema_mismatch"),
    ],
)
def test_a_refusal_comes_back_as_a_code_without_blobs(
    tmp_path: Path, change: dict[str, Any], code: str
) -> None:
    args = share_args(tmp_path) | change
    local = args.pop("local")
    shared = read_and_share(local, **args)
    assert (shared.code, shared.blobs) == (code, ())
    assert shared.reason and "1000.25" not in shared.reason
    assert pickle.loads(pickle.dumps(shared)) == shared


def test_a_changed_file_is_refused_in_the_worker(tmp_path: Path) -> None:
    args = share_args(tmp_path)
    local = args.pop("local")
    local.path.write_text(local.path.read_text().replace("1000.25", "1000.5"))
    shared = read_and_share(local, **args)
    assert shared.code == "commitment_mismatch" and shared.blobs == ()


# -- the engine process started ahead --------------------------------------------------------------


class FakeEngine:
    """Stands in for `Prewarmed` (no process) to check the committee's bookkeeping."""

    started: list[FakeEngine] = []

    def __init__(self, memory_mb: int = 0) -> None:
        self.memory_mb = memory_mb
        self.touch_s = 0.0
        self.used = False
        self.closed = False
        self.process = SimpleNamespace(is_alive=lambda: not self.closed)
        FakeEngine.started.append(self)

    def ready(self, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def committee(
    tmp_path: Path, records: dict[int, Any], *, prewarm: bool = True, spare: bool = True
) -> StatsCommittee:
    config = SimpleNamespace(
        data_dir=tmp_path, stats_prewarm=prewarm, stats_spare_engine=spare, stats_engine_memory_mb=64
    )
    ctx = SimpleNamespace(config=config, store=SimpleNamespace(get=records.get), operator="0xMe")
    return StatsCommittee(ctx, lambda: None)  # type: ignore[arg-type, return-value]


def record(member: bool, state: NodeTaskState = NodeTaskState.ACCEPTED) -> Any:
    return SimpleNamespace(state=state, slot_of=lambda op: 1 if member and op == "0xMe" else None)


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[FakeEngine]:
    FakeEngine.started = []
    monkeypatch.setattr(stats_committee, "Prewarmed", FakeEngine)
    return FakeEngine


def test_only_a_member_starts_an_engine_ahead_and_uses_it_once(
    tmp_path: Path, fake_engine: type[FakeEngine]
) -> None:
    records = {1: record(member=True), 2: record(member=False)}
    c = committee(tmp_path, records)
    c.remember_spec(1, spec())
    c.remember_spec(1, spec())  # a second delivery starts nothing more
    c.remember_spec(2, spec())  # a provider-only node
    c.remember_spec(3, spec())  # a task this node has not seen
    assert len(fake_engine.started) == 1
    handle: Any = c.take_prewarmed(1)
    assert handle is fake_engine.started[0]
    assert c.take_prewarmed(1) is None and c.take_prewarmed(2) is None


def test_the_setting_turns_it_off(tmp_path: Path, fake_engine: type[FakeEngine]) -> None:
    c = committee(tmp_path, {1: record(member=True)}, prewarm=False)
    c.remember_spec(1, spec())
    assert fake_engine.started == [] and c.take_prewarmed(1) is None


def test_engines_ahead_are_bounded_and_ended_when_their_task_closes(
    tmp_path: Path, fake_engine: type[FakeEngine]
) -> None:
    records = {t: record(member=True) for t in range(1, MAX_PREWARMED + 3)}
    c = committee(tmp_path, records)
    for task_id in records:
        c.prewarm(task_id)
    assert len(fake_engine.started) == MAX_PREWARMED  # the others will spawn at run time
    first = fake_engine.started[0]
    records[1] = record(member=True, state=NodeTaskState.FAILED)
    c.prewarm(MAX_PREWARMED + 2)  # reaps the closed task's engine, then starts one
    assert first.closed and len(fake_engine.started) == MAX_PREWARMED + 1
    assert c.take_prewarmed(1) is None
    dead = fake_engine.started[1]
    dead.closed = True
    assert c.take_prewarmed(2) is None  # not alive any more: the run spawns its own


def test_a_real_engine_started_ahead_gets_ready_and_ends(tmp_path: Path) -> None:
    c = committee(tmp_path, {1: record(member=True)})
    c.prewarm(1)
    handle = c.take_prewarmed(1)
    assert isinstance(handle, Prewarmed)
    try:
        assert handle.ready(120)
        assert handle.process.is_alive()
    finally:
        handle.close()
    assert not handle.process.is_alive()


# -- the spare engine (started while the node is idle) ----------------------------------------------


def test_a_task_takes_the_spare_and_the_next_spare_starts_only_when_asked(
    tmp_path: Path, fake_engine: type[FakeEngine]
) -> None:
    c = committee(tmp_path, {1: record(member=True), 2: record(member=True)})
    c.refill_spare()
    c.refill_spare()  # at most one spare
    assert len(fake_engine.started) == 1 and fake_engine.started[0].memory_mb == 64
    spare = fake_engine.started[0]
    c.prewarm(1)
    assert len(fake_engine.started) == 1  # the task took the spare: nothing new spawned
    taken: Any = c.take_prewarmed(1)
    assert taken is spare
    c.prewarm(2)  # no spare now: a plain engine (no pre-touch) for this task
    assert len(fake_engine.started) == 2 and fake_engine.started[1].memory_mb == 0
    c.refill_spare()  # after the run
    assert len(fake_engine.started) == 3
    c.close()
    assert all(e.closed for e in fake_engine.started[1:])  # the first was handed to task 1


def test_a_dead_spare_is_replaced_and_the_settings_turn_spares_off(
    tmp_path: Path, fake_engine: type[FakeEngine]
) -> None:
    c = committee(tmp_path, {})
    c.refill_spare()
    fake_engine.started[0].closed = True  # it died
    c.refill_spare()
    assert len(fake_engine.started) == 2
    for prewarm, spare in ((True, False), (False, True)):
        fake_engine.started = []
        committee(tmp_path, {}, prewarm=prewarm, spare=spare).refill_spare()
        assert fake_engine.started == []


def test_a_real_spare_faults_its_working_memory_in_before_it_is_ready() -> None:
    handle = Prewarmed(memory_mb=96)
    try:
        assert handle.ready(120)
        assert handle.touch_s is not None and handle.touch_s > 0
        status = Path(f"/proc/{handle.process.pid}/status").read_text()
        rss_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        assert rss_kb > 96 * 1024  # the freed block stays mapped
        assert handle.ready(0)  # asking again answers at once
    finally:
        handle.close()
    with pytest.raises(ComputeError):
        Prewarmed(memory_mb=-1)


def test_engine_processes_keep_freed_memory() -> None:
    code = "from compute.mpc.link import keep_freed_memory; print(keep_freed_memory())"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "True"


# -- the link start every member derives ------------------------------------------------------------


def test_members_derive_one_link_start_from_the_published_times(tmp_path: Path) -> None:
    c = committee(tmp_path, {})
    view = SimpleNamespace(task_id=7, committee=("0xA", "0xB", "0xC"))
    messages = [
        LinkMessage(task_id=7, rank=r, address=f"127.0.0.1:{9000 + r}", at=1000.0 + r)
        .model_dump_json()
        .encode()
        for r in range(3)
    ]

    async def gather(*args: Any) -> list[bytes]:
        return messages

    c.gather = gather  # type: ignore[method-assign, assignment]
    mine = LinkMessage.parse(messages[0])
    addresses, start_at = asyncio.run(c.gather_links(view, mine, 0.0))  # type: ignore[arg-type]
    assert addresses == ("127.0.0.1:9000", "127.0.0.1:9001", "127.0.0.1:9002")
    assert start_at == 1002.0 + LINK_START_MARGIN_S
    messages[2] = LinkMessage(task_id=7, rank=1, address="127.0.0.1:9002").model_dump_json().encode()
    with pytest.raises(SpecError, match="another task or slot"):
        asyncio.run(c.gather_links(view, mine, 0.0))  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="invalid"):
        LinkMessage.parse(b'{"task_id": 7, "rank": 1, "address": "127.0.0.1:9", "at": -1}')


def test_a_link_start_must_be_a_time() -> None:
    CommitteeLink(0, ("127.0.0.1:9000", "127.0.0.1:9001"), "s", start_at=1.5e9)
    for bad in (float("nan"), float("inf"), -1.0):
        with pytest.raises(SpecError, match="start_at"):
            CommitteeLink(0, ("127.0.0.1:9000", "127.0.0.1:9001"), "s", start_at=bad)


# -- share blobs handed to the engine as files --------------------------------------------------------


def test_the_engine_reads_a_share_blob_from_its_file(tmp_path: Path) -> None:
    table = TableSchema("t", (Column.number("x", 0, 10),))
    query = parse_sql(
        "SELECT sum(x) FROM t", [table], min_group_size=1, reveal=Reveal.external(), accuracy=Accuracy(1e-2)
    )
    plan = plan_query(query, [PartInfo("t", "p0", 20)])
    blobs = share_part(plan, Protocol.ABY3, 0, {"x": [1.0] * 20})
    layout = plan_layout(plan)
    path = tmp_path / "share-0.bin"
    path.write_bytes(blobs[1])
    assert _read_blob(path, layout, 0) == blobs[1] == _read_blob(blobs[1], layout, 0)
    opened = open_blob(layout, Protocol.ABY3, 0, 1, _read_blob(path, layout, 0))
    assert len(opened) == len(layout.part_inputs(0))
    with pytest.raises(SpecError, match="cannot read its share blob"):
        _read_blob(tmp_path / "missing.bin", layout, 0)
    path.write_bytes(blobs[1] + b"x" * (blob_limit(layout, 0) + 10))
    with pytest.raises(SpecError, match="larger than the program allows"):
        open_blob(layout, Protocol.ABY3, 0, 1, _read_blob(path, layout, 0))


def test_two_threads_waiting_for_one_engine_both_see_it_ready() -> None:
    handle = Prewarmed()  # e.g. the spare's announcer and a member publishing its link address
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: handle.ready(100), range(2)))
        assert answers == [True, True]
        assert time.monotonic() - started < 60  # the second did not sit out its whole timeout
    finally:
        handle.close()


def test_no_spare_starts_while_a_run_computes_on_the_node(
    tmp_path: Path, fake_engine: type[FakeEngine]
) -> None:
    c = committee(tmp_path, {})
    c.run_started(5)
    c.refill_spare()  # would take the run's CPU for its imports and pre-touch
    assert fake_engine.started == []
    c.run_ended(5)
    c.refill_spare()
    assert len(fake_engine.started) == 1
