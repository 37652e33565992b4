"""PSI benchmarks, side by side: ours (SPU libpsi RR22/KKRT/ECDH, DH cardinality, HE PSI) vs
openmined-psi (ECDH), and labeled PSI (DH-OPRF, HE) with N provider rows and 10^3 query keys.

    python bench/psi_bench.py                      # 10^4 and 10^5 keys per side
    python bench/psi_bench.py --million            # also 10^6 (run by hand, once: minutes)
    python bench/psi_bench.py --sizes 1000 --labeled-rows 1000   # a quick smoke run

Two-party runs use real links on 127.0.0.1 (free ports); each party's protocol side runs
in its own engine process, so the SPU timings include process start and link setup
(~1-2 s). Half of each side's keys are in the intersection. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
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
    PsiResult,
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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


def key_sets(n: int) -> tuple[Table, Table]:
    """n keys per side, n/2 in common."""
    left = Table(("id",), tuple((f"customer-{i:08d}",) for i in range(n)))
    right = Table(("id",), tuple((f"customer-{i:08d}",) for i in range(n // 2, n + n // 2)))
    return left, right


def bench_ours(protocol: Protocol, reveal: Reveal, n: int, session: str) -> tuple[float, str]:
    left, right = key_sets(n)
    he = HeParams() if protocol is Protocol.HE else None
    spec = PsiSpec(protocol, reveal, (0,), RULES, he=he)
    addresses = (f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    links = [LinkConfig(r, addresses, session, recv_timeout_ms=600_000, deadline_s=7200) for r in (0, 1)]
    with tempfile.TemporaryDirectory() as d0, tempfile.TemporaryDirectory() as d1:
        start = time.perf_counter()
        out = both(
            (
                lambda: run_psi(spec, data=PartyData(left, ("id",)), link=links[0], work_dir=Path(d0)),
                lambda: run_psi(spec, data=PartyData(right, ("id",)), link=links[1], work_dir=Path(d1)),
            )
        )
        elapsed = time.perf_counter() - start
    result = out[0]
    if not isinstance(result, PsiResult):
        return elapsed, f"error: {result!r}"[:80]
    ok = result.intersection_size == n // 2
    return elapsed, "ok" if ok else f"WRONG size {result.intersection_size}"


def bench_openmined(n: int) -> tuple[float, str, int]:
    import private_set_intersection.python as omp

    left, right = key_sets(n)
    client_items = [r[0] for r in left.rows]
    server_items = [r[0] for r in right.rows]
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="keys per side, comma separated")
    parser.add_argument("--million", action="store_true", help="add 10^6 keys per side (slow)")
    parser.add_argument("--labeled-rows", default="10000,100000", help="provider rows for labeled PSI")
    parser.add_argument(
        "--he-max", type=int, default=100_000, help="skip HE PSI above this many keys per side"
    )
    parser.add_argument(
        "--openmined-max", type=int, default=100_000, help="skip openmined-psi above this size"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    labeled_rows = [int(s) for s in args.labeled_rows.split(",") if s]
    if args.million:
        sizes.append(1_000_000)
        labeled_rows.append(1_000_000)

    print(f"machine: {os.cpu_count()} cores; keys per side n, |intersection| = n/2\n")
    print("| n per side | engine | reveal | wall time (s) | bytes sent | check |")
    print("|---:|---|---|---:|---:|---|")
    overhead, check = bench_ours(Protocol.RR22, Reveal.ROWS, 10, "bench-overhead")
    print(
        f"| 10 | fixed cost: 2 engine processes + link + handshake (RR22, n=10) | rows | {overhead:.2f} | "
        f"n/a | {check} |",
        flush=True,
    )
    for n in sizes:
        runs: list[tuple[str, Protocol, Reveal]] = [
            ("ours: SPU RR22", Protocol.RR22, Reveal.ROWS),
            ("ours: SPU KKRT", Protocol.KKRT, Reveal.ROWS),
            ("ours: SPU ECDH", Protocol.ECDH, Reveal.ROWS),
            ("ours: DH cardinality (ristretto255)", Protocol.ECDH, Reveal.SIZE),
        ]
        if n <= args.he_max:
            runs.append(("ours: HE PSI (BFV)", Protocol.HE, Reveal.ROWS))
        for i, (name, protocol, reveal) in enumerate(runs):
            elapsed, check = bench_ours(protocol, reveal, n, f"bench-{n}-{i}")
            print(f"| {n:,} | {name} | {reveal.value} | {elapsed:.2f} | n/a | {check} |", flush=True)
        if n <= args.openmined_max:
            elapsed, check, sent = bench_openmined(n)
            print(
                f"| {n:,} | openmined-psi 2.0.6 ECDH (one process, no network) | rows | {elapsed:.2f} | "
                f"{mib(sent)} | {check} |",
                flush=True,
            )

    print(
        f"\nLabeled PSI: N provider rows, one query of {QUERY_KEYS:,} keys (half match), "
        "labels = 2 columns padded to 24 bytes\n"
    )
    print(
        "| algorithm | N rows | preparation (s) | first query (s) | up / down (first) | "
        "repeat query, cached table (s) | up / down (repeat) | check |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for rows in labeled_rows:
        for algorithm in (LabeledAlgorithm.DH, LabeledAlgorithm.HE):
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


if __name__ == "__main__":
    main()
