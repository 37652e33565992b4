"""Where the time of one SPU libpsi PSI run goes, phase by phase, for each party.

    python bench/psi_profile.py                       # RR22, 10^5 and 10^6 keys per side
    python bench/psi_profile.py --sizes 100000 --protocol kkrt

Each party is its own process, as in bench/psi_bench.py, and runs the steps of `run_psi`
one after the other (not overlapped, so each can be timed): key normalization and hashing
(`index_keys`), starting the engine process (spawn, imports, brpc link, handshake),
inside the engine writing the digest CSV, the libpsi call and reading its output, then
handing the result back and mapping digests to rows. `run_psi` itself overlaps the first
two. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from psi_bench import RULES, free_port, side

from compute.psi import LinkConfig, PartyData, Protocol, PsiSpec, Reveal, index_keys
from compute.psi import spu_psi as engine
from compute.psi.link import EngineWorker, LinkSession
from compute.psi.run import _positions

PHASES = ("keys", "engine start", "write CSV", "libpsi", "read output", "hand back + map to rows")


def _ready(session: LinkSession) -> float:
    return time.monotonic()


def _timed_libpsi(session: LinkSession, name: str, receivers: tuple[int, ...], packed: bytes) -> Any:
    """The engine target of run_psi with its three steps timed (same calls, same order)."""
    from spu import psi

    times: dict[str, float] = {}
    real_write, real_read, real_execute = engine._write_digests, engine._read_packed, psi.psi_execute

    def timed(label: str, fn: Any) -> Any:
        def wrapper(*a: Any) -> Any:
            t = time.monotonic()
            try:
                return fn(*a)
            finally:
                times[label] = time.monotonic() - t

        return wrapper

    engine._write_digests = timed("write CSV", real_write)
    engine._read_packed = timed("read output", real_read)
    psi.psi_execute = timed("libpsi", real_execute)
    try:
        outcome = engine._libpsi_target(session, name, receivers, packed)
    finally:
        engine._write_digests, engine._read_packed, psi.psi_execute = real_write, real_read, real_execute
    return outcome, times, time.monotonic()


def _party(rank: int, n: int, protocol: Protocol, addresses: tuple[str, str], barrier: Any, out: Any) -> None:
    data = PartyData(side(n, rank), ("id",))
    spec = PsiSpec(protocol, Reveal.ROWS, (0,), RULES)
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as work:
        barrier.wait()
        t0 = time.monotonic()
        keyed = index_keys(data.table, data.key_columns, spec.key_rules)
        times["keys"] = time.monotonic() - t0
        barrier.wait()
        link = LinkConfig(rank, addresses, f"profile-{n}", recv_timeout_ms=600_000)
        t1 = time.monotonic()
        with EngineWorker(link, Path(work), spec.digest()) as ready_worker:
            times["engine start"] = ready_worker.run(_ready, ()) - t1
        link2 = LinkConfig(rank, addresses, f"profile-{n}-run", recv_timeout_ms=600_000)
        with EngineWorker(link2, Path(work), spec.digest()) as worker:
            t2 = time.monotonic()
            packed = b"".join(keyed.digests)
            outcome, inner, done = worker.run(
                _timed_libpsi, (engine._LIBPSI_NAMES[protocol], spec.receivers, packed)
            )
        times.update(inner)
        t3 = time.monotonic()
        if outcome.matched is not None:
            rows = keyed.rows_for(_positions(keyed, outcome.matched))
            _ = tuple(data.table.rows[i] for i in rows)
        times["hand back + map to rows"] = time.monotonic() - done
        times["(engine job total)"] = t3 - t2
    out.put((rank, times))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--protocol", default="rr22", choices=["rr22", "kkrt", "ecdh"])
    args = parser.parse_args()
    protocol = Protocol(args.protocol)
    print("| n per side | party | " + " | ".join(PHASES) + " | sum (s) |")
    print("|---:|---|" + "---:|" * (len(PHASES) + 1))
    for n in (int(s) for s in args.sizes.split(",") if s):
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(2), ctx.Queue()
        addresses = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
        procs = [ctx.Process(target=_party, args=(r, n, protocol, addresses, barrier, out)) for r in (0, 1)]
        for p in procs:
            p.start()
        reports = sorted(out.get() for _ in procs)
        for p in procs:
            p.join()
        for rank, times in reports:
            cells = [times.get(phase, 0.0) for phase in PHASES]
            role = "receiver" if rank == 0 else "sender"
            print(
                f"| {n:,} | {rank} ({role}) | "
                + " | ".join(f"{c:.2f}" for c in cells)
                + f" | {sum(cells):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
