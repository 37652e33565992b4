"""`run_parties`: a whole committee on this machine, one spawned engine process per party,
SPU brpc links on free 127.0.0.1 ports (the test and demo path of the real runtime).

Provider parts are co-located with committee parties (part i with rank i mod world unless
`hosts` says otherwise): the hosting party secret-shares the part and sends each peer its
shares; nothing else of the provider leaves it. Each party is supervised from a thread of
this process; the parties themselves share nothing but their links.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.errors import DatumError, ProtocolAbort, SpecError
from compute.mpc.encode import encode_part
from compute.mpc.engine import Protocol
from compute.mpc.link import CommitteeLink, Prewarmed
from compute.mpc.party import run_party
from compute.mpc.plan import Plan, plan_query
from compute.mpc.query import Query
from compute.mpc.reconstruct import reconstruct_result
from compute.mpc.result import DisclosureRefused, OutputShares, PartyReport, QueryResult
from compute.mpc.simulate import Tables, parts_of
from compute.spu_link import pick_link_port


@dataclass(frozen=True)
class CommitteeRun:
    """Every party's outcome (by rank), the first receiver's result (under
    `Reveal.external()`: the result this process, acting as the requester, rebuilt from every
    party's `OutputShares`), and when each stage was reached (seconds from the start, the
    slowest party): linked, [cache-hit,] compiled, inputs-shared, computed, revealed."""

    outcomes: tuple[QueryResult | PartyReport | OutputShares, ...]
    result: QueryResult
    stages: dict[str, float]
    plan: Plan


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (compute.spu_link.pick_link_port)."""
    return pick_link_port("127.0.0.1")


def committee_links(
    world: int, *, recv_timeout_ms: int = 60_000, connect_timeout_ms: int = 30_000, deadline_s: float = 1800.0
) -> list[CommitteeLink]:
    """One link description per rank, on fresh loopback ports, with a fresh session id."""
    addresses = tuple(f"127.0.0.1:{free_port()}" for _ in range(world))
    session = f"mpc-{uuid.uuid4().hex[:16]}"
    return [
        CommitteeLink(rank, addresses, session, recv_timeout_ms, connect_timeout_ms, deadline_s)
        for rank in range(world)
    ]


def run_parties(
    query: Query,
    tables: Tables,
    *,
    protocol: Protocol = Protocol.ABY3,
    hosts: Sequence[int] | None = None,
    recv_timeout_ms: int = 60_000,
    deadline_s: float = 1800.0,
    progress: Callable[[int, str], None] | None = None,
    cache_dir: Path | None = None,
    prewarmed: Sequence[Prewarmed] | None = None,
) -> CommitteeRun:
    """Run `query` with a real committee of `protocol.world` local processes (`cache_dir`:
    shared compile cache of the parties, see cache.py; `prewarmed`: one already started
    engine process per rank, see link.Prewarmed)."""
    protocol = Protocol(protocol)
    parts, data = parts_of(query, tables)
    plan = plan_query(query, parts)
    world = protocol.world
    host_of = tuple(hosts) if hosts is not None else tuple(i % world for i in range(len(parts)))
    for index, columns in data.items():  # every provider's rows are checked before any process starts
        encode_part(plan, index, columns)
    if prewarmed is not None and len(prewarmed) != world:
        raise SpecError(f"prewarmed needs one engine process per party ({world})")
    links = committee_links(world, recv_timeout_ms=recv_timeout_ms, deadline_s=deadline_s)
    start = time.monotonic()
    stages: dict[str, float] = {}
    lock = threading.Lock()

    def on_progress(rank: int, stage: str) -> None:
        with lock:
            stages[stage] = max(stages.get(stage, 0.0), time.monotonic() - start)
        if progress is not None:
            progress(rank, stage)

    def party(rank: int) -> QueryResult | PartyReport | OutputShares:
        return run_party(
            plan,
            protocol=protocol,
            link=links[rank],
            hosts=host_of,
            data={p: data[p] for p, h in enumerate(host_of) if h == rank},
            progress=lambda stage: on_progress(rank, stage),
            cache_dir=cache_dir,
            prewarmed=None if prewarmed is None else prewarmed[rank],
        )

    results = run_concurrently([_bind(party, r) for r in range(world)])
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise pick_error(errors)
    outcomes = tuple(r for r in results if isinstance(r, QueryResult | PartyReport | OutputShares))
    if query.reveal.external:
        blobs = {o.rank: o.blob for o in outcomes if isinstance(o, OutputShares)}
        return CommitteeRun(outcomes, reconstruct_result(plan, protocol, blobs), stages, plan)
    receiver = next(o for o in outcomes if isinstance(o, QueryResult))
    return CommitteeRun(outcomes, receiver, stages, plan)


def _bind(fn: Callable[[int], Any], rank: int) -> Callable[[], Any]:
    return lambda: fn(rank)


def run_concurrently(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run calls in threads; each slot holds the return value or the exception raised."""
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"mpc-party-{i}") for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out


def pick_error(errors: Sequence[BaseException]) -> BaseException:
    """The most telling failure: a refusal, then a spec error, then an abort, then anything."""
    for kind in (DisclosureRefused, SpecError, ProtocolAbort, DatumError):
        for exc in errors:
            if isinstance(exc, kind):
                return exc
    return errors[0]
