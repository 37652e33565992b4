// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IDataOracle, IDatumConsumer} from "./interfaces/IDataOracle.sol";
import {ITaskManager} from "./interfaces/ITaskManager.sol";
import {IDataRegistry} from "./interfaces/IDataRegistry.sol";

/// @title DataOracle
/// @notice Request/callback front end over TaskManager tasks for dApps. A consumer contract pays
///         the fee and the datasets' prices; the oracle opens a TaskManager task on the
///         consumer's behalf (the consumer is the task's requester, so refunds and private
///         results go to it). Anyone fulfils with the committee's quorum signatures (or delivers a
///         task already finalized through the TaskManager); the consumer is then called back once
///         with the public answer.
/// @dev The callback is untrusted and runs last: the request is marked delivered before it, it
///      gets exactly `callbackGasLimit` gas (the call reverts with `InsufficientGas` when less
///      would be forwarded), no return data is copied, and its failure is recorded, never
///      propagated. Payment happens in the TaskManager at finalization, so a failing callback
///      cannot block it.
contract DataOracle is IDataOracle, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Gas kept on top of the callback's limit: the CALL's own cost (cold account access,
    ///         memory) and the bookkeeping and event after it.
    uint256 public constant CALLBACK_GAS_RESERVE = 15_000;

    ITaskManager private immutable i_taskManager;
    IERC20 private immutable i_token;
    IDataRegistry private immutable i_data;
    uint32 private immutable i_maxCallbackGas;

    uint256 private s_requestCount;
    mapping(uint256 requestId => Request) private s_requests;
    mapping(uint256 taskId => uint256 requestId) private s_requestIdOfTask;

    /// @param taskManager The TaskManager the tasks run through.
    /// @param token The DatumToken the TaskManager escrows.
    /// @param data The DataRegistry whose prices the oracle collects with the fee.
    /// @param maxCallbackGas The largest callback gas limit a consumer may ask for.
    constructor(ITaskManager taskManager, IERC20 token, IDataRegistry data, uint32 maxCallbackGas) {
        i_taskManager = taskManager;
        i_token = token;
        i_data = data;
        i_maxCallbackGas = maxCallbackGas;
    }

    /// @inheritdoc IDataOracle
    /// @dev Pulls `feeWei` plus the current price of every dataset from msg.sender, approves
    ///      exactly that to the TaskManager, and opens the task with msg.sender as its requester.
    ///      Guarded like fulfil and deliver, so a consumer cannot request from inside its callback
    ///      (it can in a later transaction).
    ///      Every TaskManager check (committee, deadline, consent of each dataset for msg.sender)
    ///      applies and its error is passed through.
    function request(
        uint8 kind,
        bytes32 specHash,
        string calldata specURI,
        uint64[] calldata datasetIds,
        uint96 feeWei,
        uint64 deadline,
        uint8 committeeSize,
        uint8 quorum,
        uint32 callbackGasLimit
    ) external nonReentrant returns (uint256 requestId) {
        if (callbackGasLimit > i_maxCallbackGas) {
            revert DataOracle__BadGasLimit(callbackGasLimit, i_maxCallbackGas);
        }
        return _request(
            ITaskManager.TaskRequest({
                kind: kind,
                committeeSize: committeeSize,
                quorum: quorum,
                deadline: deadline,
                feeWei: feeWei,
                specHash: specHash,
                specURI: specURI,
                datasetIds: datasetIds
            }),
            callbackGasLimit
        );
    }

    /// @inheritdoc IDataOracle
    /// @dev When the task is already finalized the signatures are ignored and the stored result
    ///      is delivered (the output must match it). TaskManager errors are passed through.
    function fulfill(
        uint256 requestId,
        bytes32 resultHash,
        bytes calldata publicOutput,
        uint64 configEpoch,
        bytes[] calldata signatures
    ) external nonReentrant {
        Request storage r = _undelivered(requestId);
        uint256 taskId = r.taskId;
        ITaskManager.Task memory task = i_taskManager.getTask(taskId);
        bytes32 expectedHash = task.publicOutputHash;
        if (task.state != ITaskManager.TaskState.Finalized) {
            i_taskManager.submitResult(taskId, resultHash, publicOutput, configEpoch, signatures);
            expectedHash = keccak256(publicOutput);
        }
        _deliver(requestId, r, taskId, expectedHash, publicOutput);
    }

    /// @inheritdoc IDataOracle
    function deliver(uint256 requestId, bytes calldata publicOutput) external nonReentrant {
        Request storage r = _undelivered(requestId);
        uint256 taskId = r.taskId;
        ITaskManager.Task memory task = i_taskManager.getTask(taskId);
        if (task.state != ITaskManager.TaskState.Finalized) revert DataOracle__NotFinalized(requestId, taskId);
        _deliver(requestId, r, taskId, task.publicOutputHash, publicOutput);
    }

    /// @inheritdoc IDataOracle
    function getRequest(uint256 requestId) external view returns (Request memory) {
        Request memory r = s_requests[requestId];
        if (r.consumer == address(0)) revert DataOracle__UnknownRequest(requestId);
        return r;
    }

    /// @inheritdoc IDataOracle
    function getRequestIdOfTask(uint256 taskId) external view returns (uint256) {
        return s_requestIdOfTask[taskId];
    }

    /// @notice Number of requests so far (ids are 1..count).
    function getRequestCount() external view returns (uint256) {
        return s_requestCount;
    }

    /// @notice The TaskManager the requests run through.
    function getTaskManager() external view returns (ITaskManager) {
        return i_taskManager;
    }

    /// @notice The token fees are paid in.
    function getToken() external view returns (IERC20) {
        return i_token;
    }

    /// @notice The DataRegistry dataset prices are read from.
    function getDataRegistry() external view returns (IDataRegistry) {
        return i_data;
    }

    /// @notice The largest callback gas limit a consumer may ask for.
    function getMaxCallbackGas() external view returns (uint32) {
        return i_maxCallbackGas;
    }

    /// @dev Record the request, collect the payment and open the task for msg.sender.
    function _request(ITaskManager.TaskRequest memory req, uint32 callbackGasLimit)
        private
        returns (uint256 requestId)
    {
        requestId = ++s_requestCount;
        Request storage r = s_requests[requestId];
        r.consumer = msg.sender;
        r.callbackGasLimit = callbackGasLimit;

        uint256 totalWei = uint256(req.feeWei) + _dataFeeWei(req.datasetIds);
        i_token.safeTransferFrom(msg.sender, address(this), totalWei);
        i_token.forceApprove(address(i_taskManager), totalWei);
        uint256 taskId = i_taskManager.requestTaskFor(msg.sender, req);

        // The TaskManager is fixed at deployment and request() is nonReentrant.
        // slither-disable-next-line reentrancy-no-eth
        r.taskId = taskId;
        s_requestIdOfTask[taskId] = requestId;
        emit OracleRequested(requestId, msg.sender, taskId, req.kind, req.specHash, callbackGasLimit);
    }

    /// @dev The request, which must exist and not be delivered yet.
    function _undelivered(uint256 requestId) private view returns (Request storage r) {
        r = s_requests[requestId];
        if (r.consumer == address(0)) revert DataOracle__UnknownRequest(requestId);
        if (r.delivered) revert DataOracle__AlreadyDelivered(requestId);
    }

    /// @dev Check the output against the task, mark delivered, then call the consumer back.
    function _deliver(
        uint256 requestId,
        Request storage r,
        uint256 taskId,
        bytes32 expectedHash,
        bytes calldata publicOutput
    ) private {
        if (keccak256(publicOutput) != expectedHash) revert DataOracle__OutputMismatch(requestId);
        r.delivered = true;
        bool success = _callWithExactGas(
            r.consumer, r.callbackGasLimit, abi.encodeCall(IDatumConsumer.onDatumResult, (requestId, publicOutput))
        );
        r.callbackSucceeded = success;
        emit OracleFulfilled(requestId, taskId, success, publicOutput);
    }

    /// @dev Call `target` with exactly `gasLimit` gas, copying no return data (a huge revert
    ///      reason costs the callee, not this contract). Reverts when the 63/64 rule would forward
    ///      less than `gasLimit`, so a fulfiller cannot starve the callback to make it fail.
    function _callWithExactGas(address target, uint32 gasLimit, bytes memory data) private returns (bool success) {
        uint256 needed = (uint256(gasLimit) * 64) / 63 + CALLBACK_GAS_RESERVE;
        uint256 left = gasleft();
        if (left < needed) revert DataOracle__InsufficientGas(left, needed);
        assembly ("memory-safe") {
            success := call(gasLimit, target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }

    /// @dev Sum of the current prices of `datasetIds` (what the TaskManager will escrow for them).
    function _dataFeeWei(uint64[] memory datasetIds) private view returns (uint256 totalWei) {
        for (uint256 i; i < datasetIds.length; ++i) {
            totalWei += i_data.getAsset(datasetIds[i]).priceWei;
        }
    }
}
