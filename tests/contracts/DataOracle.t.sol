// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {Fixture} from "./utils/Fixture.sol";
import {DataOracle} from "../../contracts/DataOracle.sol";
import {TaskManager} from "../../contracts/TaskManager.sol";
import {IDataOracle, IDatumConsumer} from "../../contracts/interfaces/IDataOracle.sol";
import {ITaskManager} from "../../contracts/interfaces/ITaskManager.sol";
import {IDataRegistry} from "../../contracts/interfaces/IDataRegistry.sol";

/// @dev A consumer that asks the oracle itself (it must be msg.sender of request()).
abstract contract HarnessConsumer is IDatumConsumer {
    DataOracle internal immutable i_oracle;

    constructor(DataOracle oracle) {
        i_oracle = oracle;
    }

    function ask(uint64[] memory datasetIds, uint96 feeWei, uint64 deadline, uint32 callbackGasLimit)
        external
        returns (uint256)
    {
        IERC20 token = i_oracle.getToken();
        token.approve(address(i_oracle), type(uint256).max);
        return
            i_oracle.request(3, keccak256("spec"), "ipfs://spec", datasetIds, feeWei, deadline, 3, 2, callbackGasLimit);
    }

    function claimRefund() external returns (uint256) {
        return i_oracle.getTaskManager().withdraw();
    }
}

/// @dev Records what it receives and how much gas it was given.
contract RecordingConsumer is HarnessConsumer {
    uint256 public s_calls;
    uint256 public s_lastRequestId;
    bytes public s_lastOutput;
    uint256 public s_gasAtEntry;

    constructor(DataOracle oracle) HarnessConsumer(oracle) {}

    function onDatumResult(uint256 requestId, bytes calldata publicOutput) external {
        s_gasAtEntry = gasleft();
        s_calls += 1;
        s_lastRequestId = requestId;
        s_lastOutput = publicOutput;
    }
}

/// @dev Always reverts.
contract RevertingConsumer is HarnessConsumer {
    constructor(DataOracle oracle) HarnessConsumer(oracle) {}

    function onDatumResult(uint256, bytes calldata) external pure {
        revert("consumer is broken");
    }
}

/// @dev Burns every unit of gas it is given.
contract GasBurningConsumer is HarnessConsumer {
    constructor(DataOracle oracle) HarnessConsumer(oracle) {}

    function onDatumResult(uint256, bytes calldata) external pure {
        assembly {
            for {} 1 {} {}
        }
    }
}

/// @dev Reverts with ~400 KB of return data, which would cost its caller ~300k gas to copy.
contract ReturnBombConsumer is HarnessConsumer {
    constructor(DataOracle oracle) HarnessConsumer(oracle) {}

    function onDatumResult(uint256, bytes calldata) external pure {
        assembly {
            revert(0, 400000)
        }
    }
}

/// @dev Tries to deliver again from inside its callback.
contract ReentrantConsumer is HarnessConsumer {
    bytes public s_innerRevert;

    constructor(DataOracle oracle) HarnessConsumer(oracle) {}

    function onDatumResult(uint256 requestId, bytes calldata publicOutput) external {
        try i_oracle.deliver(requestId, publicOutput) {}
        catch (bytes memory reason) {
            s_innerRevert = reason;
        }
    }
}

/// @notice DataOracle: request, fulfil, deliver, callback isolation, every revert.
contract DataOracleTest is Fixture {
    bytes private constant OUTPUT = abi.encode(uint256(4_250_000));
    uint32 private constant CB_GAS = 200_000;

    RecordingConsumer private s_consumer;

    function setUp() public {
        _deploy(NODE_COUNT);
        vm.prevrandao(bytes32(uint256(0x0AC1E)));
        s_consumer = new RecordingConsumer(oracle);
        _fund(address(s_consumer), 10_000e18);
    }

    function _deadline() private view returns (uint64) {
        return uint64(block.timestamp + 1 days);
    }

    function _ask(HarnessConsumer consumer, uint32 cbGas) private returns (uint256 requestId, uint256 taskId) {
        _fund(address(consumer), 1_000e18);
        requestId = consumer.ask(new uint64[](0), FEE, _deadline(), cbGas);
        taskId = oracle.getRequest(requestId).taskId;
        _acceptAll(taskId);
    }

    function _sigs(uint256 taskId, bytes memory output) private view returns (bytes[] memory) {
        return _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, output);
    }

    // ================================================================ request

    function test_Constructor_SetsWiring() public view {
        vm.assertEq(address(oracle.getTaskManager()), address(tm), "tm");
        vm.assertEq(address(oracle.getToken()), address(token), "token");
        vm.assertEq(address(oracle.getDataRegistry()), address(data), "data");
        vm.assertEq(oracle.getMaxCallbackGas(), MAX_CALLBACK_GAS, "max gas");
        vm.assertEq(oracle.getRequestCount(), 0, "no requests");
    }

    function test_Request_PullsFeeAndPricesAndOpensTaskForTheConsumer() public {
        uint64 idA = _registerDataset(bankA, 7e18);
        uint64 idB = _registerDataset(bankB, 11e18);
        uint256 consumerBefore = token.balanceOf(address(s_consumer));

        vm.expectEmit(true, true, true, true, address(oracle));
        emit IDataOracle.OracleRequested(1, address(s_consumer), 1, 3, keccak256("spec"), CB_GAS);
        uint256 requestId = s_consumer.ask(_ids(idA, idB), FEE, _deadline(), CB_GAS);

        vm.assertEq(requestId, 1, "first request");
        vm.assertEq(oracle.getRequestCount(), 1, "count");
        IDataOracle.Request memory r = oracle.getRequest(requestId);
        vm.assertEq(r.consumer, address(s_consumer), "consumer");
        vm.assertEq(r.callbackGasLimit, CB_GAS, "gas limit");
        vm.assertFalse(r.delivered, "not delivered");
        vm.assertFalse(r.callbackSucceeded, "no callback yet");
        vm.assertEq(r.taskId, 1, "task");
        vm.assertEq(oracle.getRequestIdOfTask(1), requestId, "reverse lookup");
        vm.assertEq(oracle.getRequestIdOfTask(2), 0, "none for other tasks");

        ITaskManager.Task memory t = tm.getTask(r.taskId);
        vm.assertEq(t.requester, address(s_consumer), "consumer is the requester");
        vm.assertEq(t.dataFeeWei, 18e18, "prices escrowed");
        vm.assertEq(token.balanceOf(address(s_consumer)), consumerBefore - FEE - 18e18, "consumer paid");
        vm.assertEq(token.balanceOf(address(oracle)), 0, "oracle keeps nothing");
        vm.assertEq(token.allowance(address(oracle), address(tm)), 0, "no allowance left");
    }

    /// @dev The test contract asks as its own consumer, so the gas report sees `request` directly.
    function test_Request_DirectCallerIsTheConsumerAndIsCalledBack() public {
        _fund(address(this), 1_000e18);
        token.approve(address(oracle), type(uint256).max);
        uint256 requestId =
            oracle.request(3, keccak256("spec"), "ipfs://spec", new uint64[](0), FEE, _deadline(), 3, 2, CB_GAS);
        uint256 taskId = oracle.getRequest(requestId).taskId;
        vm.assertEq(tm.getTask(taskId).requester, address(this), "caller is the requester");
        _acceptAll(taskId);
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, tm.getConfigEpoch(), _sigs(taskId, OUTPUT));
        vm.assertEq(s_directCalls, 1, "called back once");
        vm.assertEq(s_directOutput, OUTPUT, "answer delivered");
        vm.assertTrue(oracle.getRequest(requestId).callbackSucceeded, "callback succeeded");
    }

    uint256 private s_directCalls;
    bytes private s_directOutput;

    /// @dev Callback for the direct-caller test above.
    function onDatumResult(uint256, bytes calldata publicOutput) external {
        vm.assertEq(msg.sender, address(oracle), "only the oracle calls back");
        s_directCalls += 1;
        s_directOutput = publicOutput;
    }

    function test_RevertWhen_RequestGasLimitAboveMaximum() public {
        vm.expectRevert(
            abi.encodeWithSelector(IDataOracle.DataOracle__BadGasLimit.selector, MAX_CALLBACK_GAS + 1, MAX_CALLBACK_GAS)
        );
        s_consumer.ask(new uint64[](0), FEE, _deadline(), MAX_CALLBACK_GAS + 1);
    }

    function test_RevertWhen_RequestConsumerCannotPay() public {
        RecordingConsumer broke = new RecordingConsumer(oracle);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, address(broke), 0, uint256(FEE))
        );
        broke.ask(new uint64[](0), FEE, _deadline(), CB_GAS);
    }

    function test_RevertWhen_RequestDatasetDoesNotConsentToTheConsumer() public {
        uint64 idA = _registerDataset(bankA, 1e18);
        IDataRegistry.ConsentPolicy memory closed = _openPolicy();
        closed.open = false;
        vm.prank(bankA);
        data.setPolicy(idA, closed, 1e18);
        vm.expectRevert(
            abi.encodeWithSelector(IDataRegistry.DataRegistry__RequesterNotAllowed.selector, idA, address(s_consumer))
        );
        s_consumer.ask(_ids(idA), FEE, _deadline(), CB_GAS);
    }

    function test_RevertWhen_RequestIsRejectedByTheTaskManager() public {
        uint64 tooSoon = uint64(block.timestamp + 60);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskManager.TaskManager__BadDeadline.selector, tooSoon, uint64(block.timestamp))
        );
        s_consumer.ask(new uint64[](0), FEE, tooSoon, CB_GAS);
    }

    // ================================================================ fulfill

    function test_Fulfill_SubmitsTheResultPaysAndCallsBack() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        bytes[] memory sigs = _sigs(taskId, OUTPUT);

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(taskId, ITaskManager.TaskState.Active, ITaskManager.TaskState.Finalized);
        vm.expectEmit(true, true, true, true, address(oracle));
        emit IDataOracle.OracleFulfilled(requestId, taskId, true, OUTPUT);
        vm.prank(stranger);
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);

        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Finalized), "finalized");
        vm.assertEq(s_consumer.s_calls(), 1, "called once");
        vm.assertEq(s_consumer.s_lastRequestId(), requestId, "request id");
        vm.assertEq(s_consumer.s_lastOutput(), OUTPUT, "output");
        IDataOracle.Request memory r = oracle.getRequest(requestId);
        vm.assertTrue(r.delivered, "delivered");
        vm.assertTrue(r.callbackSucceeded, "callback ok");
        vm.assertGt(tm.getOwed(tm.getCommittee(taskId)[0]) + tm.getOwed(tm.getCommittee(taskId)[1]), 0, "paid");
    }

    function test_Fulfill_CallbackGetsExactlyItsGasLimit() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        bytes[] memory sigs = _sigs(taskId, OUTPUT);
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);
        uint256 got = s_consumer.s_gasAtEntry();
        vm.assertLe(got, CB_GAS, "never more than the limit");
        vm.assertGt(got, CB_GAS - 1_000, "the whole limit, minus the callee's dispatch");
    }

    function test_Fulfill_OnAlreadyFinalizedTaskDeliversTheStoredResult() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        oracle.fulfill(requestId, bytes32(0), OUTPUT, 0, new bytes[](0));
        vm.assertEq(s_consumer.s_lastOutput(), OUTPUT, "delivered");
        vm.assertTrue(oracle.getRequest(requestId).delivered, "marked");
    }

    function test_Fulfill_RevertingCallbackDoesNotBlockFulfilmentOrPayment() public {
        RevertingConsumer bad = new RevertingConsumer(oracle);
        (uint256 requestId, uint256 taskId) = _ask(bad, CB_GAS);
        bytes[] memory sigs = _sigs(taskId, OUTPUT);
        vm.expectEmit(true, true, true, true, address(oracle));
        emit IDataOracle.OracleFulfilled(requestId, taskId, false, OUTPUT);
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);
        IDataOracle.Request memory r = oracle.getRequest(requestId);
        vm.assertTrue(r.delivered, "delivered anyway");
        vm.assertFalse(r.callbackSucceeded, "failure recorded");
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Finalized), "finalized");
        vm.assertGt(tm.getOwed(treasury), 0, "protocol paid");
    }

    function test_Fulfill_GasBurningCallbackDoesNotBlockFulfilment() public {
        GasBurningConsumer burner = new GasBurningConsumer(oracle);
        (uint256 requestId, uint256 taskId) = _ask(burner, MAX_CALLBACK_GAS);
        bytes[] memory sigs = _sigs(taskId, OUTPUT);
        uint256 before = gasleft();
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);
        uint256 used = before - gasleft();
        IDataOracle.Request memory r = oracle.getRequest(requestId);
        vm.assertTrue(r.delivered, "delivered");
        vm.assertFalse(r.callbackSucceeded, "out of gas recorded");
        vm.assertGe(used, MAX_CALLBACK_GAS, "the callback burnt its whole limit");
        vm.assertLt(used, MAX_CALLBACK_GAS + 250_000, "and nothing beyond it");
    }

    function test_Deliver_ReturnDataBombIsNotCopied() public {
        ReturnBombConsumer bomb = new ReturnBombConsumer(oracle);
        (uint256 requestId, uint256 taskId) = _ask(bomb, MAX_CALLBACK_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        uint256 budget = uint256(MAX_CALLBACK_GAS) * 64 / 63 + oracle.CALLBACK_GAS_RESERVE() + 60_000;
        uint256 before = gasleft();
        oracle.deliver{gas: budget}(requestId, OUTPUT);
        uint256 used = before - gasleft();
        vm.assertFalse(oracle.getRequest(requestId).callbackSucceeded, "bomb reverted");
        vm.assertTrue(oracle.getRequest(requestId).delivered, "delivered within a budget too small to copy 400 KB");
        vm.assertLt(used, budget, "within budget");
    }

    function test_Fulfill_ReentrantDeliverFromTheCallbackIsRejected() public {
        ReentrantConsumer sneaky = new ReentrantConsumer(oracle);
        (uint256 requestId, uint256 taskId) = _ask(sneaky, CB_GAS);
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        vm.assertEq(
            sneaky.s_innerRevert(),
            abi.encodeWithSelector(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector),
            "inner deliver blocked"
        );
        IDataOracle.Request memory r = oracle.getRequest(requestId);
        vm.assertTrue(r.delivered && r.callbackSucceeded, "outer delivery stands");
    }

    function test_RevertWhen_FulfillUnknownRequest() public {
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__UnknownRequest.selector, 9));
        oracle.fulfill(9, RESULT_HASH, OUTPUT, 1, new bytes[](0));
    }

    function test_RevertWhen_FulfillTwice() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        bytes[] memory sigs = _sigs(taskId, OUTPUT);
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__AlreadyDelivered.selector, requestId));
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);
    }

    function test_RevertWhen_FulfillWithoutQuorum() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        bytes[] memory one = _signSorted(taskId, _firstKeys(taskId, 1), RESULT_HASH, OUTPUT);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__BelowQuorum.selector, 1, uint8(2)));
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, one);
    }

    function test_RevertWhen_FulfillFinalizedTaskWithAnotherOutput() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__OutputMismatch.selector, requestId));
        oracle.fulfill(requestId, RESULT_HASH, abi.encode(uint256(1)), 1, new bytes[](0));
    }

    function test_RevertWhen_FulfillAfterRefund() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        bytes[] memory sigs = _sigs(taskId, OUTPUT);
        vm.warp(tm.getTask(taskId).deadline + 1);
        tm.refund(taskId);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskManager.TaskManager__UnexpectedState.selector,
                taskId,
                ITaskManager.TaskState.Refunded,
                ITaskManager.TaskState.Active
            )
        );
        oracle.fulfill(requestId, RESULT_HASH, OUTPUT, 1, sigs);
        // The refund belongs to the consumer.
        uint256 before = token.balanceOf(address(s_consumer));
        s_consumer.claimRefund();
        vm.assertEq(token.balanceOf(address(s_consumer)), before + FEE, "consumer refunded");
    }

    function test_RevertWhen_FulfillWithTooLittleGasForTheCallback() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, MAX_CALLBACK_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        vm.expectPartialRevert(IDataOracle.DataOracle__InsufficientGas.selector);
        oracle.fulfill{gas: 400_000}(requestId, RESULT_HASH, OUTPUT, 1, new bytes[](0));
        vm.assertFalse(oracle.getRequest(requestId).delivered, "not marked delivered");
    }

    // ================================================================ deliver

    function test_Deliver_AnswerFinalizedThroughTheTaskManager() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        vm.expectEmit(true, true, true, true, address(oracle));
        emit IDataOracle.OracleFulfilled(requestId, taskId, true, OUTPUT);
        vm.prank(stranger);
        oracle.deliver(requestId, OUTPUT);
        vm.assertEq(s_consumer.s_lastOutput(), OUTPUT, "delivered");
        vm.assertEq(s_consumer.s_calls(), 1, "once");
    }

    function test_RevertWhen_DeliverUnknownRequest() public {
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__UnknownRequest.selector, 1));
        oracle.deliver(1, OUTPUT);
    }

    function test_RevertWhen_DeliverBeforeFinalization() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__NotFinalized.selector, requestId, taskId));
        oracle.deliver(requestId, OUTPUT);
    }

    function test_RevertWhen_DeliverWrongOutput() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__OutputMismatch.selector, requestId));
        oracle.deliver(requestId, "");
    }

    function test_RevertWhen_DeliverTwice() public {
        (uint256 requestId, uint256 taskId) = _ask(s_consumer, CB_GAS);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, _sigs(taskId, OUTPUT));
        oracle.deliver(requestId, OUTPUT);
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__AlreadyDelivered.selector, requestId));
        oracle.deliver(requestId, OUTPUT);
    }

    function test_RevertWhen_GetRequestUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(IDataOracle.DataOracle__UnknownRequest.selector, 4));
        oracle.getRequest(4);
    }
}
