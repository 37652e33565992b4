"""Joint statistics benchmark: one query, three engines side by side.

The query: mean and standard deviation of 10 columns and the correlation of 9 column pairs,
over 3 providers x N rows (horizontal partition), computed

* in plaintext pandas (the reference: no privacy),
* in SPU's simulator (ABY3, all parties in this process, in-memory links),
* in the real runtime: 3 spawned processes linked over brpc on 127.0.0.1 (ABY3), four
  times: compiling (cold compile cache), with the executable from the compile cache, with
  the cache and prewarmed engine processes (spawned and SPU/JAX imported before the clock
  starts), and the last again with the outputs revealed to an external requester (each
  party returns its output shares; this process reconstructs them; that query is another
  plan, so its executable is put in the cache before the clock starts).

    python bench/mpc_bench.py                  # N = 10,000 per provider
    python bench/mpc_bench.py --large          # N = 100,000 per provider (minutes)
    python bench/mpc_bench.py --rows 2000 --max-error 1e-3   # a quick smoke run

The real runtime's time is split by stage: link set-up (process start, imports, brpc links
and the plan handshake), compile (every party compiles the plan), sharing the inputs, and
the MPC itself with the reveal. Every MPC value is checked against pandas: the last column
is the worst |error| / stated bound (it must stay <= 1). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from compute.mpc import (
    Accuracy,
    Aggregate,
    ColRef,
    Column,
    Func,
    Partition,
    Prewarmed,
    Query,
    QueryResult,
    Reveal,
    TableSchema,
    plan_query,
    run_parties,
    simulate,
)
from compute.mpc.cache import compile_plan
from compute.mpc.simulate import parts_of

COLUMNS = 10
SCALES = (1.0, 10.0, 1_000.0, 50_000.0)
TO_RANK_0 = Reveal.to(0)


def schema() -> TableSchema:
    """10 columns on different scales, each declared as mean +- 6 sigma."""
    cols = []
    for j in range(COLUMNS):
        scale = SCALES[j % len(SCALES)]
        cols.append(Column.number(f"c{j}", -6 * scale + 3 * scale, 6 * scale + 3 * scale))
    return TableSchema("t", tuple(cols))


def provider_rows(n: int, seed: int) -> dict[str, Any]:
    """n rows of correlated columns (neighbours share a common factor), within the ranges."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, COLUMNS + 1))
    out = {}
    for j in range(COLUMNS):
        scale = SCALES[j % len(SCALES)]
        mixed = (z[:, j] + 0.8 * z[:, j + 1]) / np.sqrt(1.64)
        out[f"c{j}"] = np.clip(mixed, -5.9, 5.9) * scale + 3 * scale
    return out


def query(max_error: float, min_spread: float, reveal: Reveal = TO_RANK_0) -> Query:
    col = [ColRef("t", f"c{j}") for j in range(COLUMNS)]
    select = (
        [Aggregate(Func.MEAN, (c,)) for c in col]
        + [Aggregate(Func.STD_SAMP, (c,)) for c in col]
        + [Aggregate(Func.CORR, (col[j], col[j + 1])) for j in range(COLUMNS - 1)]
    )
    return Query(
        (schema(),),
        Partition.HORIZONTAL,
        tuple(select),
        None,
        None,
        10,
        reveal,
        Accuracy(max_error, min_spread=min_spread),
    )


def reference(df: pd.DataFrame) -> dict[str, float]:
    out = {}
    for j in range(COLUMNS):
        out[f"mean(t.c{j})"] = float(df[f"c{j}"].mean())
        out[f"stddev_samp(t.c{j})"] = float(df[f"c{j}"].std())
    for j in range(COLUMNS - 1):
        out[f"corr(t.c{j}, t.c{j + 1})"] = float(df[f"c{j}"].corr(df[f"c{j + 1}"]))
    return out


def worst_ratio(result: QueryResult, truth: dict[str, float]) -> float:
    worst = 0.0
    for agg in result.aggregates:
        value, bound = agg.values[0], agg.bounds[0]
        assert isinstance(value, float)
        err = abs(value - truth[agg.label])
        worst = max(worst, err / bound if bound > 0 else (0.0 if err == 0 else float("inf")))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000, help="rows per provider (default 10,000)")
    parser.add_argument("--large", action="store_true", help="100,000 rows per provider")
    parser.add_argument("--max-error", type=float, default=1e-5, help="accuracy target (default 1e-5)")
    parser.add_argument(
        "--min-spread", type=float, default=0.01, help="stddev/corr bounds assume sd >= this x half-width"
    )
    parser.add_argument("--skip-real", action="store_true", help="only pandas and the simulator")
    args = parser.parse_args()
    n = 100_000 if args.large else args.rows
    parts = [provider_rows(n, seed) for seed in (1, 2, 3)]
    q = query(args.max_error, args.min_spread)
    print(f"machine: {os.cpu_count()} cores; 3 providers x {n:,} rows x {COLUMNS} columns")
    pairs = COLUMNS - 1
    print(
        f"query: mean and stddev of {COLUMNS} columns, corr of {pairs} pairs; max_error={args.max_error:g}\n"
    )

    started = time.perf_counter()
    df = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
    truth = reference(df)
    plain = time.perf_counter() - started

    started = time.perf_counter()
    simulated = simulate(q, {"t": parts})
    sim = time.perf_counter() - started
    params = f"{simulated.numerics.field}, f={simulated.numerics.fraction_bits}"

    print(
        "| engine | parameters | link set-up (s) | compile (s) | share inputs (s) | MPC + reveal (s) "
        "| total (s) | worst err/bound |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| pandas (plaintext) | float64 | - | - | - | - | {plain:.3f} | reference |")
    print(
        f"| SPU simulator, ABY3 (1 process) | {params} | - | - | - | - | {sim:.2f} | "
        f"{worst_ratio(simulated, truth):.3f} |",
        flush=True,
    )
    if not args.skip_real:
        with tempfile.TemporaryDirectory(prefix="mpc-bench-cache-") as cache:
            runs = [
                ("SPU ABY3, 3 processes on 127.0.0.1 (compiles)", q, False),
                ("same, executable from the compile cache", q, False),
                ("same, cache + prewarmed processes", q, True),
                (
                    "same, cache + prewarmed, external receiver",
                    query(args.max_error, args.min_spread, Reveal.external()),
                    True,
                ),
            ]
            for label, the_query, prewarm in runs:
                if the_query is not q:  # its own plan: put its executable in the cache first
                    compile_plan(
                        plan_query(the_query, parts_of(the_query, {"t": parts})[0]), cache_dir=Path(cache)
                    )
                handles = [Prewarmed() for _ in range(3)] if prewarm else None
                try:
                    if handles is not None and not all(h.ready(300) for h in handles):
                        raise SystemExit("prewarmed engine processes did not start")
                    started = time.perf_counter()
                    run = run_parties(
                        the_query,
                        {"t": parts},
                        recv_timeout_ms=300_000,
                        deadline_s=3600,
                        cache_dir=Path(cache),
                        prewarmed=handles,
                    )
                    total = time.perf_counter() - started
                finally:
                    for h in handles or ():
                        h.close()
                s = run.stages
                print(
                    f"| {label} | {params} | {s['linked']:.2f} | "
                    f"{s['compiled'] - s['linked']:.2f} | {s['inputs-shared'] - s['compiled']:.2f} | "
                    f"{s['revealed'] - s['inputs-shared']:.2f} | {total:.2f} | "
                    f"{worst_ratio(run.result, truth):.3f} |",
                    flush=True,
                )
    print()
    print("| output | pandas | MPC (simulator) | stated bound |")
    print("|---|---:|---:|---:|")
    for agg in simulated.aggregates[:: max(1, len(simulated.aggregates) // 6)]:
        print(f"| {agg.label} | {truth[agg.label]:.10g} | {agg.values[0]:.10g} | {agg.bounds[0]:.3g} |")


if __name__ == "__main__":
    main()
