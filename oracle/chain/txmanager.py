"""Sending transactions from one local key: own nonces, EIP-1559 fees, gas with a margin,
bounded retries of transient RPC failures, and typed errors for every revert.

A revert is never retried. It is caught at gas estimation (the usual case) and decoded
from its revert data; a transaction mined with status 0 is re-simulated with ``eth_call``
to recover the data.
"""

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from eth_abi.abi import encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import Nonce, TxParams, TxReceipt

from .artifacts import Artifact
from .errors import ContractRevert, TransactionFailed, canonical_type
from .rpc import Chain, revert_data

__all__ = ["NonceTracker", "Sent", "TxManager", "encode_constructor"]

log = logging.getLogger(__name__)


class NonceTracker:
    """Next nonce per account, fetched once from the chain and then counted locally.

    One lock per account is held from nonce reservation until the signed transaction is
    accepted by the node, so threads of one process never reuse or skip a nonce.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._next: dict[str, int] = {}

    def lock(self, address: str) -> threading.Lock:
        """The lock of `address`."""
        with self._guard:
            return self._locks.setdefault(address, threading.Lock())

    def peek(self, address: str) -> int | None:
        """The next nonce, if known (call with the account's lock held)."""
        return self._next.get(address)

    def set(self, address: str, nonce: int) -> None:
        """Record the next nonce (call with the account's lock held)."""
        self._next[address] = nonce

    def forget(self, address: str) -> None:
        """Drop the local count; the next reservation asks the chain again."""
        self._next.pop(address, None)

    def clear(self) -> None:
        """Forget every account's count (after a chain snapshot was reverted)."""
        with self._guard:
            self._next.clear()


@dataclass(frozen=True)
class Sent:
    """A mined, successful transaction."""

    tx_hash: str
    receipt: TxReceipt

    @property
    def block_number(self) -> int:
        """Block that included it."""
        return int(self.receipt["blockNumber"])

    @property
    def gas_used(self) -> int:
        """Gas it used."""
        return int(self.receipt["gasUsed"])


def encode_constructor(artifact: Artifact, args: Sequence[Any]) -> str:
    """Creation code of `artifact` followed by its ABI-encoded constructor arguments."""
    if not artifact.deployable:
        raise TransactionFailed(f"{artifact.name} has no creation code (an interface or abstract contract)")
    ctor = next((item for item in artifact.abi if item.get("type") == "constructor"), None)
    types = [canonical_type(p) for p in ctor.get("inputs", [])] if ctor else []
    if len(types) != len(args):
        raise TransactionFailed(f"{artifact.name} constructor takes {len(types)} arguments, got {len(args)}")
    return artifact.bytecode + encode(types, list(args)).hex()


class TxManager:
    """Signs and sends transactions for one account over a `Chain`."""

    def __init__(
        self,
        chain: Chain,
        account: LocalAccount,
        *,
        nonces: NonceTracker | None = None,
        gas_margin_bps: int = 2_000,
        priority_fee_wei: int | None = None,
        receipt_timeout_s: float = 120.0,
        poll_interval_s: float = 0.05,
    ) -> None:
        self.chain = chain
        self.account = account
        self.nonces = nonces or NonceTracker()
        self.gas_margin_bps = gas_margin_bps
        self.priority_fee_wei = priority_fee_wei
        self.receipt_timeout_s = receipt_timeout_s
        self.poll_interval_s = poll_interval_s

    @property
    def address(self) -> ChecksumAddress:
        """The sending account."""
        return self.account.address

    @property
    def w3(self) -> Web3:
        """The underlying Web3."""
        return self.chain.w3

    # -- public API -------------------------------------------------------------------------

    def send(
        self, contract: Contract, fn_name: str, *args: Any, value: int = 0, gas: int | None = None
    ) -> Sent:
        """Call `fn_name(*args)` on `contract` in a transaction and wait for it to be mined."""
        data = contract.encode_abi(fn_name, args=list(args))
        return self.transact(contract.address, data, value=value, gas=gas, label=fn_name)

    def deploy(self, artifact: Artifact, *args: Any) -> tuple[ChecksumAddress, Sent]:
        """Deploy `artifact` with constructor `args`; returns its address and the transaction."""
        sent = self.transact(None, encode_constructor(artifact, args), label=f"deploy {artifact.name}")
        address = sent.receipt["contractAddress"]
        if address is None:
            raise TransactionFailed(f"deploying {artifact.name} created no contract (tx {sent.tx_hash})")
        log.info("deployed %s at %s (tx %s)", artifact.name, address, sent.tx_hash)
        return Web3.to_checksum_address(address), sent

    def transact(
        self, to: str | None, data: str, *, value: int = 0, gas: int | None = None, label: str = "tx"
    ) -> Sent:
        """Estimate, sign, send and wait; raise the decoded revert if it fails."""
        params: TxParams = {"from": self.address, "data": HexBytes(data), "value": Web3.to_wei(value, "wei")}
        if to is not None:
            params["to"] = Web3.to_checksum_address(to)
        if gas is None:
            gas = self._estimate_gas(params, label)
        params["gas"] = gas
        params.update(self._fees())
        params["chainId"] = self.chain.chain_id
        tx_hash = self._sign_and_send(params, label)
        receipt = self._wait(tx_hash, label)
        if receipt["status"] != 1:
            raise self._explain_failure(params, receipt, tx_hash, label)
        return Sent(tx_hash=tx_hash, receipt=receipt)

    # -- steps --------------------------------------------------------------------------------

    def _estimate_gas(self, params: TxParams, label: str) -> int:
        def run() -> int:
            try:
                return int(self.w3.eth.estimate_gas(params))
            except ContractLogicError as exc:
                raise self._decode(exc) from None

        estimate = self.chain.rpc(run, f"estimate gas of {label}")
        return estimate * (10_000 + self.gas_margin_bps) // 10_000

    def _fees(self) -> TxParams:
        block = self.chain.rpc(lambda: self.w3.eth.get_block("latest"), "eth_getBlockByNumber")
        base_fee = int(block.get("baseFeePerGas", 0))
        tip = self.priority_fee_wei
        if tip is None:
            tip = int(self.chain.rpc(lambda: self.w3.eth.max_priority_fee, "eth_maxPriorityFeePerGas"))
        return {
            "maxFeePerGas": Web3.to_wei(2 * base_fee + tip, "wei"),
            "maxPriorityFeePerGas": Web3.to_wei(tip, "wei"),
        }

    def _sign_and_send(self, params: TxParams, label: str) -> str:
        address = self.address
        with self.nonces.lock(address):
            nonce = self.nonces.peek(address)
            if nonce is None:
                nonce = self._chain_nonce()
            for _ in range(2):  # one re-sync when the node says our count is stale
                params["nonce"] = Nonce(nonce)
                signed = self.account.sign_transaction(params)  # type: ignore[arg-type]
                tx_hash = "0x" + signed.hash.hex().removeprefix("0x")
                raw = signed.raw_transaction
                try:
                    self.chain.rpc(partial(self.w3.eth.send_raw_transaction, raw), f"send {label}")
                except Web3RPCError as exc:
                    message = str(exc).lower()
                    if "already known" in message or "already imported" in message:
                        pass  # an earlier attempt reached the node before the connection dropped
                    elif "nonce too low" in message or "nonce too high" in message:
                        nonce = self._chain_nonce()
                        continue
                    else:
                        self.nonces.forget(address)
                        raise TransactionFailed(f"{label}: node rejected the transaction: {exc}") from exc
                except Exception:
                    self.nonces.forget(address)
                    raise
                self.nonces.set(address, nonce + 1)
                log.info("sent %s from %s nonce %d: %s", label, address, nonce, tx_hash)
                return tx_hash
            self.nonces.forget(address)
            raise TransactionFailed(
                f"{label}: nonce of {address} keeps changing; another sender uses this key"
            )

    def _chain_nonce(self) -> int:
        address = self.address
        return int(
            self.chain.rpc(
                lambda: self.w3.eth.get_transaction_count(address, "pending"), "eth_getTransactionCount"
            )
        )

    def _wait(self, tx_hash: str, label: str) -> TxReceipt:
        deadline = time.monotonic() + self.receipt_timeout_s

        def fetch() -> TxReceipt | None:
            try:
                return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None

        while True:
            receipt = self.chain.rpc(fetch, "eth_getTransactionReceipt")
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise TransactionFailed(f"{label}: {tx_hash} not mined within {self.receipt_timeout_s:.0f} s")
            time.sleep(self.poll_interval_s)

    def _explain_failure(self, params: TxParams, receipt: TxReceipt, tx_hash: str, label: str) -> Exception:
        """Re-run a failed transaction with eth_call on the parent block to get its revert data."""
        block = int(receipt["blockNumber"])
        call: TxParams = {k: v for k, v in params.items() if k in ("from", "to", "data", "value", "gas")}  # type: ignore[assignment]
        try:
            self.chain.rpc(lambda: self.w3.eth.call(call, block_identifier=max(block - 1, 0)), "eth_call")
        except ContractLogicError as exc:
            revert = self._decode(exc)
            log.info("%s reverted in block %d: %s (tx %s)", label, block, revert, tx_hash)
            return revert
        except Web3RPCError as exc:  # e.g. out of gas: the node gives a message, no revert data
            return TransactionFailed(f"{label}: {tx_hash} failed in block {block}: {exc}")
        if int(receipt["gasUsed"]) >= int(params.get("gas", 0)):
            return TransactionFailed(f"{label}: {tx_hash} ran out of gas ({receipt['gasUsed']})")
        return TransactionFailed(f"{label}: {tx_hash} failed in block {block} (no revert data)")

    def _decode(self, exc: ContractLogicError) -> ContractRevert:
        return self.chain.errors.decode(revert_data(exc))
