"""``datum oracle spec|status|deploy-example|ask``: the DataOracle for dApp developers.

``spec`` builds the inline statistics spec (and its specHash) a consumer contract passes to
``DataOracle.request``; ``status`` shows a request, its task, the callback's outcome and the
decoded public output; ``deploy-example`` deploys and funds the example CreditScoreLender on
a devnet; ``ask`` makes that lender request a credit limit. Thin over `oracle.oracle_sdk`.
"""

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.console import Console
from web3 import Web3

from compute.errors import ConfigError
from compute.mpc import TableSchema

from .. import oracle_sdk
from ..chain.contracts import DatumContracts
from ..node.oracle_output import OutputType, parse_output_spec
from ..node.stats_datasets import read_schema_file
from .common import JSON_OPTION, emit, kv_table, parse_wei, session

app = typer.Typer(
    no_args_is_help=True,
    help="The data oracle for dApps: inline specs, request status, the example consumer.",
)


def _ids(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _parts(with_: str, schemas: list[TableSchema]) -> list[tuple[int, str]]:
    """``ID,ID`` (one schema: every dataset is a part of its table) or ``ID:table,...``."""
    parts = []
    for item in _ids(with_):
        raw_id, sep, table = item.partition(":")
        try:
            dataset_id = int(raw_id)
        except ValueError:
            raise ConfigError(f"--with: {raw_id!r} is not a dataset id") from None
        if not sep:
            if len(schemas) != 1:
                raise ConfigError("--with: with several --schema files name each part's table (ID:table)")
            table = schemas[0].name
        parts.append((dataset_id, table))
    if not parts:
        raise ConfigError("--with needs at least one dataset id")
    return parts


@app.command()
def spec(
    schema: Annotated[
        list[Path],
        typer.Option(
            "--schema", exists=True, dir_okay=False, help="Declared table schema (JSON), repeatable."
        ),
    ],
    query: str = typer.Option(
        ..., "--query", help='SQL of the statistic, e.g. "SELECT mean(income) FROM bank".'
    ),
    with_: str = typer.Option(
        ..., "--with", help="Datasets feeding it: ID,ID (or ID:table,... for several tables)."
    ),
    values: str = typer.Option(
        ..., "--values", help="Published aggregates, comma separated (mean(income)@group)."
    ),
    decimals: int = typer.Option(..., "--decimals", min=0, max=18, help="Decimals of every published value."),
    types: str | None = typer.Option(
        None, "--types", help="uint256/int256 per value (default: all uint256)."
    ),
    min_group_size: int | None = typer.Option(
        None,
        "--min-group-size",
        min=1,
        help="Default: the largest the datasets' consent asks for (not below it).",
    ),
    max_error: float | None = typer.Option(
        None,
        "--max-error",
        help=(
            "Engine accuracy target, relative to each aggregate's scale (docs/MPC.md). Default: the "
            "tightest that keeps every published value within half a unit of its last decimal."
        ),
    ),
    protocol: str = typer.Option("aby3", "--protocol", help="aby3 (3 parties) or cheetah (2)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Print the specHash and inline specURI a consumer contract passes to DataOracle.request."""
    if protocol not in ("aby3", "cheetah"):
        raise ConfigError(f"--protocol must be aby3 or cheetah, got {protocol!r}")
    tables = [read_schema_file(p) for p in schema]
    parts = _parts(with_, tables)
    names = [v for v in (x.strip() for x in _split_values(values)) if v]
    type_list = _ids(types) if types else ["uint256"] * len(names)
    bad = [t for t in type_list if t not in ("uint256", "int256")]
    if bad:
        raise ConfigError(f"--types: {', '.join(bad)} (use uint256 or int256)")
    s = session()
    built = asyncio.run(
        oracle_sdk.prepare_oracle_spec(
            s.chain,
            s.contracts,
            dataset_ids=[d for d, _ in parts],
            tables=tables,
            table_of=dict(parts),
            sql=query,
            values=names,
            decimals=decimals,
            types=cast(list[OutputType], type_list),
            min_group_size=min_group_size,
            max_error=max_error,
            protocol=cast(Literal["aby3", "cheetah"], protocol),
        )
    )
    payload = built.to_json()

    def human(console: Console) -> None:
        console.print(kv_table("oracle spec", [(k, v) for k, v in payload.items() if k != "spec_uri"]))
        console.print("specURI:")
        console.print(payload["spec_uri"], soft_wrap=True)

    emit(as_json, payload, human)


def _split_values(text: str) -> list[str]:
    """Split on commas outside parentheses/brackets (``quantile(age, 0.9), count(*)``)."""
    out, depth, current = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    out.append(current)
    return out


@app.command()
def status(
    request_id: int = typer.Argument(..., min=1),
    output_spec: Annotated[
        Path | None,
        typer.Option(
            "--output-spec",
            exists=True,
            dir_okay=False,
            help="Public output spec JSON (default: the inline spec's).",
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """A request: its task's state, whether it was delivered, the callback's outcome, the output."""
    s = session()
    spec_model = None
    if output_spec is not None:
        try:
            spec_model = parse_output_spec(json.loads(output_spec.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {output_spec}: {exc}") from None
    st = oracle_sdk.oracle_status(s.chain, s.contracts, request_id, spec_model)
    payload = st.to_json()

    def human(console: Console) -> None:
        r, f = payload["request"], payload["fulfilment"]
        rows: list[tuple[str, Any]] = [
            ("consumer", r["consumer"]),
            ("task", f"{r['task_id']} ({payload['task_state']})"),
            ("callback gas limit", r["callback_gas_limit"]),
            ("delivered", r["delivered"]),
            ("callback succeeded", r["callback_succeeded"] if r["delivered"] else "-"),
        ]
        if f is not None:
            rows += [
                ("fulfilled in", f"block {f['block']}, tx {f['tx_hash']}"),
                ("public output", f["public_output"]),
            ]
        for name, value in (payload["decoded"] or {}).items():
            rows.append((name, value))
        console.print(kv_table(f"oracle request {request_id}", rows))

    emit(as_json, payload, human)


@app.command("deploy-example")
def deploy_example(
    bank_a: int = typer.Option(..., "--bank-a", min=1, help="The first bank's income dataset."),
    bank_b: int = typer.Option(..., "--bank-b", min=1, help="The second bank's income dataset."),
    limit_bps: int = typer.Option(
        5_000, "--limit-bps", min=0, max=10_000, help="Credit limit / mean income."
    ),
    fund: str = typer.Option(
        "1000dtm", "--fund", help="Tokens sent to the lender for fees (wei, or e.g. 500dtm)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Deploy the example CreditScoreLender (owned by the requester account) and fund it."""
    s = session()
    tx = s.tx()
    updated = oracle_sdk.deploy_example(
        tx, s.chain, s.store, s.deployment, bank_a, bank_b, limit_bps, parse_wei(fund)
    )
    lender = updated.contracts.credit_score_lender
    payload = {
        "credit_score_lender": lender,
        "owner": tx.address,
        "bank_datasets": [bank_a, bank_b],
        "limit_bps": limit_bps,
        "funded_wei": str(parse_wei(fund)),
        "oracle": updated.contracts.data_oracle,
    }
    emit(as_json, payload, lambda c: c.print(kv_table("CreditScoreLender deployed", payload.items())))


@app.command()
def ask(
    lender: str = typer.Option(..., "--lender", help="The CreditScoreLender's address."),
    applicant: str = typer.Option(..., "--applicant", help="Who the credit limit is for."),
    spec_hash: str = typer.Option(..., "--spec-hash", help="0x specHash (from `datum oracle spec`)."),
    spec_uri: str = typer.Option(..., "--spec-uri", help="The inline specURI (from `datum oracle spec`)."),
    fee: str = typer.Option("10dtm", "--fee", help="Fee for the committee and protocol."),
    committee: int = typer.Option(3, "--committee", min=1, max=8),
    quorum: int = typer.Option(2, "--quorum", min=1, max=8),
    timeout: int = typer.Option(900, "--timeout", min=60, help="Seconds until the task refunds."),
    as_json: bool = JSON_OPTION,
) -> None:
    """As the lender's owner, request a credit limit through the DataOracle."""
    s = session()
    try:
        digest = bytes.fromhex(spec_hash.removeprefix("0x"))
    except ValueError:
        raise ConfigError("--spec-hash is not hex") from None
    if len(digest) != 32:
        raise ConfigError("--spec-hash must be 32 bytes")
    deployment = s.deployment.model_copy(
        update={"contracts": s.deployment.contracts.model_copy(update={"credit_score_lender": lender})}
    )
    bound = DatumContracts(s.chain.w3, deployment, s.store).lender
    assert bound is not None
    now = int(s.chain.w3.eth.get_block("latest")["timestamp"])
    request_id, task_id, sent = oracle_sdk.request_credit_limit(
        s.tx(),
        s.contracts,
        bound,
        applicant=Web3.to_checksum_address(applicant),
        spec_hash=digest,
        spec_uri=spec_uri,
        fee_wei=parse_wei(fee),
        deadline=now + timeout,
        committee_size=committee,
        quorum=quorum,
    )
    payload = {"request_id": request_id, "task_id": task_id, "tx_hash": sent.tx_hash}
    emit(as_json, payload, lambda c: c.print(kv_table("credit limit requested", payload.items())))
