"""What the PSI and MPC engines share to run an SPU party in a worker process: opening
its brpc link to the other parties, and ending the worker when its parent is gone."""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

CONNECT_RETRY_INTERVAL_MS = 200
# A refused connect (the peer is not listening yet) is retried after 50 ms, then 100, 150, ...
# (yacl grows the interval by `retry_interval_ms` whenever the increment is set non-zero),
# before brpc marks the peer down for its ~3 s health-check period (docs/MPC.md).
LINK_RETRIES = 10
LINK_RETRY_INTERVAL_MS = 50


def open_brpc_link(
    session_id: str, rank: int, addresses: Sequence[str], recv_timeout_ms: int, connect_timeout_ms: int
) -> Any:
    """An SPU brpc link context for party `rank` of `addresses` (call inside the worker)."""
    import spu.libspu as libspu  # native; imported only inside the worker

    desc = libspu.link.Desc()
    desc.id = session_id
    desc.recv_timeout_ms = recv_timeout_ms
    desc.http_timeout_ms = recv_timeout_ms
    desc.connect_retry_interval_ms = CONNECT_RETRY_INTERVAL_MS
    desc.connect_retry_times = max(1, connect_timeout_ms // CONNECT_RETRY_INTERVAL_MS)
    retry = desc.retry_opts  # a refused connect (peer not listening yet) is retried quickly
    retry.max_retry = LINK_RETRIES
    retry.retry_interval_ms = LINK_RETRY_INTERVAL_MS
    retry.retry_interval_incr_ms = 1
    retry.aggressive_retry = True
    desc.retry_opts = retry
    for party, address in enumerate(addresses):
        desc.add_party(f"p{party}", address)
    return libspu.link.create_brpc(desc, rank)


def exit_with_parent(parent_pid: int) -> None:
    """End this worker when the process that started it is gone (no orphaned links)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# Link ports are drawn at random below Linux's default ephemeral range (32768-60999): several
# parties on one host (a devnet) pick theirs independently and bind them only later, and
# asking the OS for port 0 tends to hand the port just released to the next caller, so two
# parties could be given the same one; outgoing connections never take a port from here.
LINK_PORTS = range(20_000, 32_768)


def pick_link_port(host: str = "127.0.0.1", *, attempts: int = 64) -> int:
    """A port in `LINK_PORTS` that is free on `host` now (the engine binds it next)."""
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.choice(LINK_PORTS)
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the OS choose
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
