"""A local Datum network on one machine: anvil, the deployed contracts, and staked nodes.

`up` starts anvil detached on a free 127.0.0.1 port (it keeps running after the caller
exits), deploys, funds, registers and stakes N node accounts, starts one node process per
account (``datum node run``, config and data in ``<home>/node-<i>/``, listening on the
endpoint registered on chain) and records everything in ``<home>/devnet.json``; `down`
stops only the process ids recorded there: the nodes first, then anvil.

Accounts come from anvil's well-known development mnemonic: account 0 deploys, owns the
contracts, is the treasury and the default requester; accounts 1..N are the node
operators (each node signs results with its operator key).
"""

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict

from compute.errors import ConfigError

from .chain.artifacts import ArtifactStore, repo_root
from .chain.contracts import DatumContracts
from .chain.deploy import TOKEN, DeployConfig, Deployment, TaskConfig, deploy_all
from .chain.errors import ChainError
from .chain.rpc import Chain, connect
from .chain.staking import register_node
from .chain.txmanager import NonceTracker, TxManager
from .node.processes import NodeLaunch, is_node_process, spawn_node, wait_healthy, write_node_config

__all__ = [
    "DEV_MNEMONIC",
    "DevnetNode",
    "DevnetState",
    "dev_account",
    "down",
    "free_port",
    "is_running",
    "load_state",
    "start_anvil",
    "start_node",
    "stop_node",
    "stop_process",
    "up",
]

log = logging.getLogger(__name__)

DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's default
ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
STATE_FILE = "devnet.json"
DEPLOYMENT_FILE = "deployment.json"
STATE_VERSION = 1

DEVNET_DEPLOY_CONFIG = DeployConfig(
    unbonding_delay_s=3_600,
    task=TaskConfig(accept_window_s=300, max_duration_s=2 * 24 * 3600),
)

Account.enable_unaudited_hdwallet_features()


def dev_account(index: int) -> LocalAccount:
    """Account `index` of the development mnemonic (the keys anvil funds)."""
    account: LocalAccount = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DevnetNode(BaseModel):
    """One staked node of the devnet."""

    model_config = ConfigDict(frozen=True)

    index: int  # NodeRegistry index (1-based)
    account: int  # mnemonic account number of its operator (and signing) key
    operator: str
    signer: str
    endpoint: str
    stake_wei: int
    pid: int | None = None  # its `datum node run` process, when the devnet started one
    home: str | None = None  # its config, key, data dir and log


class DevnetState(BaseModel):
    """What `up` started, written to ``<home>/devnet.json``."""

    model_config = ConfigDict(frozen=True)

    version: int = STATE_VERSION
    pid: int
    rpc_url: str
    chain_id: int
    anvil_log: str
    deployment: Deployment
    nodes: list[DevnetNode]
    requester_account: int = 0

    def save(self, home: Path) -> None:
        """Write ``devnet.json`` and the bare ``deployment.json`` manifest."""
        home.mkdir(parents=True, exist_ok=True)
        self.deployment.save(home / DEPLOYMENT_FILE)
        (home / STATE_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def load_state(home: Path) -> DevnetState | None:
    """The recorded devnet, or None when none was started from `home`."""
    path = home / STATE_FILE
    if not path.is_file():
        return None
    try:
        return DevnetState.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"unreadable devnet state {path}: {exc}") from exc


def _is_anvil(pid: int) -> bool:
    """Whether `pid` is alive and (where /proc tells) an anvil process."""
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return b"anvil" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def _rpc_ready(url: str) -> bool:
    try:
        answer = requests.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1
        )
        return answer.ok
    except requests.RequestException:
        return False


def is_running(state: DevnetState) -> bool:
    """The recorded anvil is alive and answers."""
    return _is_anvil(state.pid) and _rpc_ready(state.rpc_url)


def start_anvil(
    anvil: Path,
    log_path: Path,
    *,
    accounts: int = 10,
    detached: bool = True,
    timeout_s: float = 20.0,
    extra: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], str]:
    """Start anvil on a free 127.0.0.1 port and wait until it answers; returns (process, URL).

    Detached, it runs in its own session and survives the caller. A lost port race (another
    process took the port first) is retried with a new port.
    """
    if not anvil.is_file():
        raise ConfigError(f"anvil not found at {anvil}: run `make setup` (npm ci) or set DATUM_ANVIL")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        port = free_port()
        args = [str(anvil), "--host", "127.0.0.1", "--port", str(port), "--accounts", str(accounts), *extra]
        with log_path.open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=detached,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            if _rpc_ready(url):
                log.info("anvil pid %d on %s", proc.pid, url)
                return proc, url
            time.sleep(0.05)
        stop_process(proc.pid)
        proc.wait(timeout=10)
        log.warning("anvil did not start on port %d, retrying", port)
    raise ChainError(f"anvil did not start; see {log_path}")


def _alive(pid: int) -> bool:
    """`pid` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def stop_process(pid: int, timeout_s: float = 10.0, reap: Callable[[], object] | None = None) -> bool:
    """SIGTERM `pid`, SIGKILL it after `timeout_s`; False when it was not running.

    `reap` (e.g. ``Popen.poll``) lets the parent collect its own child while waiting.
    """
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not _alive(pid):
            return True
        time.sleep(0.05)
    log.warning("pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout_s)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def up(
    home: Path,
    nodes: int,
    *,
    anvil: Path | None = None,
    store: ArtifactStore | None = None,
    stake_wei: int = 10_000 * TOKEN,
    config: DeployConfig = DEVNET_DEPLOY_CONFIG,
    progress: Callable[[str], None] = lambda _: None,
    processes: bool = True,
    node_settings: Mapping[str, float | int] | None = None,
) -> DevnetState:
    """Start anvil, deploy, fund and stake `nodes` node accounts, start their node processes
    (unless `processes` is False; `node_settings` override the devnet's `NODE_SETTINGS` in
    their configs) and wait until each serves; record it all under `home`."""
    if nodes < 1:
        raise ConfigError("a devnet needs at least one node")
    existing = load_state(home)
    if existing is not None and _is_anvil(existing.pid):
        raise ConfigError(
            f"a devnet is already running from {home} (pid {existing.pid}); run `datum devnet down`"
        )
    store = store or ArtifactStore()
    for name in ("DatumToken", "NodeRegistry", "DataRegistry", "TaskManager", "DataOracle"):
        store.path_of(name)  # fail before starting anything when the build is missing

    anvil = anvil or repo_root() / ANVIL_RELATIVE
    log_path = home / "anvil.log"
    progress("starting anvil")
    proc, url = start_anvil(anvil, log_path, accounts=max(10, nodes + 2))
    try:
        chain = Chain(connect(url), store.error_table())
        nonces = NonceTracker()
        deployer = TxManager(chain, dev_account(0), nonces=nonces)
        progress("deploying contracts")
        deployment = deploy_all(deployer, store, config)
        contracts = DatumContracts(chain.w3, deployment, store)
        records: list[DevnetNode] = []
        for i in range(1, nodes + 1):
            progress(f"registering node {i}/{nodes}")
            operator = TxManager(chain, dev_account(i), nonces=nonces)
            deployer.send(contracts.token, "transfer", operator.address, stake_wei)
            endpoint = f"http://127.0.0.1:{free_port()}"
            index, _ = register_node(
                operator,
                chain,
                contracts,
                signer=operator.address,
                endpoint=endpoint,
                capabilities=(1 << 8) - 2,
                stake_wei=stake_wei,
            )
            records.append(
                DevnetNode(
                    index=index,
                    account=i,
                    operator=operator.address,
                    signer=operator.address,
                    endpoint=endpoint,
                    stake_wei=stake_wei,
                )
            )
        state = DevnetState(
            pid=proc.pid,
            rpc_url=url,
            chain_id=chain.chain_id,
            anvil_log=str(log_path),
            deployment=deployment,
            nodes=records,
        )
        state.save(home)
        if processes:
            progress(f"starting {nodes} node processes")
            state = _start_nodes(home, state, store, [n.index for n in records], node_settings)
        return state
    except BaseException:
        started = load_state(home)
        for n in started.nodes if started is not None else []:
            if n.pid is not None and is_node_process(n.pid):
                stop_process(n.pid)
        stop_process(proc.pid, reap=proc.poll)
        proc.wait(timeout=10)
        raise


NODE_SETTINGS: dict[str, float | int] = {
    "poll_interval_s": 0.5,
    "deadline_poll_s": 1.0,
    "submit_stagger_s": 1.0,
    "workers": 1,
    "stats_engine_memory_mb": 0,  # a small dev footprint; bench/stats_bench.py sets its own
}


def _launch(home: Path, index: int) -> NodeLaunch:
    return NodeLaunch(home / f"node-{index}")


def _start_nodes(
    home: Path,
    state: DevnetState,
    store: ArtifactStore,
    indices: list[int],
    settings: Mapping[str, float | int] | None = None,
) -> DevnetState:
    """Write each node's config and start its process; wait until all serve; record the pids."""
    nodes = {n.index: n for n in state.nodes}
    waiting = []
    for index in indices:
        node = nodes[index]
        launch = _launch(home, index)
        write_node_config(
            launch,
            private_key_hex="0x" + bytes(dev_account(node.account).key).hex(),
            rpc_url=state.rpc_url,
            deployment=home / DEPLOYMENT_FILE,
            artifacts_dir=store.directory,
            listen_port=int(node.endpoint.rsplit(":", 1)[1]),
            extra=NODE_SETTINGS | dict(settings or {}),
        )
        pid = spawn_node(launch)
        nodes[index] = node.model_copy(update={"pid": pid, "home": str(launch.home)})
        state = state.model_copy(update={"nodes": [nodes[n.index] for n in state.nodes]})
        state.save(home)  # record the pid before waiting: `down` stops it even if `up` fails
        waiting.append((pid, node.endpoint, launch.log))
    wait_healthy(waiting)
    log.info("devnet nodes %s serving", indices)
    return state


def start_node(home: Path, index: int, store: ArtifactStore | None = None) -> DevnetState:
    """(Re)start node `index`'s process with its existing config and data; returns the new state."""
    state = load_state(home)
    if state is None:
        raise ConfigError(f"no devnet in {home}")
    node = next((n for n in state.nodes if n.index == index), None)
    if node is None:
        raise ConfigError(f"the devnet has no node {index}")
    if node.pid is not None and is_node_process(node.pid):
        raise ConfigError(f"node {index} already runs (pid {node.pid})")
    launch = _launch(home, index)
    if launch.config.is_file():
        pid = spawn_node(launch)
        nodes = [n.model_copy(update={"pid": pid}) if n.index == index else n for n in state.nodes]
        state = state.model_copy(update={"nodes": nodes})
        state.save(home)
        wait_healthy([(pid, node.endpoint, launch.log)])
        return state
    return _start_nodes(home, state, store or ArtifactStore(), [index])


def stop_node(home: Path, index: int, *, kill: bool = False) -> DevnetState:
    """Stop node `index`'s process (SIGTERM, or SIGKILL with `kill`); returns the new state."""
    state = load_state(home)
    if state is None:
        raise ConfigError(f"no devnet in {home}")
    node = next((n for n in state.nodes if n.index == index), None)
    if node is None:
        raise ConfigError(f"the devnet has no node {index}")
    if node.pid is not None and is_node_process(node.pid):
        if kill:
            os.kill(node.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _alive(node.pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        else:
            stop_process(node.pid, timeout_s=30)
    nodes = [n.model_copy(update={"pid": None}) if n.index == index else n for n in state.nodes]
    state = state.model_copy(update={"nodes": nodes})
    state.save(home)
    return state


def down(home: Path) -> DevnetState | None:
    """Stop the node processes and the anvil recorded under `home` and forget the devnet;
    returns what was stopped."""
    state = load_state(home)
    if state is None:
        return None
    running = [n.pid for n in state.nodes if n.pid is not None and is_node_process(n.pid)]
    for pid in running:  # all of them at once, then wait for each
        os.kill(pid, signal.SIGTERM)
    for pid in running:
        stop_process(pid, timeout_s=30)
    if _is_anvil(state.pid):
        stop_process(state.pid)
    (home / STATE_FILE).unlink(missing_ok=True)
    (home / DEPLOYMENT_FILE).unlink(missing_ok=True)
    return state
