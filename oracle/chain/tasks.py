"""Task lifecycle on the TaskManager: request, accept, submit a signed result, refund,
slash no-shows and equivocation, withdraw rewards, and read a task with its history."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.types import BlockIdentifier, FilterParams

from .contracts import DatumContracts, DecodedEvent, ensure_allowance
from .rpc import Chain
from .signer import ResultDomain, SignedResult, sorted_by_signer
from .txmanager import Sent, TxManager

__all__ = [
    "TASK_KINDS",
    "TaskRequest",
    "TaskState",
    "TaskView",
    "accept_task",
    "get_task",
    "report_equivocation",
    "request_task",
    "result_domain",
    "slash_no_show",
    "submit_result",
    "refund",
    "task_history",
    "withdraw_rewards",
]

TASK_KINDS = {"he": 1, "psi": 2, "stats": 3, "train": 4, "predict": 5}


class TaskState(IntEnum):
    """`ITaskManager.TaskState`."""

    NONE = 0
    REQUESTED = 1
    ACTIVE = 2
    FINALIZED = 3
    REFUNDED = 4


@dataclass(frozen=True)
class TaskRequest:
    """`ITaskManager.TaskRequest`: what a requester asks for."""

    kind: int
    committee_size: int
    quorum: int
    deadline: int
    fee_wei: int
    spec_hash: bytes
    spec_uri: str
    dataset_ids: tuple[int, ...] = ()

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct in ABI field order."""
        return (
            self.kind,
            self.committee_size,
            self.quorum,
            self.deadline,
            self.fee_wei,
            self.spec_hash,
            self.spec_uri,
            list(self.dataset_ids),
        )


@dataclass(frozen=True)
class TaskView:
    """A task as stored, its committee, and (optionally) its on-chain history."""

    task_id: int
    requester: str
    state: TaskState
    kind: int
    committee_size: int
    quorum: int
    accepted_mask: int
    slashed_mask: int
    deadline: int
    accept_deadline: int
    fee_wei: int
    data_fee_wei: int
    spec_hash: bytes
    result_hash: bytes
    public_output_hash: bytes
    committee: tuple[str, ...]
    dataset_ids: tuple[int, ...]
    history: tuple[DecodedEvent, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (hex strings for bytes, state by name)."""
        return {
            "task_id": self.task_id,
            "requester": self.requester,
            "state": self.state.name.lower(),
            "kind": self.kind,
            "committee_size": self.committee_size,
            "quorum": self.quorum,
            "committee": [
                {
                    "slot": i,
                    "operator": op,
                    "accepted": bool(self.accepted_mask >> i & 1),
                    "slashed": bool(self.slashed_mask >> i & 1),
                }
                for i, op in enumerate(self.committee)
            ],
            "deadline": self.deadline,
            "accept_deadline": self.accept_deadline,
            "fee_wei": str(self.fee_wei),
            "data_fee_wei": str(self.data_fee_wei),
            "spec_hash": "0x" + self.spec_hash.hex(),
            "result_hash": "0x" + self.result_hash.hex(),
            "public_output_hash": "0x" + self.public_output_hash.hex(),
            "dataset_ids": list(self.dataset_ids),
            "transactions": [
                {"event": e.name, "tx_hash": e.tx_hash, "block": e.block_number} for e in self.history
            ],
        }


def result_domain(chain: Chain, c: DatumContracts) -> ResultDomain:
    """The EIP-712 domain of this deployment's TaskManager."""
    return ResultDomain(chain_id=chain.chain_id, verifying_contract=c.tasks.address)


def dataset_prices_wei(chain: Chain, c: DatumContracts, dataset_ids: Sequence[int]) -> int:
    """Sum of the current prices of `dataset_ids` (escrowed with the fee at request)."""
    return sum(int(chain.call(c.data, "getAsset", i)[1]) for i in dataset_ids)


def request_task(
    tx: TxManager, chain: Chain, c: DatumContracts, request: TaskRequest, requester: str | None = None
) -> tuple[int, Sent]:
    """Approve the escrow and request a task (for `requester` when given); returns its id."""
    escrow = request.fee_wei + dataset_prices_wei(chain, c, request.dataset_ids)
    ensure_allowance(tx, chain, c.token, c.tasks.address, escrow)
    if requester is None:
        sent = tx.send(c.tasks, "requestTask", request.as_tuple())
    else:
        sent = tx.send(c.tasks, "requestTaskFor", Web3.to_checksum_address(requester), request.as_tuple())
    (event,) = c.events_in(c.tasks, sent.receipt, "TaskRequested")
    return int(event.args["taskId"]), sent


def accept_task(tx: TxManager, c: DatumContracts, task_id: int) -> Sent:
    """Accept as a committee member (operator or signer key)."""
    return tx.send(c.tasks, "acceptTask", task_id)


def submit_result(
    tx: TxManager,
    c: DatumContracts,
    task_id: int,
    result_hash: bytes,
    public_output: bytes,
    config_epoch: int,
    signatures: Sequence[SignedResult],
) -> Sent:
    """Submit a result with member signatures (sorted here, ascending by signer)."""
    ordered = [s.signature for s in sorted_by_signer(signatures)]
    return tx.send(c.tasks, "submitResult", task_id, result_hash, public_output, config_epoch, ordered)


def refund(tx: TxManager, c: DatumContracts, task_id: int) -> Sent:
    """Credit an unfinished task's escrow back to its requester (after the deadline)."""
    return tx.send(c.tasks, "refund", task_id)


def slash_no_show(tx: TxManager, c: DatumContracts, task_id: int, slot: int) -> Sent:
    """Slash the member of `slot` who did not accept in time (after the accept window)."""
    return tx.send(c.tasks, "slashNoShow", task_id, slot)


def report_equivocation(
    tx: TxManager,
    c: DatumContracts,
    task_id: int,
    first: tuple[bytes, bytes, SignedResult],
    second: tuple[bytes, bytes, SignedResult],
    config_epoch: int,
) -> Sent:
    """Report one member's signatures over two different results: (resultHash, outputHash, sig) each."""
    (result_a, output_a, sig_a), (result_b, output_b, sig_b) = first, second
    return tx.send(
        c.tasks,
        "reportEquivocation",
        task_id,
        result_a,
        output_a,
        sig_a.signature,
        result_b,
        output_b,
        sig_b.signature,
        config_epoch,
    )


def withdraw_rewards(tx: TxManager, c: DatumContracts) -> tuple[int, Sent]:
    """Withdraw everything credited to `tx`'s account; returns the amount."""
    sent = tx.send(c.tasks, "withdraw")
    (event,) = c.events_in(c.tasks, sent.receipt, "Withdrawn")
    return int(event.args["amountWei"]), sent


def task_history(chain: Chain, c: DatumContracts, task_id: int) -> list[DecodedEvent]:
    """Every TaskManager event of `task_id` (those with the task id as first indexed topic)."""
    names = [
        "TaskRequested",
        "CommitteeElected",
        "TaskAccepted",
        "TaskStateChanged",
        "TaskFinalized",
        "TaskRefunded",
        "NoShowSlashed",
        "EquivocationSlashed",
    ]
    topic_id = task_id.to_bytes(32, "big")
    topics: list[Any] = [[HexBytes(c.topic_of(c.tasks, n)) for n in names], HexBytes(topic_id)]
    params: FilterParams = {
        "address": c.tasks.address,
        "fromBlock": c.deployment.deploy_block,
        "toBlock": "latest",
        "topics": topics,
    }
    logs = chain.rpc(lambda: chain.w3.eth.get_logs(params), "eth_getLogs")
    return c.decode_logs(c.tasks, logs)


def get_task(
    chain: Chain, c: DatumContracts, task_id: int, *, block: BlockIdentifier = "latest", history: bool = False
) -> TaskView:
    """Read a task (`TaskManager__UnknownTask` when it does not exist)."""
    t = chain.call(c.tasks, "getTask", task_id, block=block)
    committee = chain.call(c.tasks, "getCommittee", task_id, block=block)
    datasets = chain.call(c.tasks, "getTaskDatasets", task_id, block=block)
    return TaskView(
        task_id=task_id,
        requester=t[0],
        state=TaskState(t[1]),
        kind=t[2],
        committee_size=t[3],
        quorum=t[4],
        accepted_mask=t[5],
        slashed_mask=t[6],
        deadline=t[7],
        accept_deadline=t[8],
        fee_wei=t[9],
        data_fee_wei=t[10],
        spec_hash=bytes(t[11]),
        result_hash=bytes(t[12]),
        public_output_hash=bytes(t[13]),
        committee=tuple(committee),
        dataset_ids=tuple(datasets),
        history=tuple(task_history(chain, c, task_id)) if history else (),
    )
