"""Bindings of one deployment: web3 contract objects built from the artifacts' ABIs, event
decoding, and token allowances."""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_typing import ABIEvent, ChecksumAddress
from eth_utils.abi import event_abi_to_log_topic
from web3 import Web3
from web3.contract import Contract
from web3.types import LogReceipt, TxReceipt

from .artifacts import ArtifactStore
from .deploy import Deployment
from .rpc import Chain
from .txmanager import Sent, TxManager

__all__ = ["DatumContracts", "DecodedEvent", "ensure_allowance"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodedEvent:
    """One decoded log: event name, arguments and where it was emitted."""

    name: str
    args: dict[str, Any]
    tx_hash: str
    block_number: int
    log_index: int


class DatumContracts:
    """The contracts of one deployment, bound to one Web3."""

    def __init__(self, w3: Web3, deployment: Deployment, store: ArtifactStore) -> None:
        self.w3 = w3
        self.deployment = deployment
        c = deployment.contracts

        def bind(address: str, name: str) -> Contract:
            return w3.eth.contract(address=Web3.to_checksum_address(address), abi=store.load(name).abi)

        self.token = bind(c.token, "DatumToken")
        self.nodes = bind(c.node_registry, "NodeRegistry")
        self.data = bind(c.data_registry, "DataRegistry")
        self.tasks = bind(c.task_manager, "TaskManager")
        self.oracle = bind(c.data_oracle, "DataOracle")
        self.lender = bind(c.credit_score_lender, "CreditScoreLender") if c.credit_score_lender else None

    @staticmethod
    def decode_logs(contract: Contract, logs: Sequence[LogReceipt]) -> list[DecodedEvent]:
        """Decode the logs `contract` emitted (others are skipped), in log order."""
        events = [cast(ABIEvent, item) for item in contract.abi if item.get("type") == "event"]
        by_topic = {event_abi_to_log_topic(event): event["name"] for event in events}
        decoded = []
        for entry in logs:
            if entry["address"] != contract.address or not entry["topics"]:
                continue
            name = by_topic.get(bytes(entry["topics"][0]))
            if name is None:
                continue
            data = contract.events[name]().process_log(entry)
            decoded.append(
                DecodedEvent(
                    name=name,
                    args=dict(data["args"]),
                    tx_hash="0x" + bytes(entry["transactionHash"]).hex(),
                    block_number=int(entry["blockNumber"]),
                    log_index=int(entry["logIndex"]),
                )
            )
        return decoded

    def events_in(self, contract: Contract, receipt: TxReceipt, name: str) -> list[DecodedEvent]:
        """The `name` events `contract` emitted in one transaction."""
        return [e for e in self.decode_logs(contract, receipt["logs"]) if e.name == name]

    def topic_of(self, contract: Contract, name: str) -> bytes:
        """topic0 of event `name`."""
        item = next(i for i in contract.abi if i.get("type") == "event" and i.get("name") == name)
        return bytes(event_abi_to_log_topic(cast(ABIEvent, item)))


def ensure_allowance(
    tx: TxManager, chain: Chain, token: Contract, spender: str, amount_wei: int
) -> Sent | None:
    """Approve `spender` for `amount_wei` unless the allowance already covers it."""
    owner: ChecksumAddress = tx.address
    current = int(chain.call(token, "allowance", owner, Web3.to_checksum_address(spender)))
    if current >= amount_wei:
        return None
    log.info("approving %s for %d wei from %s", spender, amount_wei, owner)
    return tx.send(token, "approve", Web3.to_checksum_address(spender), amount_wei)
