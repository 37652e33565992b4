// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ITaskManager
/// @notice Task lifecycle: request with escrow -> committee elected -> members accept ->
///         quorum-signed result -> finalized (rewards credited) or refunded after the deadline.
///         No-shows and equivocation are slashed. Payments are pulled with withdraw().
interface ITaskManager {
    /// @notice Task states. Transitions (all through one checked function):
    ///         None -> Requested (requestTask), Requested -> Active (last member accepts),
    ///         Requested|Active -> Finalized (submitResult with a quorum),
    ///         Requested|Active -> Refunded (refund after the deadline).
    enum TaskState {
        None,
        Requested,
        Active,
        Finalized,
        Refunded
    }

    /// @notice What a requester asks for.
    struct TaskRequest {
        uint8 kind;             // task kind (1 HE, 2 PSI, 3 stats, 4 train, 5 predict, ...)
        uint8 committeeSize;    // k, 1..MAX_COMMITTEE
        uint8 quorum;           // distinct matching signatures needed; k/2 < quorum <= k
        uint64 deadline;        // unix time; after it no result is accepted and anyone may refund
        uint96 feeWei;          // paid to the signing committee members and the protocol
        bytes32 specHash;       // canonical hash of the task spec
        string specURI;         // where the committee fetches the spec
        uint64[] datasetIds;    // datasets/models used; each one's price is escrowed too
    }

    /// @notice A task as stored (view shape).
    struct Task {
        address requester;      // receives refunds and private results
        TaskState state;
        uint8 kind;
        uint8 committeeSize;
        uint8 quorum;
        uint16 acceptedMask;    // bit i = committee slot i accepted
        uint16 slashedMask;     // bit i = committee slot i slashed (no-show or equivocation)
        uint64 deadline;
        uint64 acceptDeadline;
        uint96 feeWei;
        uint96 dataFeeWei;
        bytes32 specHash;
        bytes32 resultHash;     // set at finalization
        bytes32 publicOutputHash; // set at finalization
    }

    /// @notice Protocol parameters; every change bumps the config epoch.
    struct Config {
        uint16 protocolFeeBps;      // share of feeWei credited to the treasury
        uint16 reporterRewardBps;   // share of a slash credited to whoever reported it
        uint32 acceptWindow;        // seconds after request (or replacement) to accept
        uint96 noShowSlashWei;      // slash for not accepting in time
        uint96 equivocationSlashWei; // slash for signing two different results of one task
        uint64 maxDuration;         // longest deadline - now allowed at request
        address treasury;
    }

    /// @notice A task was requested and its committee elected. Carries everything a node needs.
    event TaskRequested(
        uint256 indexed taskId,
        address indexed requester,
        uint8 kind,
        bytes32 specHash,
        string specURI,
        uint64[] datasetIds,
        uint96 feeWei,
        uint96 dataFeeWei,
        uint64 deadline,
        uint8 quorum,
        address[] committee,
        bytes32 seed
    );
    /// @notice The committee of a task was elected (at request, or a slot refilled).
    event CommitteeElected(uint256 indexed taskId, address[] committee, bytes32 seed, uint64 acceptDeadline);
    /// @notice A committee member accepted the task.
    event TaskAccepted(uint256 indexed taskId, address indexed operator, uint8 slot);
    /// @notice The task state changed.
    event TaskStateChanged(uint256 indexed taskId, TaskState from, TaskState to);
    /// @notice A quorum signed the same result; rewards were credited.
    event TaskFinalized(uint256 indexed taskId, bytes32 resultHash, bytes publicOutput, address[] signers);
    /// @notice The deadline passed without a result; the escrow was credited back to the requester.
    event TaskRefunded(uint256 indexed taskId, address indexed requester, uint96 amountWei);
    /// @notice A member who did not accept in time was slashed, and replaced when a node was free.
    event NoShowSlashed(uint256 indexed taskId, address indexed operator, uint96 slashedWei, address replacement);
    /// @notice A member who signed two different results of one task was slashed.
    event EquivocationSlashed(uint256 indexed taskId, address indexed operator, uint96 slashedWei, address indexed reporter);
    /// @notice Tokens were credited to an account's withdrawable balance.
    event RewardCredited(address indexed account, uint256 indexed taskId, uint96 amountWei);
    /// @notice An account withdrew its balance.
    event Withdrawn(address indexed account, uint256 amountWei);
    /// @notice The owner changed the protocol parameters.
    event ConfigChanged(uint64 configEpoch, Config config);

    /// @notice The task is in `current` state; the call needs `expected`.
    error TaskManager__UnexpectedState(uint256 taskId, TaskState current, TaskState expected);
    /// @notice No task with this id.
    error TaskManager__UnknownTask(uint256 taskId);
    /// @notice committeeSize or quorum out of range.
    error TaskManager__BadCommittee(uint8 committeeSize, uint8 quorum);
    /// @notice The deadline is in the past, too soon to accept, or beyond maxDuration.
    error TaskManager__BadDeadline(uint64 deadline, uint64 nowTs);
    /// @notice Zero fee, zero spec hash, empty URI, or too many datasets.
    error TaskManager__BadRequest();
    /// @notice The caller (or signer) is not in the task's committee.
    error TaskManager__NotCommitteeMember(uint256 taskId, address account);
    /// @notice The member already accepted.
    error TaskManager__AlreadyAccepted(uint256 taskId, uint8 slot);
    /// @notice The accept window has not closed yet (no-show) or has closed (accept).
    error TaskManager__AcceptWindow(uint256 taskId, uint64 acceptDeadline, uint64 nowTs);
    /// @notice The deadline passed (results) or has not passed (refund).
    error TaskManager__Deadline(uint256 taskId, uint64 deadline, uint64 nowTs);
    /// @notice Signed for another config epoch.
    error TaskManager__StaleConfigEpoch(uint64 signedEpoch, uint64 currentEpoch);
    /// @notice A signature that does not recover (malformed or malleable).
    error TaskManager__InvalidSignature(uint256 index);
    /// @notice Signers must be strictly ascending by address (this rejects duplicates).
    error TaskManager__SignersNotAscending(address previous, address next);
    /// @notice The signing member had not accepted the task.
    error TaskManager__SignerNotAccepted(uint256 taskId, address signer);
    /// @notice Fewer distinct committee signatures than the quorum.
    error TaskManager__BelowQuorum(uint256 signatures, uint8 quorum);
    /// @notice The two signed results are the same, or signed by different members.
    error TaskManager__NotEquivocation();
    /// @notice The member was already slashed for this task.
    error TaskManager__AlreadySlashed(uint256 taskId, uint8 slot);
    /// @notice The member did accept (not a no-show).
    error TaskManager__NotNoShow(uint256 taskId, uint8 slot);
    /// @notice Nothing to withdraw.
    error TaskManager__NothingOwed(address account);
    /// @notice A config value out of range.
    error TaskManager__BadConfig();

    /// @notice Request a task as msg.sender, escrowing feeWei plus the datasets' prices.
    function requestTask(TaskRequest calldata req) external returns (uint256 taskId);
    /// @notice Request a task for `requester` (refunds and private results go to it); msg.sender pays.
    function requestTaskFor(address requester, TaskRequest calldata req) external returns (uint256 taskId);
    /// @notice A committee member (its operator or signer key) accepts before the accept window closes.
    function acceptTask(uint256 taskId) external;
    /// @notice After the accept window, slash a member who did not accept and refill its slot if a node is free.
    function slashNoShow(uint256 taskId, uint8 slot) external;
    /// @notice Submit a result with EIP-712 signatures of committee members over
    ///         Result(taskId, resultHash, keccak256(publicOutput), configEpoch), signers ascending.
    ///         Finalizes when at least `quorum` accepted members signed; each signer is paid.
    function submitResult(uint256 taskId, bytes32 resultHash, bytes calldata publicOutput, uint64 configEpoch, bytes[] calldata signatures) external;
    /// @notice After the deadline, credit the escrow of an unfinished task back to its requester.
    function refund(uint256 taskId) external;
    /// @notice Slash a member who signed two different results of one task (same config epoch).
    function reportEquivocation(
        uint256 taskId,
        bytes32 resultHashA, bytes32 publicOutputHashA, bytes calldata signatureA,
        bytes32 resultHashB, bytes32 publicOutputHashB, bytes calldata signatureB,
        uint64 configEpoch
    ) external;
    /// @notice Pay the caller everything credited to it.
    function withdraw() external returns (uint256 amountWei);
    /// @notice Change protocol parameters (owner only); bumps the config epoch.
    function setConfig(Config calldata config) external;

    /// @notice The stored task.
    function getTask(uint256 taskId) external view returns (Task memory);
    /// @notice The committee's operators, by slot.
    function getCommittee(uint256 taskId) external view returns (address[] memory);
    /// @notice The datasets of a task.
    function getTaskDatasets(uint256 taskId) external view returns (uint64[] memory);
    /// @notice Number of tasks requested so far (ids are 1..count).
    function getTaskCount() external view returns (uint256);
    /// @notice Withdrawable balance of `account`.
    function getOwed(address account) external view returns (uint256);
    /// @notice The EIP-712 digest a member signs for a result.
    function getResultDigest(uint256 taskId, bytes32 resultHash, bytes32 publicOutputHash, uint64 configEpoch) external view returns (bytes32);
    /// @notice Current protocol parameters.
    function getConfig() external view returns (Config memory);
    /// @notice Current config epoch (starts at 1).
    function getConfigEpoch() external view returns (uint64);
}
