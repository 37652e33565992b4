"""Registering datasets on the DataRegistry: only metadata, a hiding commitment to the
content and a row count go on chain; the data stays with its owner.

The metadata document (columns, key column, row count, content commitment) is canonical
JSON; its keccak256 is the on-chain ``metadataHash``. The commitment is
``keccak256(salt || sha256(file))`` with a random 32-byte salt the owner keeps, so a
guessable file cannot be confirmed from the chain.
"""

import csv
import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from compute.errors import SpecError

from .contracts import DatumContracts
from .rpc import Chain
from .tasks import TASK_KINDS
from .txmanager import Sent, TxManager

__all__ = [
    "UNLIMITED_USES",
    "ConsentPolicy",
    "DatasetMetadata",
    "describe_csv",
    "get_asset",
    "kinds_mask",
    "register_dataset",
]

UNLIMITED_USES = 2**32 - 1
METADATA_SCHEMA = "datum.dataset.v1"


def kinds_mask(kinds: Iterable[str]) -> int:
    """Bit mask of task kinds by name (``psi`` -> bit 2); `SpecError` for an unknown name."""
    mask = 0
    for name in kinds:
        key = name.strip().lower()
        if key not in TASK_KINDS:
            raise SpecError(f"unknown task kind {name!r}; known: {', '.join(TASK_KINDS)}")
        mask |= 1 << TASK_KINDS[key]
    return mask


@dataclass(frozen=True)
class ConsentPolicy:
    """`IDataRegistry.ConsentPolicy`. Every field is explicit: consent has no silent default."""

    allowed_kinds: int
    open: bool
    expires_at: int
    remaining_uses: int
    min_group_size: int

    def as_tuple(self) -> tuple[int, bool, int, int, int]:
        """The struct in ABI field order."""
        return (self.allowed_kinds, self.open, self.expires_at, self.remaining_uses, self.min_group_size)

    def allowed_kind_names(self) -> list[str]:
        """The allowed kinds by name."""
        return [name for name, bit in TASK_KINDS.items() if self.allowed_kinds >> bit & 1]


@dataclass(frozen=True)
class DatasetMetadata:
    """What is published about a dataset (hashed on chain), and the salt kept private."""

    name: str
    columns: tuple[str, ...]
    key: str
    rows: int
    content_commitment: bytes
    salt: bytes

    def document(self) -> dict[str, Any]:
        """The public metadata document (no salt)."""
        return {
            "schema": METADATA_SCHEMA,
            "name": self.name,
            "columns": list(self.columns),
            "key": self.key,
            "rows": self.rows,
            "content_commitment": "0x" + self.content_commitment.hex(),
        }

    def canonical_json(self) -> bytes:
        """The document as canonical JSON (sorted keys, no whitespace)."""
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def metadata_hash(self) -> bytes:
        """keccak256 of the canonical document: the on-chain ``metadataHash``."""
        return keccak(self.canonical_json())


def describe_csv(path: Path, key: str, rows: int | None = None, salt: bytes | None = None) -> DatasetMetadata:
    """Read a CSV's header and count its rows; `SpecError` if the key column is missing.

    `rows`, when given, must match the count (it guards against registering the wrong file).
    """
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            counted = sum(1 for row in reader if row)
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SpecError(f"{path} is not a readable CSV file: {exc}") from exc
    if not header:
        raise SpecError(f"{path} has no header row")
    columns = tuple(h.strip() for h in header)
    if key not in columns:
        raise SpecError(f"key column {key!r} not in {path.name} (columns: {', '.join(columns)})")
    if rows is not None and rows != counted:
        raise SpecError(f"--rows {rows} does not match the {counted} data rows of {path.name}")
    digest = hashlib.sha256(path.read_bytes()).digest()
    salt = salt if salt is not None else secrets.token_bytes(32)
    return DatasetMetadata(
        name=path.name,
        columns=columns,
        key=key,
        rows=counted,
        content_commitment=keccak(salt + digest),
        salt=salt,
    )


def register_dataset(
    tx: TxManager,
    c: DatumContracts,
    *,
    metadata_uri: str,
    metadata_hash: bytes,
    rows: int,
    price_wei: int,
    policy: ConsentPolicy,
) -> tuple[int, Sent]:
    """Register a dataset owned by `tx`'s account; returns its id."""
    sent = tx.send(c.data, "registerDataset", metadata_uri, metadata_hash, rows, price_wei, policy.as_tuple())
    (event,) = c.events_in(c.data, sent.receipt, "DatasetRegistered")
    return int(event.args["id"]), sent


def get_asset(chain: Chain, c: DatumContracts, dataset_id: int) -> dict[str, Any]:
    """The asset record as a JSON-ready dict (`DataRegistry__UnknownAsset` when absent)."""
    owner, price, is_model, revoked, rows, metadata_hash, policy, uri = chain.call(
        c.data, "getAsset", dataset_id
    )
    p = ConsentPolicy(*policy)
    return {
        "dataset_id": dataset_id,
        "owner": owner,
        "price_wei": str(price),
        "is_model": is_model,
        "revoked": revoked,
        "rows": rows,
        "metadata_hash": "0x" + bytes(metadata_hash).hex(),
        "metadata_uri": uri,
        "policy": {
            "allowed_kinds": p.allowed_kind_names(),
            "open": p.open,
            "expires_at": p.expires_at,
            "remaining_uses": p.remaining_uses,
            "min_group_size": p.min_group_size,
        },
    }
