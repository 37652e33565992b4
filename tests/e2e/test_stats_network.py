"""Joint statistics as a network task (kind 3) through the whole network: anvil, the
contracts, three real node processes (each the provider of one dataset and a member of the
ABY3 committee), real SPU links between the nodes, and the `datum` CLI.

The requester (devnet account 0) asks for statistics over the union of three providers'
tables; with output `requester` only it learns the answer (the chain holds a commitment), with
output `public` the answer is the task's public output. Then the refusals before any request
(unknown column, too large a query, consent, a min group size below a dataset's policy, no uses
left) and a provider node refusing at share time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from eth_hash.auto import keccak

from oracle import devnet
from oracle.chain import tasks
from oracle.chain.tasks import TaskState
from oracle.client import DatumClient
from oracle.client_stats import StatsRequester, prepare_stats
from oracle.node.oracle_output import decode_public_output, parse_output_spec
from oracle.node.stats_datasets import read_schema_file
from oracle.node.store import NodeTaskState
from oracle.p2p import Audience, P2PClient, Peer, PeerNotFound

from .conftest import Network, binary_hits, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCHEMA = {
    "name": "people",
    "columns": [
        {"name": "age", "kind": "number", "lo": 18, "hi": 90, "integer": True},
        {"name": "income", "kind": "number", "lo": 0, "hi": 200000, "integer": False},
        {"name": "score", "kind": "number", "lo": 0, "hi": 1, "integer": False},
        {"name": "region", "kind": "category", "categories": ["north", "south", "east"]},
    ],
}
ROWS = (420, 310, 530)
USES = 20
MIN_GROUP = 5
EMPTY_KECCAK = keccak(b"")


def cli_env(net: Network, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")}
    scratch.mkdir(parents=True, exist_ok=True)
    return env | {
        "DATUM_HOME": str(net.home),
        "DATUM_ARTIFACTS_DIR": str(net.store.directory),
        "TMPDIR": str(scratch),
    }


def datum(net: Network, cwd: Path, *args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oracle.cli", *args],
        env=cli_env(net, cwd / "tmp"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def people(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Rows whose numbers carry 4-6 random decimals (no text in a node's files matches by chance)."""
    age = rng.integers(18, 91, n)
    income = np.round(rng.uniform(5_000, 170_000, n) + age * 300, 4)  # below 200,000: no clipping
    score = np.round(rng.beta(2, 3, n), 6)
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    return pd.DataFrame({"id": np.arange(n), "age": age, "income": income, "score": score, "region": region})


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    lines = ["id,age,income,score,region"]
    lines += [f"{r.id},{r.age},{r.income:.4f},{r.score:.6f},{r.region}" for r in frame.itertuples()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class Providers:
    """Three datasets, dataset i served by devnet node i."""

    ids: list[int]
    frames: list[pd.DataFrame]
    texts: list[list[str]]  # each provider's income cells as written
    schema: Path

    @property
    def union(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True)


def register(net: Network, cwd: Path, file: Path, schema: Path, node: int, *extra: str) -> dict[str, object]:
    done = datum(
        net, cwd, "data", "register", str(file), "--schema", str(schema), "--node", str(node),
        "--price", "1dtm", "--json", *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out: dict[str, object] = json.loads(done.stdout)
    return out


@pytest.fixture(scope="module")
def providers(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Providers:
    work = tmp_path_factory.mktemp("providers")
    schema = work / "people.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    rng = np.random.default_rng(2026)
    ids, frames, texts = [], [], []
    for node, n in zip((1, 2, 3), ROWS, strict=True):
        frame = people(rng, n)
        file = write_frame(frame, work / f"people-{node}.csv")
        out = register(
            network, work, file, schema, node, "--allow", "stats", "--min-group", str(MIN_GROUP),
            "--uses", str(USES),
        )  # fmt: skip
        assert out["rows"] == n and out["table"] == SCHEMA
        texts.append(
            [f"{v:.4f}" for v in frame.income if v >= 100_000]
        )  # 11 characters, none a substring of another
        file.unlink()  # the provider's only copy is now its node's
        ids.append(int(out["dataset_id"]))  # type: ignore[call-overload]
        frames.append(frame)
    return Providers(ids, frames, texts, schema)


def stats_args(p: Providers, query: str, *extra: str) -> list[str]:
    return [
        "task", "submit", "stats", "--with", ",".join(map(str, p.ids)), "--schema", str(p.schema),
        "--query", query, "--json", "--wait", "--timeout", "600", *extra,
    ]  # fmt: skip


def remaining_uses(net: Network, dataset_id: int) -> int:
    return int(net.chain.call(net.contracts.data, "getAsset", dataset_id)[6][3])


# -- the reference ------------------------------------------------------------------------------

REQUESTER_QUERY = (
    "SELECT count(*), sum(income), mean(income), std(income), var(age), min(age), max(income), "
    "histogram(age, [18, 30, 45, 60, 91]), median(income), quantile(score, 0.9), corr(age, income) "
    "FROM people WHERE score > 0.15 AND age >= 21 GROUP BY region"
)


def reference(frame: pd.DataFrame, func: str, i: int) -> float | list[int]:
    """Aggregate `i` of REQUESTER_QUERY on one group's rows, in pandas / numpy."""
    if func == "count":
        return len(frame)
    if i == 1:
        return float(frame.income.sum())
    if i == 2:
        return float(frame.income.mean())
    if i == 3:
        return float(frame.income.std(ddof=1))
    if i == 4:
        return float(frame.age.var(ddof=1))
    if i == 5:
        return float(frame.age.min())
    if i == 6:
        return float(frame.income.max())
    if i == 7:
        return np.histogram(frame.age, bins=[18, 30, 45, 60, 91])[0].tolist()
    if i == 8:
        return float(np.quantile(frame.income, 0.5, method="inverted_cdf"))
    if i == 9:
        return float(np.quantile(frame.score, 0.9, method="inverted_cdf"))
    if i == 10:
        return float(frame.age.corr(frame.income))
    raise AssertionError(f"no reference for aggregate {i} ({func})")


def check_against_pandas(result: dict[str, object], frame: pd.DataFrame, group_by: bool) -> int:
    """Every value within its stated bound of pandas (counts exact); returns values checked."""
    groups = list(result["groups"])  # type: ignore[call-overload]
    checked = 0
    for i, agg in enumerate(result["aggregates"]):  # type: ignore[attr-defined]
        for g, group in enumerate(groups):
            rows = frame[frame.region == group] if group_by else frame
            want = reference(rows, agg["func"], i)
            got, bound = agg["values"][g], agg["bounds"][g]
            if isinstance(want, list):
                assert list(got) == want, (agg["label"], group, got, want)
            elif agg["func"] == "count":
                assert got == want and bound == 0, (agg["label"], group, got, want)
            else:
                assert math.isfinite(got) and bound >= 0, (agg["label"], group)  # 0: exact (integers)
                assert abs(got - want) <= bound * (1 + 1e-9) + 1e-12, (agg["label"], group, got, want, bound)
            checked += 1
    return checked


# -- the happy paths ------------------------------------------------------------------------------


def test_requester_output_gives_the_pandas_answer_only_to_the_requester(
    network: Network, providers: Providers, tmp_path: Path
) -> None:
    net, p = network, providers
    uses_before = [remaining_uses(net, d) for d in p.ids]
    done = datum(net, tmp_path, *stats_args(p, REQUESTER_QUERY))
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    payload = json.loads(line)
    task_id = payload["task_id"]
    result = payload["result"]

    print("requester query timings (s):", payload["timings_s"])
    frame = p.union
    filtered = frame[(frame.score > 0.15) & (frame.age >= 21)]
    assert result["groups"] == ["north", "south", "east"]
    assert check_against_pandas(result, filtered, group_by=True) == 11 * 3

    # the chain holds the commitment only: resultHash = sha256(statement), no public output
    view = tasks.get_task(net.chain, net.contracts, task_id, history=True)
    assert view.state is TaskState.FINALIZED and view.kind == 3
    assert sorted(view.dataset_ids) == sorted(p.ids)
    assert "0x" + view.result_hash.hex() == payload["result_hash"]
    assert view.public_output_hash == EMPTY_KECCAK and payload["public_output"] == "0x"
    # one use of each dataset per task
    assert [remaining_uses(net, d) for d in p.ids] == [u - 1 for u in uses_before]

    for node in net.state.nodes:
        record = wait_for(
            lambda node=node: (
                (r := net.task_on_node(node, task_id)) and r.state == NodeTaskState.FINALIZED and r
            ),
            30,
            f"node {node.index} to record task {task_id} as finalized",
        )
        assert record.result_hash == payload["result_hash"]
        assert record.evaluations == 1

    # a member's share blobs are not served to anyone (here: the requester asks for them)
    async def fetch_share() -> None:
        node = net.state.nodes[0]
        async with P2PClient(devnet.dev_account(0)) as client:
            peer = Peer(node.endpoint, Audience(net.chain.chain_id, node.signer))
            with pytest.raises(PeerNotFound):
                await client.get(peer, f"/v1/tasks/{task_id}/blobs/mpc-share-0")

    asyncio.run(fetch_share())

    # privacy: no committee node's files or log hold another provider's row or an answer value
    answers = [
        v
        for agg in result["aggregates"]
        if agg["func"] not in ("count", "histogram", "min")
        for v in agg["values"]
    ]
    for index, node in enumerate(net.state.nodes):
        root = net.node_dir(node)
        assert (root / "node.log").is_file()
        blobs = [path.read_bytes() for path in root.rglob("*") if path.is_file()]
        others = [t for j, texts in enumerate(p.texts) if j != index for t in texts]
        leaked = [t for t in others if any(t.encode() in data for data in blobs)]
        assert leaked == [], f"node {node.index} holds rows of another provider: {leaked[:3]}"
        shown = [repr(v) for v in answers if any(repr(v).encode() in data for data in blobs)]
        assert shown == [], f"node {node.index} holds answer values {shown}"
        assert binary_hits(root, np.array(answers, dtype=np.float64)) == []
        other_incomes = np.concatenate([f.income.to_numpy() for j, f in enumerate(p.frames) if j != index])
        assert binary_hits(root / "data", other_incomes) == []


def test_public_output_finalizes_with_the_answer_on_chain(
    network: Network, providers: Providers, tmp_path: Path
) -> None:
    net, p = network, providers
    query = "SELECT count(*), mean(income), max(age) FROM people WHERE region != 'east'"
    done = datum(net, tmp_path, *stats_args(p, query, "--output", "public"))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    frame = p.union[p.union.region != "east"]
    result = payload["result"]
    assert result["groups"] == ["*"]
    (count,), (mean,), (top,) = (a["values"] for a in result["aggregates"])
    assert count == len(frame)
    assert abs(mean - frame.income.mean()) <= result["aggregates"][1]["bounds"][0]
    assert top == frame.age.max()

    output = bytes.fromhex(payload["public_output"][2:])
    assert json.loads(output) == result  # no encoding given: the result JSON is the public output
    print("public query timings (s):", payload["timings_s"])
    view = tasks.get_task(net.chain, net.contracts, payload["task_id"], history=True)
    assert view.state is TaskState.FINALIZED
    assert view.public_output_hash == keccak(output)
    finalized = next(e for e in view.history if e.name == "TaskFinalized")
    assert finalized.tx_hash == payload["tx"]["finalize"]


def test_a_two_node_cheetah_committee_publishes_an_abi_encoded_output(
    network: Network, providers: Providers, tmp_path: Path
) -> None:
    """CHEETAH: two of the three nodes form the committee; the third only provides its shares."""
    net, p = network, providers
    encoding = {"values": ["count(*)", "mean(people.income)"], "types": ["uint256", "uint256"], "decimals": 2}
    spec_file = tmp_path / "output.json"
    spec_file.write_text(json.dumps(encoding))
    query = "SELECT count(*), mean(income) FROM people WHERE age < 60"
    extra = ("--output", "public", "--protocol", "cheetah", "--public-output", str(spec_file))
    done = datum(net, tmp_path, *stats_args(p, query, *extra))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    view = tasks.get_task(net.chain, net.contracts, payload["task_id"])
    assert view.state is TaskState.FINALIZED and len(view.committee) == 2
    members = {op.lower() for op in view.committee}
    outsider = next(n for n in net.state.nodes if n.operator.lower() not in members)
    status = net.node_dir(outsider) / "data" / "stats" / "provider" / f"{payload['task_id']}.json"
    assert json.loads(status.read_text())["state"] == "pushed"  # a provider outside the committee

    frame = p.union[p.union.age < 60]
    (count,), (mean,) = (a["values"] for a in payload["result"]["aggregates"])
    assert count == len(frame)
    assert abs(mean - frame.income.mean()) <= payload["result"]["aggregates"][1]["bounds"][0]
    output = bytes.fromhex(payload["public_output"][2:])
    assert view.public_output_hash == keccak(output)
    published = decode_public_output(output, parse_output_spec(encoding))
    assert published["count(*)"] == len(frame)
    assert abs(float(published["mean(people.income)"]) - mean) <= 0.005 + 1e-9


def test_groups_below_the_minimum_are_refused_inside_the_mpc_and_nothing_is_revealed(
    network: Network, providers: Providers, tmp_path: Path
) -> None:
    net, p = network, providers

    def small(age: int) -> bool:  # some region below the minimum, the filtered set not
        frame = p.union[p.union.age >= age]
        sizes = frame.groupby("region").size().reindex(["north", "south", "east"], fill_value=0)
        return len(frame) >= MIN_GROUP and int(sizes.min()) < MIN_GROUP

    age = next(a for a in range(80, 91) if small(a))
    query = f"SELECT mean(income) FROM people WHERE age >= {age} GROUP BY region"
    done = datum(net, tmp_path, *stats_args(p, query))
    assert done.returncode == 1 and done.stdout == ""
    assert "min_group_size=5" in done.stderr and "DisclosureRefused" in done.stderr, done.stderr
    task_id = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
    for node in net.state.nodes:
        record = wait_for(
            lambda node=node: (
                (r := net.task_on_node(node, task_id)) and r.state == NodeTaskState.FAILED and r
            ),
            60,
            f"node {node.index} to refuse task {task_id}",
        )
        assert "DisclosureRefused" in record.error
        data = net.node_dir(node) / "data"
        assert not (data / "results" / f"{task_id}.stats").exists()
        assert not (data / "stats" / str(task_id) / "output-share.bin").exists()
    assert tasks.get_task(net.chain, net.contracts, task_id).state is not TaskState.FINALIZED


ENCODING = {"values": ["count(*)", "sum(people.age)"], "types": ["uint256", "uint256"], "decimals": 0}


def test_a_spec_carried_inline_needs_no_upload_and_finalizes_with_its_output(
    network: Network, providers: Providers
) -> None:
    """What the DataOracle does: the spec rides in the specURI; members and providers take it
    from the request (nobody uploads anything) and the task finalizes with the public output."""
    net, p = network, providers

    async def go() -> tuple[int, dict[str, Any], bytes]:
        prepared = await prepare_stats(
            net.chain, net.contracts, dataset_ids=p.ids, tables=[read_schema_file(p.schema)],
            sql="SELECT count(*), sum(age) FROM people WHERE region = 'south'", output="public",
            public_output=ENCODING,
        )  # fmt: skip
        async with DatumClient(net.chain, net.contracts, devnet.dev_account(0), nonces=net.nonces) as client:
            requester = StatsRequester(client)
            try:
                submitted = await requester.request(prepared, fee_wei=10**18, timeout_s=600, inline=True)
                final = await client.wait_finalized(submitted.task_id, timeout_s=240)
                result, output = await requester.answer(final, submitted, prepared)
            finally:
                await requester.close()
        return submitted.task_id, result, output

    task_id, result, output = asyncio.run(go())
    south = p.union[p.union.region == "south"]
    view = tasks.get_task(net.chain, net.contracts, task_id)
    assert view.state is TaskState.FINALIZED and view.public_output_hash == keccak(output)
    spec = parse_output_spec(
        {"values": ["count(*)", "sum(people.age)"], "types": ["uint256", "uint256"], "decimals": 0}
    )
    published = decode_public_output(output, spec)
    assert published["count(*)"] == len(south)
    assert published["sum(people.age)"] == int(south.age.sum())  # integer column: exact
    for node in net.state.nodes:
        assert not (net.node_dir(node) / "data" / "p2p" / "blobs" / str(task_id) / "data" / "spec").exists()


# -- refusals -------------------------------------------------------------------------------------


def test_bad_queries_and_policies_are_refused_before_any_request(
    network: Network, providers: Providers, tmp_path: Path
) -> None:
    net, p = network, providers
    requester = devnet.dev_account(0).address

    def refused(args: list[str], message: str) -> None:
        nonce = net.chain.w3.eth.get_transaction_count(requester)
        count = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
        done = datum(net, tmp_path, *args)
        assert done.returncode == 1 and done.stdout == "", done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert net.chain.w3.eth.get_transaction_count(requester) == nonce
        assert int(net.chain.call(net.contracts.tasks, "getTaskCount")) == count

    refused(stats_args(p, "SELECT mean(salary) FROM people"), "salary")
    too_many = ", ".join(f"sum(income + {i})" for i in range(33))
    refused(stats_args(p, f"SELECT {too_many} FROM people"), "32")
    refused(stats_args(p, "SELECT mean(income) FROM people", "--min-group-size", "2"), "minGroupSize 5")
    unknown = stats_args(p, "SELECT mean(income) FROM people")
    unknown[4] = f"{p.ids[0]},999"
    refused(unknown, "DataRegistry__UnknownAsset")

    # a dataset whose consent does not allow stats: the chain refuses the request
    he_only = register(net, tmp_path, write_frame(p.frames[0].head(50), tmp_path / "he.csv"), p.schema, 1,
                       "--allow", "he")  # fmt: skip
    args = stats_args(p, "SELECT mean(income) FROM people")
    args[4] = f"{p.ids[1]},{he_only['dataset_id']}"
    refused(args, "DataRegistry__KindNotAllowed")

    # no uses left: the chain refuses the request with the decoded error
    spent = register(net, tmp_path, write_frame(p.frames[1].head(60), tmp_path / "spent.csv"), p.schema, 2,
                     "--allow", "stats", "--min-group", "5")  # fmt: skip
    owner = net.tx(next(n for n in net.state.nodes if n.index == 2).account)
    policy = (1 << tasks.TASK_KINDS["stats"], True, 0, 0, MIN_GROUP)  # 0 uses left
    owner.send(net.contracts.data, "setPolicy", int(spent["dataset_id"]), policy, 10**18)  # type: ignore[call-overload]
    args[4] = f"{p.ids[1]},{spent['dataset_id']}"
    refused(args, "DataRegistry__NoUsesLeft")


def test_a_provider_node_refuses_a_query_below_its_new_minimum_group_size(
    network: Network, providers: Providers, tmp_path: Path
) -> None:
    """The owner raised minGroupSize after the request: its node refuses to share (409)."""
    net, p = network, providers
    owner_node = next(n for n in net.state.nodes if n.index == 3)
    dataset = p.ids[2]

    async def go() -> tuple[int, str]:
        tables = [read_schema_file(p.schema)]
        prepared = await prepare_stats(
            net.chain, net.contracts, dataset_ids=p.ids, tables=tables,
            sql="SELECT mean(score) FROM people", output="requester",
        )  # fmt: skip
        async with DatumClient(net.chain, net.contracts, devnet.dev_account(0), nonces=net.nonces) as client:
            requester = StatsRequester(client)
            try:
                submitted = await requester.request(prepared, fee_wei=10**18, timeout_s=600)
                policy = (1 << tasks.TASK_KINDS["stats"], True, 0, USES, 50)
                await asyncio.to_thread(
                    net.tx(owner_node.account).send, net.contracts.data, "setPolicy", dataset, policy, 10**18
                )
                with pytest.raises(Exception) as refused:
                    await requester.hand_spec(submitted, prepared, accept_timeout_s=60)
                return submitted.task_id, str(refused.value)
            finally:
                await requester.close()
                restore = (1 << tasks.TASK_KINDS["stats"], True, 0, USES, MIN_GROUP)
                await asyncio.to_thread(
                    net.tx(owner_node.account).send, net.contracts.data, "setPolicy", dataset, restore, 10**18
                )

    task_id, message = asyncio.run(go())
    assert "min_group_size" in message and "minimum group size 50" in message
    status = json.loads(
        (net.node_dir(owner_node) / "data" / "stats" / "provider" / f"{task_id}.json").read_text()
    )
    assert status["state"] == "refused" and status["code"] == "min_group_size"
    assert tasks.get_task(net.chain, net.contracts, task_id).state is not TaskState.FINALIZED
