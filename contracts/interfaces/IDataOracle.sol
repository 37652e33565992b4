// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IDatumConsumer
/// @notice Implemented by dApps that ask the DataOracle for an answer.
interface IDatumConsumer {
    /// @notice Called once with the quorum-signed public answer (gas-capped; a revert is tolerated).
    function onDatumResult(uint256 requestId, bytes calldata publicOutput) external;
}

/// @title IDataOracle
/// @notice dApp-facing request/fulfil: a consumer contract pays and asks; the task runs through
///         the TaskManager; fulfilment carries the quorum-signed answer and calls the consumer back.
interface IDataOracle {
    /// @notice One oracle request.
    struct Request {
        address consumer;
        uint32 callbackGasLimit;
        bool delivered;
        bool callbackSucceeded;
        uint256 taskId;
    }

    /// @notice A consumer asked for an answer; the TaskManager task `taskId` carries it.
    event OracleRequested(uint256 indexed requestId, address indexed consumer, uint256 indexed taskId, uint8 kind, bytes32 specHash, uint32 callbackGasLimit);
    /// @notice The answer was delivered; `callbackSucceeded` is false when the consumer reverted or ran out of gas.
    event OracleFulfilled(uint256 indexed requestId, uint256 indexed taskId, bool callbackSucceeded, bytes publicOutput);

    /// @notice No request with this id.
    error DataOracle__UnknownRequest(uint256 requestId);
    /// @notice Already delivered.
    error DataOracle__AlreadyDelivered(uint256 requestId);
    /// @notice The task is not finalized yet.
    error DataOracle__NotFinalized(uint256 requestId, uint256 taskId);
    /// @notice The public output does not match the finalized task's hash.
    error DataOracle__OutputMismatch(uint256 requestId);
    /// @notice The callback gas limit is above the maximum.
    error DataOracle__BadGasLimit(uint32 callbackGasLimit, uint32 maximum);
    /// @notice Not enough gas left to give the callback its full limit.
    error DataOracle__InsufficientGas(uint256 gasLeft, uint256 needed);

    /// @notice Ask for an answer as msg.sender (the consumer), paying the fee and the datasets'
    ///         prices from msg.sender's token balance (approve the oracle first).
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
    ) external returns (uint256 requestId);
    /// @notice Submit the quorum-signed result (when not yet finalized) and deliver it to the consumer.
    function fulfill(uint256 requestId, bytes32 resultHash, bytes calldata publicOutput, uint64 configEpoch, bytes[] calldata signatures) external;
    /// @notice Deliver an answer whose task was already finalized through the TaskManager.
    function deliver(uint256 requestId, bytes calldata publicOutput) external;

    /// @notice The request record.
    function getRequest(uint256 requestId) external view returns (Request memory);
    /// @notice The oracle request of a TaskManager task (0 when none).
    function getRequestIdOfTask(uint256 taskId) external view returns (uint256);
}
