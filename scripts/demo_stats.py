"""`make demo`, joint statistics (task kind 3): three banks, one table each on its own node,
a declared schema; the requester asks for per-region statistics of the union through
`datum task submit stats`, an ABY3 committee of the three nodes computes them on secret
shares, and only the requester learns the answer. Checked against pandas on the plaintext
union within each value's stated bound (counts exact).
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from demo_cli import check, console, datum, short
from rich.table import Table

SCHEMA = {
    "name": "clients",
    "columns": [
        {"name": "income", "kind": "number", "lo": 0, "hi": 300000, "integer": False},
        {"name": "region", "kind": "category", "categories": ["north", "south", "east"]},
        {"name": "segment", "kind": "category", "categories": ["young", "senior"]},
    ],
}
BANKS = (("bank A", 1, 300), ("bank B", 2, 250), ("bank C", 3, 350))  # name, node, rows
QUERY = "SELECT count(*), mean(income), std(income) FROM clients GROUP BY region"


@dataclass(frozen=True)
class Banks:
    """The registered datasets (by bank), their plaintext frames and the schema file."""

    dataset_ids: list[int]
    frames: list[pd.DataFrame]
    schema: Path


def bank_frame(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], rows, p=[0.45, 0.35, 0.2])
    segment = rng.choice(["young", "senior"], rows, p=[0.4, 0.6])
    lift = np.where(segment == "senior", 25_000, 0) + np.where(region == "north", 10_000, 0)
    income = np.round(rng.uniform(18_000, 160_000, rows) + lift, 2)
    return pd.DataFrame({"client_id": [f"s{seed}-{i}" for i in range(rows)], "income": income,
                         "region": region, "segment": segment})  # fmt: skip


def register_banks(home: Path) -> Banks:
    """Each bank registers its table with the declared schema on its own node."""
    schema = home / "clients.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    ids, frames = [], []
    for seed, (name, node, rows) in enumerate(BANKS, start=31):
        frame = bank_frame(seed, rows)
        path = home / f"{name.replace(' ', '_')}.csv"
        frame.to_csv(path, index=False)
        with console.status(f"stats: {name} registers its table on node {node}"):
            registered = datum(
                home, "data", "register", str(path), "--schema", str(schema), "--node", str(node),
                "--price", "1dtm", "--allow", "stats", "--min-group", "5",
            )  # fmt: skip
        check(registered["rows"] == rows, f"{name} registered {registered['rows']} rows, wrote {rows}")
        ids.append(int(registered["dataset_id"]))
        frames.append(frame)
    return Banks(ids, frames, schema)


def stats_example(home: Path) -> Banks:
    """Run the joint statistics step; returns the banks for the oracle step."""
    banks = register_banks(home)
    with console.status("stats: the ABY3 committee computes on secret shares of the three tables"):
        answer = datum(
            home, "task", "submit", "stats", "--with", ",".join(map(str, banks.dataset_ids)),
            "--schema", str(banks.schema), "--query", QUERY, "--wait",
        )  # fmt: skip
    result = answer["result"]
    union = pd.concat(banks.frames, ignore_index=True)
    groups = list(result["groups"])
    check(groups == ["north", "south", "east"], f"stats groups {groups}")
    reference = {
        "count": lambda f: float(len(f)),
        "mean": lambda f: float(f.income.mean()),
        "stddev_samp": lambda f: float(f.income.std(ddof=1)),  # std() is the sample deviation
    }
    table = Table(
        title=f"joint statistics of 3 banks under MPC vs pandas on their plaintext union ({len(union)} rows)"
    )
    for column in (
        "region",
        "aggregate",
        "MPC answer",
        "± stated bound",
        "pandas",
        "|diff|",
    ):
        table.add_column(column, justify="right" if column != "aggregate" else "left")
    for agg in result["aggregates"]:
        for g, group in enumerate(groups):
            got, bound = float(agg["values"][g]), float(agg["bounds"][g])
            want = reference[agg["func"]](union[union.region == group])
            ok = got == want if agg["func"] == "count" else abs(got - want) <= bound * (1 + 1e-9) + 1e-12
            check(
                math.isfinite(got) and ok, f"{agg['label']}@{group}: MPC {got}, pandas {want}, bound {bound}"
            )
            table.add_row(
                group,
                str(agg["label"]).replace("clients.", "").replace("stddev_samp(", "std("),
                f"{got:,.2f}",
                f"{bound:.3g}",
                f"{want:,.2f}",
                f"{abs(got - want):.3g}",
            )
    console.print(table)
    timings = answer["timings_s"]
    summary = Table(show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("command", f'datum task submit stats --with {",".join(map(str, banks.dataset_ids))} '
                    f'--schema clients.schema.json --query "{QUERY}" --json --wait')  # fmt: skip
    summary.add_row("task", f"{answer['task_id']} ({answer['output']} output, ABY3 committee of 3)")
    summary.add_row("on chain", f"result commitment {short(answer['result_hash'])}; public output "
                    f"{answer['public_output']} (empty)")  # fmt: skip
    summary.add_row(
        "request / finalize tx", f"{short(answer['tx']['request'])} / {short(answer['tx']['finalize'])}"
    )
    summary.add_row("client timings (s)", ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))
    summary.add_row("command wall time", f"{answer['_wall_s']:.1f} s")
    console.print(summary)
    return banks
