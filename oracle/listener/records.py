"""What the listener reads and hands out: log filters, block references and log records.

Raw JSON-RPC shapes are TypedDicts; everything past the parsing edge is a frozen dataclass
with hashes as lowercase ``0x`` hex strings (they are identifiers: logged, stored, compared)
and payloads (topics, data) as bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NotRequired, TypedDict, cast

from eth_typing import BlockNumber, ChecksumAddress
from eth_utils.address import is_address, to_checksum_address
from hexbytes import HexBytes
from web3.types import LogReceipt

from .errors import ListenerRpcError

__all__ = [
    "BlockRef",
    "ChainLog",
    "LogFilter",
    "RawBlock",
    "RawLog",
    "RawLogQuery",
    "filters_fingerprint",
]

MAX_TOPIC_POSITIONS = 4


class RawLog(TypedDict):
    """One entry of an ``eth_getLogs`` answer (hex strings)."""

    address: str
    topics: list[str]
    data: str
    blockNumber: str
    blockHash: str
    transactionHash: str
    transactionIndex: str
    logIndex: str
    removed: NotRequired[bool]


class RawBlock(TypedDict):
    """The fields of an ``eth_getBlockByNumber`` answer the listener reads."""

    number: str
    hash: str
    parentHash: str


class RawLogQuery(TypedDict):
    """The parameter object of ``eth_getLogs``."""

    address: list[str]
    topics: list[list[str] | None]
    fromBlock: str
    toBlock: str


def _hash32(value: str | bytes, what: str) -> str:
    """A 32-byte value as lowercase ``0x`` hex; ValueError otherwise."""
    raw = bytes(HexBytes(value))
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return "0x" + raw.hex()


@dataclass(frozen=True)
class LogFilter:
    """Logs emitted by any of `addresses` whose topics match `topics` position by position.

    Each position of `topics` is None (anything) or a tuple of alternatives, as in
    ``eth_getLogs``: ``topics=((TASK_REQUESTED, TASK_FINALIZED),)`` follows two events.
    Values are normalised on construction (checksummed addresses, lowercase topics).
    """

    addresses: tuple[str, ...]
    topics: tuple[tuple[str, ...] | None, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.addresses, str):
            raise ValueError("addresses is a tuple of addresses, not one string")
        if not self.addresses:
            raise ValueError("a LogFilter needs at least one contract address")
        bad = [a for a in self.addresses if not is_address(a)]
        if bad:
            raise ValueError(f"not an address: {bad[0]!r}")
        if len(self.topics) > MAX_TOPIC_POSITIONS:
            raise ValueError(f"at most {MAX_TOPIC_POSITIONS} topic positions, got {len(self.topics)}")
        addresses = tuple(sorted({to_checksum_address(a) for a in self.addresses}))
        topics: list[tuple[str, ...] | None] = []
        for position, options in enumerate(self.topics):
            if options is None:
                topics.append(None)
                continue
            if isinstance(options, str | bytes) or not options:
                raise ValueError(f"topic position {position} must be None or a non-empty tuple")
            topics.append(tuple(sorted({_hash32(t, f"topic {position}") for t in options})))
        object.__setattr__(self, "addresses", addresses)
        object.__setattr__(self, "topics", tuple(topics))

    def query(self, from_block: int, to_block: int) -> RawLogQuery:
        """The ``eth_getLogs`` parameter for blocks `from_block`..`to_block` inclusive."""
        return {
            "address": [a.lower() for a in self.addresses],
            "topics": [list(t) if t is not None else None for t in self.topics],
            "fromBlock": hex(from_block),
            "toBlock": hex(to_block),
        }

    def canonical(self) -> str:
        """A stable text form, used to fingerprint a store's filter set."""
        return json.dumps([list(self.addresses), [list(t) if t else None for t in self.topics]])


@dataclass(frozen=True)
class BlockRef:
    """A block's place in the chain: number, hash and parent hash."""

    number: int
    hash: str
    parent_hash: str

    @classmethod
    def from_rpc(cls, raw: RawBlock) -> BlockRef:
        """Parse an ``eth_getBlockByNumber`` answer; ListenerRpcError when it is malformed."""
        try:
            return cls(
                number=int(raw["number"], 16),
                hash=_hash32(raw["hash"], "block hash"),
                parent_hash=_hash32(raw["parentHash"], "parent hash"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ListenerRpcError(f"malformed block in RPC answer: {exc}") from exc


@dataclass(frozen=True)
class ChainLog:
    """One log of a mined block, as handed to handlers and to the rollback hook."""

    address: str
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: str
    tx_hash: str
    tx_index: int
    log_index: int

    @property
    def key(self) -> tuple[str, int]:
        """The identity of the event: ``(tx_hash, log_index)``."""
        return (self.tx_hash, self.log_index)

    @property
    def position(self) -> tuple[int, int]:
        """Dispatch order: ``(block_number, log_index)``."""
        return (self.block_number, self.log_index)

    @classmethod
    def from_rpc(cls, raw: RawLog) -> ChainLog:
        """Parse one ``eth_getLogs`` entry; ListenerRpcError when it is malformed or pending."""
        try:
            return cls(
                address=to_checksum_address(raw["address"]),
                topics=tuple(bytes(HexBytes(t)) for t in raw["topics"]),
                data=bytes(HexBytes(raw["data"])),
                block_number=int(raw["blockNumber"], 16),
                block_hash=_hash32(raw["blockHash"], "block hash"),
                tx_hash=_hash32(raw["transactionHash"], "transaction hash"),
                tx_index=int(raw["transactionIndex"], 16),
                log_index=int(raw["logIndex"], 16),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ListenerRpcError(f"malformed log in RPC answer: {exc}") from exc

    def to_web3(self) -> LogReceipt:
        """The log in web3.py's shape, for ``contract.events.Name().process_log(...)``."""
        return {
            "address": cast(ChecksumAddress, self.address),
            "blockHash": HexBytes(self.block_hash),
            "blockNumber": BlockNumber(self.block_number),
            "data": HexBytes(self.data),
            "logIndex": self.log_index,
            "removed": False,
            "topics": [HexBytes(t) for t in self.topics],
            "transactionHash": HexBytes(self.tx_hash),
            "transactionIndex": self.tx_index,
        }


def filters_fingerprint(filters: Sequence[LogFilter]) -> str:
    """The filter set as one canonical string (order-insensitive)."""
    return json.dumps(sorted(f.canonical() for f in filters))
