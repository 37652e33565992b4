"""The listener's SQLite file: checkpoint, recent block hashes and dispatched logs.

One process owns a store at a time (SQLite exclusive locking): a second listener pointed
at the same file fails at once instead of interleaving with the first. Every change is one
short transaction, committed before the call returns.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import ListenerError, StoreMismatch
from .records import BlockRef, ChainLog

__all__ = ["SCHEMA_VERSION", "ListenerStore"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS headers (
    number INTEGER PRIMARY KEY,
    hash TEXT NOT NULL,
    parent_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    tx_hash TEXT NOT NULL,
    log_index INTEGER NOT NULL,
    block_number INTEGER NOT NULL,
    block_hash TEXT NOT NULL,
    tx_index INTEGER NOT NULL,
    address TEXT NOT NULL,
    topics TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX IF NOT EXISTS events_by_block ON events (block_number, log_index);
"""


class ListenerStore:
    """Checkpoint, header window and dispatched-log record in one SQLite file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=0.0)
        try:
            self._db.execute("PRAGMA locking_mode = EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            with self._db:
                self._db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.OperationalError as exc:
            self._db.close()
            raise ListenerError(
                f"listener store {path.name} is unusable or in use by another process: {exc}"
            ) from exc
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the file (and release the lock)."""
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._db:
            yield self._db

    # -- meta -----------------------------------------------------------------------------

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _check_version(self) -> None:
        version = self._meta("schema_version")
        if version is None:
            with self._tx() as db:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(version) != SCHEMA_VERSION:
            raise StoreMismatch(f"listener store schema {version}, this code reads {SCHEMA_VERSION}")

    def bind(self, chain_id: int, filters_fingerprint: str) -> None:
        """Tie a new store to a chain and filter set, or check an existing one against them."""
        stored_chain = self._meta("chain_id")
        stored_filters = self._meta("filters")
        if stored_chain is None:
            with self._tx() as db:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('chain_id', ?)", (str(chain_id),))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('filters', ?)", (filters_fingerprint,))
            return
        if int(stored_chain) != chain_id:
            raise StoreMismatch(
                f"listener store {self.path.name} follows chain {stored_chain}, the RPC serves chain "
                f"{chain_id}: use another store file"
            )
        if stored_filters != filters_fingerprint:
            raise StoreMismatch(
                f"listener store {self.path.name} was written for other log filters: use another store file"
            )

    @property
    def checkpoint(self) -> int | None:
        """The last block whose logs were all dispatched, or None before the first one."""
        value = self._meta("checkpoint")
        return None if value is None else int(value)

    def advance_checkpoint(self, block: int, keep_blocks: int) -> None:
        """Raise the checkpoint to `block` (never lower it); forget logs `keep_blocks` below it.

        Logs that far below the checkpoint can be neither replayed nor rolled back.
        """
        current = self.checkpoint
        checkpoint = block if current is None else max(current, block)
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)", (str(checkpoint),))
            db.execute("DELETE FROM events WHERE block_number < ?", (checkpoint - keep_blocks,))

    # -- headers --------------------------------------------------------------------------

    def tip(self) -> BlockRef | None:
        """The highest tracked block."""
        row = self._db.execute(
            "SELECT number, hash, parent_hash FROM headers ORDER BY number DESC LIMIT 1"
        ).fetchone()
        return None if row is None else BlockRef(int(row[0]), str(row[1]), str(row[2]))

    def header(self, number: int) -> BlockRef | None:
        """The tracked block at height `number`."""
        row = self._db.execute(
            "SELECT number, hash, parent_hash FROM headers WHERE number = ?", (number,)
        ).fetchone()
        return None if row is None else BlockRef(int(row[0]), str(row[1]), str(row[2]))

    def header_hashes(self, low: int, high: int) -> dict[int, str]:
        """Tracked hashes of blocks `low`..`high` inclusive."""
        rows = self._db.execute(
            "SELECT number, hash FROM headers WHERE number BETWEEN ? AND ?", (low, high)
        ).fetchall()
        return {int(n): str(h) for n, h in rows}

    def lowest_header(self) -> int | None:
        """The lowest tracked height."""
        row = self._db.execute("SELECT MIN(number) FROM headers").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def add_headers(self, blocks: Sequence[BlockRef], keep_from: int) -> None:
        """Track `blocks` (replacing any at the same heights) and forget those below `keep_from`."""
        with self._tx() as db:
            db.executemany(
                "INSERT OR REPLACE INTO headers VALUES (?, ?, ?)",
                [(b.number, b.hash, b.parent_hash) for b in blocks],
            )
            db.execute("DELETE FROM headers WHERE number < ?", (keep_from,))

    # -- dispatched logs ------------------------------------------------------------------

    def is_recorded(self, key: tuple[str, int]) -> bool:
        """Whether the log `(tx_hash, log_index)` was dispatched already."""
        row = self._db.execute("SELECT 1 FROM events WHERE tx_hash = ? AND log_index = ?", key).fetchone()
        return row is not None

    def record(self, log: ChainLog) -> None:
        """Record `log` as dispatched."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    log.tx_hash,
                    log.log_index,
                    log.block_number,
                    log.block_hash,
                    log.tx_index,
                    log.address,
                    json.dumps(["0x" + t.hex() for t in log.topics]),
                    log.data,
                ),
            )

    def events_above(self, block: int) -> list[ChainLog]:
        """Dispatched logs of blocks above `block`, in dispatch order."""
        rows = self._db.execute(
            "SELECT tx_hash, log_index, block_number, block_hash, tx_index, address, topics, data "
            "FROM events WHERE block_number > ? ORDER BY block_number, log_index",
            (block,),
        ).fetchall()
        return [
            ChainLog(
                address=str(address),
                topics=tuple(bytes.fromhex(t[2:]) for t in json.loads(topics)),
                data=bytes(data),
                block_number=int(number),
                block_hash=str(block_hash),
                tx_hash=str(tx_hash),
                tx_index=int(tx_index),
                log_index=int(log_index),
            )
            for tx_hash, log_index, number, block_hash, tx_index, address, topics, data in rows
        ]

    def count_events(self) -> int:
        """How many dispatched logs are on record."""
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def roll_back(self, fork_block: int) -> None:
        """Forget every block and log above `fork_block`; lower the checkpoint to it."""
        current = self.checkpoint
        with self._tx() as db:
            db.execute("DELETE FROM headers WHERE number > ?", (fork_block,))
            db.execute("DELETE FROM events WHERE block_number > ?", (fork_block,))
            if current is not None and current > fork_block:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoint', ?)", (str(fork_block),))
