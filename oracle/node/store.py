"""The node's per-task state, in SQLite (``<data_dir>/node.sqlite3``).

One row per task the node is (or was) elected for, moved through the states of
docs/NODE_DAEMON.md by one checked function, `TaskStore.transition`; the blobs received
per task; every Result signature seen (one per task and signer); and a transition log.
Every change is one short transaction, committed before the call returns. The store is
used from the event loop's thread only (each call is a few milliseconds at most).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from compute.errors import DatumError

__all__ = [
    "ALLOWED",
    "OPEN_STATES",
    "BlobRecord",
    "InvalidTransition",
    "NodeTaskState",
    "SignatureRecord",
    "TaskRecord",
    "TaskStore",
]

SCHEMA_VERSION = 1


class NodeTaskState(StrEnum):
    """Where one task stands on this node."""

    SEEN = "seen"
    ACCEPTED = "accepted"
    INPUTS_READY = "inputs_ready"
    COMPUTED = "computed"
    SIGNED = "signed"
    SUBMITTED = "submitted"
    FINALIZED = "finalized"
    REFUNDED = "refunded"
    FAILED = "failed"
    EXPIRED = "expired"


S = NodeTaskState
OPEN_STATES = frozenset({S.SEEN, S.ACCEPTED, S.INPUTS_READY, S.COMPUTED, S.SIGNED, S.SUBMITTED})
_CHAIN_FINAL = {S.FINALIZED, S.REFUNDED}
ALLOWED: frozenset[tuple[NodeTaskState, NodeTaskState]] = frozenset(
    {
        (S.SEEN, S.ACCEPTED),
        (S.ACCEPTED, S.INPUTS_READY),
        (S.INPUTS_READY, S.COMPUTED),
        (S.COMPUTED, S.SIGNED),
        (S.SIGNED, S.SUBMITTED),
        (S.SUBMITTED, S.SIGNED),  # the submission did not land and the task is still open
    }
    | {(s, t) for s in OPEN_STATES for t in (S.FINALIZED, S.REFUNDED, S.FAILED, S.EXPIRED)}
    | {(s, t) for s in (S.FAILED, S.EXPIRED) for t in _CHAIN_FINAL}  # the chain decides
)


class InvalidTransition(DatumError, RuntimeError):
    """A transition outside the state machine (a bug, never an input problem)."""


@dataclass(frozen=True)
class TaskRecord:
    """One task as this node knows it. Hashes are ``0x`` hex; addresses checksummed."""

    task_id: int
    state: NodeTaskState
    kind: int = 0
    requester: str = ""
    spec_hash: str = ""
    deadline: int = 0
    accept_deadline: int = 0
    quorum: int = 0
    committee: tuple[str, ...] = ()
    request_block: int = 0
    request_tx: str = ""
    accept_tx: str = ""
    result_hash: str = ""
    result_path: str = ""
    submit_tx: str = ""
    finalize_tx: str = ""
    evaluations: int = 0
    error: str = ""

    def slot_of(self, operator: str) -> int | None:
        """The committee slot of `operator`, None when it is not a member."""
        lowered = [a.lower() for a in self.committee]
        return lowered.index(operator.lower()) if operator.lower() in lowered else None

    @property
    def open(self) -> bool:
        """Work may still be done on it."""
        return self.state in OPEN_STATES


@dataclass(frozen=True)
class BlobRecord:
    """A blob received for a task and accepted by the node."""

    task_id: int
    name: str
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class SignatureRecord:
    """A committee member's Result signature."""

    task_id: int
    signer: str
    operator: str
    result_hash: str
    output_hash: str
    epoch: int
    signature: str


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    task_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    kind INTEGER NOT NULL DEFAULT 0,
    requester TEXT NOT NULL DEFAULT '',
    spec_hash TEXT NOT NULL DEFAULT '',
    deadline INTEGER NOT NULL DEFAULT 0,
    accept_deadline INTEGER NOT NULL DEFAULT 0,
    quorum INTEGER NOT NULL DEFAULT 0,
    committee TEXT NOT NULL DEFAULT '[]',
    request_block INTEGER NOT NULL DEFAULT 0,
    request_tx TEXT NOT NULL DEFAULT '',
    accept_tx TEXT NOT NULL DEFAULT '',
    result_hash TEXT NOT NULL DEFAULT '',
    result_path TEXT NOT NULL DEFAULT '',
    submit_tx TEXT NOT NULL DEFAULT '',
    finalize_tx TEXT NOT NULL DEFAULT '',
    evaluations INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state);
CREATE TABLE IF NOT EXISTS task_blobs (
    task_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    PRIMARY KEY (task_id, name)
);
CREATE TABLE IF NOT EXISTS signatures (
    task_id INTEGER NOT NULL,
    signer TEXT NOT NULL,
    operator TEXT NOT NULL,
    result_hash TEXT NOT NULL,
    output_hash TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (task_id, signer)
);
CREATE TABLE IF NOT EXISTS transitions (
    task_id INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    at REAL NOT NULL
);
"""

_COLUMNS = [f.name for f in fields(TaskRecord)]
_MAX_TASK_ID = 2**63 - 1


def _check_id(task_id: int) -> int:
    if not 0 < task_id <= _MAX_TASK_ID:
        raise ValueError(f"task id {task_id} out of the store's range")
    return task_id


class TaskStore:
    """Task rows, blobs, signatures and transitions of one node."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            if not path.is_file():
                raise DatumError(f"no node store at {path}")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise DatumError(f"node store {path} has schema {row[0]}, this node reads {SCHEMA_VERSION}")
        except sqlite3.OperationalError as exc:
            self._db.close()
            raise DatumError(f"cannot open node store {path}: {exc}") from exc

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # -- tasks ---------------------------------------------------------------------------------

    @staticmethod
    def _record(row: sqlite3.Row | tuple[Any, ...]) -> TaskRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        values["state"] = NodeTaskState(values["state"])
        values["committee"] = tuple(json.loads(values["committee"]))
        return TaskRecord(**values)

    def get(self, task_id: int) -> TaskRecord | None:
        """The task's row, or None."""
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE task_id = ?", (_check_id(task_id),)
        ).fetchone()
        return None if row is None else self._record(row)

    def insert(self, record: TaskRecord) -> bool:
        """Add a task unless it is known; True when it was added."""
        values = {name: getattr(record, name) for name in _COLUMNS}
        values["task_id"] = _check_id(record.task_id)
        values["state"] = record.state.value
        values["committee"] = json.dumps(list(record.committee))
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._tx():
            cursor = self._db.execute(
                f"INSERT OR IGNORE INTO tasks ({names}, updated_at) VALUES ({marks}, ?)",
                (*values.values(), time.time()),
            )
            added = cursor.rowcount == 1
            if added:
                self._log(record.task_id, "", record.state)
        return added

    def update(self, task_id: int, **changes: Any) -> None:
        """Change fields other than the state (committee, deadlines, error, ...)."""
        if "state" in changes or "task_id" in changes:
            raise InvalidTransition("the state changes through transition() only")
        self._set(task_id, changes)

    def _set(self, task_id: int, changes: dict[str, Any]) -> None:
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown task fields: {sorted(unknown)}")
        if not changes:
            return
        encoded = {k: json.dumps(list(v)) if k == "committee" else v for k, v in changes.items()}
        assignments = ", ".join(f"{k} = ?" for k in encoded)
        self._db.execute(
            f"UPDATE tasks SET {assignments}, updated_at = ? WHERE task_id = ?",
            (
                *[v.value if isinstance(v, NodeTaskState) else v for v in encoded.values()],
                time.time(),
                task_id,
            ),
        )

    def transition(
        self, task_id: int, to: NodeTaskState, expect: Iterable[NodeTaskState], **changes: Any
    ) -> bool:
        """Move the task to `to` if it is in one of `expect`; False (and no change) otherwise.

        `InvalidTransition` when the move is not in the state machine at all.
        """
        allowed_from = frozenset(expect)
        with self._tx():
            current = self.get(task_id)
            if current is None or current.state not in allowed_from:
                return False
            if current.state == to:
                return False
            if (current.state, to) not in ALLOWED:
                raise InvalidTransition(f"task {task_id}: {current.state} -> {to} is not a transition")
            self._set(task_id, {**changes, "state": to})
            self._log(task_id, current.state, to)
        return True

    def open_tasks(self) -> list[TaskRecord]:
        """Tasks in a non-terminal state, by id."""
        marks = ", ".join("?" for _ in OPEN_STATES)
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM tasks WHERE state IN ({marks}) ORDER BY task_id",
            [s.value for s in OPEN_STATES],
        ).fetchall()
        return [self._record(r) for r in rows]

    def all_tasks(self) -> list[TaskRecord]:
        """Every task, by id."""
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM tasks ORDER BY task_id").fetchall()
        return [self._record(r) for r in rows]

    def count_evaluation(self, task_id: int) -> None:
        """Count one evaluation started for the task."""
        self._db.execute("UPDATE tasks SET evaluations = evaluations + 1 WHERE task_id = ?", (task_id,))

    def history(self, task_id: int) -> list[tuple[str, str]]:
        """The task's transitions in order: (from, to); from is '' for the first."""
        rows = self._db.execute(
            "SELECT from_state, to_state FROM transitions WHERE task_id = ? ORDER BY rowid", (task_id,)
        ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def _log(self, task_id: int, from_state: str, to_state: str) -> None:
        self._db.execute(
            "INSERT INTO transitions VALUES (?, ?, ?, ?)",
            (task_id, str(from_state), str(to_state), time.time()),
        )

    # -- blobs ---------------------------------------------------------------------------------

    def record_blob(self, blob: BlobRecord) -> None:
        """Remember a blob accepted for a task (a re-upload of the same bytes changes nothing)."""
        self._db.execute(
            "INSERT OR REPLACE INTO task_blobs VALUES (?, ?, ?, ?, ?)",
            (_check_id(blob.task_id), blob.name, blob.path, blob.sha256, blob.size_bytes),
        )

    def blobs(self, task_id: int) -> dict[str, BlobRecord]:
        """The task's accepted blobs by name."""
        rows = self._db.execute(
            "SELECT task_id, name, path, sha256, size_bytes FROM task_blobs WHERE task_id = ?", (task_id,)
        ).fetchall()
        return {r[1]: BlobRecord(*r) for r in rows}

    # -- signatures ----------------------------------------------------------------------------

    def add_signature(self, sig: SignatureRecord) -> SignatureRecord | None:
        """Keep the first signature of each signer per task; returns the one kept before, if any."""
        with self._tx():
            row = self._db.execute(
                "SELECT task_id, signer, operator, result_hash, output_hash, epoch, signature "
                "FROM signatures WHERE task_id = ? AND signer = ?",
                (sig.task_id, sig.signer),
            ).fetchone()
            if row is not None:
                return SignatureRecord(*row)
            self._db.execute(
                "INSERT INTO signatures VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    _check_id(sig.task_id),
                    sig.signer,
                    sig.operator,
                    sig.result_hash,
                    sig.output_hash,
                    sig.epoch,
                    sig.signature,
                ),
            )
        return None

    def signatures(self, task_id: int) -> list[SignatureRecord]:
        """Every signature held for the task."""
        rows = self._db.execute(
            "SELECT task_id, signer, operator, result_hash, output_hash, epoch, signature "
            "FROM signatures WHERE task_id = ? ORDER BY signer",
            (task_id,),
        ).fetchall()
        return [SignatureRecord(*r) for r in rows]

    # -- helpers -------------------------------------------------------------------------------

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db
            self.outer = False

        def __enter__(self) -> None:
            self.outer = not self.db.in_transaction
            if self.outer:
                self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
            if not self.outer:
                return
            if exc_type is None:
                self.db.execute("COMMIT")
            else:
                self.db.execute("ROLLBACK")

    def _tx(self) -> TaskStore._Tx:
        return TaskStore._Tx(self._db)
