"""The DataOracle from Python: request an answer (as the consumer), fulfil a request with the
committee's signed result, deliver an answer already finalized, and read a request with what
its callback did.

The oracle opens a TaskManager task with the consumer as its requester; `fulfill` submits the
quorum-signed result and calls the consumer back in one transaction. Reverts come back as the
typed `ContractRevert` subclasses of `oracle.chain.errors` (``DataOracle__AlreadyDelivered``...).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.types import FilterParams

from .contracts import DatumContracts, DecodedEvent, ensure_allowance
from .rpc import Chain
from .signer import SignedResult, sorted_by_signer
from .tasks import TaskRequest, dataset_prices_wei
from .txmanager import Sent, TxManager

__all__ = [
    "OracleFulfilment",
    "OracleRequest",
    "deliver",
    "fulfill",
    "fulfilment_of",
    "get_request",
    "request",
    "request_count",
    "request_id_of_task",
]


@dataclass(frozen=True)
class OracleRequest:
    """`IDataOracle.Request` and its id."""

    request_id: int
    consumer: str
    callback_gas_limit: int
    delivered: bool
    callback_succeeded: bool
    task_id: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "request_id": self.request_id,
            "consumer": self.consumer,
            "callback_gas_limit": self.callback_gas_limit,
            "delivered": self.delivered,
            "callback_succeeded": self.callback_succeeded,
            "task_id": self.task_id,
        }


@dataclass(frozen=True)
class OracleFulfilment:
    """The `OracleFulfilled` event of a request: what the consumer was called with."""

    request_id: int
    task_id: int
    callback_succeeded: bool
    public_output: bytes
    tx_hash: str
    block_number: int


def request(
    tx: TxManager,
    chain: Chain,
    c: DatumContracts,
    task: TaskRequest,
    callback_gas_limit: int,
) -> tuple[int, int, Sent]:
    """Ask as `tx`'s account (the consumer): approve fee + prices, call ``request``.

    Returns (request id, task id, the transaction). A contract consumer normally calls the
    oracle itself; this is for accounts and scripts.
    """
    escrow = task.fee_wei + dataset_prices_wei(chain, c, task.dataset_ids)
    ensure_allowance(tx, chain, c.token, c.oracle.address, escrow)
    sent = tx.send(
        c.oracle,
        "request",
        task.kind,
        task.spec_hash,
        task.spec_uri,
        list(task.dataset_ids),
        task.fee_wei,
        task.deadline,
        task.committee_size,
        task.quorum,
        callback_gas_limit,
    )
    (event,) = c.events_in(c.oracle, sent.receipt, "OracleRequested")
    return int(event.args["requestId"]), int(event.args["taskId"]), sent


def fulfill(
    tx: TxManager,
    c: DatumContracts,
    request_id: int,
    result_hash: bytes,
    public_output: bytes,
    config_epoch: int,
    signatures: Sequence[SignedResult],
) -> Sent:
    """Submit the signed result (signatures sorted here) and call the consumer back."""
    ordered = [s.signature for s in sorted_by_signer(signatures)]
    return tx.send(c.oracle, "fulfill", request_id, result_hash, public_output, config_epoch, ordered)


def deliver(tx: TxManager, c: DatumContracts, request_id: int, public_output: bytes) -> Sent:
    """Call the consumer back with the output of a task finalized through the TaskManager."""
    return tx.send(c.oracle, "deliver", request_id, public_output)


def get_request(chain: Chain, c: DatumContracts, request_id: int) -> OracleRequest:
    """The request record (``DataOracle__UnknownRequest`` when there is none)."""
    consumer, gas_limit, delivered, succeeded, task_id = chain.call(c.oracle, "getRequest", request_id)
    return OracleRequest(
        request_id=request_id,
        consumer=Web3.to_checksum_address(consumer),
        callback_gas_limit=int(gas_limit),
        delivered=bool(delivered),
        callback_succeeded=bool(succeeded),
        task_id=int(task_id),
    )


def request_id_of_task(chain: Chain, c: DatumContracts, task_id: int) -> int:
    """The oracle request that opened `task_id` (0: the task was not opened by the oracle)."""
    return int(chain.call(c.oracle, "getRequestIdOfTask", task_id))


def request_count(chain: Chain, c: DatumContracts) -> int:
    """Number of requests so far (ids are 1..count)."""
    return int(chain.call(c.oracle, "getRequestCount"))


def fulfilment_of(chain: Chain, c: DatumContracts, request_id: int) -> OracleFulfilment | None:
    """The `OracleFulfilled` event of `request_id`, None while it is not delivered."""
    params: FilterParams = {
        "address": c.oracle.address,
        "fromBlock": c.deployment.deploy_block,
        "toBlock": "latest",
        "topics": [
            HexBytes(c.topic_of(c.oracle, "OracleFulfilled")),
            HexBytes(request_id.to_bytes(32, "big")),
        ],
    }
    logs = chain.rpc(lambda: chain.w3.eth.get_logs(params), "eth_getLogs")
    events: list[DecodedEvent] = c.decode_logs(c.oracle, logs)
    if not events:
        return None
    e = events[-1]
    return OracleFulfilment(
        request_id=request_id,
        task_id=int(e.args["taskId"]),
        callback_succeeded=bool(e.args["callbackSucceeded"]),
        public_output=bytes(e.args["publicOutput"]),
        tx_hash=e.tx_hash,
        block_number=e.block_number,
    )
