"""``datum stake ...`` and ``datum rewards ...``: an operator's money."""

from typing import Any

import typer
from web3 import Web3

from compute.errors import ConfigError

from ..chain import staking
from ..chain.tasks import withdraw_rewards
from .common import JSON_OPTION, NODE_OPTION, Session, emit, kv_table, parse_wei, session

app = typer.Typer(no_args_is_help=True, help="Operator stake: register, add, unbond, withdraw, show.")
rewards_app = typer.Typer(no_args_is_help=True, help="Rewards credited by the TaskManager: show, withdraw.")


def _node_json(s: Session, operator: str) -> dict[str, Any]:
    c = s.contracts
    node = staking.get_node(s.chain, c, operator)
    weight = int(s.chain.call(c.nodes, "getWeight", node.index)) if node.registered else 0
    return {
        "operator": node.operator,
        "registered": node.registered,
        "index": node.index,
        "signer": node.signer,
        "endpoint": node.endpoint,
        "capabilities": node.capabilities,
        "stake_wei": str(node.stake_wei),
        "unbonding_wei": str(node.unbonding_wei),
        "unbond_release_at": node.unbond_release_at,
        "weight": str(weight),
        "balance_wei": str(s.chain.call(c.token, "balanceOf", node.operator)),
    }


def _show(as_json: bool, title: str, payload: dict[str, Any]) -> None:
    emit(as_json, payload, lambda console: console.print(kv_table(title, payload.items())))


def _target(s: Session, address: str | None, node: int | None) -> str:
    if address is not None:
        if not Web3.is_address(address):
            raise ConfigError(f"not an address: {address}")
        return Web3.to_checksum_address(address)
    return s.account(node).address


@app.command()
def register(
    endpoint: str = typer.Option(..., "--endpoint", help="URL other nodes reach this node at."),
    stake: str = typer.Option(..., "--stake", help="Initial stake (wei, or e.g. 5000dtm)."),
    signer: str | None = typer.Option(None, "--signer", help="Signing key address (default: the operator)."),
    capabilities: int = typer.Option(0xFE, "--capabilities", help="Bit i set = supports task kind i."),
    node: int | None = NODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Register the account as an operator with an initial stake."""
    s = session()
    tx = s.tx(node)
    index, sent = staking.register_node(
        tx,
        s.chain,
        s.contracts,
        signer=signer or tx.address,
        endpoint=endpoint,
        capabilities=capabilities,
        stake_wei=parse_wei(stake),
    )
    _show(as_json, "registered", {"index": index, "tx_hash": sent.tx_hash} | _node_json(s, tx.address))


@app.command()
def add(
    amount: str = typer.Argument(..., help="Amount (wei, or e.g. 500dtm)."),
    node: int | None = NODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Add to the active stake."""
    s = session()
    tx = s.tx(node)
    sent = staking.add_stake(tx, s.chain, s.contracts, parse_wei(amount))
    _show(as_json, "stake added", {"tx_hash": sent.tx_hash} | _node_json(s, tx.address))


@app.command()
def unbond(
    amount: str = typer.Argument(..., help="Amount (wei, or e.g. 500dtm)."),
    node: int | None = NODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Move stake into unbonding; it can be withdrawn after the unbonding delay."""
    s = session()
    tx = s.tx(node)
    sent = staking.request_unbond(tx, s.contracts, parse_wei(amount))
    _show(as_json, "unbonding", {"tx_hash": sent.tx_hash} | _node_json(s, tx.address))


@app.command()
def withdraw(node: int | None = NODE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Withdraw the unbonded stake once the delay has passed."""
    s = session()
    tx = s.tx(node)
    amount, sent = staking.withdraw_unbonded(tx, s.contracts)
    _show(
        as_json, "withdrawn", {"amount_wei": str(amount), "tx_hash": sent.tx_hash} | _node_json(s, tx.address)
    )


@app.command()
def show(
    address: str | None = typer.Argument(None, help="Operator address (default: the selected account)."),
    node: int | None = NODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """An operator's stake, unbonding amount, election weight and token balance."""
    s = session()
    _show(as_json, "stake", _node_json(s, _target(s, address, node)))


@rewards_app.command("show")
def rewards_show(
    address: str | None = typer.Argument(None, help="Account (default: the selected account)."),
    node: int | None = NODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """What the TaskManager owes an account."""
    s = session()
    account = _target(s, address, node)
    owed = int(s.chain.call(s.contracts.tasks, "getOwed", account))
    _show(as_json, "rewards", {"account": account, "owed_wei": str(owed)})


@rewards_app.command("withdraw")
def rewards_withdraw(node: int | None = NODE_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Withdraw everything the TaskManager owes the account."""
    s = session()
    tx = s.tx(node)
    amount, sent = withdraw_rewards(tx, s.contracts)
    _show(
        as_json,
        "rewards withdrawn",
        {"account": tx.address, "amount_wei": str(amount), "tx_hash": sent.tx_hash},
    )
