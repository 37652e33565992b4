"""`datum oracle` as a dApp developer runs it, against a real anvil with the contracts:
deploy and fund the example lender, build the inline spec (its minimum group size read from
the datasets' consent), make the lender ask, and read the status with the public output
decoded from the inline spec. The committee's part is played here with the members' keys
(the full network path is tests/e2e/test_oracle_network.py). Errors are one line."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from web3 import Web3

from compute.mpc import Column, TableSchema
from compute.mpc.numerics import Field, Numerics
from compute.mpc.query import Func
from compute.mpc.result import AggregateResult, QueryResult
from oracle.chain import oracle as chain_oracle
from oracle.chain import staking, tasks
from oracle.chain.datasets import UNLIMITED_USES, ConsentPolicy, kinds_mask, register_dataset
from oracle.chain.deploy import TOKEN
from oracle.chain.signer import public_output_hash, sign_result
from oracle.devnet import dev_account
from oracle.node.chainops import ChainOps
from oracle.node.oracle_output import encode_public_output, parse_output_spec
from oracle.node.oracle_path import finalize_with_output, inline_spec

if TYPE_CHECKING:
    from conftest import Net

pytestmark = pytest.mark.integration

BANK = TableSchema(
    "bank", (Column.number("income", 0, 300_000), Column.category("segment", ("young", "senior")))
)
OPERATORS = (1, 2, 3)
BANK_OWNER, APPLICANT = 12, 13
MIN_GROUP = 25


class Datum:
    """`python -m oracle.cli` against the module's anvil, as dev account 0."""

    def __init__(self, net: Net, rpc_url: str, tmp: Path) -> None:
        manifest = tmp / "deployment.json"
        net.deployment.save(manifest)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")} | {
            "DATUM_HOME": str(tmp / ".datum"),
            "DATUM_RPC_URL": rpc_url,
            "DATUM_DEPLOYMENT": str(manifest),
            "DATUM_ARTIFACTS_DIR": str(net.store.directory),
            "DATUM_PRIVATE_KEY": "0x" + bytes(dev_account(0).key).hex(),
        }
        self.cwd = tmp

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oracle.cli", "oracle", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def json(self, *args: str) -> dict[str, Any]:
        done = self.run(*args, "--json")
        assert done.returncode == 0, done.stderr
        (line,) = done.stdout.strip().splitlines()
        payload: dict[str, Any] = json.loads(line)
        return payload

    def fails(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 1, (done.stdout, done.stderr)
        (line,) = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and "Traceback" not in done.stderr
        return line


def test_deploy_spec_ask_and_status(net: Net, anvil_url: str, tmp_path: Path) -> None:
    c = net.contracts
    for account in OPERATORS:
        net.tx(0).send(c.token, "transfer", dev_account(account).address, 2_000 * TOKEN)
        staking.register_node(
            net.tx(account),
            net.chain,
            c,
            signer=dev_account(100 + account).address,
            endpoint=f"http://127.0.0.1:{9200 + account}",
            capabilities=0xFE,
            stake_wei=2_000 * TOKEN,
        )
    policy = ConsentPolicy(kinds_mask(["stats"]), True, 0, UNLIMITED_USES, MIN_GROUP)
    ids = [
        register_dataset(
            net.tx(BANK_OWNER),
            c,
            metadata_uri=f"datum:dataset:{i}",
            metadata_hash=hashlib.sha256(bytes([i])).digest(),
            rows=100,
            price_wei=TOKEN,
            policy=policy,
        )[0]
        for i in (1, 2)
    ]
    cli = Datum(net, anvil_url, tmp_path)

    deployed = cli.json(
        "deploy-example",
        "--bank-a",
        str(ids[0]),
        "--bank-b",
        str(ids[1]),
        "--limit-bps",
        "4000",
        "--fund",
        "300dtm",
    )
    lender_address = Web3.to_checksum_address(deployed["credit_score_lender"])
    assert net.chain.w3.eth.get_code(lender_address)
    assert net.chain.call(c.token, "balanceOf", lender_address) == 300 * TOKEN
    lender = net.chain.w3.eth.contract(address=lender_address, abi=net.store.load("CreditScoreLender").abi)
    assert (
        list(net.chain.call(lender, "getBankDatasets")) == ids
        and net.chain.call(lender, "getLimitBps") == 4000
    )

    schema = tmp_path / "bank.json"
    schema.write_text(json.dumps(BANK.to_json()))
    spec = cli.json(
        "spec",
        "--schema",
        str(schema),
        "--query",
        "SELECT mean(income) FROM bank WHERE segment = 'young'",
        "--with",
        f"{ids[0]},{ids[1]}",
        "--values",
        "avg(income)",
        "--decimals",
        "2",
    )
    assert 0 < spec["bounds"]["mean(bank.income)"] <= 0.005  # default: within half a cent
    spec_hash = bytes.fromhex(spec["spec_hash"][2:])
    spec_json = inline_spec(spec["spec_uri"], spec_hash)
    assert spec_json is not None
    document = json.loads(spec_json)
    assert document["query"]["min_group_size"] == MIN_GROUP  # from the datasets' consent
    assert document["public_output"] == {"values": ["mean(bank.income)"], "types": ["uint256"], "decimals": 2}

    asked = cli.json(
        "ask",
        "--lender",
        lender_address,
        "--applicant",
        dev_account(APPLICANT).address,
        "--spec-hash",
        spec["spec_hash"],
        "--spec-uri",
        spec["spec_uri"],
        "--fee",
        "20dtm",
    )
    request_id, task_id = asked["request_id"], asked["task_id"]
    pending = cli.json("status", str(request_id))
    assert (
        pending["task_state"] == "requested" and pending["fulfilment"] is None and pending["decoded"] is None
    )
    assert pending["public_output_spec"] == document["public_output"]

    # the committee's part: accept, encode the mean, sign, fulfil through the node path
    committee = net.chain.call(c.tasks, "getCommittee", task_id)
    members = [next(a for a in OPERATORS if dev_account(a).address == op) for op in committee]
    for account in members:
        tasks.accept_task(net.tx(account), c, task_id)
    result = QueryResult(
        ("*",),
        (AggregateResult("mean(bank.income)", Func.MEAN, (48_765.4321,), (0.004,)),),
        Numerics.with_bits(Field("FM128"), 40),
        MIN_GROUP,
        0.0,
        "00" * 32,
    )
    output = encode_public_output(result, parse_output_spec(document["public_output"]))
    domain = tasks.result_domain(net.chain, c)
    sigs = [
        sign_result(
            bytes(dev_account(100 + m).key), domain, task_id, bytes(32), public_output_hash(output), 1
        )
        for m in members
    ]
    ops = ChainOps(net.chain, c, net.tx(members[0]))
    asyncio.run(finalize_with_output(ops, task_id, bytes(32), output, 1, sigs))

    done = cli.json("status", str(request_id))
    assert done["task_state"] == "finalized"
    assert done["request"]["delivered"] and done["request"]["callback_succeeded"]
    assert done["decoded"] == {"mean(bank.income)": "48765.43"}
    assert done["fulfilment"]["public_output"] == "0x" + output.hex()
    assert (
        net.chain.call(lender, "getCreditLimit", dev_account(APPLICANT).address)
        == 4_876_543 * 4_000 // 10_000
    )
    human = cli.run("status", str(request_id))
    assert human.returncode == 0 and "48765.43" in human.stdout
    assert chain_oracle.get_request(net.chain, c, request_id).task_id == task_id

    assert "DataOracle__UnknownRequest(requestId=999)" in cli.fails("status", "999")
    assert "DataRegistry__UnknownAsset" in cli.fails(
        "deploy-example", "--bank-a", "77", "--bank-b", str(ids[0])
    )
    bad_value = [
        "spec",
        "--schema",
        str(schema),
        "--query",
        "SELECT mean(income) FROM bank",
        "--with",
        str(ids[0]),
    ]
    assert "unknown column 'debt'" in cli.fails(*bad_value, "--values", "mean(debt)", "--decimals", "2")
    assert f"below dataset {ids[0]}'s consent policy (minGroupSize {MIN_GROUP})" in cli.fails(
        *bad_value, "--values", "mean(income)", "--decimals", "2", "--min-group-size", "10"
    )
    assert "--spec-hash must be 32 bytes" in cli.fails(
        "ask",
        "--lender",
        lender_address,
        "--applicant",
        lender_address,
        "--spec-hash",
        "0x12",
        "--spec-uri",
        "x",
    )
