"""SPU (yacl/brpc) links run in a worker process, with a deadline and a clean abort.

libpsi and the brpc link are native code: a vanished peer can make them abort the whole
process (SIGABRT after the link's retries) rather than raise. So each party runs its side
of a protocol in a spawned worker process that owns the link; this process supervises it
and turns a dead worker, a worker error or a missed deadline into ProtocolAbort. The
worker's native logs go to a file in the caller's work dir, which is removed afterwards,
and libpsi's per-run timing trace (the path it logs) is removed as well.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import shutil
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from compute.errors import ComputeError, DatumError, ProtocolAbort, SpecError
from compute.spu_link import exit_with_parent, open_brpc_link

log = logging.getLogger(__name__)

T = TypeVar("T")

_CHUNK_BYTES = 4 << 20
_TRACE_LINE = re.compile(r"Trace has been written to (\S+/psi_[\w-]+\.trace)")
_ADDRESS = re.compile(r"^[\w.-]+:\d{1,5}$")
_EXIT_GRACE_S = 10.0
_STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class LinkConfig:
    """Where the two parties listen and how long to wait for each other.

    `addresses[r]` is "host:port" of rank r. `recv_timeout_ms` bounds every wait for a peer
    message; `deadline_s` bounds the whole run (link setup included).
    """

    rank: int
    addresses: tuple[str, str]
    session_id: str
    recv_timeout_ms: int = 60_000
    connect_timeout_ms: int = 30_000
    deadline_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.rank not in (0, 1):
            raise SpecError("rank must be 0 or 1")
        if len(self.addresses) != 2 or not all(_ADDRESS.match(a) for a in self.addresses):
            raise SpecError("addresses must be two 'host:port' strings")
        if not re.fullmatch(r"[\w-]{1,64}", self.session_id):
            raise SpecError("session_id must be 1..64 word characters or '-'")
        if self.recv_timeout_ms < 100 or self.connect_timeout_ms < 100 or self.deadline_s <= 0:
            raise SpecError("timeouts must be positive (at least 100 ms)")

    @property
    def peer(self) -> int:
        """Rank of the other party."""
        return 1 - self.rank


class LinkChannel:
    """A Channel over a yacl link context (messages chunked to 4 MiB)."""

    def __init__(self, lctx: Any, peer: int) -> None:
        self._lctx, self._peer = lctx, peer
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, payload: bytes) -> None:
        """Send one message: an 8-byte length, then the chunks."""
        try:
            self._lctx.send(self._peer, struct.pack(">Q", len(payload)))
            for start in range(0, len(payload), _CHUNK_BYTES):
                self._lctx.send(self._peer, bytes(payload[start : start + _CHUNK_BYTES]))
        except RuntimeError as exc:
            raise ProtocolAbort(f"link send failed: {_first_line(exc)}") from None
        self.bytes_sent += len(payload)

    def recv(self, max_bytes: int) -> bytes:
        """Receive one message of at most max_bytes."""
        try:
            header = self._lctx.recv(self._peer)
            if len(header) != 8:
                raise ProtocolAbort("malformed message header")
            (length,) = struct.unpack(">Q", header)
            if length > max_bytes:
                raise ProtocolAbort(f"peer message of {length} bytes exceeds the {max_bytes} limit")
            parts, got = [], 0
            while got < length:
                part = self._lctx.recv(self._peer)
                got += len(part)
                parts.append(part)
        except RuntimeError as exc:
            raise ProtocolAbort(f"link receive failed: {_first_line(exc)}") from None
        if got != length:
            raise ProtocolAbort("message length mismatch")
        self.bytes_received += length
        return b"".join(parts)


@dataclass(frozen=True)
class LinkSession:
    """What a worker target gets: the raw link (for libpsi), a Channel over it, its rank and dir."""

    lctx: Any
    channel: LinkChannel
    rank: int
    work_dir: Path


def run_in_worker(
    target: Callable[..., T], args: tuple[Any, ...], link: LinkConfig, work_dir: Path, handshake: bytes
) -> T:
    """Run `target(session, *args)` in a spawned worker holding the link; return its result.

    The worker gets a private run directory `psi-<session>-r<rank>` inside `work_dir` (its
    files, its log, its TMPDIR); the directory is removed whatever happens. `handshake`
    (e.g. the spec digest) must be equal on both sides or the run aborts before anything
    else is exchanged. Raises ProtocolAbort when the peer vanishes, the worker dies or the
    deadline passes.
    """
    with EngineWorker(link, work_dir, handshake) as worker:
        return worker.run(target, args)


class EngineWorker:
    """A worker started before its job is known, as `run_in_worker` in two steps.

    Creating it spawns the worker, which imports the engine, opens the link and checks the
    handshake while the caller is still preparing its input (key normalization, hashing);
    `run(target, args)` then hands the job over and waits for the result (the deadline
    counts from creation). Leaving the `with` block without a job ends the worker before any
    key material is sent (the peer gets ProtocolAbort: the link drops, or never comes up and
    its connect timeout ends the wait) and removes the run directory.
    """

    def __init__(self, link: LinkConfig, work_dir: Path, handshake: bytes) -> None:
        if not work_dir.is_dir():
            raise SpecError("work_dir must be an existing directory")
        self._link = link
        self._run_dir = work_dir / f"psi-{link.session_id}-r{link.rank}"
        try:
            self._run_dir.mkdir(mode=0o700)
        except FileExistsError:
            raise SpecError(
                f"{self._run_dir.name} already exists in work_dir: another run uses this session"
            ) from None
        self._log_path = self._run_dir / "engine.log"
        self._deadline = time.monotonic() + link.deadline_s
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(
            target=_worker_main,
            args=(child, link, str(self._run_dir), str(self._log_path), handshake),
            name=f"datum-psi-{link.session_id}-{link.rank}",
            daemon=True,
        )
        try:
            self._proc.start()
        except BaseException:
            self._conn.close()
            shutil.rmtree(self._run_dir, ignore_errors=True)
            raise
        finally:
            child.close()
        self._done = False
        log.info("psi worker started: session=%s rank=%d pid=%s", link.session_id, link.rank, self._proc.pid)

    def __enter__(self) -> EngineWorker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, target: Callable[..., T], args: tuple[Any, ...]) -> T:
        """Hand `target(session, *args)` to the worker and return its result (once per worker)."""
        if self._done:
            raise ComputeError("an engine worker runs one job")
        self._done = True
        try:
            try:
                self._conn.send((target, args))
            except OSError:
                pass  # the worker is gone: its error (if it sent one) is still in the pipe
            outcome = _await_outcome(self._conn, self._proc, self._deadline)
            self._proc.join(_EXIT_GRACE_S)
        finally:
            reason = self.close()
        if outcome is None:
            raise ProtocolAbort(f"party {self._link.rank}: engine process ended without a result ({reason})")
        status, value = outcome
        if status == "ok":
            return value  # type: ignore[no-any-return]
        assert isinstance(value, DatumError)
        raise value

    def close(self) -> str:
        """End the worker if it still runs, remove the run directory; return the log's failure line.

        A worker that never got a job sees its pipe close and stops its link itself (so the
        peer's engine fails at once instead of at its receive timeout); it is killed if it
        has not exited after a short grace period, or right away after a job.
        """
        self._conn.close()
        if self._proc.is_alive():
            if not self._done:
                self._proc.join(_STOP_GRACE_S)
            if self._proc.is_alive():
                self._proc.kill()
            self._proc.join()
        if not self._run_dir.exists():
            return "closed"
        reason = _cleanup_logs(self._log_path)
        shutil.rmtree(self._run_dir, ignore_errors=True)
        return reason


def _await_outcome(
    receiver: multiprocessing.connection.Connection, proc: Any, deadline: float
) -> tuple[str, Any] | None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolAbort("deadline passed before the protocol finished")
        ready = multiprocessing.connection.wait([receiver, proc.sentinel], timeout=remaining)
        if receiver in ready:
            try:
                outcome: tuple[str, Any] = receiver.recv()
            except EOFError:
                return None
            return outcome
        if proc.sentinel in ready:
            return None


def _cleanup_logs(log_path: Path) -> str:
    """Remove the trace file the worker log names; return a one-line failure reason."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return "no log"
    for match in _TRACE_LINE.finditer(text):
        Path(match.group(1)).unlink(missing_ok=True)
    errors = [line for line in text.splitlines() if "[error]" in line or "what()" in line]
    return _short(errors[-1]) if errors else "no error logged"


def _short(line: str) -> str:
    line = re.sub(r"^\[[^\]]*\] \[[^\]]*\] ", "", line)
    return line[:240]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return _short(text[0]) if text else type(exc).__name__


def _open_link(link: LinkConfig) -> Any:
    return open_brpc_link(
        link.session_id, link.rank, link.addresses, link.recv_timeout_ms, link.connect_timeout_ms
    )


def _worker_main(
    conn: multiprocessing.connection.Connection,
    link: LinkConfig,
    work_dir: str,
    log_path: str,
    handshake: bytes,
) -> None:
    exit_with_parent(os.getppid())
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["TMPDIR"] = work_dir  # libpsi's disk caches land in the private run dir
    lctx = None
    try:
        try:
            lctx = _open_link(link)
        except RuntimeError as exc:
            raise ProtocolAbort(f"could not connect to the peer: {_first_line(exc)}") from None
        channel = LinkChannel(lctx, link.peer)
        channel.send(handshake)
        if channel.recv(len(handshake)) != handshake:
            raise ProtocolAbort("the peer runs a different spec or session")
        try:
            target, args = conn.recv()  # the caller's input is ready
        except EOFError:
            return  # the caller gave up before handing over a job
        result = target(LinkSession(lctx, channel, link.rank, Path(work_dir)), *args)
        conn.send(("ok", result))
    except DatumError as exc:
        conn.send(("err", exc))
    except Exception as exc:  # noqa: BLE001 - any engine failure crosses the pipe typed
        conn.send(("err", ComputeError(f"{type(exc).__name__}: {_first_line(exc)}")))
    finally:
        conn.close()
        if lctx is not None:
            try:
                lctx.stop_link()
            except RuntimeError:
                pass
        # The result is out and the link stopped: skip the interpreter teardown (JAX, brpc and
        # libpsi modules take 0.5-2 s to unload) that the caller would otherwise wait for.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
