"""What every part of a running node shares: identity, chain access, stores, scheduling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from ..chain.signer import ResultDomain
from .chainops import ChainOps
from .config import NodeConfig
from .store import TaskStore

__all__ = ["Kick", "NodeContext"]

Kick = Callable[[int, float], None]
"""Schedule a task's driver: ``kick(task_id, delay_s)``."""


@dataclass
class NodeContext:
    """One node's identity and shared services."""

    config: NodeConfig
    account: LocalAccount  # the signing key (results, p2p requests, transactions)
    operator: str  # the operator address the key signs for
    chain_id: int
    ops: ChainOps
    store: TaskStore
    domain: ResultDomain
    kick: Kick

    @property
    def signer(self) -> str:
        """The signing key's address."""
        return str(self.account.address)

    @property
    def results_dir(self) -> Path:
        """Where result envelopes are written."""
        return self.config.data_dir / "results"

    def result_path(self, task_id: int) -> Path:
        """The result envelope of a task."""
        return self.results_dir / f"{task_id}.he"
