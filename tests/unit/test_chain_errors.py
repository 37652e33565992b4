"""Revert decoding and the transient-only retry policy of the chain edge."""

from typing import Any

import pytest
import requests
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector
from web3.exceptions import ContractLogicError

from oracle.chain.artifacts import ArtifactStore
from oracle.chain.errors import ContractRevert, ErrorTable, RpcUnavailable, UnknownRevert, revert_type
from oracle.chain.rpc import RetryPolicy, is_transient, revert_data, with_retry

TASK_ERRORS_ABI: list[dict[str, Any]] = [
    {
        "type": "error",
        "name": "TaskManager__BadCommittee",
        "inputs": [{"name": "committeeSize", "type": "uint8"}, {"name": "quorum", "type": "uint8"}],
    },
    {
        "type": "error",
        "name": "TaskManager__UnexpectedState",
        "inputs": [
            {"name": "taskId", "type": "uint256"},
            {"name": "current", "type": "uint8", "internalType": "enum ITaskManager.TaskState"},
            {"name": "expected", "type": "uint8", "internalType": "enum ITaskManager.TaskState"},
        ],
    },
    {"type": "error", "name": "TaskManager__BadRequest", "inputs": []},
    {
        "type": "error",
        "name": "Weird",
        "inputs": [
            {
                "name": "pair",
                "type": "tuple[]",
                "components": [{"name": "a", "type": "address"}, {"name": "b", "type": "uint96"}],
            }
        ],
    },
    {"type": "function", "name": "ignored", "inputs": [], "outputs": []},
]


def revert(signature: str, types: list[str], values: list[Any]) -> bytes:
    return function_signature_to_4byte_selector(signature) + encode(types, values)


def test_decodes_a_custom_error_into_a_named_subclass() -> None:
    table = ErrorTable([TASK_ERRORS_ABI])
    exc = table.decode(revert("TaskManager__BadCommittee(uint8,uint8)", ["uint8", "uint8"], [0, 0]))
    assert isinstance(exc, revert_type("TaskManager__BadCommittee"))
    assert isinstance(exc, ContractRevert)
    assert exc.name == "TaskManager__BadCommittee"
    assert exc.args_by_name == {"committeeSize": 0, "quorum": 0}
    assert str(exc) == "TaskManager__BadCommittee(committeeSize=0, quorum=0)"
    assert not isinstance(exc, revert_type("TaskManager__BadRequest"))


def test_decodes_enums_no_argument_errors_and_tuples() -> None:
    table = ErrorTable([TASK_ERRORS_ABI])
    state = table.decode(
        revert("TaskManager__UnexpectedState(uint256,uint8,uint8)", ["uint256", "uint8", "uint8"], [7, 3, 1])
    )
    assert state.args_by_name == {"taskId": 7, "current": 3, "expected": 1}
    bare = table.decode(function_signature_to_4byte_selector("TaskManager__BadRequest()"))
    assert bare.name == "TaskManager__BadRequest" and bare.args_by_name == {}
    owner = "0x" + "ab" * 20
    weird = table.decode(revert("Weird((address,uint96)[])", ["(address,uint96)[]"], [[(owner, 5)]]))
    assert weird.args_by_name["pair"] == ((owner, 5),)


def test_decodes_solidity_builtins() -> None:
    table = ErrorTable()
    message = table.decode(revert("Error(string)", ["string"], ["nope"]))
    assert message.name == "Error" and message.args_by_name == {"message": "nope"}
    panic = table.decode(revert("Panic(uint256)", ["uint256"], [0x11]))
    assert panic.name == "Panic" and panic.args_by_name["reason"] == "arithmetic overflow or underflow"


def test_unknown_or_garbled_data_is_an_unknown_revert() -> None:
    table = ErrorTable([TASK_ERRORS_ABI])
    assert isinstance(table.decode(b"\xde\xad\xbe\xef" + b"\x00" * 32), UnknownRevert)
    assert isinstance(table.decode(b""), UnknownRevert)
    truncated = function_signature_to_4byte_selector("TaskManager__BadCommittee(uint8,uint8)") + b"\x00" * 10
    assert isinstance(table.decode(truncated), UnknownRevert)


def test_an_error_shared_by_several_abis_is_one_entry() -> None:
    table = ErrorTable([TASK_ERRORS_ABI, TASK_ERRORS_ABI])
    assert len(table) == 2 + 4  # Error, Panic and the four custom errors


def test_the_built_abis_give_every_interface_error(artifacts: ArtifactStore) -> None:
    table = artifacts.error_table()
    for name in (
        "TaskManager__BadCommittee",
        "NodeRegistry__NotEnoughNodes",
        "DataRegistry__KindNotAllowed",
        "DataOracle__NotFinalized",
        "ERC20InsufficientAllowance",
    ):
        assert name in table
    data = table.selector_of("NodeRegistry__NotEnoughNodes") + encode(["uint256", "uint256"], [5, 2])
    assert str(table.decode(data)) == "NodeRegistry__NotEnoughNodes(requested=5, eligible=2)"


class Flaky:
    """Fails with `error` for the first `failures` calls."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


POLICY = RetryPolicy(attempts=4, base_delay_s=0.01, max_delay_s=0.02)


@pytest.mark.parametrize(
    "error",
    [requests.ConnectionError("reset"), requests.Timeout("slow"), TimeoutError(), ConnectionResetError()],
)
def test_transient_failures_are_retried_within_the_budget(error: Exception) -> None:
    sleeps: list[float] = []
    flaky = Flaky(3, error)
    assert with_retry(flaky, "test", POLICY, sleep=sleeps.append) == "ok"
    assert flaky.calls == 4
    assert sleeps == [0.01, 0.02, 0.02]


def test_the_budget_runs_out_into_rpc_unavailable() -> None:
    flaky = Flaky(10, requests.ConnectionError("down"))
    with pytest.raises(RpcUnavailable):
        with_retry(flaky, "test", POLICY, sleep=lambda _: None)
    assert flaky.calls == POLICY.attempts


@pytest.mark.parametrize(
    "error", [ContractLogicError("execution reverted", data="0x1234"), ValueError("bad")]
)
def test_reverts_and_other_errors_are_never_retried(error: Exception) -> None:
    flaky = Flaky(1, error)
    with pytest.raises(type(error)):
        with_retry(flaky, "test", POLICY, sleep=lambda _: None)
    assert flaky.calls == 1


def test_http_status_decides_transience() -> None:
    def http_error(status: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code = status
        return requests.HTTPError(response=response)

    assert is_transient(http_error(503)) and is_transient(http_error(429))
    assert not is_transient(http_error(400))


def test_revert_data_reads_web3_exceptions() -> None:
    assert revert_data(ContractLogicError("x", data="0xdeadbeef")) == b"\xde\xad\xbe\xef"
    assert revert_data(ContractLogicError("x", data={"data": "0x01"})) == b"\x01"
    assert revert_data(ContractLogicError("x", data=None)) == b""
