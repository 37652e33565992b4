"""The chain layer against the real contracts on anvil: deployment, staking, the election
mirror, signed results, rewards, refunds, slashing and typed reverts.

Accounts: 0 deploys (owner, treasury, requester); 1..10 operators with signing keys
dev_account(100 + i); 11 an operator whose stake fell below the minimum; 12 a dataset owner
and reporter; 13 a fresh operator; 14 a bystander.
"""

import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from eth_hash.auto import keccak
from web3 import Web3

from incentives.committee import NotEnoughNodes, elect, task_seed
from incentives.rewards import DatasetPayee, split_finalization, split_slash
from oracle.chain import staking, tasks
from oracle.chain.contracts import DatumContracts
from oracle.chain.datasets import UNLIMITED_USES, ConsentPolicy, kinds_mask, register_dataset
from oracle.chain.deploy import TOKEN, Deployment, deploy_credit_lender
from oracle.chain.errors import ContractRevert, TransactionFailed, revert_type
from oracle.chain.signer import SignedResult, public_output_hash, result_digest, sign_result
from oracle.chain.tasks import TaskRequest, TaskState
from oracle.devnet import dev_account

if TYPE_CHECKING:
    from conftest import Net

pytestmark = pytest.mark.integration

STAKES_TOKENS = [5_000, 1_200, 3_000, 1_000, 8_000, 2_000, 1_500, 4_000, 2_500, 6_000]
OPERATORS = range(1, 11)
LOW_OPERATOR, OWNER, FRESH, BYSTANDER = 11, 12, 13, 14
FEE = 1_000 * TOKEN
MIN_STAKE = 1_000 * TOKEN  # the test deployment's (checked below)


def signer_key(account: int) -> bytes:
    return bytes(dev_account(100 + account).key)


def fund(net: "Net", account: int, amount_wei: int) -> None:
    net.tx(0).send(net.contracts.token, "transfer", dev_account(account).address, amount_wei)


@dataclass(frozen=True)
class Operators:
    """Who operates which node index."""

    account_of: dict[str, int]  # operator address -> dev account
    index_of: dict[int, int]  # dev account -> node index


@pytest.fixture(scope="module")
def operators(net: "Net") -> Operators:
    account_of, index_of = {}, {}
    for account, stake in zip(OPERATORS, STAKES_TOKENS, strict=True):
        fund(net, account, stake * TOKEN)
        index, _ = staking.register_node(
            net.tx(account),
            net.chain,
            net.contracts,
            signer=dev_account(100 + account).address,
            endpoint=f"http://127.0.0.1:{9000 + account}",
            capabilities=0xFE,
            stake_wei=stake * TOKEN,
        )
        account_of[dev_account(account).address] = account
        index_of[account] = index
    fund(net, LOW_OPERATOR, MIN_STAKE)
    low_index, _ = staking.register_node(
        net.tx(LOW_OPERATOR),
        net.chain,
        net.contracts,
        signer=dev_account(100 + LOW_OPERATOR).address,
        endpoint="http://127.0.0.1:9011",
        capabilities=0xFE,
        stake_wei=MIN_STAKE,
    )
    staking.request_unbond(net.tx(LOW_OPERATOR), net.contracts, TOKEN)  # now below the minimum: weight 0
    account_of[dev_account(LOW_OPERATOR).address] = LOW_OPERATOR
    index_of[LOW_OPERATOR] = low_index
    fund(net, OWNER, 10_000 * TOKEN)
    return Operators(account_of, index_of)


@pytest.fixture
def world(operators: Operators, isolated: "Net") -> tuple["Net", Operators]:
    return isolated, operators


def request(
    net: "Net", k: int, quorum: int, datasets: tuple[int, ...] = (), fee: int = FEE
) -> tuple[int, int]:
    """Request a stats task from account 0; returns (task id, request block)."""
    req = TaskRequest(
        kind=tasks.TASK_KINDS["stats"],
        committee_size=k,
        quorum=quorum,
        deadline=net.now() + 3_600,
        fee_wei=fee,
        spec_hash=keccak(b"spec"),
        spec_uri="http://127.0.0.1:9999/spec",
        dataset_ids=datasets,
    )
    task_id, sent = tasks.request_task(net.tx(0), net.chain, net.contracts, req)
    return task_id, sent.block_number


def accept_all(net: "Net", ops: Operators, task_id: int) -> list[int]:
    """Every member accepts with its operator key; returns their dev accounts by slot."""
    committee = net.chain.call(net.contracts.tasks, "getCommittee", task_id)
    members = [ops.account_of[a] for a in committee]
    for account in members:
        tasks.accept_task(net.tx(account), net.contracts, task_id)
    return members


def sign(net: "Net", account: int, task_id: int, result: bytes, output: bytes) -> SignedResult:
    epoch = int(net.chain.call(net.contracts.tasks, "getConfigEpoch"))
    domain = tasks.result_domain(net.chain, net.contracts)
    return sign_result(signer_key(account), domain, task_id, result, public_output_hash(output), epoch)


def owed(net: "Net", address: str) -> int:
    return int(net.chain.call(net.contracts.tasks, "getOwed", address))


def stake_of(net: "Net", account: int) -> int:
    return staking.get_node(net.chain, net.contracts, dev_account(account).address).stake_wei


# -- deployment ------------------------------------------------------------------------------


def test_deployment_is_wired_and_its_manifest_round_trips(net: "Net", tmp_path: Path) -> None:
    c, d, w3 = net.contracts, net.deployment, net.chain.w3
    for address in d.contracts.model_dump().values():
        if address:
            assert len(w3.eth.get_code(Web3.to_checksum_address(address))) > 0
    assert net.chain.call(c.nodes, "getTaskManager") == d.contracts.task_manager
    assert net.chain.call(c.data, "getTaskManager") == d.contracts.task_manager
    assert d.chain_id == net.chain.chain_id
    assert net.chain.call(c.tasks, "getConfigEpoch") == 1
    assert tuple(net.chain.call(c.tasks, "getConfig")) == net.deployment.config.task.as_tuple(d.deployer)
    assert net.chain.call(c.nodes, "getMinStake") == net.deployment.config.min_stake_wei == MIN_STAKE
    assert net.chain.call(c.token, "balanceOf", d.deployer) > 0
    path = tmp_path / "deployment.json"
    d.save(path)
    assert Deployment.load(path) == d
    with pytest.raises(revert_type("NodeRegistry__TaskManagerAlreadySet")):
        net.tx(0).send(c.nodes, "setTaskManager", d.contracts.task_manager)


def test_the_example_lender_deploys_over_two_datasets(world: tuple["Net", Operators]) -> None:
    net, _ = world
    policy = ConsentPolicy(kinds_mask(["stats"]), True, 0, UNLIMITED_USES, 10)
    ids = [
        register_dataset(
            net.tx(OWNER),
            net.contracts,
            metadata_uri=f"datum:dataset:{i}",
            metadata_hash=keccak(bytes([i])),
            rows=50,
            price_wei=0,
            policy=policy,
        )[0]
        for i in (1, 2)
    ]
    updated = deploy_credit_lender(net.tx(0), net.store, net.deployment, ids[0], ids[1], 2_500)
    assert updated.contracts.credit_score_lender is not None
    assert updated.contracts.model_dump(
        exclude={"credit_score_lender"}
    ) == net.deployment.contracts.model_dump(exclude={"credit_score_lender"})
    lender = DatumContracts(net.chain.w3, updated, net.store).lender
    assert lender is not None
    assert list(net.chain.call(lender, "getBankDatasets")) == ids
    assert net.chain.call(lender, "getOracle") == net.deployment.contracts.data_oracle
    assert net.chain.call(lender, "getLimitBps") == 2_500


# -- staking ---------------------------------------------------------------------------------


def test_register_stake_unbond_and_withdraw(world: tuple["Net", Operators]) -> None:
    net, _ = world
    c, tx = net.contracts, net.tx(FRESH)
    fund(net, FRESH, 3_000 * TOKEN)
    with pytest.raises(revert_type("NodeRegistry__StakeBelowMinimum")) as low:
        staking.register_node(
            tx, net.chain, c, signer=tx.address, endpoint="http://x", capabilities=1, stake_wei=1
        )
    assert low.value.args_by_name == {"stakeWei": 1, "minimumWei": MIN_STAKE}

    index, _ = staking.register_node(
        tx,
        net.chain,
        c,
        signer=tx.address,
        endpoint="http://127.0.0.1:1",
        capabilities=4,
        stake_wei=2_000 * TOKEN,
    )
    staking.add_stake(tx, net.chain, c, 1_000 * TOKEN)
    node = staking.get_node(net.chain, c, tx.address)
    assert (node.index, node.stake_wei, node.capabilities) == (index, 3_000 * TOKEN, 4)
    assert net.chain.call(c.nodes, "getWeight", index) == 3_000 * TOKEN

    staking.request_unbond(tx, c, 2_500 * TOKEN)  # 500 left: below the minimum, weight 0
    node = staking.get_node(net.chain, c, tx.address)
    assert (node.stake_wei, node.unbonding_wei) == (500 * TOKEN, 2_500 * TOKEN)
    assert net.chain.call(c.nodes, "getWeight", index) == 0
    with pytest.raises(revert_type("NodeRegistry__UnbondingLocked")):
        staking.withdraw_unbonded(tx, c)

    net.warp(net.deployment.config.unbonding_delay_s)
    before = net.chain.call(c.token, "balanceOf", tx.address)
    amount, _ = staking.withdraw_unbonded(tx, c)
    assert amount == 2_500 * TOKEN
    assert net.chain.call(c.token, "balanceOf", tx.address) == before + amount
    assert staking.get_node(net.chain, c, tx.address).unbonding_wei == 0


# -- election --------------------------------------------------------------------------------


def test_python_election_equals_the_onchain_committee_of_30_tasks(world: tuple["Net", Operators]) -> None:
    net, ops = world
    c, rng = net.contracts, random.Random(20240601)
    for _ in range(30):
        # change some stakes between requests so the weights at each block differ
        account = rng.choice(list(OPERATORS))
        if rng.random() < 0.5:
            amount = rng.randint(1, 400) * TOKEN
            fund(net, account, amount)
            staking.add_stake(net.tx(account), net.chain, c, amount)
        else:
            staking.request_unbond(net.tx(account), c, rng.randint(1, 300) * TOKEN)
        weights = staking.election_weights(net.chain, c)
        eligible = sum(1 for w in weights if w > 0)
        k = rng.randint(1, min(8, eligible))
        task_id, block = request(net, k, k // 2 + 1)

        (event,) = [e for e in tasks.task_history(net.chain, c, task_id) if e.name == "TaskRequested"]
        seed = task_seed(net.chain.prevrandao(block), task_id)
        assert seed == bytes(event.args["seed"])
        weights_then = staking.election_weights(net.chain, c, block - 1)
        assert weights_then == [
            int(net.chain.call(c.nodes, "getWeight", i, block=block - 1))
            for i in range(1, len(weights_then) + 1)
        ]
        expected = elect(seed, weights_then, k)
        assert list(net.chain.call(c.tasks, "getCommitteeIndices", task_id)) == expected
        assert staking.recompute_committee(net.chain, c, task_id, block) == expected
        operators = [n.operator for n in staking.list_nodes(net.chain, c, block)]
        assert list(event.args["committee"]) == [operators[i - 1] for i in expected]


def test_electcommittee_view_equals_python_for_200_random_draws(world: tuple["Net", Operators]) -> None:
    net, _ = world
    c, rng = net.contracts, random.Random(7)
    weights = staking.election_weights(net.chain, c)
    n = len(weights)
    assert 0 in weights  # the below-minimum operator takes part with weight 0
    mismatches = []
    reverted = 0
    for _ in range(200):
        seed = rng.randbytes(32)
        k = rng.randint(0, 11)
        exclude = [rng.randint(0, n + 2) for _ in range(rng.randint(0, 5))]
        try:
            expected: list[int] | NotEnoughNodes = elect(seed, weights, k, exclude)
        except NotEnoughNodes as exc:
            expected = exc
        try:
            got = list(net.chain.call(c.nodes, "electCommittee", seed, k, exclude))
        except ContractRevert as exc:
            reverted += 1
            assert isinstance(expected, NotEnoughNodes), (seed.hex(), k, exclude, exc)
            assert exc.name == "NodeRegistry__NotEnoughNodes"
            assert exc.args_by_name == {"requested": expected.requested, "eligible": expected.eligible}
            continue
        if got != expected:
            mismatches.append((seed.hex(), k, exclude, got, expected))
    assert mismatches == []
    assert 0 < reverted < 200  # both outcomes were exercised


# -- results, rewards, refunds, slashing -------------------------------------------------------


def test_a_quorum_finalizes_and_rewards_match_the_split(world: tuple["Net", Operators]) -> None:
    net, ops = world
    c = net.contracts
    price = 7 * TOKEN
    policy = ConsentPolicy(kinds_mask(["stats"]), True, 0, UNLIMITED_USES, 10)
    dataset_id, _ = register_dataset(
        net.tx(OWNER),
        c,
        metadata_uri="datum:dataset:x",
        metadata_hash=keccak(b"meta"),
        rows=100,
        price_wei=price,
        policy=policy,
    )
    task_id, _ = request(net, 3, 2, (dataset_id,))
    members = accept_all(net, ops, task_id)
    assert tasks.get_task(net.chain, c, task_id).state is TaskState.ACTIVE

    result, output = keccak(b"encrypted result"), b"mean=42"
    signed = [sign(net, a, task_id, result, output) for a in members[:2]]
    epoch = int(net.chain.call(c.tasks, "getConfigEpoch"))
    domain = tasks.result_domain(net.chain, c)
    onchain_digest = net.chain.call(
        c.tasks, "getResultDigest", task_id, result, public_output_hash(output), epoch
    )
    assert bytes(onchain_digest) == result_digest(domain, task_id, result, public_output_hash(output), epoch)

    descending = sorted(signed, key=lambda s: int(s.signer, 16), reverse=True)
    with pytest.raises(revert_type("TaskManager__SignersNotAscending")):
        net.tx(BYSTANDER).send(
            c.tasks, "submitResult", task_id, result, output, epoch, [s.signature for s in descending]
        )
    with pytest.raises(revert_type("TaskManager__BelowQuorum")):
        tasks.submit_result(net.tx(BYSTANDER), c, task_id, result, output, epoch, signed[:1])

    treasury = net.deployment.treasury
    owner = dev_account(OWNER).address
    accounts = {treasury, owner, *(dev_account(a).address for a in members)}
    before = {a: owed(net, a) for a in accounts}
    sent = tasks.submit_result(net.tx(BYSTANDER), c, task_id, result, output, epoch, signed)

    view = tasks.get_task(net.chain, c, task_id)
    assert view.state is TaskState.FINALIZED
    assert (view.result_hash, view.public_output_hash) == (result, public_output_hash(output))
    (finalized,) = c.events_in(c.tasks, sent.receipt, "TaskFinalized")
    signer_ops = list(finalized.args["signers"])
    assert bytes(finalized.args["publicOutput"]) == output
    expected = split_finalization(
        FEE, net.deployment.config.task.protocol_fee_bps, signer_ops, treasury, [DatasetPayee(owner, price)]
    ).owed()
    for account in accounts:
        assert owed(net, account) - before[account] == expected.get(account, 0), account

    paid_member = ops.account_of[signer_ops[0]]
    balance = net.chain.call(c.token, "balanceOf", signer_ops[0])
    amount, _ = tasks.withdraw_rewards(net.tx(paid_member), c)
    assert amount == expected[signer_ops[0]]
    assert net.chain.call(c.token, "balanceOf", signer_ops[0]) == balance + amount
    with pytest.raises(revert_type("TaskManager__NothingOwed")):
        tasks.withdraw_rewards(net.tx(paid_member), c)
    with pytest.raises(revert_type("TaskManager__UnexpectedState")):
        tasks.submit_result(net.tx(BYSTANDER), c, task_id, result, output, epoch, signed)


def test_refund_after_the_deadline(world: tuple["Net", Operators]) -> None:
    net, _ = world
    c = net.contracts
    task_id, _ = request(net, 2, 2)
    with pytest.raises(revert_type("TaskManager__Deadline")):
        tasks.refund(net.tx(BYSTANDER), c, task_id)
    requester = dev_account(0).address
    before = owed(net, requester)
    net.warp(3_601)
    sent = tasks.refund(net.tx(BYSTANDER), c, task_id)
    (event,) = c.events_in(c.tasks, sent.receipt, "TaskRefunded")
    assert event.args["amountWei"] == FEE
    assert owed(net, requester) - before == FEE
    assert tasks.get_task(net.chain, c, task_id).state is TaskState.REFUNDED
    with pytest.raises(revert_type("TaskManager__UnexpectedState")):
        tasks.refund(net.tx(BYSTANDER), c, task_id)


def test_a_no_show_is_slashed_and_replaced(world: tuple["Net", Operators]) -> None:
    net, ops = world
    c = net.contracts
    task_id, _ = request(net, 2, 2)
    committee = list(net.chain.call(c.tasks, "getCommittee", task_id))
    present, absent = (ops.account_of[a] for a in committee)
    tasks.accept_task(net.tx(present), c, task_id)
    with pytest.raises(revert_type("TaskManager__AcceptWindow")):
        tasks.slash_no_show(net.tx(OWNER), c, task_id, 1)
    net.warp(net.deployment.config.task.accept_window_s + 1)
    with pytest.raises(revert_type("TaskManager__NotNoShow")):
        tasks.slash_no_show(net.tx(OWNER), c, task_id, 0)

    stake_before = stake_of(net, absent)
    reporter, treasury = dev_account(OWNER).address, net.deployment.treasury
    owed_before = {a: owed(net, a) for a in (reporter, treasury)}
    sent = tasks.slash_no_show(net.tx(OWNER), c, task_id, 1)
    (event,) = c.events_in(c.tasks, sent.receipt, "NoShowSlashed")
    slashed = net.deployment.config.task.no_show_slash_wei
    assert event.args["slashedWei"] == slashed
    assert stake_of(net, absent) == stake_before - slashed
    split = split_slash(slashed, net.deployment.config.task.reporter_reward_bps, reporter, treasury).owed()
    for account in (reporter, treasury):
        assert owed(net, account) - owed_before[account] == split[account]
    replacement = event.args["replacement"]
    assert replacement not in committee and replacement != "0x" + "00" * 20
    assert list(net.chain.call(c.tasks, "getCommittee", task_id)) == [committee[0], replacement]


def test_equivocation_is_slashed_once(world: tuple["Net", Operators]) -> None:
    net, ops = world
    c = net.contracts
    task_id, _ = request(net, 3, 2)
    member = ops.account_of[net.chain.call(c.tasks, "getCommittee", task_id)[0]]
    epoch = int(net.chain.call(c.tasks, "getConfigEpoch"))
    a_result, b_result = keccak(b"a"), keccak(b"b")
    a = (a_result, public_output_hash(b"1"), sign(net, member, task_id, a_result, b"1"))
    b = (b_result, public_output_hash(b"2"), sign(net, member, task_id, b_result, b"2"))
    with pytest.raises(revert_type("TaskManager__NotEquivocation")):
        tasks.report_equivocation(net.tx(OWNER), c, task_id, a, a, epoch)

    stake_before = stake_of(net, member)
    sent = tasks.report_equivocation(net.tx(OWNER), c, task_id, a, b, epoch)
    (event,) = c.events_in(c.tasks, sent.receipt, "EquivocationSlashed")
    assert event.args["operator"] == dev_account(member).address
    assert event.args["reporter"] == dev_account(OWNER).address
    assert stake_of(net, member) == stake_before - net.deployment.config.task.equivocation_slash_wei
    with pytest.raises(revert_type("TaskManager__AlreadySlashed")):
        tasks.report_equivocation(net.tx(OWNER), c, task_id, a, b, epoch)


def test_malformed_requests_revert_with_decoded_errors(world: tuple["Net", Operators]) -> None:
    net, _ = world
    c, tx = net.contracts, net.tx(0)
    base = TaskRequest(
        kind=3,
        committee_size=0,
        quorum=0,
        deadline=net.now() + 3_600,
        fee_wei=FEE,
        spec_hash=keccak(b"spec"),
        spec_uri="http://x",
        dataset_ids=(),
    )
    with pytest.raises(revert_type("TaskManager__BadCommittee")) as zero:
        tasks.request_task(tx, net.chain, c, base)
    assert zero.value.args_by_name == {"committeeSize": 0, "quorum": 0}
    assert str(zero.value) == "TaskManager__BadCommittee(committeeSize=0, quorum=0)"

    with pytest.raises(revert_type("TaskManager__BadCommittee")) as low:
        tasks.request_task(
            tx, net.chain, c, TaskRequest(**{**base.__dict__, "committee_size": 4, "quorum": 2})
        )
    assert low.value.args_by_name == {"committeeSize": 4, "quorum": 2}
    with pytest.raises(revert_type("TaskManager__BadDeadline")):
        tasks.request_task(
            tx,
            net.chain,
            c,
            TaskRequest(**{**base.__dict__, "committee_size": 1, "quorum": 1, "deadline": net.now() + 10}),
        )
    with pytest.raises(revert_type("DataRegistry__UnknownAsset")):
        tasks.request_task(
            tx,
            net.chain,
            c,
            TaskRequest(**{**base.__dict__, "committee_size": 1, "quorum": 1, "dataset_ids": (99,)}),
        )
    with pytest.raises(revert_type("TaskManager__BadRequest")):
        tasks.request_task(
            tx, net.chain, c, TaskRequest(**{**base.__dict__, "committee_size": 1, "quorum": 1, "fee_wei": 0})
        )
    # no nonce was burnt by the failures
    task_id, _ = request(net, 1, 1)
    assert tasks.get_task(net.chain, c, task_id).state is TaskState.REQUESTED


# -- transaction manager -----------------------------------------------------------------------


def test_concurrent_sends_share_one_nonce_sequence(world: tuple["Net", Operators]) -> None:
    net, _ = world
    tx, token = net.tx(0), net.contracts.token
    start = net.chain.w3.eth.get_transaction_count(tx.address)
    hashes: list[str] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(5):
                hashes.append(
                    tx.send(token, "transfer", dev_account(BYSTANDER).address, offset * 10 + i).tx_hash
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(hashes)) == 20
    nonces = sorted(net.chain.w3.eth.get_transaction(h)["nonce"] for h in hashes)
    assert nonces == list(range(start, start + 20))
    assert net.chain.w3.eth.get_transaction_count(tx.address) == start + 20


def test_a_mined_revert_is_decoded_by_simulation(world: tuple["Net", Operators]) -> None:
    net, _ = world
    with pytest.raises(revert_type("TaskManager__UnknownTask")) as info:
        net.tx(BYSTANDER).send(net.contracts.tasks, "refund", 999, gas=100_000)  # skips estimation
    assert info.value.args_by_name == {"taskId": 999}
    assert net.chain.w3.eth.get_block("latest")["transactions"]  # it was really mined


def test_out_of_gas_is_a_transaction_failure(world: tuple["Net", Operators]) -> None:
    net, _ = world
    with pytest.raises(TransactionFailed):
        net.tx(BYSTANDER).send(net.contracts.token, "approve", dev_account(0).address, 1, gas=30_000)
    # the nonce stays in step after a failure
    net.tx(BYSTANDER).send(net.contracts.token, "approve", dev_account(0).address, 1)
