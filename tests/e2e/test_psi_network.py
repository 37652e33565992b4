"""PSI as a network task (kind 2) through the whole network: anvil, the contracts, three
real node processes, the `datum` CLI and a real SPU link between the requester's client and
the provider's node. The car vendor (the requester, devnet account 0) learns which of its
clients are on the bank's list (a dataset served by a node); nobody learns anything else.
Then the refusals (consent on chain, a row count the provider's file does not match) and a
requester vanishing mid-protocol (abort, no output, refund after the deadline).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from compute.psi import CaseRule, DuplicateRule, EmptyKeyRule, KeyRules, Table, index_keys
from incentives.rewards import DatasetPayee, split_finalization
from oracle import devnet
from oracle.chain import tasks
from oracle.chain.tasks import TaskState
from oracle.node.psi_store import SessionState, SessionStore
from oracle.node.store import NodeTaskState

from .conftest import Network, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

PRICE_WEI = 5 * 10**18
FEE_WEI = 10**18
RULES = KeyRules(CaseRule.EXACT, EmptyKeyRule.REJECT, DuplicateRule.ALL)  # the CLI's defaults


def client_ids(rng: random.Random, n: int, prefix: str) -> list[str]:
    """Distinct ids no text in a node's files could contain by accident (96 random bits each)."""
    return [f"{prefix}-{rng.getrandbits(96):024x}" for _ in range(n)]


def write_csv(path: Path, header: str, rows: Iterable[str]) -> Path:
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def digests(keys: list[str]) -> list[bytes]:
    table = Table(("k",), tuple((k,) for k in keys))
    return list(index_keys(table, ("k",), RULES).digests)


def cli_env(net: Network, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")}
    scratch.mkdir(parents=True, exist_ok=True)
    return env | {
        "DATUM_HOME": str(net.home),
        "DATUM_ARTIFACTS_DIR": str(net.store.directory),
        "TMPDIR": str(scratch),  # where the requester's engine keeps its private run dir
    }


def datum(net: Network, cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oracle.cli", *args],
        env=cli_env(net, cwd / "tmp"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def register(net: Network, cwd: Path, file: Path, node: int, allow: str = "psi") -> int:
    """`datum data register FILE --node N`: node N keeps the file and serves it."""
    done = datum(
        net,
        cwd,
        "data",
        "register",
        str(file),
        "--key",
        "client_id",
        "--node",
        str(node),
        "--price",
        "5dtm",
        "--allow",
        allow,
        "--json",
    )
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)["dataset_id"])


def psi_args(mine: Path, dataset_id: int, protocol: str, out: Path, *extra: str) -> list[str]:
    return [
        "task",
        "submit",
        "psi",
        "--mine",
        str(mine),
        "--key",
        "client_id",
        "--with",
        str(dataset_id),
        "--protocol",
        protocol,
        "--reveal",
        "me",
        "--out",
        str(out),
        "--json",
        "--wait",
        *extra,
    ]


def owed(net: Network, address: str) -> int:
    return int(net.chain.call(net.contracts.tasks, "getOwed", address))


def session_on(net: Network, node: devnet.DevnetNode, task_id: int) -> SessionState | None:
    path = net.node_dir(node) / "data" / "psi.sqlite3"
    if not path.is_file():
        return None
    store = SessionStore(path, readonly=True)
    try:
        record = store.get(task_id)
    finally:
        store.close()
    return record.state if record else None


def holders(roots: Iterable[Path], needles: list[str], raw: list[bytes]) -> list[tuple[Path, str]]:
    """(file, what) for every key text, key digest (raw or hex) found in a file under `roots`."""
    found = []
    texts = [n.encode() for n in needles] + [d.hex().encode() for d in raw]
    for root in roots:
        for path in [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]:
            data = path.read_bytes()
            found += [(path, t.decode()) for t in texts if t in data]
            found += [(path, d.hex()) for d in raw if d in data]
    return found


@dataclass
class Bank:
    """The bank's dataset, served by devnet node 2."""

    dataset_id: int
    node: devnet.DevnetNode
    keys: list[str]


@pytest.fixture(scope="module")
def bank(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Bank:
    work = tmp_path_factory.mktemp("bank")
    keys = client_ids(random.Random(2), 1_500, "bk")
    file = write_csv(work / "high_income.csv", "client_id,income_class", (f"{k},high" for k in keys))
    done = datum(
        network,
        work,
        "data",
        "register",
        str(file),
        "--key",
        "client_id",
        "--node",
        "2",
        "--price",
        "5dtm",
        "--allow",
        "psi",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    node = next(n for n in network.state.nodes if n.index == 2)
    assert out["owner"] == node.operator and out["rows"] == len(keys)
    assert out["served_by"]["path"] == str(net_dataset_dir(network, node, int(out["dataset_id"])))
    file.unlink()  # the bank's only copy is now its node's
    return Bank(int(out["dataset_id"]), node, keys)


def net_dataset_dir(net: Network, node: devnet.DevnetNode, dataset_id: int) -> Path:
    return net.node_dir(node) / "data" / "datasets" / str(dataset_id)


# -- the happy path ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["ecdh", "rr22"])
def test_the_vendor_learns_which_clients_the_bank_holds_and_nothing_else(
    network: Network, bank: Bank, tmp_path: Path, protocol: str
) -> None:
    net = network
    rng = random.Random(protocol)
    shared = rng.sample(bank.keys, 240)
    own = client_ids(rng, 560, "vd")
    vendor = own + shared
    rng.shuffle(vendor)
    mine = write_csv(
        tmp_path / "clients.csv", "client_id,model", (f"{k},m{i % 9}" for i, k in enumerate(vendor))
    )
    out = tmp_path / "matches.csv"
    provider = bank.node.operator
    before = {n.operator: owed(net, n.operator) for n in net.state.nodes}

    done = datum(net, tmp_path, *psi_args(mine, bank.dataset_id, protocol, out))
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    payload = json.loads(line)
    task_id = payload["task_id"]

    # the output is exactly the plaintext inner join, the vendor's own rows, only on its side
    members = set(bank.keys)
    expected = ["client_id,model"] + [f"{k},m{i % 9}" for i, k in enumerate(vendor) if k in members]
    assert out.read_text().splitlines() == expected
    assert payload["result"] == {"matches": len(shared), "rows": len(shared), "out": str(out)}

    # finalized on chain with the attestation's hash; the signers and the provider were paid
    view = tasks.get_task(net.chain, net.contracts, task_id, history=True)
    assert view.state is TaskState.FINALIZED and view.kind == 2 and view.dataset_ids == (bank.dataset_id,)
    assert "0x" + view.result_hash.hex() == payload["result_hash"]
    assert view.public_output_hash == bytes.fromhex(
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )  # keccak256(""): nothing about the result is public
    finalized = next(e for e in view.history if e.name == "TaskFinalized")
    assert finalized.tx_hash == payload["tx"]["finalize"]
    signers = [str(s) for s in finalized.args["signers"]]
    assert len(signers) >= view.quorum
    config = net.chain.call(net.contracts.tasks, "getConfig")
    split = split_finalization(
        FEE_WEI, int(config[0]), signers, str(config[6]), [DatasetPayee(provider, PRICE_WEI)]
    ).owed()
    for node in net.state.nodes:
        assert owed(net, node.operator) - before[node.operator] == split.get(node.operator, 0)
    assert owed(net, provider) - before[provider] >= PRICE_WEI

    # every node holds the same result hash; the provider attested the session
    for node in net.state.nodes:
        record = wait_for(
            lambda node=node: (
                (r := net.task_on_node(node, task_id)) and r.state == NodeTaskState.FINALIZED and r
            ),
            30,
            f"node {node.index} to record task {task_id} as finalized",
        )
        assert record.result_hash == payload["result_hash"]
    assert session_on(net, bank.node, task_id) is SessionState.ATTESTED
    record_file = Path(payload["record"])
    assert json.loads(record_file.read_text())["result_commitment"] == payload["result_commitment"]

    # privacy: no node (the provider included) holds or logged a client of the vendor's that
    # the bank does not have; the vendor's side holds none of the bank's other clients
    vendor_only = [k for k in vendor if k not in members]
    for node in net.state.nodes:
        root = net.node_dir(node)
        assert (root / "node.log").is_file() and list((root / "data").rglob("*"))
        assert holders([root], vendor_only, digests(vendor_only)) == [], (
            f"node {node.index} saw the vendor's keys"
        )
    assert list((net.node_dir(bank.node) / "data" / "psi" / "work").iterdir()) == []
    bank_only = [k for k in bank.keys if k not in set(vendor)]
    scratch = tmp_path / "tmp"
    assert list(scratch.glob("datum-psi-*")) == []  # the requester's engine run dir is gone
    requester_side = [out, record_file, scratch, tmp_path / "stdout"]
    (tmp_path / "stdout").write_text(done.stdout + done.stderr)
    assert holders(requester_side, bank_only, digests(bank_only)) == []


# -- refusals ----------------------------------------------------------------------------------


def test_consent_refusals_revert_the_request_before_any_work(
    network: Network, bank: Bank, tmp_path: Path
) -> None:
    net = network
    keys = client_ids(random.Random(5), 200, "bk")
    file = write_csv(tmp_path / "bank.csv", "client_id,income_class", (f"{k},high" for k in keys))
    mine = write_csv(tmp_path / "mine.csv", "client_id", keys[:50] + client_ids(random.Random(6), 50, "vd"))
    requester = devnet.dev_account(0).address

    def refused(dataset_id: int, error: str) -> None:
        nonce = net.chain.w3.eth.get_transaction_count(requester)
        count = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
        out = tmp_path / f"out-{dataset_id}.csv"
        done = datum(net, tmp_path, *psi_args(mine, dataset_id, "rr22", out))
        assert done.returncode == 1 and done.stdout == ""
        assert error in done.stderr and len(done.stderr.strip().splitlines()) == 1
        assert not out.exists()
        assert net.chain.w3.eth.get_transaction_count(requester) == nonce  # not even an approval
        assert int(net.chain.call(net.contracts.tasks, "getTaskCount")) == count

    he_only = register(net, tmp_path, file, 3, allow="he")
    refused(he_only, "DataRegistry__KindNotAllowed")

    closed = register(net, tmp_path, file, 3, allow="psi")
    owner = net.tx(next(n for n in net.state.nodes if n.index == 3).account)
    policy = (1 << tasks.TASK_KINDS["psi"], False, 0, 2**32 - 1, 10)  # allow-list only, and A is not on it
    owner.send(net.contracts.data, "setPolicy", closed, policy, PRICE_WEI)
    refused(closed, "DataRegistry__RequesterNotAllowed")


def test_a_row_count_the_providers_file_does_not_match_aborts_before_any_key_is_fed(
    network: Network, tmp_path: Path
) -> None:
    net = network
    keys = client_ids(random.Random(7), 300, "bk")
    rows = [f"{k},high" for k in keys] + [f"{keys[3]},low"]  # 301 rows, 300 distinct clients
    dataset_id = register(net, tmp_path, write_csv(tmp_path / "b.csv", "client_id,income_class", rows), 3)
    mine = write_csv(tmp_path / "mine.csv", "client_id", keys[:20])
    out = tmp_path / "out.csv"
    done = datum(net, tmp_path, *psi_args(mine, dataset_id, "ecdh", out))
    assert done.returncode == 1 and not out.exists()
    assert "row_count_mismatch" in done.stderr and "300 distinct keys in 301 rows" in done.stderr
    assert "refund(" in done.stderr
    task_id = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
    provider = next(n for n in net.state.nodes if n.index == 3)
    assert session_on(net, provider, task_id) is SessionState.REFUSED
    assert tasks.get_task(net.chain, net.contracts, task_id).state is not TaskState.FINALIZED


# -- a peer vanishing --------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def test_a_requester_vanishing_mid_protocol_aborts_with_no_output_and_the_task_refunds(
    network: Network, tmp_path: Path
) -> None:
    """Runs last: it moves the chain's clock past the task's deadline."""
    net = network
    rng = random.Random(11)
    keys = client_ids(rng, 20_000, "bk")
    dataset_id = register(
        net, tmp_path, write_csv(tmp_path / "big.csv", "client_id,c", (f"{k},x" for k in keys)), 1
    )
    provider = next(n for n in net.state.nodes if n.index == 1)
    mine = write_csv(tmp_path / "mine.csv", "client_id", keys[:5_000] + client_ids(rng, 15_000, "vd"))
    out = tmp_path / "out.csv"
    requester = devnet.dev_account(0).address
    before = {a: owed(net, a) for a in (requester, provider.operator)}
    work = net.node_dir(provider) / "data" / "psi" / "work"

    cli = subprocess.Popen(
        [sys.executable, "-m", "oracle.cli", *psi_args(mine, dataset_id, "ecdh", out, "--timeout", "330")],
        env=cli_env(net, tmp_path / "tmp"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # the provider's engine writes its libpsi input once both sides passed the handshake
        wait_for(lambda: list(work.glob("psi-*-r1/input.csv")), 120, "the provider's engine to start libpsi")
        engines = _children(cli.pid)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(10)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait(10)
    task_id = int(net.chain.call(net.contracts.tasks, "getTaskCount"))
    wait_for(lambda: session_on(net, provider, task_id) is SessionState.ABORTED, 60, "the provider to abort")
    wait_for(
        lambda: not any(_alive(p) for p in engines), 10, "the requester's engine to exit with its client"
    )
    wait_for(lambda: list(work.iterdir()) == [], 10, "the provider's run dir to be removed")
    assert not out.exists()  # no partial output
    log = (net.node_dir(provider) / "node.log").read_text()
    assert f"task {task_id}: PSI session aborted" in log
    assert requests.get(provider.endpoint + "/v1/health", timeout=5).json()["status"] == "ok"

    # no attestation, so no member signed; after the deadline anyone refunds the escrow
    view = tasks.get_task(net.chain, net.contracts, task_id)
    assert view.state in (TaskState.REQUESTED, TaskState.ACTIVE)
    for node in net.state.nodes:
        record = net.task_on_node(node, task_id)
        assert record is not None and record.state == NodeTaskState.ACCEPTED  # waiting for an attestation
    now = int(net.chain.w3.eth.get_block("latest")["timestamp"])
    net.chain.send_rpc("evm_increaseTime", [view.deadline - now + 1])
    net.chain.send_rpc("evm_mine", [])
    tasks.refund(net.tx(5), net.contracts, task_id)  # anyone may
    assert tasks.get_task(net.chain, net.contracts, task_id).state is TaskState.REFUNDED
    assert owed(net, requester) - before[requester] == FEE_WEI + PRICE_WEI
    assert owed(net, provider.operator) == before[provider.operator]
    for node in net.state.nodes:
        wait_for(
            lambda node=node: (r := net.task_on_node(node, task_id)) and r.state == NodeTaskState.REFUNDED,
            30,
            f"node {node.index} to record the refund",
        )
