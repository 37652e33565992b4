"""`make demo`: a local devnet with three real node processes running every task type end to end.

What runs: anvil with the contracts deployed, three staked operators and one
`datum node run` process each (`datum devnet up --nodes 3`). A requester generates a
private table, encrypts the columns it needs on its own machine and posts each task on
chain through the SDK (`oracle.client`, what `datum task submit he` uses); the elected
nodes see the request, accept on chain, take the ciphertexts over their p2p API, evaluate
in worker processes, sign the result's hash (EIP-712), exchange signatures and finalize
on chain with a quorum; the requester fetches the result, checks it against the on-chain
hash and decrypts. Then every node withdraws its reward.

Task 1: Paillier `sum(income)` (exact). Task 2: CKKS `mean(score)` (approximate, with
its stated error bound). Then, through the `datum` command as a user types it:
- PSI (demo_psi.py), the car vendor and the bank: which of the vendor's clients are on the
  bank's middle-income list (RR22); labeled PSI, the bank's income class and credit band of
  the vendor's matching clients only (DH-OPRF); `--reveal size`, only their number.
- joint statistics (demo_stats.py): three banks register a table each on their own node
  with a declared schema; per-region count, mean and std of income over their union, on
  secret shares (ABY3), answered to the requester only.
- the data oracle (demo_oracle.py): the example CreditScoreLender contract asks for the
  mean income of a segment across two banks and sets a credit limit in its callback.

Every answer is checked against plaintext (numpy, pandas, set operations): a mismatch stops
the demo with exit code 1, so `make demo` is also a smoke test of the whole stack.
"""

import argparse
import asyncio
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from demo_cli import check, console
from demo_oracle import oracle_example
from demo_psi import psi_examples
from demo_stats import stats_example
from numpy.typing import NDArray
from rich.table import Table

from oracle import devnet
from oracle.chain import tasks
from oracle.chain.artifacts import ArtifactStore
from oracle.chain.contracts import DatumContracts
from oracle.chain.deploy import TOKEN
from oracle.chain.rpc import Chain, connect
from oracle.chain.txmanager import NonceTracker, TxManager
from oracle.client import DatumClient, HEOutcome, PreparedHE, prepare_he

ROWS = 2_000
FEE_WEI = 30 * TOKEN


def write_table(path: Path, rows: int, seed: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
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
    if args.nodes < 3:
        parser.error("--nodes: the stats step needs 3 nodes (three banks, an ABY3 committee)")

    home = Path(tempfile.mkdtemp(prefix="datum-demo-"))
    store = ArtifactStore()
    with console.status("starting the devnet (anvil, contracts, staked nodes, node processes)"):
        state = devnet.up(home, args.nodes, store=store)
    started = time.monotonic()
    try:
        asyncio.run(run(state, store, home))
        psi_examples(home)
        banks = stats_example(home)
        oracle_example(home, state, store, banks)
        elapsed_s = time.monotonic() - started
        console.print(
            f"[bold green]every answer matched its plaintext reference[/] ({elapsed_s:.0f} s after devnet up)"
        )
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
        check(first.result == int(incomes.sum()), f"Paillier sum {first.result}, numpy {int(incomes.sum())}")
        show_task(state, f"Paillier sum(income) over {ROWS} encrypted rows", first, int(incomes.sum()), True)

        with console.status("CKKS: encrypting the score column locally"):
            ckks = prepare_he(csv_bytes, "mean(score)", "ckks")
        with console.status("CKKS mean(score): on chain and on the committee"):
            second = await one_task(client, ckks)
        expected = float(np.mean(scores))
        check(abs(second.result - expected) <= second.bound, f"CKKS mean {second.result}, numpy {expected}")
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


if __name__ == "__main__":
    main()
