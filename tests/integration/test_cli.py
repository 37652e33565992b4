"""The `datum` command end to end, as a user runs it: separate processes, state in a
temporary DATUM_HOME, a detached devnet that must survive the command and stop on `down`."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_hash.auto import keccak

from oracle.chain.artifacts import ArtifactStore
from oracle.chain.contracts import DatumContracts
from oracle.chain.deploy import Deployment
from oracle.chain.rpc import Chain, connect
from oracle.chain.tasks import TASK_KINDS, TaskRequest, request_task
from oracle.chain.txmanager import TxManager
from oracle.devnet import _alive, dev_account, stop_process

pytestmark = pytest.mark.integration


class Datum:
    """Runs `python -m oracle.cli` in `cwd` with its own DATUM_HOME."""

    def __init__(self, cwd: Path, artifacts: ArtifactStore) -> None:
        self.cwd = cwd
        self.home = cwd / ".datum"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")}
        self.env["DATUM_HOME"] = str(self.home)
        self.env["DATUM_ARTIFACTS_DIR"] = str(artifacts.directory)
        if "DATUM_ANVIL" in os.environ:
            self.env["DATUM_ANVIL"] = os.environ["DATUM_ANVIL"]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oracle.cli", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def json(self, *args: str) -> dict[str, Any]:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        assert len(lines) == 1, done.stdout  # exactly one JSON object
        payload: dict[str, Any] = json.loads(lines[0])
        return payload

    def fails(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 1, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
        assert "Traceback" not in done.stderr
        return lines[0]


@pytest.fixture
def datum(tmp_path: Path, artifacts: ArtifactStore) -> Iterator[Datum]:
    cli = Datum(tmp_path, artifacts)
    yield cli
    state = cli.home / "devnet.json"
    if state.exists():  # the test failed before `down`: stop what it started
        stop_process(json.loads(state.read_text())["pid"])


def test_devnet_data_and_task_commands(datum: Datum, tmp_path: Path, artifacts: ArtifactStore) -> None:
    up = datum.json("devnet", "up", "--nodes", "3")
    pid, rpc_url = up["pid"], up["rpc_url"]
    assert up["running"] is True and rpc_url.startswith("http://127.0.0.1:")
    assert [n["index"] for n in up["nodes"]] == [1, 2, 3]
    assert _alive(pid)  # detached: it outlived the command
    assert "already running" in datum.fails("devnet", "up")

    status = datum.json("devnet", "status")
    assert status["running"] is True and status["pid"] == pid
    assert status["contracts"] == up["contracts"] and status["block"] >= status["deploy_block"]

    csv = tmp_path / "clients.csv"
    csv.write_text("client_id,income\nc1,100\nc2,250\nc3,80\n")
    registered = datum.json(
        "data",
        "register",
        str(csv),
        "--key",
        "client_id",
        "--price",
        "5dtm",
        "--allow",
        "psi,stats",
        "--node",
        "1",
    )
    assert registered["dataset_id"] == 1 and registered["rows"] == 3
    assert registered["policy"]["allowed_kinds"] == ["psi", "stats"]
    assert registered["owner"] == up["nodes"][0]["operator"]
    shown = datum.json("data", "show", "1")
    assert shown["metadata_hash"] == registered["metadata_hash"] and shown["price_wei"] == str(5 * 10**18)
    record_path = datum.home / "datasets" / f"{up['chain_id']}-1.json"
    assert record_path.stat().st_mode & 0o777 == 0o600  # the salt opening the commitment stays private
    record = json.loads(record_path.read_text())
    document = json.dumps(record["metadata"], sort_keys=True, separators=(",", ":")).encode()
    assert "0x" + keccak(document).hex() == shown["metadata_hash"]
    assert record["metadata"]["columns"] == ["client_id", "income"] and "salt" not in record["metadata"]
    assert "key column 'nope'" in datum.fails("data", "register", str(csv), "--key", "nope")

    # a requester (account 0) asks for a PSI task against the dataset, through the Python API
    chain = Chain(connect(rpc_url), artifacts.error_table())
    contracts = DatumContracts(chain.w3, Deployment.load(datum.home / "deployment.json"), artifacts)
    now = int(chain.w3.eth.get_block("latest")["timestamp"])
    req = TaskRequest(
        kind=TASK_KINDS["psi"],
        committee_size=2,
        quorum=2,
        deadline=now + 3_600,
        fee_wei=10**18,
        spec_hash=keccak(b"spec"),
        spec_uri="http://127.0.0.1:1/spec",
        dataset_ids=(1,),
    )
    task_id, sent = request_task(TxManager(chain, dev_account(0)), chain, contracts, req)

    task = datum.json("task", "show", str(task_id))
    assert task["task_id"] == task_id and task["state"] == "requested"
    operators = {n["operator"] for n in up["nodes"]}
    assert len(task["committee"]) == 2 and {m["operator"] for m in task["committee"]} <= operators
    assert task["fee_wei"] == str(10**18) and task["data_fee_wei"] == str(5 * 10**18)
    assert task["dataset_ids"] == [1]
    assert {"event": "TaskRequested", "tx_hash": sent.tx_hash, "block": sent.block_number} in task[
        "transactions"
    ]
    assert "TaskManager__UnknownTask(taskId=99)" in datum.fails("task", "show", "99")

    node2 = datum.json("stake", "unbond", "100dtm", "--node", "2")
    assert node2["stake_wei"] == str(9_900 * 10**18) and node2["unbonding_wei"] == str(100 * 10**18)
    assert "NodeRegistry__UnbondingLocked" in datum.fails("stake", "withdraw", "--node", "2")
    assert datum.json("rewards", "show")["owed_wei"] == "0"

    down = datum.json("devnet", "down")
    assert down == {"stopped": True, "home": str(datum.home), "pid": pid}
    assert not _alive(pid)
    assert datum.json("devnet", "status") == {"running": False, "home": str(datum.home)}
    assert "no chain" in datum.fails("task", "show", "1")
