"""`make demo`: a local devnet and one outsourced-computation task through the contracts.

What runs: anvil with the contracts deployed and three staked nodes (`datum devnet up`);
a data owner registers its dataset (metadata and commitment only) and encrypts a column
with Paillier; a requester posts the task, paying the fee and the dataset's price into
escrow; the committee is elected on chain and the demo checks the election in Python;
each member accepts, evaluates the formula on the ciphertext only, and signs the hash of
its encrypted result (EIP-712); a quorum of signatures finalizes the task; the owner
decrypts; the rewards are withdrawn.

Until the node daemon lands, the three members' work (accept, evaluate, sign) runs here
with each node's own key; everything on chain is real.
"""

import argparse
import csv
import random
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compute.he import HETaskSpec, Scheme, decrypt, encrypt_columns, evaluate, generate_keys, result_digest
from oracle import devnet
from oracle.chain import staking, tasks
from oracle.chain.artifacts import ArtifactStore
from oracle.chain.contracts import DatumContracts
from oracle.chain.datasets import ConsentPolicy, describe_csv, kinds_mask, register_dataset
from oracle.chain.deploy import TOKEN
from oracle.chain.rpc import Chain, connect
from oracle.chain.signer import public_output_hash, sign_result
from oracle.chain.tasks import TaskRequest, TaskState
from oracle.chain.txmanager import NonceTracker, TxManager

console = Console()
OWNER_ACCOUNT = 9  # the data owner; account 0 is the requester and treasury
ROWS = 2_000


def write_dataset(path: Path, rows: int, seed: int) -> list[int]:
    """A data owner's private table: client id and yearly income."""
    rng = random.Random(seed)
    incomes = [rng.randrange(18_000, 240_000) for _ in range(rows)]
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["client_id", "income"])
        for i, income in enumerate(incomes):
            out.writerow([f"c{i:06d}", income])
    return incomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="leave the devnet running")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="datum-demo-"))
    store = ArtifactStore()
    with console.status("starting the devnet (anvil, contracts, staked nodes)"):
        state = devnet.up(home, args.nodes, store=store)
    try:
        run(state, store, home)
    finally:
        if args.keep:
            console.print(f"devnet left running: DATUM_HOME={home} datum devnet status")
        else:
            devnet.down(home)
            shutil.rmtree(home, ignore_errors=True)


def run(state: devnet.DevnetState, store: ArtifactStore, home: Path) -> None:
    chain = Chain(connect(state.rpc_url), store.error_table())
    c = DatumContracts(chain.w3, state.deployment, store)
    nonces = NonceTracker()
    requester = TxManager(chain, devnet.dev_account(0), nonces=nonces)
    owner = TxManager(chain, devnet.dev_account(OWNER_ACCOUNT), nonces=nonces)
    members_tx = {
        n.operator: TxManager(chain, devnet.dev_account(n.account), nonces=nonces) for n in state.nodes
    }
    console.print(f"devnet: chain {state.chain_id} at {state.rpc_url}, {len(state.nodes)} staked nodes")

    # 1. The data owner registers its dataset: metadata + commitment on chain, data stays home.
    data_path = home / "incomes.csv"
    incomes = write_dataset(data_path, ROWS, seed=7)
    meta = describe_csv(data_path, "client_id")
    price = 5 * TOKEN
    dataset_id, _ = register_dataset(
        owner,
        c,
        metadata_uri=f"datum:dataset:0x{meta.metadata_hash.hex()}",
        metadata_hash=meta.metadata_hash,
        rows=meta.rows,
        price_wei=price,
        policy=ConsentPolicy(kinds_mask(["he"]), True, 0, 10, 10),
    )
    console.print(f"dataset {dataset_id} registered: {meta.rows} rows, price {price / TOKEN:g} DTM")

    # 2. The owner encrypts locally; the spec's hash goes on chain with the task.
    spec = HETaskSpec(Scheme.ZPAILLIER, "sum(income)", ("income",), scale=1)
    t0 = time.perf_counter()
    keys = generate_keys(Scheme.ZPAILLIER)
    blob = encrypt_columns(keys, {"income": incomes}, spec)
    encrypt_s = time.perf_counter() - t0
    fee = 30 * TOKEN
    deadline = int(chain.w3.eth.get_block("latest")["timestamp"]) + 3_600
    request = TaskRequest(
        kind=tasks.TASK_KINDS["he"],
        committee_size=3,
        quorum=2,
        deadline=deadline,
        fee_wei=fee,
        spec_hash=spec.spec_hash(),
        spec_uri="datum:spec:0x" + spec.spec_hash().hex(),
        dataset_ids=(dataset_id,),
    )
    task_id, sent = tasks.request_task(requester, chain, c, request)
    console.print(f"task {task_id} requested in tx {sent.tx_hash} (block {sent.block_number})")

    # 3. The committee: elected on chain, re-checked in Python from the block's prevrandao.
    view = tasks.get_task(chain, c, task_id)
    recomputed = staking.recompute_committee(chain, c, task_id, sent.block_number)
    onchain = [int(i) for i in chain.call(c.tasks, "getCommitteeIndices", task_id)]
    assert recomputed == onchain, (recomputed, onchain)
    console.print(f"committee (node indices {onchain}) matches the Python election")

    # 4. Each member accepts, evaluates on ciphertext only, signs the hash of its result.
    epoch = int(chain.call(c.tasks, "getConfigEpoch"))
    domain = tasks.result_domain(chain, c)
    signed, result, compute_s = [], b"", 0.0
    for operator in view.committee:
        tx = members_tx[operator]
        tasks.accept_task(tx, c, task_id)
        t0 = time.perf_counter()
        result = evaluate(keys.public_context, blob, spec.formula, limits=spec.limits)
        compute_s += time.perf_counter() - t0
        key = bytes(devnet.dev_account(next(n.account for n in state.nodes if n.operator == operator)).key)
        signed.append(
            sign_result(key, domain, task_id, result_digest(result), public_output_hash(b""), epoch)
        )
    hashes = {s.digest for s in signed}
    console.print(f"{len(signed)} members evaluated; {len(hashes)} distinct signed digest(s)")
    fin = tasks.submit_result(requester, c, task_id, result_digest(result), b"", epoch, signed)
    view = tasks.get_task(chain, c, task_id)
    assert view.state is TaskState.FINALIZED
    console.print(f"task {task_id} {view.state.name} in tx {fin.tx_hash}")

    # 5. The owner decrypts; the result equals plaintext exactly (Paillier integers).
    total = decrypt(keys, result, spec)
    assert int(total) == sum(incomes)

    # 6. Rewards: pulled by each paid account.
    table = Table(title=f"task {task_id}: sum(income) over {ROWS} encrypted rows")
    table.add_column("who")
    table.add_column("withdrawn (DTM)", justify="right")
    payees = [(f"node {o[:10]}", members_tx[o]) for o in view.committee]
    payees += [("data owner", owner), ("treasury", requester)]
    for name, tx in payees:
        owed = int(chain.call(c.tasks, "getOwed", tx.address))
        amount = tasks.withdraw_rewards(tx, c)[0] if owed else 0
        table.add_row(name, f"{amount / TOKEN:.4f}")
    console.print(table)
    console.print(f"decrypted result: {int(total)} (plaintext sum {sum(incomes)}: equal)")
    console.print(f"encrypt {encrypt_s:.2f} s, evaluate {compute_s / len(signed):.2f} s per node")


if __name__ == "__main__":
    main()
