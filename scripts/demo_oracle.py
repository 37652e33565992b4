"""`make demo`, the data oracle for dApps: the example CreditScoreLender contract asks the
DataOracle for the mean income of the young segment across two banks (the stats step's
datasets of banks A and B); the committee computes it under MPC from the spec carried
inline in the request, fulfils with quorum signatures, and the oracle calls the lender back,
which sets the applicant's credit limit. Deployed and specified with `datum oracle`, asked
and awaited with the oracle SDK (as tests/e2e/test_oracle_network.py and
bench/oracle_bench.py do), checked against pandas.
"""

import time
from decimal import Decimal
from pathlib import Path

import pandas as pd
from demo_cli import check, console, datum, short
from demo_stats import Banks
from rich.table import Table
from web3 import Web3

from oracle import devnet, oracle_sdk
from oracle.chain import oracle as chain_oracle
from oracle.chain.artifacts import ArtifactStore
from oracle.chain.contracts import DatumContracts
from oracle.chain.rpc import Chain, connect
from oracle.chain.txmanager import NonceTracker, TxManager

LIMIT_BPS = 5_000  # credit limit = 50 % of the segment's mean income
DECIMALS = 2
FEE = "10dtm"
APPLICANT = 13  # a devnet account with no other role
QUERY = "SELECT mean(income) FROM clients WHERE segment = 'young'"


def oracle_example(home: Path, state: devnet.DevnetState, store: ArtifactStore, banks: Banks) -> None:
    """Deploy the lender, request, wait for the callback; stop with a mismatch on a wrong answer."""
    bank_a, bank_b = banks.dataset_ids[0], banks.dataset_ids[1]
    with console.status("oracle: deploying the example CreditScoreLender"):
        deployed = datum(
            home, "oracle", "deploy-example", "--bank-a", str(bank_a), "--bank-b", str(bank_b),
            "--limit-bps", str(LIMIT_BPS), "--fund", "100dtm",
        )  # fmt: skip
    with console.status("oracle: building the inline spec (datum oracle spec)"):
        spec = datum(
            home, "oracle", "spec", "--schema", str(banks.schema), "--query", QUERY,
            "--with", f"{bank_a},{bank_b}", "--values", "mean(income)", "--decimals", str(DECIMALS),
        )  # fmt: skip
    bound = float(spec["bounds"]["mean(clients.income)"])

    chain = Chain(connect(state.rpc_url), store.error_table())
    contracts = DatumContracts(chain.w3, state.deployment, store)
    lender_address = Web3.to_checksum_address(deployed["credit_score_lender"])
    lender = chain.w3.eth.contract(address=lender_address, abi=store.load("CreditScoreLender").abi)
    owner = TxManager(chain, devnet.dev_account(state.requester_account), nonces=NonceTracker())
    applicant = devnet.dev_account(APPLICANT).address
    with console.status("oracle: the lender asks the DataOracle; the committee computes and calls back"):
        now = int(chain.w3.eth.get_block("latest")["timestamp"])
        request_id, task_id, sent = oracle_sdk.request_credit_limit(
            owner, contracts, lender, applicant=applicant,
            spec_hash=bytes.fromhex(str(spec["spec_hash"])[2:]), spec_uri=str(spec["spec_uri"]),
            fee_wei=10 * 10**18, deadline=now + 600, committee_size=3, quorum=2,
        )  # fmt: skip
        mined = time.monotonic()
        fulfilment = oracle_sdk.wait_for_fulfilment(chain, contracts, request_id, timeout_s=240, poll_s=0.05)
        round_trip_s = time.monotonic() - mined
    status = datum(home, "oracle", "status", str(request_id))

    check(fulfilment.callback_succeeded, f"oracle request {request_id}: the lender's callback failed")
    check(status["task_state"] == "finalized", f"oracle task {task_id} is {status['task_state']}")
    mean = Decimal(status["decoded"]["mean(clients.income)"])
    union = pd.concat(banks.frames[:2], ignore_index=True)
    expected = float(union[union.segment == "young"].income.mean())
    tolerance = bound + 0.5 * 10**-DECIMALS  # the engine's stated bound + rounding to 2 decimals
    check(abs(float(mean) - expected) <= tolerance, f"oracle mean {mean}, pandas {expected}, bound {bound}")
    limit_units = int(chain.call(lender, "getCreditLimit", applicant))
    mean_units = int(mean * 10**DECIMALS)
    check(limit_units == mean_units * LIMIT_BPS // 10_000, f"credit limit {limit_units}, mean {mean_units}")
    record = chain_oracle.get_request(chain, contracts, request_id)
    check(record.delivered and record.task_id == task_id, f"oracle request {request_id} not delivered")

    table = Table(
        title="data oracle: CreditScoreLender gets the mean income of young clients at banks A and B"
    )
    table.add_column("")
    table.add_column("value")
    table.add_row("lender contract", f"{short(lender_address)} (limit = {LIMIT_BPS / 100:.0f} % of the mean)")
    table.add_row("query", f"{QUERY} over datasets {bank_a}, {bank_b}")
    table.add_row(
        "inline spec", f"{spec['spec_bytes']} bytes in the specURI, specHash {short(spec['spec_hash'])}"
    )
    table.add_row("oracle request / task", f"{request_id} / {task_id} (request tx {short(sent.tx_hash)})")
    table.add_row(
        "mean income on chain", f"{mean} (stated bound {bound:.2g} + rounding to {DECIMALS} decimals)"
    )
    table.add_row("pandas (plaintext)", f"{expected:,.4f}")
    table.add_row(
        "credit limit set by the contract",
        f"{Decimal(limit_units) / 10**DECIMALS} for applicant {short(applicant)}",
    )
    table.add_row("callback succeeded", str(fulfilment.callback_succeeded))
    table.add_row("fulfil tx", f"{short(fulfilment.tx_hash)} (block {fulfilment.block_number})")
    table.add_row(
        "round trip",
        f"{round_trip_s:.2f} s from request mined to callback seen, "
        f"{fulfilment.block_number - sent.block_number} blocks",
    )
    console.print(table)
