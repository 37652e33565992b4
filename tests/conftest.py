"""Shared fixtures: anvil on a free 127.0.0.1 port per test module, the built contracts,
and a fresh deployment on it. Nothing here is autouse: tests that need no chain start none.

The contracts must be built (`make build`); the artifact directory can be overridden with
DATUM_ARTIFACTS_DIR and the anvil binary with DATUM_ANVIL.
"""

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from oracle.chain.artifacts import ArtifactStore, repo_root
from oracle.chain.contracts import DatumContracts
from oracle.chain.deploy import TOKEN, DeployConfig, Deployment, TaskConfig, deploy_all
from oracle.chain.rpc import Chain, connect
from oracle.chain.txmanager import NonceTracker, TxManager
from oracle.devnet import ANVIL_RELATIVE, dev_account, start_anvil, stop_process

CORE_CONTRACTS = ("DatumToken", "NodeRegistry", "DataRegistry", "TaskManager", "DataOracle")

TEST_DEPLOY_CONFIG = DeployConfig(
    min_stake_wei=1_000 * TOKEN,
    unbonding_delay_s=3_600,
    task=TaskConfig(
        protocol_fee_bps=700,
        reporter_reward_bps=1_500,
        accept_window_s=120,
        no_show_slash_wei=100 * TOKEN,
        equivocation_slash_wei=400 * TOKEN,
        max_duration_s=24 * 3600,
    ),
)


def _anvil_path() -> Path:
    configured = os.environ.get("DATUM_ANVIL")
    return Path(configured) if configured else repo_root() / ANVIL_RELATIVE


@pytest.fixture(scope="session")
def artifacts() -> ArtifactStore:
    """The built contracts; fails (never skips) when the build is missing."""
    configured = os.environ.get("DATUM_ARTIFACTS_DIR")
    store = ArtifactStore(Path(configured) if configured else None)
    missing = [name for name in CORE_CONTRACTS if not store.has(name)]
    if missing:
        pytest.fail(
            f"contracts not built ({', '.join(missing)} missing in {store.directory}): run `make build`"
        )
    return store


@pytest.fixture(scope="module")
def anvil_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private anvil for one test module, stopped by its pid afterwards."""
    log_path = tmp_path_factory.mktemp("anvil") / "anvil.log"
    proc, url = start_anvil(_anvil_path(), log_path, accounts=20, detached=False)
    try:
        yield url
    finally:
        stop_process(proc.pid, reap=proc.poll)
        proc.wait(timeout=10)


@dataclass
class Net:
    """A deployment on the module's anvil, with helpers to act as any dev account."""

    chain: Chain
    store: ArtifactStore
    deployment: Deployment
    contracts: DatumContracts
    nonces: NonceTracker

    def account(self, index: int) -> LocalAccount:
        """Dev account `index` (0 deployed everything and is the treasury)."""
        return dev_account(index)

    def tx(self, index: int) -> TxManager:
        """A transaction manager for dev account `index`."""
        return TxManager(self.chain, dev_account(index), nonces=self.nonces)

    def rpc(self, method: str, *params: object) -> object:
        """A raw JSON-RPC call (evm_increaseTime, evm_mine, evm_snapshot...)."""
        return self.chain.send_rpc(method, list(params))

    def warp(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block."""
        self.rpc("evm_increaseTime", seconds)
        self.rpc("evm_mine")

    def now(self) -> int:
        """Timestamp of the latest block."""
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])


@pytest.fixture(scope="module")
def net(anvil_url: str, artifacts: ArtifactStore) -> Net:
    """Contracts deployed by dev account 0 with the test configuration."""
    chain = Chain(connect(anvil_url), artifacts.error_table())
    nonces = NonceTracker()
    deployment = deploy_all(TxManager(chain, dev_account(0), nonces=nonces), artifacts, TEST_DEPLOY_CONFIG)
    return Net(chain, artifacts, deployment, DatumContracts(chain.w3, deployment, artifacts), nonces)


@pytest.fixture
def isolated(net: Net) -> Iterator[Net]:
    """Run a test against a snapshot of the module's chain and revert it afterwards."""
    snapshot = net.rpc("evm_snapshot")
    try:
        yield net
    finally:
        net.rpc("evm_revert", snapshot)
        net.nonces.clear()
