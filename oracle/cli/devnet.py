"""``datum devnet up|status|down``: a local network on this machine."""

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .. import devnet as dn
from .common import JSON_OPTION, emit, home_path, kv_table, parse_wei, session

app = typer.Typer(
    no_args_is_help=True, help="A local network: anvil, the contracts and staked nodes (state in DATUM_HOME)."
)


def _state_json(state: dn.DevnetState, running: bool) -> dict[str, Any]:
    return {
        "running": running,
        "pid": state.pid,
        "rpc_url": state.rpc_url,
        "chain_id": state.chain_id,
        "deploy_block": state.deployment.deploy_block,
        "contracts": state.deployment.contracts.model_dump(),
        "nodes": [n.model_dump(mode="json") | {"stake_wei": str(n.stake_wei)} for n in state.nodes],
    }


def _render(state: dn.DevnetState, running: bool, title: str) -> Any:
    def show(console: Console) -> None:
        rows = [
            ("running", running),
            ("rpc", state.rpc_url),
            ("chain id", state.chain_id),
            ("pid", state.pid),
        ]
        rows += [
            (name, address) for name, address in state.deployment.contracts.model_dump().items() if address
        ]
        console.print(kv_table(title, rows))
        nodes = Table(title="nodes")
        for column in ("index", "operator", "endpoint", "stake (wei)"):
            nodes.add_column(column)
        for n in state.nodes:
            nodes.add_row(str(n.index), n.operator, n.endpoint, str(n.stake_wei))
        console.print(nodes)

    return show


@app.command()
def up(
    nodes: int = typer.Option(3, "--nodes", min=1, max=64, help="Number of staked nodes."),
    stake: str = typer.Option("10000dtm", "--stake", help="Stake of each node (wei, or e.g. 5000dtm)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Start anvil, deploy the contracts, register and stake N nodes; leave it running."""
    s = session()
    home = home_path(s.settings)
    stake_wei = parse_wei(stake)
    if as_json:
        state = dn.up(home, nodes, anvil=s.settings.anvil, store=s.store, stake_wei=stake_wei)
    else:
        console = Console(stderr=True)
        with console.status("starting the devnet") as status:
            state = dn.up(
                home,
                nodes,
                anvil=s.settings.anvil,
                store=s.store,
                stake_wei=stake_wei,
                progress=lambda step: status.update(step),
            )
    emit(as_json, _state_json(state, True) | {"home": str(home)}, _render(state, True, f"devnet in {home}"))


@app.command()
def status(as_json: bool = JSON_OPTION) -> None:
    """Whether the devnet of DATUM_HOME runs, its endpoint, contracts and nodes."""
    s = session()
    home = home_path(s.settings)
    state = dn.load_state(home)
    if state is None:
        emit(
            as_json,
            {"running": False, "home": str(home)},
            lambda c: c.print(f"no devnet in {home}; start one with `datum devnet up`"),
        )
        return
    running = dn.is_running(state)
    payload = _state_json(state, running) | {"home": str(home)}
    if running:
        payload["block"] = s.chain.block_number()
    emit(as_json, payload, _render(state, running, f"devnet in {home}"))


@app.command()
def down(as_json: bool = JSON_OPTION) -> None:
    """Stop the devnet's anvil (only the process it recorded) and forget its state."""
    home = home_path(session().settings)
    state = dn.down(home)
    payload: dict[str, Any] = {"stopped": state is not None, "home": str(home)}
    if state is not None:
        payload["pid"] = state.pid
    emit(
        as_json,
        payload,
        lambda c: c.print(f"stopped anvil pid {state.pid}" if state else f"no devnet in {home}"),
    )
