"""The data oracle through the whole network: anvil, the contracts, three real node
processes and the `datum` CLI. Two banks register income datasets on their nodes; the
example CreditScoreLender asks the DataOracle for the mean income of the young segment
across both (kind 3, spec inline in the URI); the committee runs the MPC statistic and
fulfils; the lender's callback sets the applicant's credit limit from the quorum-signed mean,
which equals pandas on the plaintext union within the stated bound.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from web3 import Web3
from web3.contract import Contract

from compute.mpc import Column, TableSchema
from oracle import oracle_sdk
from oracle.chain import oracle as chain_oracle
from oracle.chain import tasks
from oracle.chain.tasks import TaskState
from oracle.devnet import dev_account

from .conftest import Network

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BANK = TableSchema(
    "bank",
    (Column.number("income", 0, 300_000), Column.category("segment", ("young", "senior"))),
)
LIMIT_BPS = 5_000
DECIMALS = 2
APPLICANT = 13


def cli_env(net: Network, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")}
    scratch.mkdir(parents=True, exist_ok=True)
    return env | {
        "DATUM_HOME": str(net.home),
        "DATUM_ARTIFACTS_DIR": str(net.store.directory),
        "TMPDIR": str(scratch),
    }


def datum(net: Network, cwd: Path, *args: str, timeout: float = 180) -> dict[str, object]:
    """Run `datum ... --json`; the one JSON object it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "oracle.cli", *args, "--json"],
        env=cli_env(net, cwd / "tmp"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"datum {' '.join(args[:2])}: {done.stderr}"
    payload: dict[str, object] = json.loads(done.stdout)
    return payload


def bank_rows(seed: int, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "client_id": [f"c{seed}-{i}" for i in range(n)],
            "income": np.round(rng.uniform(18_000, 160_000, n), 2),
            "segment": rng.choice(["young", "senior"], n, p=[0.4, 0.6]),
        }
    )


@dataclass(frozen=True)
class Banks:
    """Two banks' datasets served by nodes 1 and 2, the deployed lender and its spec."""

    frames: dict[int, pd.DataFrame]
    dataset_ids: tuple[int, int]
    lender: str
    spec_hash: str
    spec_uri: str
    bound: float  # the engine's stated absolute error of the published mean
    cwd: Path


@pytest.fixture(scope="module")
def banks(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Banks:
    net, cwd = network, tmp_path_factory.mktemp("oracle")
    schema = cwd / "bank.json"
    schema.write_text(json.dumps(BANK.to_json()))
    frames = {1: bank_rows(11, 120), 2: bank_rows(22, 150)}
    ids = []
    for node, frame in frames.items():
        path = cwd / f"bank_{node}.csv"
        frame.to_csv(path, index=False)
        registered = datum(
            net,
            cwd,
            "data",
            "register",
            str(path),
            "--schema",
            str(schema),
            "--node",
            str(node),
            "--allow",
            "stats",
            "--price",
            "2dtm",
        )
        ids.append(int(str(registered["dataset_id"])))
    deployed = datum(
        net,
        cwd,
        "oracle",
        "deploy-example",
        "--bank-a",
        str(ids[0]),
        "--bank-b",
        str(ids[1]),
        "--limit-bps",
        str(LIMIT_BPS),
        "--fund",
        "500dtm",
    )
    spec = datum(
        net,
        cwd,
        "oracle",
        "spec",
        "--schema",
        str(schema),
        "--query",
        "SELECT mean(income) FROM bank WHERE segment = 'young'",
        "--with",
        f"{ids[0]},{ids[1]}",
        "--values",
        "mean(income)",
        "--decimals",
        str(DECIMALS),
    )
    assert str(spec["spec_uri"]).startswith("datum:spec-inline:")
    bounds = spec["bounds"]
    assert isinstance(bounds, dict)
    bound = float(bounds["mean(bank.income)"])
    assert 0 < bound <= 0.5 * 10**-DECIMALS  # the default target: every published digit holds
    return Banks(
        frames,
        (ids[0], ids[1]),
        Web3.to_checksum_address(str(deployed["credit_score_lender"])),
        str(spec["spec_hash"]),
        str(spec["spec_uri"]),
        bound,
        cwd,
    )


def ask(net: Network, banks: Banks, applicant: str, spec_hash: str) -> int:
    asked = datum(
        net,
        banks.cwd,
        "oracle",
        "ask",
        "--lender",
        banks.lender,
        "--applicant",
        applicant,
        "--spec-hash",
        spec_hash,
        "--spec-uri",
        banks.spec_uri,
        "--fee",
        "10dtm",
        "--committee",
        "3",
        "--quorum",
        "2",
        "--timeout",
        "400",
    )
    return int(str(asked["request_id"]))


def lender_contract(net: Network, banks: Banks) -> Contract:
    address = Web3.to_checksum_address(banks.lender)
    return net.chain.w3.eth.contract(address=address, abi=net.store.load("CreditScoreLender").abi)


def check_credit_limit(net: Network, banks: Banks, request_id: int, applicant: str) -> None:
    """The request was delivered; the decoded mean equals pandas; the callback set the limit."""
    fulfilment = oracle_sdk.wait_for_fulfilment(net.chain, net.contracts, request_id, timeout_s=240)
    assert fulfilment.callback_succeeded
    status = datum(net, banks.cwd, "oracle", "status", str(request_id))
    assert status["task_state"] == "finalized"
    request = status["request"]
    assert isinstance(request, dict) and request["delivered"] and request["callback_succeeded"]
    decoded = status["decoded"]
    assert isinstance(decoded, dict)
    mean = float(decoded["mean(bank.income)"])
    union = pd.concat(banks.frames.values(), ignore_index=True)
    expected = float(union[union.segment == "young"].income.mean())
    assert abs(mean - expected) <= banks.bound + 0.5 * 10**-DECIMALS, (mean, expected, banks.bound)

    record = chain_oracle.get_request(net.chain, net.contracts, request_id)
    view = tasks.get_task(net.chain, net.contracts, record.task_id)
    assert view.state is TaskState.FINALIZED and view.requester == banks.lender
    mean_units = round(mean * 10**DECIMALS)
    limit = net.chain.call(lender_contract(net, banks), "getCreditLimit", applicant)
    assert limit == mean_units * LIMIT_BPS // 10_000


def test_the_lender_gets_the_mean_income_of_a_segment_across_two_banks(
    network: Network, banks: Banks
) -> None:
    applicant = dev_account(APPLICANT).address
    request_id = ask(network, banks, applicant, banks.spec_hash)
    check_credit_limit(network, banks, request_id, applicant)


def test_a_spec_that_does_not_match_its_hash_is_refused_refunded_and_nodes_keep_serving(
    network: Network, banks: Banks
) -> None:
    net, c = network, network.contracts
    lender = lender_contract(net, banks)
    balance = int(net.chain.call(c.token, "balanceOf", banks.lender))
    wrong_hash = "0x" + hashlib.sha256(b"another spec").hexdigest()
    refused = ask(net, banks, dev_account(APPLICANT + 1).address, wrong_hash)
    task_id = chain_oracle.get_request(net.chain, c, refused).task_id

    # the nodes keep serving: the next (good) request is answered
    applicant = dev_account(APPLICANT + 2).address
    served = ask(net, banks, applicant, banks.spec_hash)
    check_credit_limit(net, banks, served, applicant)

    # the refused request is never delivered; after its deadline the lender gets its money back
    view = tasks.get_task(net.chain, c, task_id)
    # the nodes decline it: not accepted by anyone (neither from TaskRequested nor from the
    # CommitteeElected path a refilled slot takes), nothing computed
    assert view.state == TaskState.REQUESTED and view.accepted_mask == 0
    assert view.result_hash == bytes(32)
    assert not chain_oracle.get_request(net.chain, c, refused).delivered
    net.chain.send_rpc(
        "evm_increaseTime", [view.deadline - int(net.chain.w3.eth.get_block("latest")["timestamp"]) + 1]
    )
    net.chain.send_rpc("evm_mine", [])
    owner = net.tx(net.state.requester_account)  # deployed the lender through the CLI: its owner
    tasks.refund(owner, c, task_id)
    owner.send(lender, "claimRefunds")
    spent_on_served = 10 * 10**18 + 2 * 2 * 10**18
    assert int(net.chain.call(c.token, "balanceOf", banks.lender)) == balance - spent_on_served
    status = datum(net, banks.cwd, "oracle", "status", str(refused))
    assert status["task_state"] == "refunded" and status["fulfilment"] is None
