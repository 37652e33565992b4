"""The PSI network modes beyond ``--reveal me`` through the whole network (anvil, three real
node processes, the `datum` CLI, real SPU links): labeled PSI (DH-OPRF and HE) with the
provider's prepared table reused across queries and rebuilt after a key rotation, HE PSI
against RR22, ``--reveal both`` and ``--reveal size``, and an unknown label column refused.
Each output is compared with the plaintext computation, and each side's files with what it
may learn. One devnet for the module; the bank's dataset is served by node 2.
"""

from __future__ import annotations

import csv
import io
import json
import random
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from oracle import devnet
from oracle.chain import tasks
from oracle.chain.tasks import TaskState
from oracle.node.psi_store import SessionState

from .conftest import Network
from .test_psi_network import cli_env, client_ids, datum, digests, holders, session_on, write_csv

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CLASSES = ("high", "middle", "low")


@dataclass
class Bank:
    """The bank's dataset (client_id, income_class, branch), served by devnet node 2."""

    dataset_id: int
    node: devnet.DevnetNode
    rows: dict[str, tuple[str, str]]  # client_id -> (income_class, branch)
    order: list[str]  # the file's row order


@pytest.fixture(scope="module")
def bank(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Bank:
    work = tmp_path_factory.mktemp("bank-modes")
    rng = random.Random(41)
    keys = client_ids(rng, 600, "bk")
    rows = {k: (rng.choice(CLASSES), f"Zürich-{rng.randrange(40)}") for k in keys}
    file = write_csv(
        work / "clients.csv", "client_id,income_class,branch", (f"{k},{c},{b}" for k, (c, b) in rows.items())
    )
    done = datum(
        network, work, "data", "register", str(file), "--key", "client_id", "--node", "2",
        "--price", "5dtm", "--allow", "psi", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    file.unlink()
    node = next(n for n in network.state.nodes if n.index == 2)
    return Bank(int(json.loads(done.stdout)["dataset_id"]), node, rows, keys)


def vendor_file(path: Path, bank: Bank, seed: int, shared: int, own: int) -> tuple[Path, list[str]]:
    """A vendor CSV (client_id, model) with `shared` of the bank's clients and `own` others."""
    rng = random.Random(seed)
    keys = rng.sample(bank.order, shared) + client_ids(rng, own, f"v{seed}")
    rng.shuffle(keys)
    write_csv(path, "client_id,model", (f"{k},m{i % 7}" for i, k in enumerate(keys)))
    return path, keys


def submit(
    net: Network, cwd: Path, mine: Path, dataset_id: int, out: Path, *mode: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    done = datum(
        net, cwd, "task", "submit", "psi", "--mine", str(mine), "--key", "client_id",
        "--with", str(dataset_id), "--out", str(out), "--json", "--wait", *mode,
    )  # fmt: skip
    payload = json.loads(done.stdout) if done.returncode == 0 else {}
    return done, payload


def node_log(net: Network, node: devnet.DevnetNode) -> str:
    return (net.node_dir(node) / "node.log").read_text()


def read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def assert_finalized(net: Network, payload: dict[str, Any]) -> None:
    view = tasks.get_task(net.chain, net.contracts, payload["task_id"])
    assert view.state is TaskState.FINALIZED
    assert "0x" + view.result_hash.hex() == payload["result_hash"]


def assert_nodes_hold_none_of(net: Network, keys: list[str]) -> None:
    """No node's files or logs (the provider's included) hold these keys or their digests."""
    for node in net.state.nodes:
        found = holders([net.node_dir(node)], keys, digests(keys))
        assert found == [], f"node {node.index} holds requester keys: {found[:3]}"


# -- labeled PSI ---------------------------------------------------------------------------------


def test_labeled_dh_gives_the_labels_of_matching_keys_and_reuses_the_prepared_table(
    network: Network, bank: Bank, tmp_path: Path
) -> None:
    net = network
    data_dir = net.node_dir(bank.node) / "data"
    tables = data_dir / "psi" / "labels" / str(bank.dataset_id)
    cache = net.home / "psi-tables"  # the requester's copy of the encrypted table (DATUM_HOME)
    outputs = []
    for query, seed in enumerate((1, 2)):
        mine, vendor = vendor_file(tmp_path / f"mine{query}.csv", bank, seed, 150, 250)
        out = tmp_path / f"labeled{query}.csv"
        done, payload = submit(
            net, tmp_path, mine, bank.dataset_id, out, "--protocol", "ecdh", "--labels", "branch,income_class"
        )
        assert done.returncode == 0, done.stderr
        assert_finalized(net, payload)
        # exactly the plaintext join: the vendor's matching rows (its order) + the bank's labels
        expected = [["client_id", "model", "branch", "income_class"]] + [
            [k, f"m{i % 7}", bank.rows[k][1], bank.rows[k][0]] for i, k in enumerate(vendor) if k in bank.rows
        ]
        assert read_csv(out) == expected
        assert payload["result"] == {"matches": 150, "rows": 150, "out": str(out)}
        assert payload["revealed"]["mode"] == "ecdh+labels/me"
        assert "query size" in payload["revealed"]["provider"]
        assert session_on(net, bank.node, payload["task_id"]) is SessionState.ATTESTED
        assert_nodes_hold_none_of(net, [k for k in vendor if k not in bank.rows])
        # the requester's side (output, engine scratch, CLI output) holds none of the bank's other clients
        bank_only = [k for k in bank.order if k not in set(vendor)]
        scratch = tmp_path / "tmp"
        assert list(scratch.glob("datum-psi-*")) == []
        assert holders([out, scratch, cache], bank_only, digests(bank_only)) == []
        assert not any(k in done.stdout + done.stderr for k in bank_only)
        outputs.append((payload["task_id"], vendor))

    # prepared once (first query), reused by the second; the provider learned the query size only
    log = node_log(net, bank.node)
    first, second = (t for t, _ in outputs)
    assert f"task {first}: label table of dataset {bank.dataset_id} built (dh, key epoch 1" in log
    assert f"task {second}: label table of dataset {bank.dataset_id} reused (dh, key epoch 1" in log
    assert log.count(f"label table of dataset {bank.dataset_id} built") == 1
    assert f"task {second}: PSI session done (provider side, 600 keys, labeled query of 400 keys)" in log
    stored = sorted(p.name for p in tables.iterdir())
    assert len([n for n in stored if n.endswith(".table")]) == 1 and "oprf-key.json" in stored
    for path in tables.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert stat.S_IMODE(tables.stat().st_mode) == 0o700
    # the requester kept the table it received (sent with the first answer only): the provider's
    (provider_table,) = tables.glob("*.table")
    (requester_table,) = cache.glob("*.table")
    first_table = provider_table.read_bytes()
    assert requester_table.read_bytes() == first_table
    assert stat.S_IMODE(requester_table.stat().st_mode) == 0o600

    # key rotation: a fresh key (epoch 2), the old table is gone, the next query prepares again
    rotated = subprocess.run(
        [sys.executable, "-m", "oracle.node.psi_labels", "rotate", "--data-dir", str(data_dir),
         "--dataset", str(bank.dataset_id)],
        env=cli_env(net, tmp_path / "tmp"), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"dataset_id": bank.dataset_id, "epoch": 2}
    assert [p for p in tables.iterdir() if p.suffix == ".table"] == []
    mine, vendor = vendor_file(tmp_path / "mine3.csv", bank, 3, 20, 30)
    out = tmp_path / "labeled3.csv"
    done, payload = submit(
        net, tmp_path, mine, bank.dataset_id, out, "--protocol", "dh-oprf", "--labels", "branch,income_class"
    )
    assert done.returncode == 0, done.stderr
    assert read_csv(out)[1:] == [  # the requester's cached table was stale: the new one came along
        [k, f"m{i % 7}", *reversed(bank.rows[k])] for i, k in enumerate(vendor) if k in bank.rows
    ]
    (rebuilt,) = tables.glob("*.table")
    assert requester_table.read_bytes() == rebuilt.read_bytes() != first_table
    assert f"task {payload['task_id']}: label table of dataset {bank.dataset_id} built (dh, key epoch 2" in (
        node_log(net, bank.node)
    )


def test_an_unknown_label_column_is_refused_before_any_key_is_fed(
    network: Network, bank: Bank, tmp_path: Path
) -> None:
    net = network
    mine, _ = vendor_file(tmp_path / "mine.csv", bank, 5, 10, 10)
    out = tmp_path / "out.csv"
    done, _ = submit(
        net, tmp_path, mine, bank.dataset_id, out, "--protocol", "ecdh", "--labels", "branch,salary"
    )
    assert done.returncode == 1 and not out.exists() and done.stdout == ""
    assert "unknown_label_column" in done.stderr and "'salary'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    task_id = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
    assert session_on(net, bank.node, task_id) is SessionState.REFUSED
    # a label record longer than the agreed size: refused too, nothing prepared for it
    done, _ = submit(
        net,
        tmp_path,
        mine,
        bank.dataset_id,
        out,
        "--protocol",
        "ecdh",
        "--labels",
        "branch",
        "--label-bytes",
        "8",
    )
    assert done.returncode == 1 and not out.exists()
    assert "label_too_long" in done.stderr and "the spec allows 8" in done.stderr
    assert session_on(net, bank.node, task_id + 1) is SessionState.REFUSED
    # combinations the engines do not run are refused by the client before any transaction
    count = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
    for mode, message in (
        (("--protocol", "rr22", "--labels", "branch"), "--labels is not served with --protocol rr22"),
        (("--protocol", "he", "--reveal", "size"), "--reveal size is served by the DH cardinality protocol"),
        (("--protocol", "ecdh", "--labels", "branch", "--reveal", "both"), "--labels runs with --reveal me"),
    ):
        done, _ = submit(net, tmp_path, mine, bank.dataset_id, out, *mode)
        assert done.returncode == 1 and message in done.stderr, done.stderr
    assert int(net.chain.call(net.contracts.tasks, "getTaskCount")) == count


# -- HE PSI --------------------------------------------------------------------------------------


def test_he_psi_finds_the_same_intersection_as_rr22_and_serves_labels(
    network: Network, bank: Bank, tmp_path: Path
) -> None:
    net = network
    mine, vendor = vendor_file(tmp_path / "mine.csv", bank, 7, 120, 180)
    results = {}
    for protocol in ("rr22", "he"):
        out = tmp_path / f"{protocol}.csv"
        done, payload = submit(net, tmp_path, mine, bank.dataset_id, out, "--protocol", protocol)
        assert done.returncode == 0, done.stderr
        assert_finalized(net, payload)
        assert payload["result"]["matches"] == 120
        results[protocol] = out.read_text()
    assert results["he"] == results["rr22"]
    assert read_csv(tmp_path / "he.csv")[1:] == [
        [k, f"m{i % 7}"] for i, k in enumerate(vendor) if k in bank.rows
    ]

    out = tmp_path / "he-labeled.csv"
    done, payload = submit(
        net, tmp_path, mine, bank.dataset_id, out, "--protocol", "he", "--labels", "income_class"
    )
    assert done.returncode == 0, done.stderr
    assert_finalized(net, payload)
    assert read_csv(out) == [["client_id", "model", "income_class"]] + [
        [k, f"m{i % 7}", bank.rows[k][0]] for i, k in enumerate(vendor) if k in bank.rows
    ]
    assert payload["revealed"]["mode"] == "he+labels/me"
    log = node_log(net, bank.node)
    assert f"task {payload['task_id']}: label table of dataset {bank.dataset_id} built (he" in log
    # HE tells the provider the query size rounded up to its batch (6144 keys), nothing finer
    assert (
        f"task {payload['task_id']}: PSI session done (provider side, 600 keys, labeled query of 6144 keys)"
        in log
    )
    assert_nodes_hold_none_of(net, [k for k in vendor if k not in bank.rows])


# -- reveal both, reveal size --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["rr22", "kkrt", "ecdh", "he"])
def test_reveal_both_gives_each_side_its_own_rows_of_the_intersection(
    network: Network, bank: Bank, tmp_path: Path, protocol: str
) -> None:
    net = network
    mine, vendor = vendor_file(tmp_path / "mine.csv", bank, 9, 90, 110)
    out = tmp_path / "both.csv"
    done, payload = submit(
        net, tmp_path, mine, bank.dataset_id, out, "--protocol", protocol, "--reveal", "both"
    )
    assert done.returncode == 0, done.stderr
    assert_finalized(net, payload)
    task_id = payload["task_id"]
    shared = set(vendor) & set(bank.rows)
    assert read_csv(out)[1:] == [[k, f"m{i % 7}"] for i, k in enumerate(vendor) if k in shared]
    assert payload["revealed"]["mode"] == f"{protocol}/both"
    # the provider's side: its own rows of the intersection, in its dataset folder, 0600
    side = (
        net.node_dir(bank.node)
        / "data"
        / "datasets"
        / str(bank.dataset_id)
        / "results"
        / f"task-{task_id}.csv"
    )
    assert read_csv(side) == [["client_id", "income_class", "branch"]] + [
        [k, *bank.rows[k]] for k in bank.order if k in shared
    ]
    assert stat.S_IMODE(side.stat().st_mode) == 0o600
    assert stat.S_IMODE(side.parent.stat().st_mode) == 0o700
    assert_nodes_hold_none_of(net, [k for k in vendor if k not in shared])
    for node in net.state.nodes:  # only the provider's node learned the intersection
        if node.index != bank.node.index:
            assert holders([net.node_dir(node)], sorted(shared), []) == []


def test_reveal_size_gives_the_requester_only_the_number(
    network: Network, bank: Bank, tmp_path: Path
) -> None:
    net = network
    mine, vendor = vendor_file(tmp_path / "mine.csv", bank, 11, 77, 123)
    out = tmp_path / "size.csv"
    done, payload = submit(
        net, tmp_path, mine, bank.dataset_id, out, "--protocol", "ecdh", "--reveal", "size"
    )
    assert done.returncode == 0, done.stderr
    assert_finalized(net, payload)
    assert out.read_text() == "intersection_size\n77\n"
    assert payload["result"] == {"matches": 77, "rows": 0, "out": str(out)}
    assert payload["revealed"] == {
        "mode": "ecdh/size",
        "requester": "the intersection size only",
        "provider": "the requester's set size",
    }
    # no rows anywhere: not in the requester's output, not on any node; no provider-side result
    shared = sorted(set(vendor) & set(bank.rows))
    assert holders([out], shared, digests(shared)) == []
    assert_nodes_hold_none_of(net, [k for k in vendor if k not in bank.rows])
    for node in net.state.nodes:  # the committee never holds a shared key either
        if node.index != bank.node.index:
            assert holders([net.node_dir(node)], shared, digests(shared)) == []
    results = net.node_dir(bank.node) / "data" / "datasets" / str(bank.dataset_id) / "results"
    assert not (results / f"task-{payload['task_id']}.csv").exists()
