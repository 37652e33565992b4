"""What every command group shares: the error boundary, output (one JSON object or rich
tables), amount parsing, and the session that turns settings into a chain connection."""

import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import click
import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from compute.errors import ConfigError, DatumError

from ..chain.artifacts import ArtifactStore
from ..chain.contracts import DatumContracts
from ..chain.deploy import Deployment
from ..chain.rpc import Chain, connect
from ..chain.txmanager import NonceTracker, TxManager
from ..config import Settings
from ..devnet import DevnetState, dev_account, load_state

__all__ = [
    "JSON_OPTION",
    "NODE_OPTION",
    "DatumGroup",
    "Session",
    "emit",
    "kv_table",
    "parse_wei",
]

log = logging.getLogger(__name__)

JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object on stdout.")
NODE_OPTION = typer.Option(None, "--node", min=1, help="Act as devnet node N (its operator key).")

TOKEN_SUFFIXES = {"dtm": 10**18, "gwei": 10**9, "wei": 1}


def _one_line(exc: BaseException) -> str:
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


class DatumGroup(TyperGroup):
    """The root command group: every error is one line on stderr and exit code 1."""

    def main(  # type: ignore[override]
        self, args: list[str] | None = None, prog_name: str | None = None, **extra: Any
    ) -> Any:
        """Run in non-standalone mode and turn usage errors into one line too."""
        if extra.get("standalone_mode", True) is False:
            return super().main(args, prog_name, **extra)
        extra.pop("standalone_mode", None)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError:
            sys.exit(2)  # the help was printed (ctx.get_help() renders it)
        except click.ClickException as exc:
            typer.echo(f"error: {_one_line(Exception(exc.format_message()))}", err=True)
            sys.exit(1)
        except click.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command inside the error boundary."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except DatumError as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(1) from None
        except Exception as exc:  # a bug: still one line, details in the debug log
            log.debug("unexpected error", exc_info=True)
            typer.echo(f"error: unexpected {type(exc).__name__}: {_one_line(exc)}", err=True)
            raise typer.Exit(1) from None


def parse_wei(text: str) -> int:
    """``1000`` (wei), ``2.5dtm`` (tokens) or ``3gwei`` -> integer wei; `ConfigError` otherwise."""
    raw = text.strip().lower().replace("_", "")
    suffix = next((sfx for sfx in TOKEN_SUFFIXES if raw.endswith(sfx)), "")
    number, scale = raw[: len(raw) - len(suffix)], TOKEN_SUFFIXES.get(suffix, 1)
    try:
        if "." in number:
            whole, frac = number.split(".", 1)
            digits = len(str(scale)) - 1
            if len(frac) > digits:
                raise ValueError
            value = int(whole or "0") * scale + int(frac.ljust(digits, "0") or "0")
        else:
            value = int(number) * scale
    except ValueError:
        raise ConfigError(f"not an amount: {text!r} (use wei, or a suffix: 2.5dtm, 3gwei)") from None
    if value < 0:
        raise ConfigError(f"amounts are non-negative, got {text!r}")
    return value


def emit(as_json: bool, payload: Mapping[str, Any], human: Callable[[Console], None]) -> None:
    """Print `payload` as one JSON object, or let `human` render it with rich."""
    if as_json:
        sys.stdout.write(json.dumps(payload, default=str) + "\n")
        sys.stdout.flush()
    else:
        human(Console())


def kv_table(title: str, rows: Iterable[tuple[str, Any]]) -> Table:
    """A two-column table."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@dataclass
class Session:
    """Settings resolved into a chain connection, the deployment and the signing account."""

    settings: Settings

    @cached_property
    def devnet(self) -> DevnetState | None:
        """The devnet started from DATUM_HOME, if any."""
        return load_state(self.settings.home)

    @cached_property
    def store(self) -> ArtifactStore:
        """Contract artifacts."""
        return ArtifactStore(self.settings.artifacts_dir)

    @cached_property
    def rpc_url(self) -> str:
        """DATUM_RPC_URL, else the devnet's."""
        if self.settings.rpc_url:
            return self.settings.rpc_url
        if self.devnet is not None:
            return self.devnet.rpc_url
        raise ConfigError(f"no chain: run `datum devnet up` (home {self.settings.home}) or set DATUM_RPC_URL")

    @cached_property
    def deployment(self) -> Deployment:
        """DATUM_DEPLOYMENT, else the devnet's manifest."""
        if self.settings.deployment is not None:
            return Deployment.load(self.settings.deployment)
        if self.devnet is not None:
            return self.devnet.deployment
        raise ConfigError("no deployment: run `datum devnet up` or set DATUM_DEPLOYMENT to a manifest")

    @cached_property
    def chain(self) -> Chain:
        """The RPC connection with the error table of every built contract."""
        return Chain(connect(self.rpc_url, self.settings.rpc_timeout_s), self.store.error_table())

    @cached_property
    def contracts(self) -> DatumContracts:
        """The deployment's contracts."""
        chain_id = self.chain.chain_id
        if chain_id != self.deployment.chain_id:
            raise ConfigError(
                f"the deployment is for chain {self.deployment.chain_id}, the RPC serves chain {chain_id}"
            )
        return DatumContracts(self.chain.w3, self.deployment, self.store)

    @cached_property
    def nonces(self) -> NonceTracker:
        """One nonce tracker for every account of this process."""
        return NonceTracker()

    def account(self, node: int | None = None) -> LocalAccount:
        """Devnet node `node`'s operator key; else DATUM_PRIVATE_KEY; else devnet account 0."""
        if node is not None:
            if self.devnet is None:
                raise ConfigError("--node needs a devnet: run `datum devnet up`")
            match = [n for n in self.devnet.nodes if n.index == node]
            if not match:
                raise ConfigError(f"the devnet has no node {node} (it has {len(self.devnet.nodes)})")
            return dev_account(match[0].account)
        if self.settings.private_key is not None:
            try:
                key: LocalAccount = Account.from_key(self.settings.private_key.get_secret_value())
            except ValueError as exc:
                raise ConfigError("DATUM_PRIVATE_KEY is not a valid private key") from exc
            return key
        if self.devnet is not None:
            return dev_account(self.devnet.requester_account)
        raise ConfigError("no account: set DATUM_PRIVATE_KEY or run `datum devnet up`")

    def tx(self, node: int | None = None) -> TxManager:
        """A transaction manager for the selected account."""
        return TxManager(self.chain, self.account(node), nonces=self.nonces)


def session() -> Session:
    """The session of this command (settings read once, here)."""
    try:
        return Session(Settings())
    except ValueError as exc:
        raise ConfigError(f"invalid DATUM_ setting: {_one_line(exc)}") from exc


def home_path(settings: Settings) -> Path:
    """DATUM_HOME as an absolute path."""
    return settings.home.resolve()
