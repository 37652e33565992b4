"""Deploy the Datum contracts, wire them, and describe the result in a manifest.

Order: DatumToken, NodeRegistry, DataRegistry, TaskManager, DataOracle; then
``NodeRegistry.setTaskManager`` and ``DataRegistry.setTaskManager``. The example consumer
(`CreditScoreLender`) needs dataset ids, so it is deployed later with `deploy_credit_lender`.
"""

import json
import logging
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from compute.errors import ConfigError

from .artifacts import ArtifactStore
from .txmanager import TxManager

__all__ = [
    "MANIFEST_VERSION",
    "DeployConfig",
    "DeployedContracts",
    "Deployment",
    "TaskConfig",
    "deploy_all",
    "deploy_credit_lender",
]

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
TOKEN = 10**18


class TaskConfig(BaseModel):
    """`ITaskManager.Config`: protocol parameters of the TaskManager."""

    model_config = ConfigDict(frozen=True)

    protocol_fee_bps: Annotated[int, Field(ge=0, le=10_000)] = 500
    reporter_reward_bps: Annotated[int, Field(ge=0, le=10_000)] = 1_000
    accept_window_s: Annotated[int, Field(gt=0)] = 600
    no_show_slash_wei: Annotated[int, Field(ge=0)] = 100 * TOKEN
    equivocation_slash_wei: Annotated[int, Field(ge=0)] = 500 * TOKEN
    max_duration_s: Annotated[int, Field(gt=0)] = 7 * 24 * 3600
    treasury: str | None = None  # None: the deployer

    def as_tuple(self, default_treasury: str) -> tuple[int, int, int, int, int, int, str]:
        """The struct as the ABI encodes it (field order of `ITaskManager.Config`)."""
        return (
            self.protocol_fee_bps,
            self.reporter_reward_bps,
            self.accept_window_s,
            self.no_show_slash_wei,
            self.equivocation_slash_wei,
            self.max_duration_s,
            self.treasury or default_treasury,
        )


class DeployConfig(BaseModel):
    """Constructor parameters of a deployment."""

    model_config = ConfigDict(frozen=True)

    token_supply_wei: Annotated[int, Field(gt=0)] = 1_000_000_000 * TOKEN
    min_stake_wei: Annotated[int, Field(ge=0)] = 1_000 * TOKEN
    unbonding_delay_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600
    max_callback_gas: Annotated[int, Field(gt=0)] = 500_000
    task: TaskConfig = TaskConfig()


class DeployedContracts(BaseModel):
    """Addresses of one deployment (checksummed)."""

    model_config = ConfigDict(frozen=True)

    token: str
    node_registry: str
    data_registry: str
    task_manager: str
    data_oracle: str
    credit_score_lender: str | None = None


class Deployment(BaseModel):
    """The deployment manifest: what a node, the CLI or a dApp needs to find the contracts."""

    model_config = ConfigDict(frozen=True)

    version: int = MANIFEST_VERSION
    chain_id: int
    deploy_block: int
    deployer: str
    treasury: str
    contracts: DeployedContracts
    config: DeployConfig

    def save(self, path: Path) -> None:
        """Write the manifest as JSON (parent directories created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        """Read a manifest; `ConfigError` when missing or invalid."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"no deployment manifest at {path}") from exc
        except (OSError, ValueError) as exc:
            raise ConfigError(f"unreadable deployment manifest {path}: {exc}") from exc
        if raw.get("version") != MANIFEST_VERSION:
            raise ConfigError(
                f"deployment manifest {path} has version {raw.get('version')}, need {MANIFEST_VERSION}"
            )
        try:
            return cls.model_validate(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid deployment manifest {path}: {exc}") from exc


def deploy_all(tx: TxManager, store: ArtifactStore, config: DeployConfig | None = None) -> Deployment:
    """Deploy and wire the five core contracts from `tx`'s account (the owner of each)."""
    config = config or DeployConfig()
    owner = tx.address
    treasury = config.task.treasury or owner

    token, sent = tx.deploy(store.load("DatumToken"), owner, config.token_supply_wei)
    deploy_block = sent.block_number
    nodes, _ = tx.deploy(
        store.load("NodeRegistry"), token, config.min_stake_wei, config.unbonding_delay_s, owner
    )
    data, _ = tx.deploy(store.load("DataRegistry"), owner)
    task_manager, _ = tx.deploy(
        store.load("TaskManager"), token, nodes, data, config.task.as_tuple(treasury), owner
    )
    oracle, _ = tx.deploy(store.load("DataOracle"), task_manager, token, data, config.max_callback_gas)

    w3 = tx.w3
    nodes_contract = w3.eth.contract(address=nodes, abi=store.load("NodeRegistry").abi)
    data_contract = w3.eth.contract(address=data, abi=store.load("DataRegistry").abi)
    tx.send(nodes_contract, "setTaskManager", task_manager)
    tx.send(data_contract, "setTaskManager", task_manager)

    deployment = Deployment(
        chain_id=tx.chain.chain_id,
        deploy_block=deploy_block,
        deployer=owner,
        treasury=treasury,
        contracts=DeployedContracts(
            token=token,
            node_registry=nodes,
            data_registry=data,
            task_manager=task_manager,
            data_oracle=oracle,
        ),
        config=config,
    )
    log.info("deployed Datum on chain %d from block %d", deployment.chain_id, deploy_block)
    return deployment


def deploy_credit_lender(
    tx: TxManager,
    store: ArtifactStore,
    deployment: Deployment,
    bank_dataset_a: int,
    bank_dataset_b: int,
    limit_bps: int,
) -> Deployment:
    """Deploy the example consumer over two registered datasets; return the updated manifest."""
    c = deployment.contracts
    lender, _ = tx.deploy(
        store.load("CreditScoreLender"),
        c.data_oracle,
        c.task_manager,
        c.token,
        c.data_registry,
        bank_dataset_a,
        bank_dataset_b,
        limit_bps,
        tx.address,
    )
    contracts = c.model_copy(update={"credit_score_lender": lender})
    return deployment.model_copy(update={"contracts": contracts})
