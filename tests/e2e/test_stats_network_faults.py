"""A committee node killed in the middle of a stats session (kind 3): the other members' engines
abort, nobody holds an output, the task is refunded after its deadline, and once the killed
node is back the next stats task finalizes. Real anvil, three node processes, SPU links, CLI.
Its own module (and devnet): it moves the chain's clock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests

from oracle import devnet
from oracle.chain import tasks
from oracle.chain.tasks import TaskState
from oracle.node.store import NodeTaskState

from .conftest import Network, wait_for
from .test_stats_network import SCHEMA, cli_env, datum, people, register, write_frame

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FEE_WEI = 10**18
QUERY = "SELECT count(*), mean(income), median(income), corr(age, income) FROM people GROUP BY region"
PRICE_WEI = 10**18


def owed(net: Network, address: str) -> int:
    return int(net.chain.call(net.contracts.tasks, "getOwed", address))


def test_a_member_killed_mid_session_aborts_the_others_and_the_task_refunds(
    network: Network, tmp_path: Path
) -> None:
    net = network
    schema = tmp_path / "people.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    rng = np.random.default_rng(7)
    ids = []
    for node in (1, 2, 3):
        file = write_frame(people(rng, 300), tmp_path / f"p{node}.csv")
        out = register(net, tmp_path, file, schema, node, "--allow", "stats", "--min-group", "5")
        ids.append(int(out["dataset_id"]))  # type: ignore[call-overload]
    args = [
        "task", "submit", "stats", "--with", ",".join(map(str, ids)), "--schema", str(schema),
        "--query", QUERY,
        "--json", "--wait", "--timeout", "400", "--recv-timeout", "8",
    ]  # fmt: skip
    requester = devnet.dev_account(0).address
    before = owed(net, requester)
    victim = next(n for n in net.state.nodes if n.index == 2)
    survivors = [n for n in net.state.nodes if n.index != 2]

    cli = subprocess.Popen(
        [sys.executable, "-m", "oracle.cli", *args],
        env=cli_env(net, tmp_path / "tmp"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        task_id = wait_for(
            lambda: int(net.chain.call(net.contracts.tasks, "getTaskCount")) or None, 120, "the request"
        )

        def running(node: devnet.DevnetNode) -> bool:
            return f"task {task_id}: running the MPC as rank" in (net.node_dir(node) / "node.log").read_text()

        wait_for(lambda: all(running(n) for n in net.state.nodes), 180, "every member to start its party")
        devnet.stop_node(net.home, victim.index, kill=True)  # SIGKILL: its engine worker exits with it

        # the two others abort (dead link or receive timeout): failed, no result, no output share
        for node in survivors:
            record = wait_for(
                lambda node=node: (
                    (r := net.task_on_node(node, task_id)) and r.state == NodeTaskState.FAILED and r
                ),
                240,
                f"node {node.index} to abort task {task_id}",
            )
            assert "ProtocolAbort" in record.error or "Timeout" in record.error, record.error
            data = net.node_dir(node) / "data"
            assert not (data / "results" / f"{task_id}.stats").exists()
            assert not (data / "stats" / str(task_id) / "output-share.bin").exists()
            assert requests.get(node.endpoint + "/v1/health", timeout=5).json()["status"] == "ok"
        view = tasks.get_task(net.chain, net.contracts, task_id)
        assert view.state in (TaskState.REQUESTED, TaskState.ACTIVE)  # no quorum, nothing finalized

        # the requester's CLI learns from the survivors' status that the run stopped
        stdout, stderr = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            os.kill(cli.pid, signal.SIGKILL)
            cli.wait(10)
    assert cli.returncode == 1 and stdout == ""
    assert "stopped: ProtocolAbort" in stderr and f"refund({task_id})" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1

    # after the deadline anyone refunds the escrow
    now = int(net.chain.w3.eth.get_block("latest")["timestamp"])
    net.chain.send_rpc("evm_increaseTime", [view.deadline - now + 1])
    net.chain.send_rpc("evm_mine", [])
    tasks.refund(net.tx(5), net.contracts, task_id)
    assert tasks.get_task(net.chain, net.contracts, task_id).state is TaskState.REFUNDED
    assert owed(net, requester) - before == FEE_WEI + 3 * PRICE_WEI
    for node in survivors:
        wait_for(
            lambda node=node: (r := net.task_on_node(node, task_id)) and r.state == NodeTaskState.REFUNDED,
            30,
            f"node {node.index} to record the refund",
        )

    # the killed node comes back; the network serves the next stats task end to end
    devnet.start_node(net.home, victim.index, store=net.store)
    done = datum(
        net, tmp_path, "task", "submit", "stats", "--with", ",".join(map(str, ids)), "--schema", str(schema),
        "--query", "SELECT count(*), mean(score) FROM people", "--output", "public", "--json", "--wait",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["result"]["aggregates"][0]["values"] == [900]
    assert tasks.get_task(net.chain, net.contracts, payload["task_id"]).state is TaskState.FINALIZED
