"""The provider's prepared label tables for labeled PSI, kept under the node's data dir.

A labeled query needs the provider's side prepared: for DH-OPRF an encrypted label table
under the dataset's OPRF key, for HE the bucket polynomials. Preparing costs ~80 µs per row
(DH), so a node prepares once per (dataset file, label columns, label size, key rules, key
epoch) and reuses the result for every later query::

    <data_dir>/psi/labels/<dataset id>/oprf-key.json          the dataset's OPRF key and epoch
    <data_dir>/psi/labels/<dataset id>/dh-<cache id>.table    LabelTable.to_bytes()
    <data_dir>/psi/labels/<dataset id>/he-<cache id>.npz      HE polynomials (no pickle)

(files 0600, directories 0700). The cache id hashes everything the table depends on,
including the data file's sha256 and the key's id, so a changed file or a rotated key never
reuses a stale table. Rotation (`rotate_key`, or ``python -m oracle.node.psi_labels rotate
--data-dir DIR --dataset ID`` while the node runs or not) writes a fresh key with the next
epoch and deletes the dataset's tables; the next query prepares again. A requester that
cached the old DH table gets the new one with its next answer (its key id is stale).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compute.errors import SpecError
from compute.psi import DhProvider, HeParams, LabelTable, OprfKey, PartyData, Table, prepare_labeled
from compute.psi.he_psi import HeSenderTable

from .psi_spec import PsiTaskSpec

__all__ = ["LabelTables", "Prepared", "rotate_key"]

log = logging.getLogger(__name__)

LABELS_DIR = ("psi", "labels")
KEY_FILE = "oprf-key.json"


@dataclass(frozen=True)
class Prepared:
    """A provider side ready to answer labeled queries, and whether it was built just now."""

    provider: DhProvider | HeSenderTable
    epoch: int
    built: bool


def _folder(data_dir: Path, dataset_id: int) -> Path:
    return data_dir.joinpath(*LABELS_DIR, str(dataset_id))


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` (0600) atomically."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _load_key(folder: Path) -> tuple[OprfKey, int] | None:
    try:
        record = json.loads((folder / KEY_FILE).read_text())
        return OprfKey(bytes.fromhex(str(record["scalar"]))), int(record["epoch"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"the OPRF key file of {folder.name} is unreadable: {type(exc).__name__}") from None


def _new_key(folder: Path, epoch: int) -> tuple[OprfKey, int]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = OprfKey.generate()
    record = {"epoch": epoch, "key_id": key.key_id.hex(), "scalar": key.scalar.hex()}
    _write_private(folder / KEY_FILE, json.dumps(record, indent=2).encode() + b"\n")
    return key, epoch


def rotate_key(data_dir: Path, dataset_id: int) -> int:
    """A fresh OPRF key for the dataset with the next epoch; its prepared tables are deleted.
    Returns the new epoch."""
    folder = _folder(data_dir, dataset_id)
    current = _load_key(folder) if folder.is_dir() else None
    _, epoch = _new_key(folder, (current[1] + 1) if current else 1)
    for path in folder.iterdir():
        if path.suffix in (".table", ".npz"):
            path.unlink(missing_ok=True)
    return epoch


class LabelTables:
    """One node's prepared label tables; `prepared` builds or loads (thread-safe, blocking)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.built = 0  # preparations since the node started
        self.reused = 0  # queries served from a stored table
        self._lock = threading.Lock()

    def prepared(self, spec: PsiTaskSpec, table: Table, key_column: str, content_commitment: str) -> Prepared:
        """The provider side for `spec` over the dataset (`content_commitment`: the verified
        on-chain commitment to its file): stored if current, else built and stored.
        `SpecError` when a label does not fit the spec's `label_bytes`."""
        labeled = spec.labeled_spec()
        folder = _folder(self.data_dir, spec.dataset_id)
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if labeled.he is None:
                key, epoch = _load_key(folder) or _new_key(folder, 1)
                key_part = key.key_id.hex()
            else:
                key, epoch, key_part = None, 0, json.dumps(asdict(labeled.he), default=str, sort_keys=True)
            cache_id = hashlib.sha256(
                json.dumps(
                    [
                        labeled.algorithm.value,
                        content_commitment,
                        key_column,
                        list(labeled.label_columns),
                        labeled.label_bytes,
                        [spec.case, spec.empty, spec.duplicates],
                        key_part,
                    ]
                ).encode()
            ).hexdigest()[:32]
            path = folder / (f"dh-{cache_id}.table" if key is not None else f"he-{cache_id}.npz")
            stored = _load(path, key, labeled.label_columns, labeled.label_bytes, labeled.he)
            if stored is not None:
                self.reused += 1
                return Prepared(stored, epoch, built=False)
            provider = prepare_labeled(labeled, PartyData(table, (key_column,)), key)
            _write_private(path, _dump(provider))
            self.built += 1
            return Prepared(provider, epoch, built=True)


def _dump(provider: DhProvider | HeSenderTable) -> bytes:
    if isinstance(provider, DhProvider):
        return provider.table.to_bytes()
    buffer = io.BytesIO()
    np.savez(
        buffer,
        match=provider.match_coeffs,
        value=provider.value_coeffs,
        size=np.array([provider.size], dtype=np.int64),
    )
    return buffer.getvalue()


def _load(
    path: Path, key: OprfKey | None, columns: tuple[str, ...], label_bytes: int, he: HeParams | None
) -> DhProvider | HeSenderTable | None:
    if not path.is_file():
        return None
    try:
        if key is not None:
            table = LabelTable.from_bytes(path.read_bytes())
            if (table.key_id, table.label_columns, table.label_bytes) != (key.key_id, columns, label_bytes):
                return None
            return DhProvider(key, table)
        with np.load(path, allow_pickle=False) as stored:
            match, value, size = stored["match"], stored["value"], int(stored["size"][0])
        assert isinstance(he, HeParams)
        return HeSenderTable(he, columns, label_bytes, size, match, value)
    except Exception as exc:  # a damaged file is rebuilt, not trusted
        log.warning("prepared table %s unreadable (%s): rebuilding it", path.name, type(exc).__name__)
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m oracle.node.psi_labels rotate --data-dir DIR --dataset ID``."""
    parser = argparse.ArgumentParser(prog="python -m oracle.node.psi_labels")
    sub = parser.add_subparsers(dest="command", required=True)
    rotate = sub.add_parser("rotate", help="new OPRF key (next epoch) for a dataset; drops its tables")
    rotate.add_argument("--data-dir", type=Path, required=True, help="the node's data dir")
    rotate.add_argument("--dataset", type=int, required=True, help="the dataset id")
    args = parser.parse_args(argv)
    epoch = rotate_key(args.data_dir, args.dataset)
    print(json.dumps({"dataset_id": args.dataset, "epoch": epoch}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
