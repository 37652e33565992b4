"""The provider role's sessions, in SQLite (``<data_dir>/psi.sqlite3``).

One row per PSI task this node serves a dataset for, whether or not it is also in the
task's committee (that role lives in the task store). States::

    refused                      (a check failed before any key was fed; final)
    running ──engine ok──▶ done ──receipt countersigned──▶ attested
       └──engine aborted / node restarted──▶ aborted       (final)

One session per task: a second offer for a task with a row is refused. Transitions go
through one checked function; used from the event loop's thread only.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from compute.errors import DatumError

__all__ = ["SessionRecord", "SessionState", "SessionStore"]


class SessionState(StrEnum):
    """Where the provider's side of one PSI session stands."""

    REFUSED = "refused"
    RUNNING = "running"
    DONE = "done"
    ATTESTED = "attested"
    ABORTED = "aborted"


S = SessionState
_ALLOWED = frozenset({(S.RUNNING, S.DONE), (S.RUNNING, S.ABORTED), (S.DONE, S.ATTESTED)})


@dataclass(frozen=True)
class SessionRecord:
    """The provider's side of one task: identifiers and counts only, never keys."""

    task_id: int
    state: SessionState
    dataset_id: int = 0
    session_id: str = ""
    requester: str = ""
    provider_rows: int = 0
    attestation_sha256: str = ""
    error: str = ""


_COLUMNS = [f.name for f in fields(SessionRecord)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    task_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    dataset_id INTEGER NOT NULL DEFAULT 0,
    session_id TEXT NOT NULL DEFAULT '',
    requester TEXT NOT NULL DEFAULT '',
    provider_rows INTEGER NOT NULL DEFAULT 0,
    attestation_sha256 TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
"""


class SessionStore:
    """Provider sessions of one node."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        if readonly:
            if not path.is_file():
                raise DatumError(f"no PSI session store at {path}")
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def get(self, task_id: int) -> SessionRecord | None:
        """The session of `task_id`, or None."""
        row = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM sessions WHERE task_id = ?", (task_id,)
        ).fetchone()
        return None if row is None else _record(row)

    def all(self) -> list[SessionRecord]:
        """Every session, by task id."""
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM sessions ORDER BY task_id").fetchall()
        return [_record(r) for r in rows]

    def insert(self, record: SessionRecord) -> bool:
        """Add the task's session unless it has one; True when added."""
        values = [getattr(record, c) for c in _COLUMNS]
        values[_COLUMNS.index("state")] = record.state.value
        marks = ", ".join("?" for _ in _COLUMNS)
        cursor = self._db.execute(
            f"INSERT OR IGNORE INTO sessions ({', '.join(_COLUMNS)}, updated_at) VALUES ({marks}, ?)",
            (*values, time.time()),
        )
        return cursor.rowcount == 1

    def transition(self, task_id: int, to: SessionState, **changes: Any) -> bool:
        """Move the session to `to` when that is a transition from its state; False otherwise."""
        unknown = set(changes) - set(_COLUMNS) | ({"task_id", "state"} & set(changes))
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)}")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            current = self.get(task_id)
            if current is None or (current.state, to) not in _ALLOWED:
                self._db.execute("ROLLBACK")
                return False
            assignments = ", ".join(f"{k} = ?" for k in ("state", *changes))
            self._db.execute(
                f"UPDATE sessions SET {assignments}, updated_at = ? WHERE task_id = ?",
                (to.value, *changes.values(), time.time(), task_id),
            )
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        return True

    def abort_running(self, reason: str) -> list[int]:
        """Mark every running session aborted (on start: their engines died with the node)."""
        aborted = [r.task_id for r in self.all() if r.state is S.RUNNING]
        for task_id in aborted:
            self.transition(task_id, S.ABORTED, error=reason)
        return aborted


def _record(row: tuple[Any, ...]) -> SessionRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["state"] = SessionState(values["state"])
    return SessionRecord(**values)
