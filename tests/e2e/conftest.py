"""A devnet with three real node processes for the end-to-end tests of one module.

`datum devnet up --nodes 3` as the Python API runs it: anvil on a free 127.0.0.1 port,
the contracts, three staked operators, and one `datum node run` process per operator
(its own key, data dir, log and registered endpoint). Stopped by recorded pid afterwards.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from oracle import devnet
from oracle.chain.artifacts import ArtifactStore
from oracle.chain.contracts import DatumContracts
from oracle.chain.rpc import Chain, connect
from oracle.chain.txmanager import NonceTracker, TxManager
from oracle.node.store import TaskRecord, TaskStore

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.1) -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


@dataclass
class Network:
    """The running devnet and what tests need to talk to it."""

    home: Path
    store: ArtifactStore
    chain: Chain
    contracts: DatumContracts
    nonces: NonceTracker

    @property
    def state(self) -> devnet.DevnetState:
        state = devnet.load_state(self.home)
        assert state is not None
        return state

    def node_by_operator(self, operator: str) -> devnet.DevnetNode:
        return next(n for n in self.state.nodes if n.operator.lower() == operator.lower())

    def tx(self, account: int) -> TxManager:
        return TxManager(self.chain, devnet.dev_account(account), nonces=self.nonces)

    def node_dir(self, node: devnet.DevnetNode) -> Path:
        assert node.home is not None
        return Path(node.home)

    def task_on_node(self, node: devnet.DevnetNode, task_id: int) -> TaskRecord | None:
        path = self.node_dir(node) / "data" / "node.sqlite3"
        try:
            store = TaskStore(path, readonly=True)
        except Exception:
            return None
        try:
            return store.get(task_id)
        except sqlite3.OperationalError:
            return None
        finally:
            store.close()

    def history_on_node(self, node: devnet.DevnetNode) -> dict[int, list[tuple[str, str]]]:
        store = TaskStore(self.node_dir(node) / "data" / "node.sqlite3", readonly=True)
        try:
            return {r.task_id: store.history(r.task_id) for r in store.all_tasks()}
        finally:
            store.close()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, artifacts: ArtifactStore) -> Iterator[Network]:
    home = tmp_path_factory.mktemp("devnet")
    state = devnet.up(home, 3, store=artifacts)
    try:
        chain = Chain(connect(state.rpc_url), artifacts.error_table())
        contracts = DatumContracts(chain.w3, state.deployment, artifacts)
        yield Network(home, artifacts, chain, contracts, NonceTracker())
    finally:
        devnet.down(home)


# -- what a node holds -------------------------------------------------------------------------

_DIGITS = re.compile(rb"[0-9]{10,}")


def files_under(root: Path) -> Iterable[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def decimal_hits(root: Path, needles: set[str]) -> list[tuple[Path, str]]:
    """(file, needle) for every needle found as a digit substring in any file under `root`."""
    lengths = {len(n) for n in needles}
    hits = []
    for path in files_under(root):
        for run in _DIGITS.findall(path.read_bytes()):
            text = run.decode()
            for size in lengths:
                for start in range(len(text) - size + 1):
                    if text[start : start + size] in needles:
                        hits.append((path, text[start : start + size]))
    return hits


def binary_hits(root: Path, values: np.ndarray) -> list[Path]:
    """Files under `root` holding any of `values` (int64 or float64) as 8 little-endian bytes."""
    dtype = "<i8" if values.dtype.kind in "iu" else "<f8"
    wanted = np.unique(values.astype(dtype))
    found = []
    for path in files_under(root):
        data = path.read_bytes()
        for offset in range(8):
            usable = (len(data) - offset) // 8 * 8
            if usable <= 0:
                continue
            words = np.frombuffer(data, dtype=dtype, count=usable // 8, offset=offset)
            if np.isin(words, wanted).any():
                found.append(path)
                break
    return found
