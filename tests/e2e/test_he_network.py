"""HE outsourcing through the whole network: anvil, the contracts and three real node
processes (`datum devnet up --nodes 3`). A requester posts a task on chain, uploads
ciphertexts to the elected committee, the nodes accept, evaluate in worker processes,
exchange EIP-712 signatures and finalize on chain; the requester fetches, checks and
decrypts the result. Then the faults: a node killed after accepting, a node restarted
mid-task with its whole event history replayed, and inputs each node must refuse.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account import Account

from compute.he import HELimits, HETaskSpec, Scheme, decrypt, encrypt_columns, generate_keys
from incentives.rewards import split_finalization
from oracle import devnet
from oracle.chain import tasks
from oracle.chain.tasks import TaskRequest, TaskState
from oracle.client import DatumClient, PreparedHE, Submitted, prepare_he, spec_uri
from oracle.node.store import NodeTaskState
from oracle.p2p import P2PClient, PeerRefused, PeerRejected

from .conftest import Network, binary_hits, decimal_hits, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

FEE_WEI = 10**18
ROWS = 2_000
TIMEOUT_S = 900


def incomes_csv(path: Path, rows: int, seed: int) -> np.ndarray:
    """Ten-digit incomes (their decimal strings cannot be mistaken for timestamps or wei)."""
    rng = random.Random(seed)
    values = np.array([rng.randrange(3_000_000_000, 9_999_999_999) for _ in range(rows)], dtype=np.int64)
    lines = ["client_id,income"] + [f"c{i:05d},{v}" for i, v in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")
    return values


def assert_no_plaintext(net: Network, decimals: set[str], values: np.ndarray) -> None:
    """No node's data dir or log holds an input (or the result) as decimal text or raw bytes."""
    for node in net.state.nodes:
        root = net.node_dir(node)
        assert (root / "data" / "p2p").is_dir() and (root / "node.log").is_file()
        assert decimal_hits(root, decimals) == [], f"node {node.index} holds plaintext"
        assert binary_hits(root, values) == [], f"node {node.index} holds plaintext bytes"


def owed(net: Network, address: str) -> int:
    return int(net.chain.call(net.contracts.tasks, "getOwed", address))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _submit(net: Network, prepared: PreparedHE, **kw: Any) -> Submitted:
    async with DatumClient(net.chain, net.contracts, devnet.dev_account(0), nonces=net.nonces) as client:
        return await client.request_he(prepared, fee_wei=FEE_WEI, timeout_s=TIMEOUT_S, **kw)


async def _finish(net: Network, submitted: Submitted, prepared: PreparedHE, members: list[str]) -> Any:
    async with DatumClient(net.chain, net.contracts, devnet.dev_account(0), nonces=net.nonces) as client:
        upload = await client.upload_inputs(submitted, prepared, members=members)
        final = await client.wait_finalized(submitted.task_id, timeout_s=120)
        result = await client.fetch_result(submitted.task_id, upload.delivered, final.result_hash)
        return final, decrypt(prepared.keys, result, prepared.spec), upload


def all_accepted(net: Network, task_id: int) -> bool:
    view = tasks.get_task(net.chain, net.contracts, task_id)
    return view.accepted_mask == (1 << view.committee_size) - 1


# -- the happy paths -------------------------------------------------------------------------


def test_paillier_sum_through_the_cli_is_exact_and_pays_the_signers(network: Network, tmp_path: Path) -> None:
    net = network
    data = tmp_path / "incomes.csv"
    incomes = incomes_csv(data, ROWS, seed=1)
    operators = [n.operator for n in net.state.nodes]
    before = {op: owed(net, op) for op in operators}

    env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")}
    env |= {"DATUM_HOME": str(net.home), "DATUM_ARTIFACTS_DIR": str(net.store.directory)}
    done = subprocess.run(
        [sys.executable, "-m", "oracle.cli", "task", "submit", "he", "--data", str(data)]
        + ["--formula", "sum(income)", "--scheme", "paillier", "--json", "--wait"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.strip().splitlines()
    out = json.loads(line)
    assert out["result"] == int(incomes.sum())  # exact
    task_id = out["task_id"]

    view = tasks.get_task(net.chain, net.contracts, task_id, history=True)
    assert view.state is TaskState.FINALIZED
    assert "0x" + view.result_hash.hex() == out["result_hash"]
    finalized = next(e for e in view.history if e.name == "TaskFinalized")
    assert finalized.tx_hash == out["tx"]["finalize"]
    assert {"TaskRequested", "TaskAccepted", "TaskFinalized"} <= {e.name for e in view.history}
    signers = [str(s) for s in finalized.args["signers"]]
    assert set(signers) <= set(view.committee) and len(signers) >= view.quorum
    assert sorted(out["committee"]) == sorted(view.committee)

    # each signer was credited its share and can withdraw it
    config = net.chain.call(net.contracts.tasks, "getConfig")
    split = split_finalization(FEE_WEI, int(config[0]), signers, str(config[6]))
    for op in signers:
        share = split.owed()[op]
        assert owed(net, op) - before[op] == share > 0
        node = net.node_by_operator(op)
        balance = int(net.chain.call(net.contracts.token, "balanceOf", op))
        amount, _ = tasks.withdraw_rewards(net.tx(node.account), net.contracts)
        assert amount >= share and owed(net, op) == 0
        assert int(net.chain.call(net.contracts.token, "balanceOf", op)) == balance + amount

    # every node finished the task, and none of them ever held a plaintext value
    for node in net.state.nodes:
        record = wait_for(
            lambda node=node: (r := net.task_on_node(node, task_id)) and r.state == "finalized" and r,
            30,
            f"node {node.index} to record task {task_id} as finalized",
        )
        assert record.evaluations == 1 and record.result_hash == out["result_hash"]
    needles = {str(int(v)) for v in incomes} | {str(int(incomes.sum()))}
    assert_no_plaintext(net, needles, incomes)


def test_ckks_dot_product_within_the_stated_bound(network: Network) -> None:
    net = network
    rng = np.random.default_rng(7)
    x = np.round(rng.uniform(-1, 1, 500), 10)
    y = np.round(rng.uniform(-1, 1, 500), 10)
    text = "x,y\n" + "\n".join(f"{a:.10f},{b:.10f}" for a, b in zip(x, y, strict=True)) + "\n"
    prepared = prepare_he(text, "sum(x*y)", "ckks")

    async def go() -> Any:
        async with DatumClient(net.chain, net.contracts, devnet.dev_account(0), nonces=net.nonces) as client:
            return await client.run_he(prepared, fee_wei=FEE_WEI, timeout_s=TIMEOUT_S)

    outcome = run(go())
    expected = float(np.dot(x, y))
    assert 0 < outcome.bound < 1e-3
    assert abs(outcome.result - expected) <= outcome.bound
    assert tasks.get_task(net.chain, net.contracts, outcome.task_id).state is TaskState.FINALIZED
    needles = {f"{abs(v):.10f}".split(".")[1] for v in np.concatenate([x, y]) if abs(v) > 1e-3}
    assert_no_plaintext(net, needles, np.concatenate([x, y]))


# -- faults ----------------------------------------------------------------------------------


def test_a_node_killed_after_accepting_leaves_a_quorum_of_two(network: Network) -> None:
    net = network
    incomes = np.arange(1, 301, dtype=np.int64) * 7_919
    text = "income\n" + "\n".join(str(v) for v in incomes) + "\n"
    prepared = prepare_he(text, "sum(income)", "paillier")
    submitted = run(_submit(net, prepared))
    wait_for(lambda: all_accepted(net, submitted.task_id), 30, "every member to accept")

    victim = net.node_by_operator(submitted.committee[0])  # slot 0 would submit first
    devnet.stop_node(net.home, victim.index, kill=True)
    try:
        final, total, upload = run(_finish(net, submitted, prepared, list(submitted.committee)))
        assert total == int(incomes.sum())
        assert victim.operator not in upload.delivered and victim.operator in upload.failed
        assert victim.operator not in final.signers and len(final.signers) == 2
    finally:
        devnet.start_node(net.home, victim.index)
    # restarted, it learns the outcome from the chain: the task is finalized there too
    wait_for(
        lambda: (r := net.task_on_node(victim, submitted.task_id)) and r.state == NodeTaskState.FINALIZED,
        30,
        "the restarted node to see the finalization",
    )


def test_a_restarted_node_resumes_from_its_state_without_repeating_work(network: Network) -> None:
    net = network
    incomes = np.arange(1, 201, dtype=np.int64) * 104_729
    text = "income\n" + "\n".join(str(v) for v in incomes) + "\n"
    prepared = prepare_he(text, "sum(income)", "paillier")
    submitted = run(_submit(net, prepared))
    wait_for(lambda: all_accepted(net, submitted.task_id), 30, "every member to accept")

    node = net.node_by_operator(submitted.committee[-1])
    devnet.stop_node(net.home, node.index)  # SIGTERM: an orderly stop
    assert net.task_on_node(node, submitted.task_id).state == NodeTaskState.ACCEPTED  # type: ignore[union-attr]
    earlier = net.history_on_node(node)
    nonce = net.chain.w3.eth.get_transaction_count(node.operator)
    # forget the listener's checkpoint: every TaskManager event, this task's TaskRequested
    # included, is delivered to the node a second time
    for name in ("listener.sqlite3", "listener.sqlite3-wal", "listener.sqlite3-shm"):
        (net.node_dir(node) / "data" / name).unlink(missing_ok=True)
    devnet.start_node(net.home, node.index)

    final, total, _ = run(_finish(net, submitted, prepared, list(submitted.committee)))
    assert total == int(incomes.sum())
    record = wait_for(
        lambda: (r := net.task_on_node(node, submitted.task_id)) and r.state == NodeTaskState.FINALIZED and r,
        30,
        "the restarted node to finish the task",
    )
    assert record.evaluations == 1  # computed once
    history = net.history_on_node(node)
    assert history[submitted.task_id][:2] == [("", "seen"), ("seen", "accepted")]  # not accepted twice
    for task_id, steps in earlier.items():
        if task_id != submitted.task_id:
            assert history[task_id] == steps, f"replayed events changed finished task {task_id}"
    log_text = (net.node_dir(node) / "node.log").read_text()
    assert f"task {submitted.task_id}: TaskRequested delivered again" in log_text  # the duplicate came
    accepts = [
        e
        for e in tasks.task_history(net.chain, net.contracts, submitted.task_id)
        if e.name == "TaskAccepted" and e.args["operator"] == node.operator
    ]
    assert len(accepts) == 1
    # after the restart it sent at most one transaction: its own submission, if it was first
    sent_after = net.chain.w3.eth.get_transaction_count(node.operator) - nonce
    assert sent_after == (1 if record.submit_tx else 0)


def test_bad_inputs_get_clear_errors_and_the_nodes_keep_serving(network: Network) -> None:
    net = network
    incomes = np.arange(1, 101, dtype=np.int64)
    keys = generate_keys(Scheme.ZPAILLIER)
    good = HETaskSpec(Scheme.ZPAILLIER, "sum(income)", ("income",), scale=1)

    def request(spec_bytes: bytes) -> Submitted:
        import hashlib

        now = int(net.chain.w3.eth.get_block("latest")["timestamp"])
        req = TaskRequest(
            kind=tasks.TASK_KINDS["he"],
            committee_size=3,
            quorum=2,
            deadline=now + TIMEOUT_S,
            fee_wei=FEE_WEI,
            spec_hash=hashlib.sha256(spec_bytes).digest(),
            spec_uri="datum:spec:test",
        )
        task_id, sent = tasks.request_task(net.tx(0), net.chain, net.contracts, req)
        committee = tuple(tasks.get_task(net.chain, net.contracts, task_id).committee)
        return Submitted(task_id, sent.tx_hash, sent.block_number, committee, 2, req.deadline)

    async def upload(submitted: Submitted, blobs: list[tuple[str, bytes]], account: Any = None) -> list[Any]:
        async with DatumClient(net.chain, net.contracts, devnet.dev_account(0)) as client:
            peers = await client.peers(submitted.committee)
        sender = account or devnet.dev_account(0)
        outcomes: list[Any] = []
        async with P2PClient(sender) as p2p:
            for peer in peers.values():
                try:
                    for name, content in blobs:
                        await p2p.upload_blob(peer, submitted.task_id, name, content)
                    outcomes.append(None)
                except (PeerRejected, PeerRefused) as exc:
                    outcomes.append(exc)
        return outcomes

    # 1. a malformed formula: the spec hashes right, but can never run
    broken = json.loads(good.canonical_json())
    broken["formula"] = "sum(income"
    broken_bytes = json.dumps(broken, sort_keys=True, separators=(",", ":")).encode()
    task = request(broken_bytes)
    errors = run(upload(task, [("spec", broken_bytes)]))
    assert all(isinstance(e, PeerRejected) and e.status == 400 and e.code == "bad_spec" for e in errors)
    assert all("formula error at position" in str(e) for e in errors)
    for op in task.committee:
        record = net.task_on_node(net.node_by_operator(op), task.task_id)
        assert record is not None and record.state == NodeTaskState.FAILED and "formula" in record.error

    # 2. columns that lack the spec's column
    task = request(good.canonical_json())
    members = [net.node_by_operator(op) for op in task.committee]
    for node in members:  # each node knows the task, so it can record why it refused
        wait_for(
            lambda node=node: net.task_on_node(node, task.task_id), 30, f"node {node.index} to see the task"
        )
    other = HETaskSpec(Scheme.ZPAILLIER, "sum(salary)", ("salary",), scale=1)
    wrong = encrypt_columns(keys, {"salary": incomes}, other)
    errors = run(
        upload(task, [("spec", good.canonical_json()), ("context", keys.public_context), ("columns", wrong)])
    )
    assert all(isinstance(e, PeerRejected) and e.code == "unknown_column" for e in errors)
    assert all("unknown column 'income'" in str(e) for e in errors)
    for node in members:  # refused and recorded; the task stays open for the right columns
        record = net.task_on_node(node, task.task_id)
        assert record is not None and record.state in (NodeTaskState.SEEN, NodeTaskState.ACCEPTED)
        assert "columns refused: unknown column 'income'" in record.error

    # 3. an upload over the spec's own size limit
    tight = HETaskSpec(
        Scheme.ZPAILLIER, "sum(income)", ("income",), scale=1, limits=HELimits(max_columns_bytes=4_096)
    )
    task = request(tight.canonical_json())
    big = encrypt_columns(keys, {"income": incomes}, good)
    assert len(big) > 4_096
    blobs = [("spec", tight.canonical_json()), ("context", keys.public_context), ("columns", big)]
    errors = run(upload(task, blobs))
    assert all(
        isinstance(e, PeerRejected) and e.status == 413 and "over the spec's limit" in str(e) for e in errors
    )

    # 4. a key the chain does not know as this task's requester
    stranger = Account.create()
    errors = run(upload(task, [("spec", tight.canonical_json())], account=stranger))
    assert all(isinstance(e, PeerRefused) and e.status == 403 and e.code == "not_task_party" for e in errors)

    # ... and the nodes still serve the next task
    prepared = PreparedHE(spec=good, keys=keys, context=keys.public_context, columns=big)
    submitted = run(_submit(net, prepared))
    final, total, _ = run(_finish(net, submitted, prepared, list(submitted.committee)))
    assert total == int(incomes.sum())
    assert spec_uri(good).startswith("datum:spec:0x")
