"""The data oracle's round trip on a fresh devnet: from the consumer's request transaction
being mined to the consumer's callback event (`OracleFulfilled`), through three real node
processes running the MPC statistic.

Run from the repository root (the contracts must be built)::

    .venv/bin/python bench/oracle_bench.py                  # 5 runs, 2 x 200 rows
    .venv/bin/python bench/oracle_bench.py --runs 3 --rows 500
    .venv/bin/python bench/oracle_bench.py --spec-gas         # only: request gas vs inline spec size

It starts `datum devnet up --nodes 3` in a temporary directory, registers two banks'
income datasets on nodes 1 and 2 (`datum data register --schema --node`), deploys and funds
the example CreditScoreLender, then makes it ask for the mean income of one segment N
times (one request at a time). The round trip is measured on this machine's clock: from
the request's receipt to the first poll (every 50 ms) that sees the request delivered.
Also reported: blocks between the two transactions and their gas. Prints a markdown table
(median and worst) and one JSON line.

``--spec-gas`` needs no nodes: on a bare anvil with the contracts it measures the gas of
``DataOracle.request`` (from an account) with inline specs of growing size, up to the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hexbytes import HexBytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.mpc import Column, TableSchema  # noqa: E402
from oracle import devnet, oracle_sdk  # noqa: E402
from oracle.chain import oracle as chain_oracle  # noqa: E402
from oracle.chain.artifacts import ArtifactStore, repo_root  # noqa: E402
from oracle.chain.contracts import DatumContracts  # noqa: E402
from oracle.chain.rpc import Chain, connect  # noqa: E402
from oracle.chain.txmanager import NonceTracker, TxManager  # noqa: E402

BANK = TableSchema(
    "bank", (Column.number("income", 0, 300_000), Column.category("segment", ("young", "senior")))
)
FEE_WEI = 10 * 10**18


def write_bank(path: Path, seed: int, rows: int) -> None:
    rng = np.random.default_rng(seed)
    lines = ["client_id,income,segment"]
    for i in range(rows):
        segment = "young" if rng.random() < 0.4 else "senior"
        lines.append(f"c{seed}-{i},{rng.uniform(18_000, 160_000):.2f},{segment}")
    path.write_text("\n".join(lines) + "\n")


def register(home: Path, store: ArtifactStore, csv: Path, schema: Path, node: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATUM_")}
    env |= {"DATUM_HOME": str(home), "DATUM_ARTIFACTS_DIR": str(store.directory)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "oracle.cli",
            "data",
            "register",
            str(csv),
            "--schema",
            str(schema),
            "--node",
            str(node),
            "--allow",
            "stats",
            "--price",
            "1dtm",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"registering {csv.name} failed: {done.stderr.strip()}")
    return int(json.loads(done.stdout)["dataset_id"])


def spec_gas(store: ArtifactStore) -> None:
    """Gas of `DataOracle.request` with inline specs of 0.25..8 KiB (k = 1, no datasets)."""
    from oracle.chain.deploy import deploy_all
    from oracle.chain.staking import register_node
    from oracle.chain.tasks import TaskRequest
    from oracle.node.oracle_path import MAX_INLINE_SPEC_BYTES, inline_spec_uri

    with tempfile.TemporaryDirectory(prefix="datum-oracle-gas-") as tmp:
        proc, url = devnet.start_anvil(
            repo_root() / devnet.ANVIL_RELATIVE, Path(tmp) / "anvil.log", detached=False
        )
        try:
            chain = Chain(connect(url), store.error_table())
            nonces = NonceTracker()
            owner = TxManager(chain, devnet.dev_account(0), nonces=nonces)
            deployment = deploy_all(owner, store)
            c = DatumContracts(chain.w3, deployment, store)
            operator = TxManager(chain, devnet.dev_account(1), nonces=nonces)
            owner.send(c.token, "transfer", operator.address, 10_000 * 10**18)
            register_node(
                operator,
                chain,
                c,
                signer=operator.address,
                endpoint="http://127.0.0.1:1",
                capabilities=0xFE,
                stake_wei=10_000 * 10**18,
            )
            print("| inline spec (bytes) | specURI (chars) | gas of DataOracle.request |")
            print("|---|---|---|")
            rng = np.random.default_rng(1)
            for size in (256, 1_024, 4_096, MAX_INLINE_SPEC_BYTES):
                spec = rng.integers(32, 127, size, dtype=np.uint8).tobytes()  # JSON-like printable bytes
                uri = inline_spec_uri(spec)
                now = int(chain.w3.eth.get_block("latest")["timestamp"])
                task = TaskRequest(3, 1, 1, now + 3_600, FEE_WEI, hashlib.sha256(spec).digest(), uri)
                _, _, sent = chain_oracle.request(owner, chain, c, task, 100_000)
                print(f"| {size:,} | {len(uri):,} | {sent.gas_used:,} |")
        finally:
            devnet.stop_process(proc.pid, reap=proc.poll)
            proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=200, help="rows per bank")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per round trip")
    parser.add_argument("--spec-gas", action="store_true", help="only measure request gas vs spec size")
    args = parser.parse_args()

    store = ArtifactStore()
    if args.spec_gas:
        spec_gas(store)
        return
    with tempfile.TemporaryDirectory(prefix="datum-oracle-bench-") as tmp:
        home = Path(tmp) / "devnet"
        state = devnet.up(home, 3, store=store)
        try:
            chain = Chain(connect(state.rpc_url), store.error_table())
            contracts = DatumContracts(chain.w3, state.deployment, store)
            schema = Path(tmp) / "bank.json"
            schema.write_text(json.dumps(BANK.to_json()))
            ids = []
            for node, seed in ((1, 11), (2, 22)):
                csv = Path(tmp) / f"bank_{node}.csv"
                write_bank(csv, seed, args.rows)
                ids.append(register(home, store, csv, schema, node))
            owner = TxManager(chain, devnet.dev_account(state.requester_account), nonces=NonceTracker())
            deployment = oracle_sdk.deploy_example(
                owner,
                chain,
                store,
                state.deployment,
                ids[0],
                ids[1],
                5_000,
                (FEE_WEI + 2 * 10**18) * (args.runs + 1),
            )
            lender = DatumContracts(chain.w3, deployment, store).lender
            assert lender is not None
            spec = asyncio.run(
                oracle_sdk.prepare_oracle_spec(
                    chain,
                    contracts,
                    dataset_ids=ids,
                    tables=[BANK],
                    sql="SELECT mean(income) FROM bank WHERE segment = 'young'",
                    values=["mean(income)"],
                    decimals=2,
                )
            )
            trips, blocks, request_gas, fulfil_gas = [], [], [], []
            for run in range(args.runs):
                now = int(chain.w3.eth.get_block("latest")["timestamp"])
                request_id, _, sent = oracle_sdk.request_credit_limit(
                    owner,
                    contracts,
                    lender,
                    applicant=devnet.dev_account(20 + run).address,
                    spec_hash=spec.spec_hash,
                    spec_uri=spec.spec_uri,
                    fee_wei=FEE_WEI,
                    deadline=now + 900,
                    committee_size=3,
                    quorum=2,
                )
                start = time.monotonic()
                while not chain_oracle.get_request(chain, contracts, request_id).delivered:
                    if time.monotonic() - start > args.timeout:
                        raise SystemExit(f"request {request_id} not delivered in {args.timeout:.0f} s")
                    time.sleep(0.05)
                trips.append(time.monotonic() - start)
                done = chain_oracle.fulfilment_of(chain, contracts, request_id)
                assert done is not None and done.callback_succeeded
                blocks.append(done.block_number - sent.block_number)
                request_gas.append(sent.gas_used)
                fulfil_gas.append(
                    int(chain.w3.eth.get_transaction_receipt(HexBytes(done.tx_hash))["gasUsed"])
                )
                print(f"run {run + 1}: {trips[-1]:.2f} s, {blocks[-1]} blocks", file=sys.stderr)
        finally:
            devnet.down(home)

    print(f"oracle round trip, {args.runs} runs, 2 banks x {args.rows} rows, ABY3 committee of 3\n")
    print("| measure | median | worst |")
    print("|---|---|---|")
    print(f"| request mined -> callback seen (s) | {statistics.median(trips):.2f} | {max(trips):.2f} |")
    print(f"| blocks between | {statistics.median(blocks):.0f} | {max(blocks)} |")
    print(
        f"| gas of requestCreditLimit ({len(spec.spec_json)} B inline spec) | "
        f"{statistics.median(request_gas):,.0f} | {max(request_gas):,} |"
    )
    print(
        f"| gas of fulfill (submit + callback) | {statistics.median(fulfil_gas):,.0f} | {max(fulfil_gas):,} |"
    )
    print(
        json.dumps(
            {"round_trip_s": trips, "blocks": blocks, "request_gas": request_gas, "fulfil_gas": fulfil_gas}
        )
    )


if __name__ == "__main__":
    main()
