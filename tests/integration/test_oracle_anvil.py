"""The oracle path on a real anvil with the real contracts: a CreditScoreLender asks for a
credit limit through the DataOracle (kind 3); the elected committee's signing keys sign the
encoded public output; `finalize_with_output` fulfils and the callback sets the limit; nodes
and dataset owners are paid. Consumers whose callback reverts or burns all its gas are still
fulfilled and paid for; a second fulfilment is refused with the decoded custom error; an
unanswered request refunds the consumer after the deadline.

Accounts: 0 deploys (owner of the lender, treasury); 1..5 operators with signing keys
dev_account(100 + i); 12 the banks' dataset owner; 13 the applicant; 14 a bystander.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest
from eth_abi.abi import encode
from web3.contract import Contract

from compute.mpc.numerics import Field, Numerics
from compute.mpc.query import Func
from compute.mpc.result import AggregateResult, QueryResult
from incentives.rewards import DatasetPayee, split_finalization
from oracle import oracle_sdk
from oracle.chain import oracle as chain_oracle
from oracle.chain import staking, tasks
from oracle.chain.contracts import DatumContracts
from oracle.chain.datasets import UNLIMITED_USES, ConsentPolicy, kinds_mask, register_dataset
from oracle.chain.deploy import TOKEN
from oracle.chain.errors import revert_type
from oracle.chain.signer import SignedResult, public_output_hash, sign_result
from oracle.chain.tasks import TaskRequest, TaskState
from oracle.chain.txmanager import Sent
from oracle.devnet import dev_account
from oracle.node.chainops import ChainOps
from oracle.node.oracle_output import PublicOutputSpec, decode_public_output, encode_public_output
from oracle.node.oracle_path import finalize_with_output, inline_spec, inline_spec_uri, oracle_request_id

if TYPE_CHECKING:
    from conftest import Net

pytestmark = pytest.mark.integration

OPERATORS = range(1, 6)
STAKES_TOKENS = [5_000, 3_000, 4_000, 2_000, 6_000]
BANK_OWNER, APPLICANT, BYSTANDER = 12, 13, 14
FEE = 300 * TOKEN
PRICE = 7 * TOKEN
LIMIT_BPS = 2_500
MEAN = "mean(bank.income)"
OUTPUT_SPEC = PublicOutputSpec(values=[MEAN], types=["uint256"], decimals=2)
SPEC = b'{"schema":"test.oracle.v1","query":"SELECT mean(income) FROM bank"}'


@dataclass(frozen=True)
class World:
    net: Net
    account_of: dict[str, int]  # operator address -> dev account
    datasets: tuple[int, int]
    lender: Contract


@pytest.fixture(scope="module")
def world(net: Net) -> World:
    account_of: dict[str, int] = {}
    for account, stake in zip(OPERATORS, STAKES_TOKENS, strict=True):
        net.tx(0).send(net.contracts.token, "transfer", dev_account(account).address, stake * TOKEN)
        staking.register_node(
            net.tx(account),
            net.chain,
            net.contracts,
            signer=dev_account(100 + account).address,
            endpoint=f"http://127.0.0.1:{9100 + account}",
            capabilities=0xFE,
            stake_wei=stake * TOKEN,
        )
        account_of[dev_account(account).address] = account
    policy = ConsentPolicy(kinds_mask(["stats"]), True, 0, UNLIMITED_USES, 10)
    ids = tuple(
        register_dataset(
            net.tx(BANK_OWNER),
            net.contracts,
            metadata_uri=f"datum:dataset:bank-{i}",
            metadata_hash=hashlib.sha256(bytes([i])).digest(),
            rows=500,
            price_wei=PRICE,
            policy=policy,
        )[0]
        for i in (1, 2)
    )
    deployment = oracle_sdk.deploy_example(
        net.tx(0), net.chain, net.store, net.deployment, ids[0], ids[1], LIMIT_BPS, 10_000 * TOKEN
    )
    lender = DatumContracts(net.chain.w3, deployment, net.store).lender
    assert lender is not None
    return World(net, account_of, (ids[0], ids[1]), lender)


@pytest.fixture
def w(world: World, isolated: Net) -> World:
    return world


def owed(net: Net, address: str) -> int:
    return int(net.chain.call(net.contracts.tasks, "getOwed", address))


def accept_all(w: World, task_id: int) -> list[int]:
    committee = w.net.chain.call(w.net.contracts.tasks, "getCommittee", task_id)
    members = [w.account_of[a] for a in committee]
    for account in members:
        tasks.accept_task(w.net.tx(account), w.net.contracts, task_id)
    return members


def sign_all(
    w: World, members: list[int], task_id: int, result_hash: bytes, output: bytes
) -> list[SignedResult]:
    domain = tasks.result_domain(w.net.chain, w.net.contracts)
    epoch = int(w.net.chain.call(w.net.contracts.tasks, "getConfigEpoch"))
    return [
        sign_result(
            bytes(dev_account(100 + m).key), domain, task_id, result_hash, public_output_hash(output), epoch
        )
        for m in members
    ]


def mean_result(value: float) -> QueryResult:
    numerics = Numerics.with_bits(Field("FM128"), 40)
    return QueryResult(
        ("*",), (AggregateResult(MEAN, Func.MEAN, (value,), (0.01,)),), numerics, 10, 0.0, "00" * 32
    )


def finalize(
    w: World, member: int, task_id: int, result_hash: bytes, output: bytes, sigs: list[SignedResult]
) -> Sent:
    ops = ChainOps(w.net.chain, w.net.contracts, w.net.tx(member))
    epoch = int(w.net.chain.call(w.net.contracts.tasks, "getConfigEpoch"))
    return asyncio.run(finalize_with_output(ops, task_id, result_hash, output, epoch, sigs))


def ask_credit_limit(w: World, deadline_in_s: int = 3_600) -> tuple[int, int]:
    spec_hash = hashlib.sha256(SPEC).digest()
    request_id, task_id, _ = oracle_sdk.request_credit_limit(
        w.net.tx(0),
        w.net.contracts,
        w.lender,
        applicant=dev_account(APPLICANT).address,
        spec_hash=spec_hash,
        spec_uri=inline_spec_uri(SPEC),
        fee_wei=FEE,
        deadline=w.net.now() + deadline_in_s,
        committee_size=3,
        quorum=2,
    )
    return request_id, task_id


def test_the_lender_gets_its_credit_limit_and_everyone_is_paid(w: World) -> None:
    net, c = w.net, w.net.contracts
    lender_balance = int(net.chain.call(c.token, "balanceOf", w.lender.address))
    request_id, task_id = ask_credit_limit(w)
    assert int(net.chain.call(c.token, "balanceOf", w.lender.address)) == lender_balance - FEE - 2 * PRICE

    # what a node sees: the task is the oracle's, its spec is inline and checks against the hash
    view = tasks.get_task(net.chain, c, task_id, history=True)
    assert view.requester == w.lender.address and view.kind == 3 and view.dataset_ids == w.datasets
    (requested,) = [e for e in view.history if e.name == "TaskRequested"]
    assert inline_spec(str(requested.args["specURI"]), view.spec_hash) == SPEC
    ops = ChainOps(net.chain, c, net.tx(BYSTANDER))
    assert asyncio.run(oracle_request_id(ops, task_id)) == request_id
    record = chain_oracle.get_request(net.chain, c, request_id)
    assert (record.consumer, record.task_id, record.delivered) == (w.lender.address, task_id, False)
    assert record.callback_gas_limit == 100_000

    members = accept_all(w, task_id)
    output = encode_public_output(mean_result(61_234.567), OUTPUT_SPEC)
    result_hash = hashlib.sha256(b"transcript").digest()
    sigs = sign_all(w, members[:2], task_id, result_hash, output)
    treasury = net.deployment.treasury
    payees = [*w.account_of, treasury, dev_account(BANK_OWNER).address]
    before = {a: owed(net, a) for a in payees}

    sent = finalize(w, members[0], task_id, result_hash, output, sigs)

    (fulfilled,) = c.events_in(c.oracle, sent.receipt, "OracleFulfilled")
    assert fulfilled.args["callbackSucceeded"] is True and bytes(fulfilled.args["publicOutput"]) == output
    (credit,) = c.events_in(w.lender, sent.receipt, "CreditLimitSet")
    assert credit.args["meanIncome"] == 6_123_457  # 61,234.567 to 2 decimals, half to even
    limit = 6_123_457 * LIMIT_BPS // 10_000
    assert credit.args["creditLimit"] == limit
    assert net.chain.call(w.lender, "getCreditLimit", dev_account(APPLICANT).address) == limit
    assert net.chain.call(w.lender, "getApplication", request_id)[2] is False  # no longer pending

    (finalized,) = c.events_in(c.tasks, sent.receipt, "TaskFinalized")
    expected = split_finalization(
        FEE,
        net.deployment.config.task.protocol_fee_bps,
        list(finalized.args["signers"]),
        treasury,
        [DatasetPayee(dev_account(BANK_OWNER).address, PRICE)] * 2,
    ).owed()
    assert len(finalized.args["signers"]) == 2
    for account in payees:
        assert owed(net, account) - before[account] == expected.get(account, 0), account

    status = oracle_sdk.oracle_status(net.chain, c, request_id, OUTPUT_SPEC)
    assert status.request.delivered and status.request.callback_succeeded
    assert status.task.state is TaskState.FINALIZED
    assert status.fulfilment is not None and status.fulfilment.tx_hash == sent.tx_hash
    assert status.decoded == {MEAN: decode_public_output(output, OUTPUT_SPEC)[MEAN]}
    assert str(status.decoded[MEAN]) == "61234.57"


def test_a_second_fulfilment_is_refused_with_the_decoded_error(w: World) -> None:
    net, c = w.net, w.net.contracts
    request_id, task_id = ask_credit_limit(w)
    members = accept_all(w, task_id)
    output = encode_public_output(mean_result(50_000.0), OUTPUT_SPEC)
    result_hash = hashlib.sha256(b"r").digest()
    sigs = sign_all(w, members, task_id, result_hash, output)
    finalize(w, members[1], task_id, result_hash, output, sigs)
    epoch = int(net.chain.call(c.tasks, "getConfigEpoch"))
    with pytest.raises(revert_type("DataOracle__AlreadyDelivered")) as again:
        chain_oracle.fulfill(net.tx(BYSTANDER), c, request_id, result_hash, output, epoch, sigs)
    assert again.value.args_by_name == {"requestId": request_id}
    with pytest.raises(revert_type("DataOracle__AlreadyDelivered")):
        chain_oracle.deliver(net.tx(BYSTANDER), c, request_id, output)
    # the node path, once delivered, falls back to the TaskManager, which refuses a finalized task
    with pytest.raises(revert_type("TaskManager__UnexpectedState")):
        finalize(w, members[2], task_id, result_hash, output, sigs)
    assert (
        net.chain.call(w.lender, "getCreditLimit", dev_account(APPLICANT).address)
        == 5_000_000 * LIMIT_BPS // 10_000
    )


def test_signatures_over_another_output_are_refused(w: World) -> None:
    net, c = w.net, w.net.contracts
    request_id, task_id = ask_credit_limit(w)
    members = accept_all(w, task_id)
    signed_output = encode_public_output(mean_result(40_000.0), OUTPUT_SPEC)
    sigs = sign_all(w, members, task_id, bytes(32), signed_output)
    forged = encode_public_output(mean_result(90_000.0), OUTPUT_SPEC)
    with pytest.raises(revert_type("TaskManager__NotCommitteeMember")):
        finalize(w, members[0], task_id, bytes(32), forged, sigs)
    assert chain_oracle.get_request(net.chain, c, request_id).delivered is False
    assert net.chain.call(w.lender, "getCreditLimit", dev_account(APPLICANT).address) == 0


def test_a_task_finalized_through_the_task_manager_is_delivered_later(w: World) -> None:
    net, c = w.net, w.net.contracts
    request_id, task_id = ask_credit_limit(w)
    members = accept_all(w, task_id)
    output = encode_public_output(mean_result(44_000.0), OUTPUT_SPEC)
    sigs = sign_all(w, members[:2], task_id, bytes(32), output)
    epoch = int(net.chain.call(c.tasks, "getConfigEpoch"))
    tasks.submit_result(net.tx(BYSTANDER), c, task_id, bytes(32), output, epoch, sigs)
    assert chain_oracle.get_request(net.chain, c, request_id).delivered is False
    with pytest.raises(revert_type("DataOracle__OutputMismatch")):
        chain_oracle.deliver(net.tx(BYSTANDER), c, request_id, output + b"\x00")
    # the node path sees the undelivered request and fulfils: the stored result is delivered
    sent = finalize(w, members[0], task_id, bytes(32), output, sigs)
    (fulfilled,) = c.events_in(c.oracle, sent.receipt, "OracleFulfilled")
    assert fulfilled.args["callbackSucceeded"] is True
    assert (
        net.chain.call(w.lender, "getCreditLimit", dev_account(APPLICANT).address)
        == 4_400_000 * LIMIT_BPS // 10_000
    )


@pytest.mark.parametrize("consumer_name", ["RevertingConsumer", "GasBurningConsumer"])
def test_a_failing_callback_never_blocks_fulfilment_or_payment(w: World, consumer_name: str) -> None:
    net, c = w.net, w.net.contracts
    consumer_address, _ = net.tx(0).deploy(net.store.load(consumer_name), c.oracle.address)
    consumer = net.chain.w3.eth.contract(address=consumer_address, abi=net.store.load(consumer_name).abi)
    net.tx(0).send(c.token, "transfer", consumer_address, 1_000 * TOKEN)
    callback_gas = 150_000
    sent = net.tx(BYSTANDER).send(consumer, "ask", [], FEE, net.now() + 3_600, callback_gas)
    (requested,) = c.events_in(c.oracle, sent.receipt, "OracleRequested")
    request_id, task_id = int(requested.args["requestId"]), int(requested.args["taskId"])
    members = accept_all(w, task_id)
    output = encode(["uint256"], [42])
    sigs = sign_all(w, members, task_id, bytes(32), output)
    before = {a: owed(net, a) for a in w.account_of}

    done = finalize(w, members[2], task_id, bytes(32), output, sigs)

    (fulfilled,) = c.events_in(c.oracle, done.receipt, "OracleFulfilled")
    assert fulfilled.args["callbackSucceeded"] is False
    record = chain_oracle.get_request(net.chain, c, request_id)
    assert record.delivered and not record.callback_succeeded
    assert tasks.get_task(net.chain, c, task_id).state is TaskState.FINALIZED
    (finalized,) = c.events_in(c.tasks, done.receipt, "TaskFinalized")
    paid = list(finalized.args["signers"])
    assert len(paid) == 3
    share = (FEE - FEE * net.deployment.config.task.protocol_fee_bps // 10_000) // 3
    for operator in w.account_of:
        assert owed(net, operator) - before[operator] == (share if operator in paid else 0)
    if consumer_name == "GasBurningConsumer":
        assert done.gas_used > callback_gas  # the callback consumed its whole allowance
    status = oracle_sdk.oracle_status(net.chain, c, request_id, None)
    assert status.fulfilment is not None and status.fulfilment.callback_succeeded is False
    assert status.decoded is None


def test_an_unanswered_request_refunds_the_consumer_after_the_deadline(w: World) -> None:
    net, c = w.net, w.net.contracts
    start = int(net.chain.call(c.token, "balanceOf", w.lender.address))
    request_id, task_id = ask_credit_limit(w, deadline_in_s=600)
    members = accept_all(w, task_id)
    output = encode_public_output(mean_result(1.0), OUTPUT_SPEC)
    sigs = sign_all(w, members, task_id, bytes(32), output)
    with pytest.raises(revert_type("DataOracle__NotFinalized")):
        chain_oracle.deliver(net.tx(BYSTANDER), c, request_id, output)
    with pytest.raises(revert_type("TaskManager__Deadline")):
        tasks.refund(net.tx(BYSTANDER), c, task_id)
    net.warp(601)
    with pytest.raises(revert_type("TaskManager__Deadline")):
        finalize(w, members[0], task_id, bytes(32), output, sigs)  # too late to fulfil
    tasks.refund(net.tx(BYSTANDER), c, task_id)
    assert owed(net, w.lender.address) == FEE + 2 * PRICE
    net.tx(0).send(w.lender, "claimRefunds")
    assert int(net.chain.call(c.token, "balanceOf", w.lender.address)) == start
    status = oracle_sdk.oracle_status(net.chain, c, request_id, OUTPUT_SPEC)
    assert (
        status.task.state is TaskState.REFUNDED and not status.request.delivered and status.fulfilment is None
    )


def test_a_task_not_opened_by_the_oracle_is_submitted_to_the_task_manager(w: World) -> None:
    net, c = w.net, w.net.contracts
    req = TaskRequest(
        kind=3,
        committee_size=3,
        quorum=2,
        deadline=net.now() + 3_600,
        fee_wei=FEE,
        spec_hash=hashlib.sha256(SPEC).digest(),
        spec_uri=inline_spec_uri(SPEC),
    )
    task_id, _ = tasks.request_task(net.tx(0), net.chain, c, req)
    ops = ChainOps(net.chain, c, net.tx(BYSTANDER))
    assert asyncio.run(oracle_request_id(ops, task_id)) == 0
    members = accept_all(w, task_id)
    output = encode(["int256"], [-5])
    sigs = sign_all(w, members[:2], task_id, bytes(32), output)
    sent = finalize(w, members[0], task_id, bytes(32), output, sigs)
    assert c.events_in(c.oracle, sent.receipt, "OracleFulfilled") == []
    (finalized,) = c.events_in(c.tasks, sent.receipt, "TaskFinalized")
    assert bytes(finalized.args["publicOutput"]) == output
    with pytest.raises(revert_type("DataOracle__UnknownRequest")):
        chain_oracle.get_request(net.chain, c, 10_000)
