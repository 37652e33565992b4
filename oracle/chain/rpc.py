"""JSON-RPC access: a Web3 over HTTP without hidden retries, bounded retries of transient
failures only, and view calls whose reverts come back as typed `ContractRevert`s."""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar

import requests
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError
from web3.providers.rpc import HTTPProvider
from web3.types import BlockIdentifier

from .errors import ChainError, ContractRevert, ErrorTable, RpcUnavailable

__all__ = [
    "Chain",
    "RawBlock",
    "RetryPolicy",
    "connect",
    "is_transient",
    "revert_data",
    "with_retry",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class RawBlock(TypedDict, total=False):
    """The fields of an ``eth_getBlockByNumber`` answer the chain layer reads (hex strings)."""

    number: str
    hash: str
    timestamp: str
    mixHash: str  # = prevrandao after the merge
    prevRandao: str
    baseFeePerGas: str


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for transient RPC failures."""

    attempts: int = 4
    base_delay_s: float = 0.2
    max_delay_s: float = 3.0

    def delay_s(self, attempt: int) -> float:
        """Delay before retry number `attempt` (1-based)."""
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)))


def is_transient(exc: BaseException) -> bool:
    """Timeouts, refused/reset connections and gateway 5xx/429: worth retrying. Never reverts."""
    if isinstance(exc, ContractLogicError | ContractRevert):
        return False
    if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return exc.response.status_code >= 500 or exc.response.status_code == 429
    return False


def with_retry(
    action: Callable[[], T],
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `action`, retrying transient failures up to `policy.attempts` times in all."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == policy.attempts:
                raise RpcUnavailable(f"{what}: RPC unavailable after {attempt} attempts ({exc})") from exc
            delay = policy.delay_s(attempt)
            log.warning(
                "%s: transient RPC failure (%s), retry %d in %.2f s", what, type(exc).__name__, attempt, delay
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def revert_data(exc: ContractLogicError) -> bytes:
    """The raw revert data carried by web3's exception (empty when the node gave none)."""
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return b""
    return b""


def connect(rpc_url: str, timeout_s: float = 10.0) -> Web3:
    """A Web3 over HTTP; retries are left to `Chain` (transient errors only, bounded)."""
    provider = HTTPProvider(
        rpc_url, request_kwargs={"timeout": timeout_s}, exception_retry_configuration=None
    )
    return Web3(provider)


class Chain:
    """One RPC endpoint plus the error table used to decode reverts."""

    def __init__(self, w3: Web3, errors: ErrorTable, retry: RetryPolicy | None = None) -> None:
        self.w3 = w3
        self.errors = errors
        self.retry = retry or RetryPolicy()
        self._chain_id: int | None = None

    def rpc(self, action: Callable[[], T], what: str) -> T:
        """Run one RPC action with the retry policy."""
        return with_retry(action, what, self.retry)

    @property
    def chain_id(self) -> int:
        """The chain id (asked once)."""
        if self._chain_id is None:
            self._chain_id = int(self.rpc(lambda: self.w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def block_number(self) -> int:
        """The latest block number."""
        return int(self.rpc(lambda: self.w3.eth.block_number, "eth_blockNumber"))

    def raw_block(self, number: int | str) -> RawBlock:
        """A block header as the node sends it (hex fields), for fields web3 does not expose."""
        tag = hex(number) if isinstance(number, int) else number

        def fetch() -> RawBlock:
            response = self.w3.provider.make_request("eth_getBlockByNumber", [tag, False])  # type: ignore[arg-type]
            result = response.get("result")
            if not isinstance(result, dict):
                raise ChainError(f"block {tag} not available: {response.get('error')}")
            return RawBlock(**{k: v for k, v in result.items() if k in RawBlock.__annotations__})  # type: ignore[typeddict-item]

        return self.rpc(fetch, "eth_getBlockByNumber")

    def prevrandao(self, number: int) -> bytes:
        """``block.prevrandao`` of block `number` (the header's mixHash)."""
        block = self.raw_block(number)
        value = block.get("prevRandao") or block.get("mixHash")
        if value is None:
            raise ChainError(f"block {number} has no mixHash/prevRandao")
        return bytes.fromhex(value[2:])

    def call(self, contract: Contract, fn_name: str, *args: Any, block: BlockIdentifier = "latest") -> Any:
        """A view call; a revert raises the decoded `ContractRevert` subclass."""
        fn = contract.get_function_by_name(fn_name)(*args)

        def run() -> Any:
            try:
                return fn.call(block_identifier=block)
            except ContractLogicError as exc:
                raise self.errors.decode(revert_data(exc)) from None

        return self.rpc(run, f"{fn_name}()")

    def send_rpc(self, method: str, params: list[Any]) -> Any:
        """A raw JSON-RPC call (e.g. ``evm_increaseTime``); an error answer raises `ChainError`."""

        def run() -> Any:
            response = self.w3.provider.make_request(method, params)  # type: ignore[arg-type]
            if "error" in response:
                raise ChainError(f"{method} failed: {response['error']}")
            return response.get("result")

        return self.rpc(run, method)
