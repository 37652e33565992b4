// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title INodeRegistry
/// @notice Operator nodes: stake, endpoint, signing key, capabilities; unbonding; slashing by the
///         TaskManager; stake-weighted committee election over a ternary sum tree of node weights.
/// @dev A node's election weight is its active stake when that stake is at least the minimum
///      stake, and zero otherwise. Node indices are 1-based and never reused.
interface INodeRegistry {
    /// @notice Everything the registry holds about one operator.
    struct Node {
        address signer;          // hot key: EIP-712 result signatures and node-to-node requests
        uint32 index;            // 1-based position in the election tree; 0 = not registered
        uint64 capabilities;     // bit i set = supports task kind i
        uint96 stakeWei;         // active stake (counts for election and slashing)
        uint96 unbondingWei;     // stake waiting for the unbonding delay (slashable, not electable)
        uint64 unbondReleaseAt;  // unix time at which unbondingWei can be withdrawn
        string endpoint;         // node-to-node API URL
    }

    /// @notice A new operator registered with an initial stake.
    event NodeRegistered(address indexed operator, address indexed signer, uint32 index, uint96 stakeWei, uint64 capabilities, string endpoint);
    /// @notice The operator's active stake changed (stake added, unbonding requested or slashed).
    event StakeChanged(address indexed operator, uint96 stakeWei, uint96 unbondingWei, uint64 unbondReleaseAt);
    /// @notice Unbonded stake was paid back to the operator.
    event StakeWithdrawn(address indexed operator, uint96 amountWei);
    /// @notice The operator was slashed by the TaskManager; the tokens went to `recipient`.
    event NodeSlashed(address indexed operator, uint96 amountWei, address indexed recipient);
    /// @notice The operator changed its endpoint, signer or capabilities.
    event NodeUpdated(address indexed operator, address indexed signer, uint64 capabilities, string endpoint);
    /// @notice The TaskManager allowed to slash was set (once).
    event TaskManagerSet(address indexed taskManager);

    /// @notice The caller is already registered.
    error NodeRegistry__AlreadyRegistered(address operator);
    /// @notice The operator is not registered.
    error NodeRegistry__NotRegistered(address operator);
    /// @notice The signing key is zero or already used by another operator.
    error NodeRegistry__SignerUnavailable(address signer);
    /// @notice The stake is below the minimum required to register.
    error NodeRegistry__StakeBelowMinimum(uint96 stakeWei, uint96 minimumWei);
    /// @notice An amount of zero where a positive amount is required.
    error NodeRegistry__ZeroAmount();
    /// @notice Unbonding more than the active stake.
    error NodeRegistry__InsufficientStake(uint96 requestedWei, uint96 availableWei);
    /// @notice Nothing is unbonding, or the unbonding delay has not passed.
    error NodeRegistry__UnbondingLocked(uint64 releaseAt, uint64 nowTs);
    /// @notice Only the TaskManager may call this.
    error NodeRegistry__OnlyTaskManager(address caller);
    /// @notice The TaskManager was already set, or the address is zero.
    error NodeRegistry__TaskManagerAlreadySet();
    /// @notice The election asked for more members than there are eligible, non-excluded nodes.
    error NodeRegistry__NotEnoughNodes(uint256 requested, uint256 eligible);
    /// @notice The endpoint is empty or longer than the maximum length.
    error NodeRegistry__BadEndpoint(uint256 length);
    /// @notice A page limit of zero or above the maximum page size.
    error NodeRegistry__BadPage(uint32 offset, uint32 limit);

    /// @notice Register msg.sender as an operator, pulling `stakeWei` tokens (approve first).
    function register(address signer, string calldata endpoint, uint64 capabilities, uint96 stakeWei) external returns (uint32 index);
    /// @notice Add `amountWei` to the caller's active stake (approve first).
    function addStake(uint96 amountWei) external;
    /// @notice Move `amountWei` of active stake into unbonding; restarts the unbonding delay.
    function requestUnbond(uint96 amountWei) external;
    /// @notice Pay the caller its unbonded stake once the delay has passed.
    function withdrawUnbonded() external returns (uint96 amountWei);
    /// @notice Change the caller's endpoint, signer and capabilities.
    function updateNode(address signer, string calldata endpoint, uint64 capabilities) external;
    /// @notice Slash up to `amountWei` (active stake first, then unbonding); tokens go to `recipient`.
    /// @dev Only the TaskManager. Returns what was actually slashed (never more than the stake).
    function slash(address operator, uint96 amountWei, address recipient) external returns (uint96 slashedWei);
    /// @notice Set the TaskManager once (owner only).
    function setTaskManager(address taskManager) external;

    /// @notice Elect `k` distinct nodes stake-weighted from `seed`, never picking an `exclude`d index.
    /// @dev Draw i (i = 0..k-1) takes r = uint256(keccak256(abi.encode(seed, i))) % remainingWeight and
    ///      picks the smallest index whose prefix sum of weights (excluded and already-picked nodes
    ///      counting as zero) exceeds r. Mirrored by incentives.committee.elect().
    function electCommittee(bytes32 seed, uint256 k, uint32[] calldata exclude) external view returns (uint32[] memory indices);

    /// @notice The node record of `operator` (index 0 when not registered).
    function getNode(address operator) external view returns (Node memory);
    /// @notice The operator whose signing key is `signer` (zero when none).
    function getOperatorBySigner(address signer) external view returns (address);
    /// @notice The operator at 1-based `index`.
    function getOperatorAt(uint32 index) external view returns (address);
    /// @notice Number of registered nodes (the highest index).
    function getNodeCount() external view returns (uint32);
    /// @notice Registered nodes from 1-based index offset+1, at most `limit` of them.
    function getNodes(uint32 offset, uint32 limit) external view returns (address[] memory operators, Node[] memory nodes);
    /// @notice The election weight of the node at `index`.
    function getWeight(uint32 index) external view returns (uint256);
    /// @notice Sum of all election weights.
    function getTotalWeight() external view returns (uint256);
    /// @notice Number of nodes with a non-zero election weight.
    function getEligibleCount() external view returns (uint32);
    /// @notice Minimum active stake to be electable.
    function getMinStake() external view returns (uint96);
    /// @notice Delay between requestUnbond and withdrawUnbonded, in seconds.
    function getUnbondingDelay() external view returns (uint64);
}
