"""`NodeConfig`: one operator node's settings, read from a TOML file (``node.toml``).

Relative paths in the file are relative to the file's directory. Exactly one of
`private_key` and `private_key_file` names the node's signing key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from compute.errors import ConfigError

__all__ = ["NodeConfig", "NodeLimits", "load_config"]

Capability = Literal["he"]


class NodeLimits(BaseModel):
    """What the node accepts from the network."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_upload_bytes: Annotated[int, Field(ge=1)] = 1 << 30  # any one blob (the spec's limits apply too)
    max_spec_bytes: Annotated[int, Field(ge=1, le=1 << 20)] = 1 << 20
    max_open_tasks: Annotated[int, Field(ge=1)] = 64  # tasks in a non-terminal state


class NodeConfig(BaseModel):
    """Settings of `datum node run` (see docs/NODE_DAEMON.md, "Configuration")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    rpc_url: str
    rpc_ws_url: str | None = None
    deployment: Path
    artifacts_dir: Path | None = None
    data_dir: Path
    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=1, le=65_535)]
    capabilities: tuple[Capability, ...] = ("he",)
    confirmations: Annotated[int, Field(ge=0, le=64)]
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    submit_stagger_s: Annotated[float, Field(ge=0)] = 2.0
    collect_window_s: Annotated[float, Field(ge=0)] = 1.0  # wait for the rest once a quorum signed
    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    deadline_poll_s: Annotated[float, Field(gt=0)] = 2.0
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 20.0
    rpc_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    peer_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    stats_prewarm: bool = True  # a stats committee member starts its engine process on the spec
    stats_spare_engine: bool = True  # keep one engine process ready while idle (needs stats_prewarm)
    stats_engine_memory_mb: Annotated[int, Field(ge=0, le=2000)] = 1024  # the spare faults this in
    limits: NodeLimits = NodeLimits()

    @model_validator(mode="after")
    def _one_key(self) -> NodeConfig:
        if (self.private_key is None) == (self.private_key_file is None):
            raise ValueError("set exactly one of private_key and private_key_file")
        return self

    def signing_account(self) -> LocalAccount:
        """The node's signing key (reads `private_key_file` when that is how it is given)."""
        if self.private_key is not None:
            text = self.private_key.get_secret_value()
            where = "private_key"
        else:
            assert self.private_key_file is not None
            try:
                text = self.private_key_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read private_key_file {self.private_key_file}: {exc}") from None
            where = f"private_key_file {self.private_key_file}"
        try:
            account: LocalAccount = Account.from_key(text)
        except (ValueError, TypeError):
            raise ConfigError(f"{where} does not hold a valid private key") from None
        return account


def _resolve(raw: dict[str, object], base: Path) -> dict[str, object]:
    out = dict(raw)
    for name in ("private_key_file", "deployment", "artifacts_dir", "data_dir"):
        value = out.get(name)
        if isinstance(value, str):
            path = Path(value).expanduser()
            out[name] = path if path.is_absolute() else (base / path)
    return out


def load_config(path: Path) -> NodeConfig:
    """Read and validate a node config file; `ConfigError` with the first problem otherwise."""
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no node config at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read node config {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"node config {path} is not valid TOML: {exc}") from None
    try:
        return NodeConfig.model_validate(_resolve(raw, path.resolve().parent))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"node config {path}: {where}: {first['msg']}") from None
