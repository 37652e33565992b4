"""An N-party SPU (brpc) link owned by a spawned worker process, with a deadline.

Same shape as compute/psi/link.py, generalised from two parties to a committee: the native
link and SPU runtime live in a spawned worker; the calling process supervises it and turns a
dead worker, a worker error or a missed deadline into ProtocolAbort. A worker whose parent
dies exits at once (no orphaned links). Messages between parties are length-prefixed and
chunked; every receive states the largest message it accepts.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from compute.errors import ComputeError, DatumError, ProtocolAbort, SpecError
from compute.spu_link import exit_with_parent, open_brpc_link

log = logging.getLogger(__name__)

T = TypeVar("T")

_ADDRESS = re.compile(r"^[\w.-]+:\d{1,5}$")
_CHUNK_BYTES = 4 << 20
_EXIT_GRACE_S = 10.0
MAX_PARTIES = 16
# glibc mallopt parameters (malloc.h) and the limits used by engine processes
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_KEEP_FREED_BYTES = 2**31 - 1
MAX_PRETOUCH_MB = 2000
MAX_START_WAIT_S = 2.0  # below _KEEP_FREED_BYTES: a pre-touched block stays mapped once freed


@dataclass(frozen=True)
class CommitteeLink:
    """Where the committee parties listen and how long to wait for each other.

    `addresses[r]` is "host:port" of rank r. `recv_timeout_ms` bounds every wait for a peer
    message (so a vanished peer becomes an error within it); `deadline_s` bounds the whole run.
    `start_at`: a wall-clock time (`time.time()`) agreed by the parties at which each opens
    its link (waiting at most `MAX_START_WAIT_S`): brpc links parties that dial within a few
    tens of ms of each other in ~0.2 s, and pays a ~3 s reconnect delay otherwise (docs/MPC.md).
    """

    rank: int
    addresses: tuple[str, ...]
    session_id: str
    recv_timeout_ms: int = 60_000
    connect_timeout_ms: int = 30_000
    deadline_s: float = 3600.0
    start_at: float | None = None

    def __post_init__(self) -> None:
        addresses = tuple(self.addresses)
        object.__setattr__(self, "addresses", addresses)
        if not 2 <= len(addresses) <= MAX_PARTIES or not all(_ADDRESS.match(a) for a in addresses):
            raise SpecError(f"addresses must be 2..{MAX_PARTIES} 'host:port' strings")
        if len(set(addresses)) != len(addresses):
            raise SpecError("every party needs its own address")
        if type(self.rank) is not int or not 0 <= self.rank < len(addresses):
            raise SpecError(f"rank must be in [0, {len(addresses)})")
        if not re.fullmatch(r"[\w-]{1,64}", self.session_id):
            raise SpecError("session_id must be 1..64 word characters or '-'")
        if self.recv_timeout_ms < 100 or self.connect_timeout_ms < 100 or self.deadline_s <= 0:
            raise SpecError("timeouts must be positive (at least 100 ms)")
        if self.start_at is not None and not (
            isinstance(self.start_at, int | float) and math.isfinite(self.start_at) and self.start_at >= 0
        ):
            raise SpecError("start_at must be a wall-clock time in seconds")

    @property
    def world(self) -> int:
        """Number of parties."""
        return len(self.addresses)

    @property
    def peers(self) -> tuple[int, ...]:
        """Every other rank."""
        return tuple(r for r in range(self.world) if r != self.rank)


class Session:
    """What a worker target gets: the raw link context, framing helpers and a progress hook."""

    def __init__(self, lctx: Any, link: CommitteeLink, report: Callable[[str], None]) -> None:
        self.lctx = lctx
        self.rank = link.rank
        self.world = link.world
        self.peers = link.peers
        self._report = report
        self.bytes_sent = 0
        self.bytes_received = 0

    def progress(self, stage: str) -> None:
        """Tell the supervising process which stage the run reached."""
        self._report(stage)

    def send(self, peer: int, payload: bytes) -> None:
        """Send one message: an 8-byte length, then chunks of at most 4 MiB."""
        try:
            self.lctx.send(peer, struct.pack(">Q", len(payload)))
            for start in range(0, len(payload), _CHUNK_BYTES):
                self.lctx.send(peer, bytes(payload[start : start + _CHUNK_BYTES]))
        except RuntimeError as exc:
            raise ProtocolAbort(
                f"party {self.rank}: sending to party {peer} failed: {first_line(exc)}"
            ) from None
        self.bytes_sent += len(payload)

    def recv(self, peer: int, max_bytes: int) -> bytes:
        """Receive one message of at most `max_bytes` from `peer`."""
        try:
            header = self.lctx.recv(peer)
            if len(header) != 8:
                raise ProtocolAbort(f"party {peer} sent a malformed message header")
            (length,) = struct.unpack(">Q", header)
            if length > max_bytes:
                raise ProtocolAbort(f"party {peer} sent {length} bytes, more than the {max_bytes} expected")
            parts, got = [], 0
            while got < length:
                part = self.lctx.recv(peer)
                got += len(part)
                parts.append(part)
        except RuntimeError as exc:
            raise ProtocolAbort(
                f"party {self.rank}: receiving from party {peer} failed: {first_line(exc)}"
            ) from None
        if got != length:
            raise ProtocolAbort(f"party {peer} sent a message of the wrong length")
        self.bytes_received += length
        return b"".join(parts)

    def agree(self, token: bytes, what: str) -> None:
        """Check that every party holds the same `token` (a digest); ProtocolAbort otherwise."""
        for peer in self.peers:
            self.send(peer, token)
        for peer in self.peers:
            if self.recv(peer, len(token)) != token:
                raise ProtocolAbort(f"party {peer} runs a different {what}")


def keep_freed_memory() -> bool:
    """Make this process's C allocator keep what it frees for reuse (glibc only; False
    elsewhere): one arena, no separate mappings for large blocks, no trimming. An MPC run
    allocates and frees hundreds of MB of temporaries per operation; by default glibc maps
    each large block afresh and unmaps it when freed, so every reuse costs page faults and
    page zeroing in the kernel (about half the engine's CPU time on a VM whose freed pages go
    back to the host). Call it first thing in an engine process (before threads start)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES))
    )


def pretouch(memory_mb: int) -> float:
    """Allocate `memory_mb` MiB, write every page, free it (kept mapped after
    `keep_freed_memory`): the run's working memory is then faulted in before the run instead
    of during it. Returns the seconds it took (0.0 when nothing was touched)."""
    if memory_mb <= 0:
        return 0.0
    started = time.perf_counter()
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return 0.0
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = (ctypes.c_void_p,)
    size = min(memory_mb, MAX_PRETOUCH_MB) << 20
    block = libc.malloc(size)
    if not block:
        return 0.0
    ctypes.memset(block, 0, size)
    libc.free(block)
    return time.perf_counter() - started


class Prewarmed:
    """An engine process started ahead of a run: spawned, SPU and JAX already imported,
    waiting for one job (`run_in_worker(..., prewarmed=handle)`). It saves a run the process
    start and the imports (about 1.5-2.5 s per party on a loaded 2-core machine); it serves
    one run, then exits. `close()` ends it if unused; it also exits when its parent dies.

    `memory_mb`: working memory the process faults in before it reports ready (`pretouch`),
    for an engine started while the node is idle (a spare); 0 for one started for a task.
    """

    def __init__(self, memory_mb: int = 0) -> None:
        if type(memory_mb) is not int or not 0 <= memory_mb <= MAX_PRETOUCH_MB:
            raise ComputeError(f"memory_mb must be an integer in [0, {MAX_PRETOUCH_MB}]")
        ctx = multiprocessing.get_context("spawn")
        job_reader, self._job_sender = ctx.Pipe(duplex=False)
        self.results, results_writer = ctx.Pipe(duplex=False)
        self.memory_mb = memory_mb
        self.touch_s: float | None = None
        self.compiling = False
        self._compiled = ctx.Event()
        self.process = ctx.Process(
            target=_prewarmed_main,
            args=(job_reader, results_writer, memory_mb, self._compiled),
            name="datum-mpc-prewarmed",
            daemon=True,
        )
        self.process.start()
        job_reader.close()
        results_writer.close()
        self.used = False
        self._send_lock = threading.Lock()
        self._ready_lock = threading.Lock()  # one reader of the "ready" message at a time

    def ready(self, timeout_s: float) -> bool:
        """Wait until the imports (and the pre-touch) are done (True), or `timeout_s` passed /
        the process died. Once True, `touch_s` holds the pre-touch's seconds."""
        if self.touch_s is not None:
            return True
        if not self._ready_lock.acquire(timeout=max(0.0, timeout_s)):  # another thread reads
            return self.touch_s is not None
        try:
            if self.touch_s is not None:
                return True
            if self.used:  # the run reads the results pipe now
                return False
            try:
                if not self.results.poll(timeout_s):
                    return False
                message = self.results.recv()
            except (EOFError, OSError):
                return False
            if not (isinstance(message, tuple) and len(message) == 2 and message[0] == "ready"):
                return False
            self.touch_s = float(message[1])
            return True
        finally:
            self._ready_lock.release()

    def precompile(self, plan: Any, protocol: Any, cache_dir: Path) -> bool:
        """Have the waiting process compile `plan` into `cache_dir` now, so the run's compile
        step is a cache hit and the compile overlaps with whatever the caller waits for (the
        providers' shares). Best effort: a failed compile only leaves the cache cold (the run
        compiles as usual). False when the run was already handed over or the process died."""
        with self._send_lock:
            if self.used or not self.process.is_alive():
                return False
            try:
                self._job_sender.send(("precompile", plan, protocol, str(cache_dir)))
            except OSError:
                return False
            self.compiling = True
            return True

    def wait_compiled(self, timeout_s: float) -> bool:
        """Wait until the compile started by `precompile` is over (True; at once when none was
        started), or `timeout_s` passed. A member publishes its link address only then: a
        compile still running when the link opens holds the process's interpreter, and the
        members would dial at different moments (docs/MPC.md, "Agreed link start")."""
        if not self.compiling:
            return True
        return bool(self._compiled.wait(timeout_s))

    def submit(self, job: tuple[Any, ...]) -> None:
        """Hand the process its one job (called by run_in_worker)."""
        with self._send_lock:
            if self.used or not self.process.is_alive():
                raise ComputeError("a prewarmed engine process serves one run and must be alive")
            self.used = True
            self._job_sender.send(job)
            self._job_sender.close()

    def close(self) -> None:
        """End the process if it is still running."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self._job_sender.close()
        self.results.close()


def run_in_worker(
    target: Callable[..., T],
    args: tuple[Any, ...],
    link: CommitteeLink,
    handshake: bytes,
    *,
    progress: Callable[[str], None] | None = None,
    log_path: str | None = None,
    prewarmed: Prewarmed | None = None,
) -> T:
    """Run `target(session, *args)` in a spawned worker holding the link; return its result.

    Every party must pass the same `handshake` (e.g. the plan digest) or the run aborts before
    anything else is exchanged. The worker's native output goes to `log_path` (or nowhere).
    `prewarmed`: run in that already started process instead of spawning one. Raises
    ProtocolAbort when a peer vanishes, the worker dies or the deadline passes; a DatumError
    raised by the target crosses over unchanged.
    """
    job = (target, args, link, handshake, log_path)
    deadline = time.monotonic() + link.deadline_s
    if prewarmed is not None:
        prewarmed.submit(job)
        proc: Any = prewarmed.process
        receiver = prewarmed.results
    else:
        ctx = multiprocessing.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_worker_main,
            args=(sender, *job),
            name=f"datum-mpc-{link.session_id}-{link.rank}",
            daemon=True,
        )
    try:
        if prewarmed is None:
            proc.start()
            sender.close()
        log.info("mpc worker started: session=%s rank=%d pid=%s", link.session_id, link.rank, proc.pid)
        outcome = _await_outcome(receiver, proc, deadline, progress)
        proc.join(_EXIT_GRACE_S)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        receiver.close()
    if outcome is None:
        raise ProtocolAbort(
            f"party {link.rank}: engine process ended without a result (exit code {proc.exitcode})"
        )
    status, value = outcome
    if status == "ok":
        return value  # type: ignore[no-any-return]
    assert isinstance(value, DatumError)
    raise value


def _await_outcome(
    receiver: multiprocessing.connection.Connection,
    proc: Any,
    deadline: float,
    progress: Callable[[str], None] | None,
) -> tuple[str, Any] | None:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolAbort("deadline passed before the protocol finished")
        ready = multiprocessing.connection.wait([receiver, proc.sentinel], timeout=remaining)
        if receiver in ready:
            try:
                message: tuple[str, Any] = receiver.recv()
            except EOFError:
                return None
            if message[0] == "ready":
                continue
            if message[0] == "progress":
                if progress is not None:
                    progress(str(message[1]))
                continue
            return message
        if proc.sentinel in ready:
            return None


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, without native log prefixes, at most 240 chars."""
    lines = str(exc).strip().splitlines()
    if not lines:
        return type(exc).__name__
    return re.sub(r"^\[[^\]]*\] \[[^\]]*\] ", "", lines[0])[:240]


def _open_link(link: CommitteeLink) -> Any:
    return open_brpc_link(
        link.session_id, link.rank, link.addresses, link.recv_timeout_ms, link.connect_timeout_ms
    )


def _prewarmed_main(
    jobs: multiprocessing.connection.Connection,
    conn: multiprocessing.connection.Connection,
    memory_mb: int,
    compiled: Any,
) -> None:
    keep_freed_memory()
    exit_with_parent(os.getppid())
    import jax  # noqa: F401 - the point: imported before the job arrives
    import spu  # noqa: F401

    import compute.mpc.party  # noqa: F401

    conn.send(("ready", pretouch(memory_mb)))
    while True:
        try:
            job = jobs.recv()
        except EOFError:
            return
        if job[0] != "precompile":
            break
        compiling = threading.Thread(
            target=_precompile, args=(*job[1:], compiled), name="datum-precompile", daemon=True
        )
        compiling.start()  # in a thread: a run job arriving meanwhile links at its agreed time
        _PRECOMPILING.append(compiling)
    _worker_main(conn, *job)


_PRECOMPILING: list[threading.Thread] = []  # in a prewarmed process: compiles started ahead


def _precompile(plan: Any, protocol: Any, cache_dir: str, compiled: Any) -> None:
    """Fill the compile cache for the coming run (Prewarmed.precompile), then set `compiled`;
    errors are left to the run, which compiles again and reports them."""
    from compute.mpc.cache import load_or_compile

    try:
        load_or_compile(plan, protocol, Path(cache_dir))
    except Exception:  # noqa: BLE001 - best effort: the run itself compiles and reports
        pass
    finally:
        compiled.set()


def _worker_main(
    conn: multiprocessing.connection.Connection,
    target: Callable[..., Any],
    args: tuple[Any, ...],
    link: CommitteeLink,
    handshake: bytes,
    log_path: str | None,
) -> None:
    keep_freed_memory()  # no-op for a prewarmed process (done at its start)
    exit_with_parent(os.getppid())
    fd = os.open(log_path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    lock = threading.Lock()

    def report(stage: str) -> None:
        with lock:
            conn.send(("progress", stage))

    lctx = None
    try:
        if link.start_at is not None:
            delay = link.start_at - time.time()
            if delay > 0:
                time.sleep(min(delay, MAX_START_WAIT_S))
        try:
            lctx = _open_link(link)
        except RuntimeError as exc:
            raise ProtocolAbort(
                f"party {link.rank}: could not connect to the committee: {first_line(exc)}"
            ) from None
        session = Session(lctx, link, report)
        session.agree(handshake, "plan or session")
        report("linked")
        for compiling in _PRECOMPILING:  # the compile started ahead fills the cache first
            compiling.join()
        result = target(session, *args)
        with lock:
            conn.send(("ok", result))
    except DatumError as exc:
        with lock:
            conn.send(("err", exc))
    except Exception as exc:  # noqa: BLE001 - any engine failure crosses the pipe typed
        with lock:
            conn.send(("err", ComputeError(f"{type(exc).__name__}: {first_line(exc)}")))
    finally:
        conn.close()
        if lctx is not None:
            try:
                lctx.stop_link()
            except RuntimeError:
                pass
