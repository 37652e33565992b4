"""Write-once blob storage under the node's data dir: uploads stream to a temporary file,
hashed on the way, and are renamed into place only once verified and accepted.

Layout: ``<root>/<task_id>/data/<name>`` (the bytes), ``<root>/<task_id>/meta/<name>.json``
(sha256, size, uploader; written last, removed first, so a blob is visible exactly when its
metadata exists) and ``<root>/<task_id>/tmp`` (a folder for uploads in progress).
"""

import asyncio
import hashlib
import json
import os
import re
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import BadRequest, Conflict, PayloadTooLarge

__all__ = ["BLOB_NAME", "BlobStore", "StoredBlob", "check_blob_name"]

BLOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_blob_name(name: str) -> str:
    """`name` when it is a valid blob name; `BadRequest` otherwise."""
    if not BLOB_NAME.fullmatch(name):
        raise BadRequest(
            f"invalid blob name {name[:40]!r}: use 1-128 of [A-Za-z0-9._-], starting alphanumeric",
            code="bad_blob_name",
        )
    return name


@dataclass(frozen=True)
class StoredBlob:
    """A blob held by this node."""

    task_id: int
    name: str
    path: Path
    sha256: str
    size_bytes: int
    uploader: str

    def receipt(self) -> dict[str, object]:
        """The JSON answer to an upload."""
        return {
            "task_id": str(self.task_id),
            "name": self.name,
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
        }


def _write_all(out: BinaryIO, chunks: list[bytes]) -> None:
    for chunk in chunks:
        out.write(chunk)


def _finish(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


class BlobStore:
    """Blobs of every task, write-once per (task, name)."""

    def __init__(self, root: Path, *, write_batch_bytes: int = 1 << 20) -> None:
        self.root = root
        self.write_batch_bytes = write_batch_bytes
        self._locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def _dirs(self, task_id: int) -> tuple[Path, Path, Path]:
        base = self.root / str(task_id)
        return base / "data", base / "meta", base / "tmp"

    def get(self, task_id: int, name: str) -> StoredBlob | None:
        """The blob, or None when it is not (completely) stored."""
        data, meta, _ = self._dirs(task_id)
        try:
            record = json.loads((meta / f"{check_blob_name(name)}.json").read_text())
        except FileNotFoundError:
            return None
        return StoredBlob(
            task_id, name, data / name, record["sha256"], record["size_bytes"], record["uploader"]
        )

    def _place(self, temp: Path, blob: StoredBlob) -> None:
        data, meta, _ = self._dirs(blob.task_id)
        data.mkdir(exist_ok=True)
        meta.mkdir(exist_ok=True)
        os.replace(temp, blob.path)

    def _publish(self, blob: StoredBlob) -> None:
        _, meta, tmp = self._dirs(blob.task_id)
        record = {"sha256": blob.sha256, "size_bytes": blob.size_bytes, "uploader": blob.uploader}
        meta_temp = tmp / f".{blob.name}.{secrets.token_hex(4)}.meta"
        meta_temp.write_text(json.dumps(record))
        os.replace(meta_temp, meta / f"{blob.name}.json")

    def _remove(self, blob: StoredBlob) -> None:
        _, meta, _ = self._dirs(blob.task_id)
        (meta / f"{blob.name}.json").unlink(missing_ok=True)
        blob.path.unlink(missing_ok=True)

    async def receive(
        self,
        task_id: int,
        name: str,
        chunks: AsyncIterator[bytes],
        *,
        expected_sha256: str,
        max_bytes: int,
        uploader: str,
        accept: Callable[[StoredBlob], Awaitable[None]],
    ) -> tuple[StoredBlob, bool]:
        """Stream an upload in; returns (blob, created). The same bytes again: (first blob, False).

        `PayloadTooLarge` past `max_bytes`, `BadRequest` when the bytes do not hash to
        `expected_sha256`, `Conflict` when the name holds other bytes. The new blob is moved
        to its path and handed to `accept` before it becomes visible (its metadata is written
        after); `accept` may refuse it by raising: it is then removed and the error propagates.
        """
        check_blob_name(name)
        key = (task_id, name)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            _, _, tmp = self._dirs(task_id)
            await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
            temp = tmp / f".{name}.{secrets.token_hex(8)}.part"
            try:
                digest, size = await self._stream_to(temp, chunks, max_bytes)
                if digest != expected_sha256:
                    raise BadRequest(
                        f"body sha256 {digest} differs from the signed {expected_sha256}",
                        code="body_hash_mismatch",
                    )
                existing = self.get(task_id, name)
                if existing is not None:
                    if existing.sha256 == digest:
                        return existing, False
                    raise Conflict(
                        f"task {task_id} already holds blob {name!r} with other content "
                        "(blobs are write-once)",
                        code="blob_exists",
                    )
                blob = StoredBlob(task_id, name, self._dirs(task_id)[0] / name, digest, size, uploader)
                await asyncio.to_thread(self._place, temp, blob)
            finally:
                temp.unlink(missing_ok=True)
            try:
                await accept(blob)  # the bytes are at blob.path; nobody else sees them yet
                await asyncio.to_thread(self._publish, blob)
            except BaseException:
                await asyncio.to_thread(self._remove, blob)
                raise
            return blob, True

    async def _stream_to(self, temp: Path, chunks: AsyncIterator[bytes], max_bytes: int) -> tuple[str, int]:
        hasher = hashlib.sha256()
        size = 0
        out = await asyncio.to_thread(temp.open, "wb")
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"blob is larger than the limit of {max_bytes} bytes")
                hasher.update(chunk)
                batch.append(chunk)
                batched += len(chunk)
                if batched >= self.write_batch_bytes:
                    await asyncio.to_thread(_write_all, out, batch)
                    batch, batched = [], 0
            await asyncio.to_thread(_write_all, out, batch)
            await asyncio.to_thread(_finish, out)
        finally:
            out.close()
        return hasher.hexdigest(), size

    def put_bytes(self, task_id: int, name: str, content: bytes, uploader: str) -> StoredBlob:
        """Store a blob the node itself produced (blocking; write-once like uploads)."""
        check_blob_name(name)
        digest = hashlib.sha256(content).hexdigest()
        existing = self.get(task_id, name)
        if existing is not None:
            if existing.sha256 != digest:
                raise Conflict(
                    f"task {task_id} already holds blob {name!r} with other content", code="blob_exists"
                )
            return existing
        _, _, tmp = self._dirs(task_id)
        tmp.mkdir(parents=True, exist_ok=True)
        temp = tmp / f".{name}.{secrets.token_hex(8)}.part"
        with temp.open("wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        blob = StoredBlob(task_id, name, self._dirs(task_id)[0] / name, digest, len(content), uploader)
        self._place(temp, blob)
        self._publish(blob)
        return blob
