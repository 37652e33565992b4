"""Node processes on this machine: write a node's config, start `datum node run` detached,
wait for its health endpoint, and recognise it by pid (what `datum devnet` uses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from compute.errors import ConfigError

__all__ = ["NodeLaunch", "is_node_process", "spawn_node", "wait_healthy", "write_node_config"]


class NodeLaunch:
    """Where one local node keeps its config, key, data and log."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.config = home / "node.toml"
        self.key = home / "key"
        self.data_dir = home / "data"
        self.log = home / "node.log"


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def write_node_config(
    launch: NodeLaunch,
    *,
    private_key_hex: str,
    rpc_url: str,
    deployment: Path,
    artifacts_dir: Path,
    listen_port: int,
    confirmations: int = 0,
    extra: dict[str, float | int] | None = None,
) -> Path:
    """Write ``node.toml`` and the key file (mode 0600) for a node on 127.0.0.1."""
    launch.home.mkdir(parents=True, exist_ok=True)
    launch.key.touch(mode=0o600, exist_ok=True)
    launch.key.chmod(0o600)
    launch.key.write_text(private_key_hex + "\n")
    ws_url = "ws://" + rpc_url.split("://", 1)[-1]
    lines = [
        'private_key_file = "key"',
        f"rpc_url = {_toml_str(rpc_url)}",
        f"rpc_ws_url = {_toml_str(ws_url)}",
        f"deployment = {_toml_str(str(deployment.resolve()))}",
        f"artifacts_dir = {_toml_str(str(artifacts_dir.resolve()))}",
        'data_dir = "data"',
        'listen_host = "127.0.0.1"',
        f"listen_port = {listen_port}",
        f"confirmations = {confirmations}",
    ]
    lines += [f"{k} = {v}" for k, v in (extra or {}).items()]
    launch.config.write_text("\n".join(lines) + "\n")
    return launch.config


def spawn_node(launch: NodeLaunch) -> int:
    """Start ``python -m oracle.cli node run`` detached (own session), logging to its file."""
    if not launch.config.is_file():
        raise ConfigError(f"no node config at {launch.config}")
    with launch.log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "oracle.cli", "node", "run", "--config", str(launch.config)],
            cwd=launch.home,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def _healthy(url: str) -> bool:
    try:
        answer = requests.get(url.rstrip("/") + "/v1/health", timeout=1)
        return answer.ok and answer.json().get("status") == "ok"
    except (requests.RequestException, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return not stat.rsplit(") ", 1)[-1].startswith("Z")


def wait_healthy(nodes: Sequence[tuple[int, str, Path]], timeout_s: float = 90.0) -> None:
    """Wait until every (pid, endpoint, log) serves ``/v1/health``; `ConfigError` if one dies or is late."""
    deadline = time.monotonic() + timeout_s
    pending = list(nodes)
    while pending:
        for pid, url, log in list(pending):
            if _healthy(url):
                pending.remove((pid, url, log))
            elif not _alive(pid):
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
                raise ConfigError(f"node pid {pid} for {url} exited: {' '.join(tail) or 'see ' + str(log)}")
        if pending and time.monotonic() > deadline:
            raise ConfigError(
                f"node(s) {', '.join(u for _, u, _ in pending)} not healthy after {timeout_s:.0f} s"
            )
        if pending:
            time.sleep(0.1)


def is_node_process(pid: int) -> bool:
    """`pid` is alive and (where /proc tells) a `node run` process."""
    if not _alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            return False
        return b"oracle.cli" in args and b"node" in args and b"run" in args
    return True
