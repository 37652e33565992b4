"""A vertical (PSI-aligned join) stats query through the whole network: anvil, the contracts,
three real node processes, a real PSI between the requester's engine and node 2, real SPU links
between the ABY3 committee's nodes, and the `datum` CLI.

A shop (`id, unit_price, channel`, served by node 1) and a logistics firm (`id, units`, served
by node 2) align their rows on `id`: a PSI task with `--reveal both` gives each side its own
rows of the intersection (each in its own file's order), `datum data align` sorts each side by
the normalized key, and each side registers its aligned table (without the key column) for
stats. Then `FROM a JOIN b` with `a.unit_price * b.units` answers like pandas' inner join, and a
vertical query over tables of different committed row counts is refused before any request.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from oracle import devnet
from oracle.chain import tasks
from oracle.chain.tasks import TaskState

from .conftest import Network
from .test_psi_network import holders
from .test_stats_network import datum

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SHOP = {
    "name": "a",
    "columns": [
        {"name": "unit_price", "kind": "number", "lo": 0, "hi": 500, "integer": False},
        {"name": "channel", "kind": "category", "categories": ["web", "store", "phone"]},
    ],
}
LOGISTICS = {
    "name": "b",
    "columns": [{"name": "units", "kind": "number", "lo": 0, "hi": 400, "integer": True}],
}
SHOP_ROWS, LOGISTICS_ROWS, SHARED = 300, 250, 200
MIN_GROUP = 5
QUERY = (
    "SELECT sum(a.unit_price * b.units), mean(b.units), count(*) "
    "FROM a JOIN b WHERE b.units > 100 GROUP BY a.channel"
)


@dataclass
class Aligned:
    shop: pd.DataFrame  # every shop row (id as text)
    logistics: pd.DataFrame
    shared: list[str]
    shop_aligned: Path
    logistics_aligned: Path
    shop_id: int  # the aligned datasets
    logistics_id: int
    shop_schema: Path
    logistics_schema: Path
    psi_task: int


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def ok(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    return out


@pytest.fixture(scope="module")
def aligned(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Aligned:
    net = network
    work = tmp_path_factory.mktemp("vertical")
    rng = random.Random(5)
    ids = [f"c{n:05d}" for n in rng.sample(range(100_000), SHOP_ROWS + LOGISTICS_ROWS - SHARED)]
    shared = ids[:SHARED]
    shop_ids = shared + ids[SHARED : SHARED + SHOP_ROWS - SHARED]
    logistics_ids = shared + ids[SHARED + SHOP_ROWS - SHARED :]
    rng.shuffle(shop_ids)  # each side in its own order
    rng.shuffle(logistics_ids)
    shop = pd.DataFrame(
        {
            "id": shop_ids,
            "unit_price": [round(rng.uniform(1, 480), 2) for _ in shop_ids],
            "channel": [rng.choice(["web", "web", "store", "phone"]) for _ in shop_ids],
        }
    )
    logistics = pd.DataFrame({"id": logistics_ids, "units": [rng.randrange(0, 401) for _ in logistics_ids]})
    shop_file, logistics_file = work / "shop.csv", work / "logistics.csv"
    shop.to_csv(shop_file, index=False, float_format="%.2f")
    logistics.to_csv(logistics_file, index=False)
    shop_schema, logistics_schema = work / "a.json", work / "b.json"
    shop_schema.write_text(json.dumps(SHOP))
    logistics_schema.write_text(json.dumps(LOGISTICS))

    # the logistics firm serves its table for PSI from node 2
    raw = ok(
        datum(
            net, work, "data", "register", str(logistics_file), "--key", "id", "--node", "2",
            "--allow", "psi", "--json",
        )
    )  # fmt: skip
    # the shop runs the PSI; both sides learn their own rows of the intersection
    matched = work / "shop-matched.csv"
    psi = ok(
        datum(
            net, work, "task", "submit", "psi", "--mine", str(shop_file), "--key", "id",
            "--with", str(raw["dataset_id"]), "--protocol", "rr22", "--reveal", "both",
            "--out", str(matched), "--json", "--wait",
        )
    )  # fmt: skip
    task_id = int(psi["task_id"])
    print("alignment PSI timings (s):", psi.get("timings_s"))
    node2 = next(n for n in net.state.nodes if n.index == 2)
    side = (
        net.node_dir(node2) / "data" / "datasets" / str(raw["dataset_id"]) / "results" / f"task-{task_id}.csv"
    )
    assert side.is_file()

    # each side sorts its rows by the normalized key and registers the aligned table
    shop_aligned, logistics_aligned = work / "shop-aligned.csv", work / "logistics-aligned.csv"
    for source, target in ((matched, shop_aligned), (side, logistics_aligned)):
        out = ok(
            datum(net, work, "data", "align", str(source), "--key", "id", "--out", str(target), "--json")
        )
        assert out["rows"] == SHARED
    registered = []
    for file, schema, node in ((shop_aligned, shop_schema, 1), (logistics_aligned, logistics_schema, 2)):
        out = ok(
            datum(
                net, work, "data", "register", str(file), "--schema", str(schema), "--node", str(node),
                "--allow", "stats", "--min-group", str(MIN_GROUP), "--json",
            )
        )  # fmt: skip
        assert out["rows"] == SHARED
        registered.append(int(out["dataset_id"]))
    return Aligned(
        shop,
        logistics,
        shared,
        shop_aligned,
        logistics_aligned,
        registered[0],
        registered[1],
        shop_schema,
        logistics_schema,
        task_id,
    )


def test_the_psi_and_align_steps_give_both_sides_the_same_row_order(
    network: Network, aligned: Aligned
) -> None:
    a, b = read_csv(aligned.shop_aligned), read_csv(aligned.logistics_aligned)
    assert a[0] == ["id", "unit_price", "channel"] and b[0] == ["id", "units"]
    assert [r[0] for r in a[1:]] == [r[0] for r in b[1:]] == sorted(aligned.shared)
    # the rows are the providers' own rows, unchanged
    shop = {r.id: (f"{r.unit_price:.2f}", r.channel) for r in aligned.shop.itertuples()}
    units = {r.id: str(r.units) for r in aligned.logistics.itertuples()}
    assert all(shop[r[0]] == (r[1], r[2]) for r in a[1:])
    assert all(units[r[0]] == r[1] for r in b[1:])
    # what the alignment revealed: the intersection, nothing beyond it reached another node
    shop_only = sorted(set(aligned.shop.id) - set(aligned.shared))
    logistics_only = sorted(set(aligned.logistics.id) - set(aligned.shared))
    assert len(shop_only) == SHOP_ROWS - SHARED and len(logistics_only) == LOGISTICS_ROWS - SHARED
    for node in network.state.nodes:
        root = network.node_dir(node)
        assert holders([root], shop_only, []) == [], f"node {node.index} holds ids only the shop has"
        if node.index != 2:  # node 2 serves the firm's whole table
            assert holders([root], logistics_only, []) == [], f"node {node.index} holds the firm's other ids"


def test_a_vertical_query_answers_like_pandas_on_the_inner_join(
    network: Network, aligned: Aligned, tmp_path: Path
) -> None:
    net = network
    done = datum(
        net, tmp_path, "task", "submit", "stats", "--with", f"{aligned.shop_id},{aligned.logistics_id}",
        "--schema", f"{aligned.shop_schema},{aligned.logistics_schema}", "--query", QUERY,
        "--json", "--wait", "--timeout", "600",
    )  # fmt: skip
    payload = ok(done)
    print("vertical query timings (s):", payload["timings_s"])
    result = payload["result"]
    assert isinstance(result, dict)

    joined = aligned.shop.merge(aligned.logistics, on="id", how="inner")
    assert len(joined) == SHARED
    chosen = joined[joined.units > 100]
    assert result["groups"] == ["web", "store", "phone"]
    labels = [agg["label"] for agg in result["aggregates"]]
    assert len(labels) == 3, labels
    checked = 0
    for g, group in enumerate(result["groups"]):
        rows = chosen[chosen.channel == group]
        want = [float((rows.unit_price * rows.units).sum()), float(rows.units.mean()), len(rows)]
        for agg, expected in zip(result["aggregates"], want, strict=True):
            got, bound = agg["values"][g], agg["bounds"][g]
            if agg["func"] == "count":
                assert got == expected and bound == 0, (group, got, expected)
            else:
                assert math.isfinite(got) and bound >= 0
                assert abs(got - expected) <= bound * (1 + 1e-9) + 1e-12, (
                    agg["label"],
                    group,
                    got,
                    expected,
                    bound,
                )
            checked += 1
    assert checked == 9

    view = tasks.get_task(net.chain, net.contracts, int(payload["task_id"]))
    assert view.state is TaskState.FINALIZED and view.kind == 3
    assert sorted(view.dataset_ids) == sorted([aligned.shop_id, aligned.logistics_id])


def test_a_vertical_query_over_unequal_row_counts_is_refused_before_any_request(
    network: Network, aligned: Aligned, tmp_path: Path
) -> None:
    net = network
    # the shop's whole table (300 rows), registered for stats without aligning it
    whole = tmp_path / "shop-all.csv"
    aligned.shop.to_csv(whole, index=False, float_format="%.2f")
    out = ok(
        datum(
            net, tmp_path, "data", "register", str(whole), "--schema", str(aligned.shop_schema),
            "--node", "1", "--allow", "stats", "--min-group", str(MIN_GROUP), "--json",
        )
    )  # fmt: skip
    unaligned = int(out["dataset_id"])
    requester = devnet.dev_account(0).address
    nonce = net.chain.w3.eth.get_transaction_count(requester)
    count = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
    done = datum(
        net, tmp_path, "task", "submit", "stats", "--with", f"{unaligned},{aligned.logistics_id}",
        "--schema", str(aligned.shop_schema), "--schema", str(aligned.logistics_schema),
        "--query", QUERY, "--json", "--wait",
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert "row-aligned" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"{SHOP_ROWS} rows" in done.stderr and f"{SHARED} rows" in done.stderr, done.stderr
    assert net.chain.w3.eth.get_transaction_count(requester) == nonce
    assert int(net.chain.call(net.contracts.tasks, "getTaskCount")) == count
