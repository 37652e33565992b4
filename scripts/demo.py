"""`make demo`: a local devnet with three real node processes, and two HE outsourcing tasks.

What runs: anvil with the contracts deployed, three staked operators and one
`datum node run` process each (`datum devnet up --nodes 3`). A requester generates a
private table, encrypts the columns it needs on its own machine and posts each task on
chain through the SDK (`oracle.client`, what `datum task submit he` uses); the elected
nodes see the request, accept on chain, take the ciphertexts over their p2p API, evaluate
in worker processes, sign the result's hash (EIP-712), exchange signatures and finalize
on chain with a quorum; the requester fetches the result, checks it against the on-chain
hash and decrypts. Then every node withdraws its reward.

Task 1: Paillier `sum(income)` (exact). Task 2: CKKS `mean(score)` (approximate, with
its stated error bound). Task 3, PSI, the car vendor and the bank, through the `datum`
command as a user types it: the bank registers its list of middle-income clients on its
own node (only a commitment goes on chain); the vendor learns which of its clients are on
that list over an SPU link with the bank's node (RR22), and nobody learns anything else.
"""

import argparse
import asyncio
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from oracle import devnet
from oracle.chain import tasks
from oracle.chain.artifacts import ArtifactStore
from oracle.chain.contracts import DatumContracts
from oracle.chain.deploy import TOKEN
from oracle.chain.rpc import Chain, connect
from oracle.chain.txmanager import NonceTracker, TxManager
from oracle.client import DatumClient, HEOutcome, PreparedHE, prepare_he

console = Console()
ROWS = 2_000
FEE_WEI = 30 * TOKEN


def write_table(path: Path, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The requester's private table: client id, yearly income, a credit score in [0, 1]."""
    rng = np.random.default_rng(seed)
    incomes = rng.integers(18_000, 240_000, rows)
    scores = np.round(rng.uniform(0, 1, rows), 6)
    lines = ["client_id,income,score"] + [
        f"c{i:06d},{income},{score:.6f}"
        for i, (income, score) in enumerate(zip(incomes, scores, strict=True))
    ]
    path.write_text("\n".join(lines) + "\n")
    return incomes, scores


def node_compute_s(state: devnet.DevnetState, task_id: int) -> list[float]:
    """Each node's evaluation time for the task, from its log (identifiers and timings only)."""
    pattern = re.compile(rf"task {task_id} computed in ([0-9.]+) s")
    times = []
    for node in state.nodes:
        if node.home is None:
            continue
        match = pattern.search((Path(node.home) / "node.log").read_text())
        if match:
            times.append(float(match.group(1)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the devnet running")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="datum-demo-"))
    store = ArtifactStore()
    with console.status("starting the devnet (anvil, contracts, staked nodes, node processes)"):
        state = devnet.up(home, args.nodes, store=store)
    try:
        asyncio.run(run(state, store, home))
        psi_example(home)
    finally:
        if args.keep:
            console.print(f"devnet left running: DATUM_HOME={home} datum devnet status")
        else:
            devnet.down(home)
            shutil.rmtree(home, ignore_errors=True)


async def one_task(client: DatumClient, prepared: PreparedHE) -> HEOutcome:
    return await client.run_he(prepared, fee_wei=FEE_WEI, committee_size=3, quorum=2, timeout_s=900)


def show_task(
    state: devnet.DevnetState, title: str, outcome: HEOutcome, expected: float, exact: bool
) -> None:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("task id", str(outcome.task_id))
    table.add_row("decrypted result", f"{outcome.result}")
    table.add_row("plaintext numpy", f"{expected}")
    if exact:
        table.add_row("difference", f"{outcome.result - expected} (exact)")
    else:
        table.add_row(
            "difference", f"{abs(outcome.result - expected):.3e} (stated bound {outcome.bound:.3e})"
        )
    table.add_row("request tx", outcome.request_tx)
    table.add_row("finalize tx", outcome.finalize_tx)
    table.add_row("signers", ", ".join(s[:10] for s in outcome.signers))
    t = outcome.timings_s
    compute = node_compute_s(state, outcome.task_id)
    table.add_row(
        "latency (s)",
        f"encrypt {t['prepare']:.2f} | request tx {t['request']:.2f} | upload {t['upload']:.2f} | "
        f"accept+compute+sign+finalize {t['wait_finalized']:.2f} | fetch {t['fetch']:.2f} | "
        f"decrypt {t['decrypt']:.2f}",
    )
    if compute:
        table.add_row("node compute (s)", ", ".join(f"{c:.2f}" for c in compute))
    console.print(table)


async def run(state: devnet.DevnetState, store: ArtifactStore, home: Path) -> None:
    chain = Chain(connect(state.rpc_url), store.error_table())
    c = DatumContracts(chain.w3, state.deployment, store)
    nonces = NonceTracker()
    console.print(
        f"devnet: chain {state.chain_id} at {state.rpc_url}; nodes "
        + ", ".join(f"{n.index} ({n.endpoint}, pid {n.pid})" for n in state.nodes)
    )
    data = home / "clients.csv"
    incomes, scores = write_table(data, ROWS, seed=7)
    csv_bytes = data.read_bytes()

    async with DatumClient(chain, c, devnet.dev_account(state.requester_account), nonces=nonces) as client:
        with console.status("Paillier: encrypting the income column locally"):
            paillier = prepare_he(csv_bytes, "sum(income)", "paillier")
        with console.status("Paillier sum(income): on chain and on the committee"):
            first = await one_task(client, paillier)
        assert first.result == int(incomes.sum())
        show_task(state, f"Paillier sum(income) over {ROWS} encrypted rows", first, int(incomes.sum()), True)

        with console.status("CKKS: encrypting the score column locally"):
            ckks = prepare_he(csv_bytes, "mean(score)", "ckks")
        with console.status("CKKS mean(score): on chain and on the committee"):
            second = await one_task(client, ckks)
        expected = float(np.mean(scores))
        assert abs(second.result - expected) <= second.bound
        show_task(state, f"CKKS mean(score) over {ROWS} encrypted rows", second, expected, False)

    rewards = Table(title="rewards (pulled by each node operator)")
    for column in ("node", "operator", "signed", "withdrawn (DTM)"):
        rewards.add_column(column)
    for node in state.nodes:
        owed = int(chain.call(c.tasks, "getOwed", node.operator))
        amount = 0
        if owed:
            operator_tx = TxManager(chain, devnet.dev_account(node.account), nonces=nonces)
            amount, _ = tasks.withdraw_rewards(operator_tx, c)
        signed = sum(node.operator in o.signers for o in (first, second))
        rewards.add_row(str(node.index), node.operator, f"{signed} of 2", f"{amount / TOKEN:.4f}")
    console.print(rewards)


def datum(home: Path, *args: str) -> dict[str, object]:
    """Run the `datum` command against the demo's devnet; its one JSON object."""
    env = {**os.environ, "DATUM_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "oracle.cli", *args, "--json"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"datum {' '.join(args)} failed: {done.stderr.strip()}")
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def psi_example(home: Path) -> None:
    """The vendor and the bank: who among the vendor's clients can afford the new car."""
    rng = random.Random(11)
    population = [f"client-{i:05d}" for i in range(20_000)]
    vendor = rng.sample(population, 3_000)
    bank = rng.sample(population, 6_000)  # the bank's middle-income clients
    with (home / "vendor.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["client_id", "model_interest"])
        out.writerows([c, rng.choice(["suv", "sedan", "ev"])] for c in vendor)
    with (home / "bank_middle_income.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["client_id", "income_class"])
        out.writerows([c, "middle"] for c in bank)

    with console.status("PSI: the bank registers its list on its own node"):
        registered = datum(
            home,
            "data",
            "register",
            str(home / "bank_middle_income.csv"),
            "--key",
            "client_id",
            "--node",
            "2",
            "--price",
            "5dtm",
            "--allow",
            "psi",
        )
    with console.status("PSI: the vendor intersects its client list with the bank's (RR22)"):
        answer = datum(
            home,
            "task",
            "submit",
            "psi",
            "--mine",
            str(home / "vendor.csv"),
            "--key",
            "client_id",
            "--with",
            str(registered["dataset_id"]),
            "--protocol",
            "rr22",
            "--reveal",
            "me",
            "--out",
            str(home / "can_afford.csv"),
            "--wait",
        )
    with (home / "can_afford.csv").open(newline="") as f:
        found = {row["client_id"] for row in csv.DictReader(f)}
    expected = set(vendor) & set(bank)
    assert found == expected, (len(found), len(expected))

    table = Table(title="PSI: which of the vendor's clients can afford the new car")
    table.add_column("")
    table.add_column("value")
    table.add_row(
        "dataset (bank, on its node 2)",
        f"{registered['dataset_id']}: {len(bank)} rows, only a commitment on chain",
    )
    table.add_row("vendor's clients", str(len(vendor)))
    table.add_row(
        "matches written for the vendor", f"{len(found)} (plaintext intersection {len(expected)}: equal)"
    )
    tx = answer["tx"]
    assert isinstance(tx, dict)
    table.add_row("request tx", str(tx["request"]))
    table.add_row("finalize tx", str(tx["finalize"]))
    table.add_row("result commitment on chain", str(answer["result_hash"]))
    console.print(table)


if __name__ == "__main__":
    main()
