"""PSI benchmarks, side by side in one run: ours (SPU libpsi RR22/KKRT/ECDH, DH cardinality,
HE PSI) vs openmined-psi (ECDH), and labeled PSI (DH-OPRF, HE) with N provider rows and
10^3 query keys.

    python bench/psi_bench.py                      # 10^4, 10^5, 10^6 per side + labeled (15-30 min)
    python bench/psi_bench.py --sizes 10000,100000 --labeled-rows 10000,100000   # ~3 min
    python bench/psi_bench.py --sizes 1000 --labeled-rows 1000 --openmined-max 1000   # smoke run

Each party of our two-party runs is its own process (as on two nodes) holding its table
in memory; both wait at a barrier, then call `run_psi`, which spawns the party's engine
process and opens a real link on 127.0.0.1 (free ports). The wall time runs from the
barrier to the later of the two parties' results: it includes engine process start,
link set-up, key normalization and hashing, the protocol and mapping the result back to
rows. Half of each side's keys are in the intersection; the receiver's rows are checked.
openmined-psi (a pip package, `requirements.lock`) runs client and server in one process
with no network: its column is pure computation. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    HeParams,
    KeyRules,
    LabeledAlgorithm,
    LabeledResult,
    LabeledSpec,
    LinkConfig,
    OprfKey,
    PartyData,
    Protocol,
    PsiSpec,
    Reveal,
    Role,
    Table,
    memory_channel_pair,
    prepare_labeled,
    run_labeled,
    run_psi,
)

RULES = KeyRules(CaseRule.EXACT, EmptyKeyRule.REJECT, DuplicateRule.REJECT)
QUERY_KEYS = 1000
OURS = {
    "rr22": ("ours: SPU RR22", Protocol.RR22, Reveal.ROWS),
    "kkrt": ("ours: SPU KKRT", Protocol.KKRT, Reveal.ROWS),
    "ecdh": ("ours: SPU ECDH", Protocol.ECDH, Reveal.ROWS),
    "size": ("ours: DH cardinality (ristretto255)", Protocol.ECDH, Reveal.SIZE),
    "he": ("ours: HE PSI (BFV)", Protocol.HE, Reveal.ROWS),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def side(n: int, rank: int) -> Table:
    """Rank 0 holds customer-0..n-1, rank 1 customer-n/2..3n/2-1: n/2 in common."""
    first = 0 if rank == 0 else n // 2
    return Table(("id",), tuple((f"customer-{i:08d}",) for i in range(first, first + n)))


def _party(
    rank: int,
    n: int,
    spec: PsiSpec,
    addresses: tuple[str, str],
    session: str,
    barrier: Any,
    results: Any,
) -> None:
    """One party in its own process: build its table, wait for the other, run, report."""
    data = PartyData(side(n, rank), ("id",))
    link = LinkConfig(rank, addresses, session, recv_timeout_ms=600_000, deadline_s=7200)
    with tempfile.TemporaryDirectory() as work:
        barrier.wait()
        start = time.monotonic()
        try:
            result = run_psi(spec, data=data, link=link, work_dir=Path(work))
            check = "ok"
            if rank == 0:  # the receiver: the size, and with reveal=rows exactly its rows n/2..n-1
                rows = () if spec.reveal is Reveal.SIZE else tuple(range(n // 2, n))
                if result.intersection_size != n // 2 or result.row_indices != rows:
                    check = f"WRONG size {result.intersection_size}"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            check = f"error: {exc!r}"[:80]
        end = time.monotonic()
    results.put((rank, start, end, check))


def bench_ours(protocol: Protocol, reveal: Reveal, n: int, session: str) -> tuple[float, str]:
    """Wall time from the common start to the later party's result, and the receiver's check."""
    he = HeParams() if protocol is Protocol.HE else None
    spec = PsiSpec(protocol, reveal, (0,), RULES, he=he)
    addresses = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    parties = [
        ctx.Process(target=_party, args=(r, n, spec, addresses, session, barrier, results)) for r in (0, 1)
    ]
    for p in parties:
        p.start()
    reports = sorted(results.get() for _ in parties)
    for p in parties:
        p.join()
    elapsed = max(r[2] for r in reports) - min(r[1] for r in reports)
    checks = [r[3] for r in reports]
    return elapsed, checks[0] if checks[1] == "ok" else f"{checks[0]} / peer: {checks[1]}"


def bench_openmined(n: int) -> tuple[float, str, int]:
    import private_set_intersection.python as omp

    client_items = [r[0] for r in side(n, 0).rows]
    server_items = [r[0] for r in side(n, 1).rows]
    start = time.perf_counter()
    server = omp.server.CreateWithNewKey(True)
    client = omp.client.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, omp.DataStructure.RAW)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    found = client.GetIntersection(setup, response)
    elapsed = time.perf_counter() - start
    sent = setup.ByteSize() + request.ByteSize() + response.ByteSize()
    return elapsed, "ok" if len(found) == n // 2 else f"WRONG size {len(found)}", sent


def both(calls: tuple[Callable[[], Any], Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None, None]

    def party(i: int) -> None:
        try:
            out[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - reported in the table
            out[i] = exc

    threads = [threading.Thread(target=party, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def bench_labeled(algorithm: LabeledAlgorithm, rows: int) -> dict[str, Any]:
    he = HeParams() if algorithm is LabeledAlgorithm.HE else None
    spec = LabeledSpec(algorithm, RULES, ("income_class", "limit"), 24, QUERY_KEYS, he=he)
    provider = Table(
        ("id", "income_class", "limit"),
        tuple((f"customer-{i:08d}", "ABCDE"[i % 5], str(1000 + i)) for i in range(rows)),
    )
    requester = Table(
        ("id",), tuple((f"customer-{i:08d}",) for i in range(rows - QUERY_KEYS // 2, rows + QUERY_KEYS // 2))
    )
    start = time.perf_counter()
    prepared = prepare_labeled(spec, PartyData(provider, ("id",)), OprfKey.generate() if he is None else None)
    prep_s = time.perf_counter() - start

    def one_query(cached: Any) -> tuple[float, LabeledResult, int, int]:
        req_end, prov_end = memory_channel_pair(timeout_s=600)
        t0 = time.perf_counter()
        out = both(
            (
                lambda: run_labeled(
                    spec,
                    role=Role.REQUESTER,
                    transport=req_end,
                    data=PartyData(requester, ("id",)),
                    cached_table=cached,
                ),
                lambda: run_labeled(spec, role=Role.PROVIDER, transport=prov_end, prepared=prepared),
            )
        )
        elapsed = time.perf_counter() - t0
        if not isinstance(out[0], LabeledResult):
            raise RuntimeError(f"labeled query failed: {out!r}")
        return elapsed, out[0], req_end.bytes_sent, prov_end.bytes_sent

    first_s, first, first_up, first_down = one_query(None)
    row: dict[str, Any] = {
        "algorithm": algorithm.value,
        "rows": rows,
        "prep_s": prep_s,
        "first_s": first_s,
        "first_up": first_up,
        "first_down": first_down,
        "ok": len(first.matches) == QUERY_KEYS // 2
        and all(m.labels[1] == str(1000 + rows - QUERY_KEYS // 2 + m.row_index) for m in first.matches),
    }
    if first.table is not None:  # DH: the requester caches the table; later queries skip it
        again_s, again, up, down = one_query(first.table)
        row.update(
            again_s=again_s, again_up=up, again_down=down, ok=row["ok"] and again.matches == first.matches
        )
    return row


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def sizes_arg(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{time.strftime('%H:%M:%S', time.gmtime())} UTC, load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=sizes_arg, default=[10_000, 100_000, 1_000_000], help="keys per side")
    parser.add_argument(
        "--labeled-rows", type=sizes_arg, default=[10_000, 100_000, 1_000_000], help="provider rows"
    )
    parser.add_argument("--he-max", type=int, default=100_000, help="HE PSI up to this many keys per side")
    parser.add_argument("--he-extra", type=sizes_arg, default=[], help="also HE PSI alone at these sizes")
    parser.add_argument(
        "--cardinality-max", type=int, default=100_000, help="DH size-only PSI up to this many keys per side"
    )
    parser.add_argument("--openmined-max", type=int, default=1_000_000, help="openmined-psi up to this size")
    parser.add_argument(
        "--labeled-he-max", type=int, default=1_000_000, help="labeled HE up to this many provider rows"
    )
    parser.add_argument("--skip-labeled", action="store_true", help="only the two-party PSI table")
    parser.add_argument(
        "--engines",
        default=",".join([*OURS, "openmined"]),
        help="comma separated subset of " + ",".join([*OURS, "openmined"]),
    )
    args = parser.parse_args()
    engines = set(args.engines.split(","))
    if not engines <= {*OURS, "openmined"}:
        parser.error(f"unknown engine in --engines {args.engines}")

    omp_version = metadata.version("openmined-psi")
    print(f"machine: {os.cpu_count()} cores; start {uptime()}")
    print("keys per side n, |intersection| = n/2\n")
    print("| n per side | engine | reveal | wall time (s) | bytes sent | check |")
    print("|---:|---|---|---:|---:|---|")
    overhead, check = bench_ours(Protocol.RR22, Reveal.ROWS, 10, "bench-overhead")  # also a warm-up
    print(
        f"| 10 | fixed cost: engine processes + link + handshake (RR22, n=10) | rows | {overhead:.2f} | "
        f"n/a | {check} |",
        flush=True,
    )
    for n in args.sizes:
        runs = [
            (name, protocol, reveal)
            for engine, (name, protocol, reveal) in OURS.items()
            if engine in engines
            and (engine != "size" or n <= args.cardinality_max)
            and (engine != "he" or n <= args.he_max)
        ]
        for i, (name, protocol, reveal) in enumerate(runs):
            elapsed, check = bench_ours(protocol, reveal, n, f"bench-{n}-{i}")
            print(f"| {n:,} | {name} | {reveal.value} | {elapsed:.2f} | n/a | {check} |", flush=True)
        if "openmined" in engines and n <= args.openmined_max:
            elapsed, check, sent = bench_openmined(n)
            print(
                f"| {n:,} | openmined-psi {omp_version} ECDH (one process, no network) | rows | "
                f"{elapsed:.2f} | {mib(sent)} | {check} |",
                flush=True,
            )
    for n in args.he_extra:  # HE alone at sizes between --he-max and the next size
        name, protocol, reveal = OURS["he"]
        elapsed, check = bench_ours(protocol, reveal, n, f"bench-he-{n}")
        print(f"| {n:,} | {name} | {reveal.value} | {elapsed:.2f} | n/a | {check} |", flush=True)
    print(f"\nafter the PSI table: {uptime()}")
    if args.skip_labeled:
        return

    print(
        f"\nLabeled PSI: N provider rows, one query of {QUERY_KEYS:,} keys (half match), "
        "labels = 2 columns padded to 24 bytes\n"
    )
    print(
        "| algorithm | N rows | preparation (s) | first query (s) | up / down (first) | "
        "repeat query, cached table (s) | up / down (repeat) | check |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for rows in args.labeled_rows:
        for algorithm in (LabeledAlgorithm.DH, LabeledAlgorithm.HE):
            if algorithm is LabeledAlgorithm.HE and rows > args.labeled_he_max:
                continue
            r = bench_labeled(algorithm, rows)
            check = "ok" if r["ok"] else "WRONG"
            repeat = (
                f"{r['again_s']:.2f} | {mib(r['again_up'])} / {mib(r['again_down'])}"
                if "again_s" in r
                else "same as first | same as first"
            )
            print(
                f"| {r['algorithm']} | {rows:,} | {r['prep_s']:.2f} | {r['first_s']:.2f} | "
                f"{mib(r['first_up'])} / {mib(r['first_down'])} | {repeat} | {check} |",
                flush=True,
            )
    print(f"\nend: {uptime()}")


if __name__ == "__main__":
    main()
