// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITaskManager} from "./interfaces/ITaskManager.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {IDataRegistry} from "./interfaces/IDataRegistry.sol";

/// @dev The NodeRegistry's election that also returns the picked operators (NodeRegistry keeps
///      operator and weight of an index in one slot, so the election reads them anyway).
interface INodeRegistryElection {
    function electCommitteeWithOperators(bytes32 seed, uint256 k, uint32[] calldata exclude)
        external
        view
        returns (uint32[] memory indices, address[] memory operators);
}

// Deadlines and accept windows span minutes to days; the few seconds a proposer can move
// block.timestamp do not matter to them.
// forge-lint: disable-next-item(block-timestamp)
/// @title TaskManager
/// @notice Task lifecycle, escrow, quorum-signed results, rewards, refunds and slashing for Datum.
///         A requester escrows `feeWei` plus the prices of the datasets it uses; a committee is
///         elected stake-weighted from the NodeRegistry; members accept; a quorum of accepted
///         members signs one EIP-712 `Result`; the escrow is then credited to the treasury, the
///         signers and the dataset owners. Without a result by the deadline the escrow is credited
///         back to the requester. Every credit is pulled with `withdraw()`.
/// @dev State machine (all moves go through `_transition`, which emits `TaskStateChanged`):
///        None -> Requested            requestTask / requestTaskFor
///        Requested -> Active          acceptTask by the last member
///        Requested|Active -> Finalized submitResult with a quorum, before the deadline
///        Requested|Active -> Refunded  refund, after the deadline
///      Finalized and Refunded are terminal. `acceptTask`, `slashNoShow` and `reportEquivocation`
///      change a task's masks or committee without changing its state.
///
///      Storage of one task (`StoredTask`), three slots at request: slot A requester|state|kind|
///      k|quorum|acceptedMask|slashedMask|deadline (uint48); slot B the committee's node indices
///      (16 bits per slot, up to 8, so node indices above 65535 are rejected) | acceptDeadline
///      (uint40) | feeWei (uint88, larger fees are rejected); slot C specHash; resultHash and
///      publicOutputHash are written only at finalization. `TaskExtra` (dataFeeWei | refillRound)
///      is written only when the datasets have a non-zero price or a no-show slot is refilled.
///      Datasets are kept in separate mappings, and only when the task has any.
///
///      Parameters and counters: `s_hot` (taskCount|configEpoch|acceptWindow|maxDuration|
///      protocolFeeBps|reporterRewardBps) is the one slot a request reads and writes and that a
///      finalization reads with `s_payout` (treasury|noShowSlashWei); `equivocationSlashWei`
///      has its own slot.
///
///      The reentrancy guard is OpenZeppelin's ReentrancyGuardTransient (EIP-1153, the target
///      EVM is cancun): ReentrancyGuard's semantics without its two storage writes per call.
contract TaskManager is ITaskManager, Ownable, ReentrancyGuardTransient, EIP712 {
    using SafeERC20 for IERC20;

    /// @notice Largest committee a task may ask for.
    uint8 public constant MAX_COMMITTEE = 8;
    /// @notice Largest number of datasets a task may use.
    uint8 public constant MAX_DATASETS = 8;

    /// @dev EIP-712 type hash of the struct every committee member signs.
    bytes32 private constant RESULT_TYPEHASH =
        keccak256("Result(uint256 taskId,bytes32 resultHash,bytes32 publicOutputHash,uint64 configEpoch)");
    uint256 private constant BPS = 10_000;
    /// @dev Width of one committee slot's node index in `StoredTask.committee`.
    uint256 private constant INDEX_BITS = 16;
    uint256 private constant INDEX_MASK = 0xFFFF;
    /// @dev Legal transitions: bit (from * 8 + to) is set for every allowed edge, with None = 0,
    ///      Requested = 1, Active = 2, Finalized = 3, Refunded = 4: None->Requested (bit 1),
    ///      Requested->Active|Finalized|Refunded (bits 10, 11, 12), Active->Finalized|Refunded
    ///      (bits 19, 20).
    uint256 private constant ALLOWED_TRANSITIONS = 0x181C02;

    /// @dev One task as stored; see the contract's dev note for the slot layout.
    struct StoredTask {
        // slot A
        address requester;
        TaskState state;
        uint8 kind;
        uint8 committeeSize;
        uint8 quorum;
        uint8 acceptedMask;
        uint8 slashedMask;
        uint48 deadline;
        // slot B
        uint128 committee; // node index of slot i at bits [16 i, 16 i + 16)
        uint40 acceptDeadline;
        uint88 feeWei;
        // slot C
        bytes32 specHash;
        // written at finalization
        bytes32 resultHash;
        bytes32 publicOutputHash;
    }

    /// @dev The rarely set part of a task; all zero (never written) for a task whose datasets
    ///      cost nothing and that had no refill.
    struct TaskExtra {
        uint96 dataFeeWei;
        uint32 refillRound; // number of no-show slots refilled so far
    }

    /// @dev Counters and the parameters a request or a finalization needs, in one slot.
    struct Hot {
        uint64 taskCount;
        uint64 configEpoch;
        uint32 acceptWindow;
        uint64 maxDuration;
        uint16 protocolFeeBps;
        uint16 reporterRewardBps;
    }

    /// @dev Where finalization and slashing credits go, and the no-show slash, in one slot.
    struct Payout {
        address treasury;
        uint96 noShowSlashWei;
    }

    /// @dev A dataset's owner and price, snapshotted when the task consumed it.
    struct DatasetPayee {
        address owner;
        uint96 priceWei;
    }

    IERC20 private immutable i_token;
    INodeRegistry private immutable i_nodes;
    IDataRegistry private immutable i_data;

    Hot private s_hot;
    Payout private s_payout;
    uint96 private s_equivocationSlashWei;
    /// @dev Written slot by slot in `_writeTask` (assembly), which slither does not follow.
    // slither-disable-next-line uninitialized-state
    mapping(uint256 taskId => StoredTask) private s_tasks;
    mapping(uint256 taskId => TaskExtra) private s_taskExtras;
    mapping(uint256 taskId => uint64[]) private s_taskDatasetIds;
    mapping(uint256 taskId => DatasetPayee[]) private s_taskDatasetPayees;
    mapping(address account => uint256) private s_owed;

    /// @param token The DatumToken used for fees, rewards and slashes.
    /// @param nodes The NodeRegistry (election, operators, slashing).
    /// @param data The DataRegistry (consent and prices of datasets).
    /// @param config Initial protocol parameters; the config epoch starts at 1.
    /// @param initialOwner Account allowed to change the parameters.
    constructor(IERC20 token, INodeRegistry nodes, IDataRegistry data, Config memory config, address initialOwner)
        Ownable(initialOwner)
        EIP712("Datum TaskManager", "1")
    {
        if (address(token) == address(0) || address(nodes) == address(0) || address(data) == address(0)) {
            revert TaskManager__BadConfig();
        }
        i_token = token;
        i_nodes = nodes;
        i_data = data;
        _setConfig(config);
    }

    // ---------------------------------------------------------------------------------------
    // Requests
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITaskManager
    function requestTask(TaskRequest calldata req) external nonReentrant returns (uint256 taskId) {
        return _request(msg.sender, req);
    }

    /// @inheritdoc ITaskManager
    function requestTaskFor(address requester, TaskRequest calldata req)
        external
        nonReentrant
        returns (uint256 taskId)
    {
        return _request(requester, req);
    }

    /// @inheritdoc ITaskManager
    /// @dev The window is inclusive: accepting at exactly `acceptDeadline` succeeds.
    function acceptTask(uint256 taskId) external {
        StoredTask storage t = s_tasks[taskId];
        _requireState(taskId, t.state, TaskState.Requested);
        uint64 acceptDeadline = t.acceptDeadline;
        if (block.timestamp > acceptDeadline) {
            revert TaskManager__AcceptWindow(taskId, acceptDeadline, uint64(block.timestamp));
        }
        uint8 k = t.committeeSize;
        (bool found, uint8 slot, address operator) = _findCaller(t.committee, k, msg.sender);
        if (!found) revert TaskManager__NotCommitteeMember(taskId, msg.sender);

        uint8 accepted = t.acceptedMask;
        if (accepted & _bit(slot) != 0) revert TaskManager__AlreadyAccepted(taskId, slot);
        accepted |= _bit(slot);
        t.acceptedMask = accepted;
        emit TaskAccepted(taskId, operator, slot);

        if (accepted == type(uint8).max >> (MAX_COMMITTEE - k)) {
            _transition(taskId, t, TaskState.Requested, TaskState.Active);
        }
    }

    /// @inheritdoc ITaskManager
    /// @dev A slot outside the committee reverts with `NotCommitteeMember(taskId, address(0))`.
    ///      The refill draws one node, excluding every current member (the no-show included),
    ///      with seed `keccak256(abi.encode(block.prevrandao, taskId, slot, round))`, where `round`
    ///      counts the refills this task had before (0 for the first). When no node is free
    ///      (`NodeRegistry__NotEnoughNodes`) the slot keeps its member, marked slashed; any other
    ///      election error is passed through. A refill opens a new accept window (now +
    ///      acceptWindow) for the whole committee; the slot's accepted and slashed bits are clear,
    ///      so the replacement accepts and can be slashed like any member.
    function slashNoShow(uint256 taskId, uint8 slot) external nonReentrant {
        StoredTask storage t = s_tasks[taskId];
        _requireState(taskId, t.state, TaskState.Requested);
        uint256 k = t.committeeSize;
        if (slot >= k) revert TaskManager__NotCommitteeMember(taskId, address(0));
        uint64 acceptDeadline = t.acceptDeadline;
        if (block.timestamp <= acceptDeadline) {
            revert TaskManager__AcceptWindow(taskId, acceptDeadline, uint64(block.timestamp));
        }
        uint8 bit = _bit(slot);
        if (t.acceptedMask & bit != 0) revert TaskManager__NotNoShow(taskId, slot);
        if (t.slashedMask & bit != 0) revert TaskManager__AlreadySlashed(taskId, slot);

        address noShow = i_nodes.getOperatorAt(_indexAt(t.committee, slot));
        address replacement = _refill(taskId, t, slot, k);
        if (replacement == address(0)) t.slashedMask |= bit;

        Payout memory payout = s_payout;
        uint96 slashedWei = i_nodes.slash(noShow, payout.noShowSlashWei, address(this));
        _creditSlash(taskId, slashedWei, s_hot.reporterRewardBps, payout.treasury);
        emit NoShowSlashed(taskId, noShow, slashedWei, replacement);
    }

    /// @dev Draw a replacement (a view call) for `slot` among the nodes outside the current
    ///      committee and install it with a new accept window; return it, or zero when no node
    ///      is free (the committee is then left as it is).
    function _refill(uint256 taskId, StoredTask storage t, uint8 slot, uint256 k) private returns (address) {
        uint128 committee = t.committee;
        TaskExtra storage extra = s_taskExtras[taskId];
        uint32 round = extra.refillRound;
        bytes32 seed = keccak256(abi.encode(block.prevrandao, taskId, slot, round));
        uint32 replacementIndex = 0;
        try i_nodes.electCommittee(seed, 1, _indices(committee, k)) returns (uint32[] memory picked) {
            replacementIndex = picked[0];
        } catch (bytes memory reason) {
            // A reason shorter than 4 bytes is zero-padded and simply does not match.
            // forge-lint: disable-next-line(unsafe-typecast)
            if (bytes4(reason) != INodeRegistry.NodeRegistry__NotEnoughNodes.selector) _bubble(reason);
        }
        if (replacementIndex == 0) return address(0);

        committee = _withIndex(committee, slot, replacementIndex);
        uint40 newAcceptDeadline = SafeCast.toUint40(block.timestamp + s_hot.acceptWindow);
        t.committee = committee;
        t.acceptDeadline = newAcceptDeadline;
        extra.refillRound = round + 1;
        address[] memory operators = _operators(committee, k);
        emit CommitteeElected(taskId, operators, seed, newAcceptDeadline);
        return operators[slot];
    }

    // ---------------------------------------------------------------------------------------
    // Results, refunds, equivocation
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITaskManager
    /// @dev Results are accepted up to and including `deadline`. `TaskFinalized.signers` lists the
    ///      operators (not the signing keys) of the signers, in signature order.
    function submitResult(
        uint256 taskId,
        bytes32 resultHash,
        bytes calldata publicOutput,
        uint64 configEpoch,
        bytes[] calldata signatures
    ) external nonReentrant {
        StoredTask storage t = s_tasks[taskId];
        TaskState current = _requireOpen(taskId, t.state);
        uint64 deadline = t.deadline;
        if (block.timestamp > deadline) revert TaskManager__Deadline(taskId, deadline, uint64(block.timestamp));
        uint64 epoch = s_hot.configEpoch;
        if (configEpoch != epoch) revert TaskManager__StaleConfigEpoch(configEpoch, epoch);
        uint8 quorum = t.quorum;
        if (signatures.length < quorum) revert TaskManager__BelowQuorum(signatures.length, quorum);

        bytes32 publicOutputHash = keccak256(publicOutput);
        bytes32 digest = _resultDigest(taskId, resultHash, publicOutputHash, configEpoch);
        address[] memory signers = _verifySigners(taskId, t, digest, signatures);

        // Effects: the task is final before any credit is written.
        t.resultHash = resultHash;
        t.publicOutputHash = publicOutputHash;
        _transition(taskId, t, current, TaskState.Finalized);
        _creditFinalization(taskId, t, signers);
        emit TaskFinalized(taskId, resultHash, publicOutput, signers);
    }

    /// @inheritdoc ITaskManager
    /// @dev Refunds are possible strictly after `deadline`.
    function refund(uint256 taskId) external nonReentrant {
        StoredTask storage t = s_tasks[taskId];
        TaskState current = _requireOpen(taskId, t.state);
        uint64 deadline = t.deadline;
        if (block.timestamp <= deadline) revert TaskManager__Deadline(taskId, deadline, uint64(block.timestamp));
        _transition(taskId, t, current, TaskState.Refunded);
        address requester = t.requester;
        uint96 amountWei = t.feeWei + s_taskExtras[taskId].dataFeeWei;
        _credit(requester, taskId, amountWei);
        emit TaskRefunded(taskId, requester, amountWei);
    }

    /// @inheritdoc ITaskManager
    /// @dev Works in every state of a known task, with signatures of any config epoch (both
    ///      signatures must be for the same `configEpoch`). A member is slashed at most once per
    ///      task, whether for a no-show or equivocation.
    function reportEquivocation(
        uint256 taskId,
        bytes32 resultHashA,
        bytes32 publicOutputHashA,
        bytes calldata signatureA,
        bytes32 resultHashB,
        bytes32 publicOutputHashB,
        bytes calldata signatureB,
        uint64 configEpoch
    ) external nonReentrant {
        StoredTask storage t = s_tasks[taskId];
        if (t.state == TaskState.None) revert TaskManager__UnknownTask(taskId);
        if (resultHashA == resultHashB && publicOutputHashA == publicOutputHashB) {
            revert TaskManager__NotEquivocation();
        }
        address signer = _recover(_resultDigest(taskId, resultHashA, publicOutputHashA, configEpoch), signatureA, 0);
        if (_recover(_resultDigest(taskId, resultHashB, publicOutputHashB, configEpoch), signatureB, 1) != signer) {
            revert TaskManager__NotEquivocation();
        }
        _slashEquivocator(taskId, t, signer);
    }

    // ---------------------------------------------------------------------------------------
    // Payments and configuration
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITaskManager
    function withdraw() external nonReentrant returns (uint256 amountWei) {
        amountWei = s_owed[msg.sender];
        if (amountWei == 0) revert TaskManager__NothingOwed(msg.sender);
        s_owed[msg.sender] = 0;
        emit Withdrawn(msg.sender, amountWei);
        i_token.safeTransfer(msg.sender, amountWei);
    }

    /// @inheritdoc ITaskManager
    /// @dev Reverts with `BadConfig` unless both bps values are <= 10000, the treasury is set,
    ///      `acceptWindow > 0` and `maxDuration > acceptWindow`. Signatures for the previous epoch
    ///      stop being accepted.
    function setConfig(Config calldata config) external onlyOwner {
        _setConfig(config);
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @inheritdoc ITaskManager
    /// @dev Reverts with `UnknownTask` for an id that was never requested.
    function getTask(uint256 taskId) external view returns (Task memory task) {
        StoredTask storage t = s_tasks[taskId];
        if (t.state == TaskState.None) revert TaskManager__UnknownTask(taskId);
        task = Task({
            requester: t.requester,
            state: t.state,
            kind: t.kind,
            committeeSize: t.committeeSize,
            quorum: t.quorum,
            acceptedMask: t.acceptedMask,
            slashedMask: t.slashedMask,
            deadline: t.deadline,
            acceptDeadline: t.acceptDeadline,
            feeWei: t.feeWei,
            dataFeeWei: s_taskExtras[taskId].dataFeeWei,
            specHash: t.specHash,
            resultHash: t.resultHash,
            publicOutputHash: t.publicOutputHash
        });
    }

    /// @inheritdoc ITaskManager
    /// @dev Reverts with `UnknownTask` for an id that was never requested.
    function getCommittee(uint256 taskId) external view returns (address[] memory) {
        StoredTask storage t = s_tasks[taskId];
        if (t.state == TaskState.None) revert TaskManager__UnknownTask(taskId);
        return _operators(t.committee, t.committeeSize);
    }

    /// @notice The committee's 1-based NodeRegistry indices, by slot.
    /// @param taskId The task.
    /// @return The node index of every committee slot.
    function getCommitteeIndices(uint256 taskId) external view returns (uint32[] memory) {
        StoredTask storage t = s_tasks[taskId];
        if (t.state == TaskState.None) revert TaskManager__UnknownTask(taskId);
        return _indices(t.committee, t.committeeSize);
    }

    /// @inheritdoc ITaskManager
    /// @dev Reverts with `UnknownTask` for an id that was never requested.
    function getTaskDatasets(uint256 taskId) external view returns (uint64[] memory) {
        if (s_tasks[taskId].state == TaskState.None) revert TaskManager__UnknownTask(taskId);
        return s_taskDatasetIds[taskId];
    }

    /// @inheritdoc ITaskManager
    function getTaskCount() external view returns (uint256) {
        return s_hot.taskCount;
    }

    /// @inheritdoc ITaskManager
    function getOwed(address account) external view returns (uint256) {
        return s_owed[account];
    }

    /// @inheritdoc ITaskManager
    function getResultDigest(uint256 taskId, bytes32 resultHash, bytes32 publicOutputHash, uint64 configEpoch)
        external
        view
        returns (bytes32)
    {
        return _resultDigest(taskId, resultHash, publicOutputHash, configEpoch);
    }

    /// @inheritdoc ITaskManager
    function getConfig() external view returns (Config memory) {
        Hot memory hot = s_hot;
        Payout memory payout = s_payout;
        return Config({
            protocolFeeBps: hot.protocolFeeBps,
            reporterRewardBps: hot.reporterRewardBps,
            acceptWindow: hot.acceptWindow,
            noShowSlashWei: payout.noShowSlashWei,
            equivocationSlashWei: s_equivocationSlashWei,
            maxDuration: hot.maxDuration,
            treasury: payout.treasury
        });
    }

    /// @inheritdoc ITaskManager
    function getConfigEpoch() external view returns (uint64) {
        return s_hot.configEpoch;
    }

    /// @notice The token used for fees, rewards and slashes.
    function getToken() external view returns (IERC20) {
        return i_token;
    }

    /// @notice The NodeRegistry the committees are elected from.
    function getNodeRegistry() external view returns (INodeRegistry) {
        return i_nodes;
    }

    /// @notice The DataRegistry whose datasets tasks consume.
    function getDataRegistry() external view returns (IDataRegistry) {
        return i_data;
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    /// @dev Validate, consume the datasets, elect the committee, store the task, pull the escrow.
    function _request(address requester, TaskRequest calldata req) private returns (uint256 taskId) {
        Hot storage hot = s_hot;
        uint32 acceptWindow = _validateRequest(requester, req, hot);
        uint64 count = hot.taskCount + 1;
        hot.taskCount = count;
        taskId = count;
        uint256 dataFeeWei = 0;
        if (req.datasetIds.length != 0) dataFeeWei = _consumeDatasets(taskId, requester, req);
        uint256 escrowWei = uint256(req.feeWei) + dataFeeWei;
        // The whole escrow must fit the uint96 amounts of refunds and credits.
        if (escrowWei > type(uint96).max) revert TaskManager__BadRequest();
        // forge-lint: disable-next-line(unsafe-typecast)
        _storeTask(taskId, requester, req, uint96(dataFeeWei), acceptWindow); // fits: checked just above
        i_token.safeTransferFrom(msg.sender, address(this), escrowWei);
    }

    /// @dev Revert unless the request is well formed. A fee of 2^88 wei or more does not fit
    ///      the task's storage and is rejected with `BadRequest`.
    ///      Return the accept window.
    function _validateRequest(address requester, TaskRequest calldata req, Hot storage hot)
        private
        view
        returns (uint32 acceptWindow)
    {
        uint8 k = req.committeeSize;
        uint8 quorum = req.quorum;
        if (k == 0 || k > MAX_COMMITTEE || quorum > k || uint256(quorum) * 2 <= k) {
            revert TaskManager__BadCommittee(k, quorum);
        }
        uint96 feeWei = req.feeWei;
        if (
            requester == address(0) || feeWei == 0 || feeWei > type(uint88).max || req.specHash == bytes32(0)
                || bytes(req.specURI).length == 0 || req.datasetIds.length > MAX_DATASETS
        ) revert TaskManager__BadRequest();
        acceptWindow = hot.acceptWindow;
        uint256 deadline = req.deadline;
        if (
            deadline <= block.timestamp + acceptWindow || deadline > block.timestamp + hot.maxDuration
                || deadline > type(uint48).max
        ) revert TaskManager__BadDeadline(req.deadline, uint64(block.timestamp));
    }

    /// @dev Elect the committee, write the task and announce it.
    function _storeTask(
        uint256 taskId,
        address requester,
        TaskRequest calldata req,
        uint96 dataFeeWei,
        uint32 acceptWindow
    ) private {
        uint8 k = req.committeeSize;
        bytes32 seed = keccak256(abi.encode(block.prevrandao, taskId));
        (uint128 committee, address[] memory operators) = _electCommittee(seed, k);
        uint40 acceptDeadline = SafeCast.toUint40(block.timestamp + acceptWindow);

        StoredTask storage t = s_tasks[taskId];
        _writeTask(t, requester, req, committee, acceptDeadline);
        // A zero data fee is what an unwritten TaskExtra reads as.
        if (dataFeeWei != 0) s_taskExtras[taskId].dataFeeWei = dataFeeWei;
        _transition(taskId, t, TaskState.None, TaskState.Requested);

        _emitRequested(taskId, requester, req, dataFeeWei, operators, seed);
        emit CommitteeElected(taskId, operators, seed, acceptDeadline);
    }

    /// @dev Elect `k` members with NodeRegistry.electCommitteeWithOperators (no exclusions) and
    ///      return their node indices packed as in `StoredTask.committee`, and their operators.
    ///      The call is encoded and its answer decoded by hand: the answer is checked to have
    ///      exactly the shape `(uint32[k], address[k])` encodes to (head offsets 0x40 and
    ///      0x60 + 32k), the operators array is used in place, and every index must be in
    ///      1..0xFFFF and every operator a clean address; anything else reverts with
    ///      `BadCommittee(0, 0)`, as a bad index always did. A revert of the election (e.g.
    ///      `NodeRegistry__NotEnoughNodes`) is passed through unchanged.
    function _electCommittee(bytes32 seed, uint256 k)
        private
        view
        returns (uint128 committee, address[] memory operators)
    {
        address registry = address(i_nodes);
        bytes4 selector = INodeRegistryElection.electCommitteeWithOperators.selector;
        bool ok;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, selector)
            mstore(add(ptr, 0x04), seed)
            mstore(add(ptr, 0x24), k)
            mstore(add(ptr, 0x44), 0x60) // offset of `exclude`
            mstore(add(ptr, 0x64), 0) // exclude.length
            if iszero(staticcall(gas(), registry, ptr, 0x84, 0, 0)) {
                returndatacopy(ptr, 0, returndatasize())
                revert(ptr, returndatasize())
            }
            let words := shl(5, k)
            let size := returndatasize()
            if eq(size, add(0x80, shl(1, words))) {
                returndatacopy(ptr, 0, size)
                let second := add(0x60, words)
                ok := and(
                    and(eq(mload(ptr), 0x40), eq(mload(add(ptr, 0x20)), second)),
                    and(eq(mload(add(ptr, 0x40)), k), eq(mload(add(ptr, second)), k))
                )
                operators := add(ptr, second)
                let indexPtr := add(ptr, 0x60)
                for { let i := 0 } lt(i, k) { i := add(i, 1) } {
                    let index := mload(add(indexPtr, shl(5, i)))
                    let operator := mload(add(operators, shl(5, add(i, 1))))
                    ok := and(ok, and(and(gt(index, 0), lt(index, 0x10000)), iszero(shr(160, operator))))
                    committee := or(committee, shl(shl(4, i), index))
                }
                mstore(0x40, add(ptr, size))
            }
        }
        if (!ok) revert TaskManager__BadCommittee(0, 0);
    }

    /// @dev Write slots A, B and C of a new task, each with one SSTORE (Solidity packs struct
    ///      members from the low-order bits up; see StoredTask). state stays None: _transition
    ///      moves it. _validateRequest bounds deadline to 48 bits and feeWei to 88 bits.
    function _writeTask(
        StoredTask storage t,
        address requester,
        TaskRequest calldata req,
        uint128 committee,
        uint40 acceptDeadline
    ) private {
        uint256 slotA = uint256(uint160(requester)) | (uint256(req.kind) << 168)
            | (uint256(req.committeeSize) << 176) | (uint256(req.quorum) << 184) | (uint256(req.deadline) << 208);
        uint256 slotB = uint256(committee) | (uint256(acceptDeadline) << 128) | (uint256(req.feeWei) << 168);
        bytes32 specHash = req.specHash;
        assembly ("memory-safe") {
            sstore(t.slot, slotA)
            sstore(add(t.slot, 1), slotB)
            sstore(add(t.slot, 2), specHash)
        }
    }

    function _emitRequested(
        uint256 taskId,
        address requester,
        TaskRequest calldata req,
        uint96 dataFeeWei,
        address[] memory operators,
        bytes32 seed
    ) private {
        emit TaskRequested(
            taskId,
            requester,
            req.kind,
            req.specHash,
            req.specURI,
            req.datasetIds,
            req.feeWei,
            dataFeeWei,
            req.deadline,
            req.quorum,
            operators,
            seed
        );
    }

    /// @dev Consume one use of every dataset (the DataRegistry checks consent) and snapshot its
    ///      owner and price. Duplicate ids are rejected.
    function _consumeDatasets(uint256 taskId, address requester, TaskRequest calldata req)
        private
        returns (uint256 dataFeeWei)
    {
        uint64[] calldata ids = req.datasetIds;
        for (uint256 i; i < ids.length; ++i) {
            uint64 id = ids[i];
            for (uint256 j; j < i; ++j) {
                if (ids[j] == id) revert TaskManager__BadRequest();
            }
            (address datasetOwner, uint96 priceWei) = i_data.consume(id, requester, req.kind);
            // The DataRegistry is fixed at deployment and both entry points are nonReentrant.
            // slither-disable-next-line reentrancy-no-eth,reentrancy-benign
            s_taskDatasetIds[taskId].push(id);
            // slither-disable-next-line reentrancy-no-eth,reentrancy-benign
            s_taskDatasetPayees[taskId].push(DatasetPayee({owner: datasetOwner, priceWei: priceWei}));
            dataFeeWei += priceWei;
        }
    }

    /// @dev Check every signature and return the operators of the signers, in signature order.
    function _verifySigners(uint256 taskId, StoredTask storage t, bytes32 digest, bytes[] calldata signatures)
        private
        view
        returns (address[] memory signers)
    {
        uint256 k = t.committeeSize;
        address[] memory members = _operators(t.committee, k);
        uint8 accepted = t.acceptedMask;
        signers = new address[](signatures.length);
        address previous = address(0);
        for (uint256 i; i < signatures.length; ++i) {
            address signer = _recover(digest, signatures[i], i);
            if (signer <= previous) revert TaskManager__SignersNotAscending(previous, signer);
            previous = signer;
            address operator = i_nodes.getOperatorBySigner(signer);
            uint256 slot = k;
            if (operator != address(0)) {
                for (uint256 j; j < k; ++j) {
                    if (members[j] == operator) {
                        slot = j;
                        break;
                    }
                }
            }
            if (slot == k) revert TaskManager__NotCommitteeMember(taskId, signer);
            if (accepted & _bit(slot) == 0) revert TaskManager__SignerNotAccepted(taskId, signer);
            signers[i] = operator;
        }
    }

    /// @dev Credit the escrow of a finalized task: protocol fee and division remainder to the
    ///      treasury, an equal share to each signer's operator, each dataset price to its owner.
    function _creditFinalization(uint256 taskId, StoredTask storage t, address[] memory signers) private {
        uint96 feeWei = t.feeWei;
        uint256 protocolFeeWei = (uint256(feeWei) * s_hot.protocolFeeBps) / BPS;
        uint256 n = signers.length;
        uint256 shareWei = (feeWei - protocolFeeWei) / n;
        uint256 treasuryWei = protocolFeeWei + (feeWei - protocolFeeWei) % n;
        // Both amounts are parts of feeWei, a uint96.
        // forge-lint: disable-next-line(unsafe-typecast)
        _credit(s_payout.treasury, taskId, uint96(treasuryWei));
        for (uint256 i; i < n; ++i) {
            // forge-lint: disable-next-line(unsafe-typecast)
            _credit(signers[i], taskId, uint96(shareWei));
        }
        // Datasets whose prices sum to zero would only credit zero amounts, which are skipped.
        if (s_taskExtras[taskId].dataFeeWei != 0) {
            DatasetPayee[] storage payees = s_taskDatasetPayees[taskId];
            for (uint256 i; i < payees.length; ++i) {
                DatasetPayee memory payee = payees[i];
                _credit(payee.owner, taskId, payee.priceWei);
            }
        }
    }

    /// @dev Slash the committee member whose key is `signer` for equivocating, once per task.
    function _slashEquivocator(uint256 taskId, StoredTask storage t, address signer) private {
        address operator = i_nodes.getOperatorBySigner(signer);
        (bool found, uint8 slot) = _findOperator(t.committee, t.committeeSize, operator);
        if (!found) revert TaskManager__NotCommitteeMember(taskId, signer);
        uint8 bit = _bit(slot);
        if (t.slashedMask & bit != 0) revert TaskManager__AlreadySlashed(taskId, slot);
        t.slashedMask |= bit;

        uint96 slashedWei = i_nodes.slash(operator, s_equivocationSlashWei, address(this));
        _creditSlash(taskId, slashedWei, s_hot.reporterRewardBps, s_payout.treasury);
        emit EquivocationSlashed(taskId, operator, slashedWei, msg.sender);
    }

    /// @dev Split a slash that landed in this contract: reporter share to msg.sender, rest to the treasury.
    function _creditSlash(uint256 taskId, uint96 slashedWei, uint16 reporterRewardBps, address treasury) private {
        // At most slashedWei, a uint96, since reporterRewardBps <= BPS.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint96 reporterWei = uint96((uint256(slashedWei) * reporterRewardBps) / BPS);
        _credit(msg.sender, taskId, reporterWei);
        _credit(treasury, taskId, slashedWei - reporterWei);
    }

    /// @dev Add to an account's withdrawable balance (zero amounts are skipped).
    function _credit(address account, uint256 taskId, uint96 amountWei) private {
        if (amountWei == 0) return;
        s_owed[account] += amountWei;
        emit RewardCredited(account, taskId, amountWei);
    }

    /// @dev The one checked state transition.
    function _transition(uint256 taskId, StoredTask storage t, TaskState from, TaskState to) private {
        TaskState current = t.state;
        if (current != from) revert TaskManager__UnexpectedState(taskId, current, from);
        // Callers only ask for legal edges; this guards the table itself.
        assert((ALLOWED_TRANSITIONS >> (uint256(from) * 8 + uint256(to))) & 1 == 1);
        t.state = to;
        emit TaskStateChanged(taskId, from, to);
    }

    function _setConfig(Config memory config) private {
        if (
            config.protocolFeeBps > BPS || config.reporterRewardBps > BPS || config.treasury == address(0)
                || config.acceptWindow == 0 || config.maxDuration <= config.acceptWindow
        ) revert TaskManager__BadConfig();
        Hot storage hot = s_hot;
        uint64 epoch = hot.configEpoch + 1;
        s_hot = Hot({
            taskCount: hot.taskCount,
            configEpoch: epoch,
            acceptWindow: config.acceptWindow,
            maxDuration: config.maxDuration,
            protocolFeeBps: config.protocolFeeBps,
            reporterRewardBps: config.reporterRewardBps
        });
        s_payout = Payout({treasury: config.treasury, noShowSlashWei: config.noShowSlashWei});
        s_equivocationSlashWei = config.equivocationSlashWei;
        emit ConfigChanged(epoch, config);
    }

    /// @dev Revert unless the task exists and is in `expected`.
    function _requireState(uint256 taskId, TaskState current, TaskState expected) private pure {
        if (current == expected) return;
        if (current == TaskState.None) revert TaskManager__UnknownTask(taskId);
        revert TaskManager__UnexpectedState(taskId, current, expected);
    }

    /// @dev Revert unless the task is Requested or Active (an open task); return its state.
    function _requireOpen(uint256 taskId, TaskState current) private pure returns (TaskState) {
        if (current == TaskState.Requested || current == TaskState.Active) return current;
        if (current == TaskState.None) revert TaskManager__UnknownTask(taskId);
        revert TaskManager__UnexpectedState(taskId, current, TaskState.Active);
    }

    /// @dev Recover a 65-byte signature; malformed, malleable (high-s) or zero-address ones revert
    ///      with `InvalidSignature(index)`.
    function _recover(bytes32 digest, bytes calldata signature, uint256 index) private pure returns (address) {
        if (signature.length != 65) revert TaskManager__InvalidSignature(index);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        // The error argument only repeats `s`; the error kind is enough here.
        // slither-disable-next-line unused-return
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, v, r, s);
        if (err != ECDSA.RecoverError.NoError) revert TaskManager__InvalidSignature(index);
        return signer;
    }

    function _resultDigest(uint256 taskId, bytes32 resultHash, bytes32 publicOutputHash, uint64 configEpoch)
        private
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(RESULT_TYPEHASH, taskId, resultHash, publicOutputHash, configEpoch))
        );
    }

    /// @dev Find the committee slot of msg.sender as an operator, or as an operator's signer key.
    function _findCaller(uint128 committee, uint8 k, address caller)
        private
        view
        returns (bool found, uint8 slot, address operator)
    {
        address[] memory members = _operators(committee, k);
        for (uint8 i; i < k; ++i) {
            if (members[i] == caller) return (true, i, caller);
        }
        operator = i_nodes.getOperatorBySigner(caller);
        if (operator == address(0)) return (false, 0, address(0));
        for (uint8 i; i < k; ++i) {
            if (members[i] == operator) return (true, i, operator);
        }
        return (false, 0, address(0));
    }

    /// @dev Find the committee slot of `operator`.
    function _findOperator(uint128 committee, uint8 k, address operator) private view returns (bool found, uint8 slot) {
        if (operator == address(0)) return (false, 0);
        for (uint8 i; i < k; ++i) {
            if (i_nodes.getOperatorAt(_indexAt(committee, i)) == operator) return (true, i);
        }
        return (false, 0);
    }

    function _operators(uint128 committee, uint256 k) private view returns (address[] memory operators) {
        operators = new address[](k);
        for (uint256 i; i < k; ++i) {
            operators[i] = i_nodes.getOperatorAt(_indexAt(committee, i));
        }
    }

    function _indices(uint128 committee, uint256 k) private pure returns (uint32[] memory indices) {
        indices = new uint32[](k);
        for (uint256 i; i < k; ++i) {
            indices[i] = _indexAt(committee, i);
        }
    }

    function _indexAt(uint128 committee, uint256 slot) private pure returns (uint32) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint32((uint256(committee) >> (slot * INDEX_BITS)) & INDEX_MASK); // 16 bits
    }

    /// @dev `committee` with the node index of `slot` replaced by `index`. Node indices are
    ///      stored in 16 bits (the NodeRegistry caps its node count at 2^16 - 1); index 0 or a
    ///      larger one would be a registry fault and reverts.
    function _withIndex(uint128 committee, uint256 slot, uint32 index) private pure returns (uint128) {
        if (index == 0 || index > INDEX_MASK) revert TaskManager__BadCommittee(0, 0);
        uint256 shift = slot * INDEX_BITS;
        // slot < MAX_COMMITTEE, so every bit set lies below bit 128.
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint128((uint256(committee) & ~(INDEX_MASK << shift)) | (uint256(index) << shift));
    }

    /// @dev Bit of committee slot `slot` in the accepted and slashed masks (slot < 8).
    function _bit(uint256 slot) private pure returns (uint8) {
        // forge-lint: disable-next-line(unsafe-typecast,incorrect-shift)
        return uint8(1 << slot);
    }

    /// @dev Re-throw a revert reason unchanged.
    function _bubble(bytes memory reason) private pure {
        assembly ("memory-safe") {
            revert(add(reason, 0x20), mload(reason))
        }
    }
}
