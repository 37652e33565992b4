"""Helpers for the PSI tests: free loopback ports, and both parties run side by side.

Each party's protocol side runs in its own spawned engine process (compute.psi.link);
the test process only supervises both, from two threads.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compute.psi import LinkConfig, PartyData, PsiSpec, run_psi


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def link_pair(session: str, recv_timeout_ms: int = 20_000) -> tuple[LinkConfig, LinkConfig]:
    addresses = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    return tuple(  # type: ignore[return-value]
        LinkConfig(
            rank,
            addresses,
            session,
            recv_timeout_ms=recv_timeout_ms,
            connect_timeout_ms=20_000,
            deadline_s=120,
        )
        for rank in (0, 1)
    )


def run_both(calls: tuple[Callable[[], Any], Callable[[], Any]]) -> list[Any]:
    """Run two party calls concurrently; each slot holds the return value or the exception."""
    out: list[Any] = [None, None]

    def party(i: int) -> None:
        try:
            out[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            out[i] = exc

    threads = [threading.Thread(target=party, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    return out


def psi_pair(spec: PsiSpec, data: tuple[PartyData, PartyData], tmp: Path, session: str) -> list[Any]:
    """Run a PSI task between rank 0 and rank 1, each with its own work dir under tmp."""
    links = link_pair(session)
    dirs = [tmp / f"party{r}" for r in (0, 1)]
    for d in dirs:
        d.mkdir(exist_ok=True)
    return run_both(
        (
            lambda: run_psi(spec, data=data[0], link=links[0], work_dir=dirs[0]),
            lambda: run_psi(spec, data=data[1], link=links[1], work_dir=dirs[1]),
        )
    )
