"""The node's task store: the checked state machine, idempotent inserts, signatures kept one
per signer, blobs, and what survives a reopen (a restart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from oracle.node.store import (
    ALLOWED,
    OPEN_STATES,
    BlobRecord,
    InvalidTransition,
    NodeTaskState,
    SignatureRecord,
    TaskRecord,
    TaskStore,
)

S = NodeTaskState
OPERATORS = ("0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20)


def record(task_id: int = 7, state: NodeTaskState = S.SEEN) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        state=state,
        kind=1,
        requester="0x" + "aa" * 20,
        spec_hash="0x" + "bb" * 32,
        deadline=2_000,
        quorum=2,
        committee=OPERATORS,
        request_block=12,
        request_tx="0x" + "cc" * 32,
    )


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    return TaskStore(tmp_path / "node.sqlite3")


def test_insert_is_idempotent_and_round_trips(store: TaskStore) -> None:
    assert store.insert(record()) is True
    assert store.insert(record(state=S.ACCEPTED)) is False  # a duplicate event changes nothing
    got = store.get(7)
    assert got == record()
    assert got is not None and got.slot_of(OPERATORS[1].upper().replace("0X", "0x")) == 1
    assert got.slot_of("0x" + "44" * 20) is None
    assert store.get(8) is None
    assert store.history(7) == [("", "seen")]


def test_the_happy_path_and_its_log(store: TaskStore) -> None:
    store.insert(record())
    path = [S.ACCEPTED, S.INPUTS_READY, S.COMPUTED, S.SIGNED, S.SUBMITTED, S.FINALIZED]
    previous = S.SEEN
    for state in path:
        assert store.transition(7, state, {previous}) is True
        previous = state
    assert store.get(7).state is S.FINALIZED  # type: ignore[union-attr]
    assert [to for _, to in store.history(7)] == ["seen", *[s.value for s in path]]
    assert store.open_tasks() == []


def test_a_transition_from_an_unexpected_state_is_a_no_op(store: TaskStore) -> None:
    store.insert(record())
    assert store.transition(7, S.INPUTS_READY, {S.ACCEPTED}) is False  # still seen
    assert store.transition(7, S.ACCEPTED, {S.SEEN}, accept_tx="0x01") is True
    assert store.transition(7, S.ACCEPTED, {S.SEEN}) is False  # done already: idempotent
    assert store.get(7).accept_tx == "0x01"  # type: ignore[union-attr]
    assert store.transition(99, S.ACCEPTED, {S.SEEN}) is False  # unknown task


def test_moves_outside_the_machine_are_refused(store: TaskStore) -> None:
    store.insert(record())
    with pytest.raises(InvalidTransition):
        store.transition(7, S.SIGNED, {S.SEEN})  # skipping accept, inputs, compute
    store.transition(7, S.FINALIZED, OPEN_STATES)
    with pytest.raises(InvalidTransition):
        store.transition(7, S.ACCEPTED, {S.FINALIZED})  # terminal
    with pytest.raises(InvalidTransition):
        store.update(7, state=S.SEEN)


def test_the_chain_overrides_local_failure() -> None:
    assert (S.FAILED, S.FINALIZED) in ALLOWED and (S.EXPIRED, S.REFUNDED) in ALLOWED
    assert (S.FINALIZED, S.REFUNDED) not in ALLOWED and (S.REFUNDED, S.FINALIZED) not in ALLOWED
    for state in OPEN_STATES:
        assert (state, S.FAILED) in ALLOWED and (state, S.EXPIRED) in ALLOWED


def test_signatures_keep_the_first_per_signer(store: TaskStore) -> None:
    first = SignatureRecord(7, OPERATORS[0], OPERATORS[0], "0x" + "01" * 32, "0x" + "02" * 32, 1, "0xaa")
    assert store.add_signature(first) is None
    assert store.add_signature(first) == first  # a retried post
    other = SignatureRecord(7, OPERATORS[0], OPERATORS[0], "0x" + "09" * 32, "0x" + "02" * 32, 1, "0xbb")
    assert store.add_signature(other) == first  # equivocation: the first one stays
    second = SignatureRecord(7, OPERATORS[1], OPERATORS[1], "0x" + "01" * 32, "0x" + "02" * 32, 1, "0xcc")
    store.add_signature(second)
    assert store.signatures(7) == [first, second]
    assert store.signatures(8) == []


def test_state_blobs_and_signatures_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    store = TaskStore(path)
    store.insert(record())
    store.transition(7, S.ACCEPTED, {S.SEEN})
    store.record_blob(BlobRecord(7, "spec", "/d/spec", "ab" * 32, 300))
    store.record_blob(BlobRecord(7, "spec", "/d/spec", "ab" * 32, 300))  # same upload again
    store.count_evaluation(7)
    store.add_signature(SignatureRecord(7, OPERATORS[2], OPERATORS[2], "0x01", "0x02", 1, "0xdd"))
    store.close()

    reader = TaskStore(path, readonly=True)  # another process, while the node runs
    assert reader.get(7).state is S.ACCEPTED  # type: ignore[union-attr]
    reader.close()
    again = TaskStore(path)
    got = again.get(7)
    assert got is not None and got.state is S.ACCEPTED and got.evaluations == 1
    assert list(again.blobs(7)) == ["spec"] and again.blobs(7)["spec"].size_bytes == 300
    assert [s.signer for s in again.signatures(7)] == [OPERATORS[2]]
    assert [r.task_id for r in again.open_tasks()] == [7]


def test_task_ids_beyond_sqlite_integers_are_refused(store: TaskStore) -> None:
    with pytest.raises(ValueError):
        store.insert(record(task_id=2**63))
    with pytest.raises(ValueError):
        store.get(0)
