// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {ITaskManager} from "./interfaces/ITaskManager.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {IDataRegistry} from "./interfaces/IDataRegistry.sol";

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
///      Storage of one task (`StoredTask`): slot A requester|state|kind|k|quorum|acceptedMask|
///      slashedMask|deadline; slot B the committee's node indices (24 bits per slot, up to 8) |
///      acceptDeadline; slot C feeWei|dataFeeWei|refillRound|datasetCount; slot D specHash;
///      resultHash and publicOutputHash are written only at finalization. Datasets are kept in
///      separate mappings, and only when the task has any.
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
    uint256 private constant INDEX_BITS = 24;
    uint256 private constant INDEX_MASK = 0xFFFFFF;
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
        uint192 committee; // node index of slot i at bits [24 i, 24 i + 24)
        uint64 acceptDeadline;
        // slot C
        uint96 feeWei;
        uint96 dataFeeWei;
        uint32 refillRound; // number of no-show slots refilled so far
        uint8 datasetCount;
        // slot D
        bytes32 specHash;
        // written at finalization
        bytes32 resultHash;
        bytes32 publicOutputHash;
    }

    /// @dev A dataset's owner and price, snapshotted when the task consumed it.
    struct DatasetPayee {
        address owner;
        uint96 priceWei;
    }

    IERC20 private immutable i_token;
    INodeRegistry private immutable i_nodes;
    IDataRegistry private immutable i_data;

    Config private s_config;
    uint64 private s_configEpoch;
    uint64 private s_taskCount;
    mapping(uint256 taskId => StoredTask) private s_tasks;
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

        uint192 committee = t.committee;
        address noShow = i_nodes.getOperatorAt(_indexAt(committee, slot));

        // Draw a replacement (a view call) among the nodes outside the current committee.
        uint32 round = t.refillRound;
        bytes32 seed = keccak256(abi.encode(block.prevrandao, taskId, slot, round));
        uint32 replacementIndex = 0;
        try i_nodes.electCommittee(seed, 1, _indices(committee, k)) returns (uint32[] memory picked) {
            replacementIndex = picked[0];
        } catch (bytes memory reason) {
            // A reason shorter than 4 bytes is zero-padded and simply does not match.
            // forge-lint: disable-next-line(unsafe-typecast)
            if (bytes4(reason) != INodeRegistry.NodeRegistry__NotEnoughNodes.selector) _bubble(reason);
        }

        address replacement = address(0);
        Config memory config = s_config;
        if (replacementIndex != 0) {
            committee = _withIndex(committee, slot, replacementIndex);
            uint64 newAcceptDeadline = uint64(block.timestamp) + config.acceptWindow;
            t.committee = committee;
            t.acceptDeadline = newAcceptDeadline;
            t.refillRound = round + 1;
            address[] memory operators = _operators(committee, k);
            replacement = operators[slot];
            emit CommitteeElected(taskId, operators, seed, newAcceptDeadline);
        } else {
            t.slashedMask |= bit;
        }

        uint96 slashedWei = i_nodes.slash(noShow, config.noShowSlashWei, address(this));
        _creditSlash(taskId, slashedWei, config);
        emit NoShowSlashed(taskId, noShow, slashedWei, replacement);
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
        uint64 epoch = s_configEpoch;
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
        uint96 amountWei = t.feeWei + t.dataFeeWei;
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
            dataFeeWei: t.dataFeeWei,
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
        return s_taskCount;
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
        return s_config;
    }

    /// @inheritdoc ITaskManager
    function getConfigEpoch() external view returns (uint64) {
        return s_configEpoch;
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
        uint32 acceptWindow = _validateRequest(requester, req);
        taskId = ++s_taskCount;
        uint256 dataFeeWei = 0;
        if (req.datasetIds.length != 0) dataFeeWei = _consumeDatasets(taskId, requester, req);
        uint256 escrowWei = uint256(req.feeWei) + dataFeeWei;
        // The whole escrow must fit the uint96 amounts of refunds and credits.
        if (escrowWei > type(uint96).max) revert TaskManager__BadRequest();
        // forge-lint: disable-next-line(unsafe-typecast)
        _storeTask(taskId, requester, req, uint96(dataFeeWei), acceptWindow); // fits: checked just above
        i_token.safeTransferFrom(msg.sender, address(this), escrowWei);
    }

    /// @dev Revert unless the request is well formed; return the accept window.
    function _validateRequest(address requester, TaskRequest calldata req) private view returns (uint32) {
        uint8 k = req.committeeSize;
        uint8 quorum = req.quorum;
        if (k == 0 || k > MAX_COMMITTEE || quorum > k || uint256(quorum) * 2 <= k) {
            revert TaskManager__BadCommittee(k, quorum);
        }
        if (
            requester == address(0) || req.feeWei == 0 || req.specHash == bytes32(0) || bytes(req.specURI).length == 0
                || req.datasetIds.length > MAX_DATASETS
        ) revert TaskManager__BadRequest();
        Config storage config = s_config;
        uint32 acceptWindow = config.acceptWindow;
        uint256 deadline = req.deadline;
        if (
            deadline <= block.timestamp + acceptWindow || deadline > block.timestamp + config.maxDuration
                || deadline > type(uint48).max
        ) revert TaskManager__BadDeadline(req.deadline, uint64(block.timestamp));
        return acceptWindow;
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
        uint32[] memory picked = i_nodes.electCommittee(seed, k, new uint32[](0));
        uint192 committee = 0;
        for (uint256 i; i < k; ++i) {
            committee = _withIndex(committee, i, picked[i]);
        }
        uint64 acceptDeadline = uint64(block.timestamp) + acceptWindow;

        s_tasks[taskId].requester = requester;
        StoredTask storage t = s_tasks[taskId];
        t.kind = req.kind;
        t.committeeSize = k;
        t.quorum = req.quorum;
        // forge-lint: disable-next-line(unsafe-typecast)
        t.deadline = uint48(req.deadline); // _validateRequest rejects deadlines above type(uint48).max
        t.committee = committee;
        t.acceptDeadline = acceptDeadline;
        t.feeWei = req.feeWei;
        t.dataFeeWei = dataFeeWei;
        // forge-lint: disable-next-line(unsafe-typecast)
        t.datasetCount = uint8(req.datasetIds.length); // at most MAX_DATASETS
        t.specHash = req.specHash;
        _transition(taskId, t, TaskState.None, TaskState.Requested);

        address[] memory operators = _operators(committee, k);
        _emitRequested(taskId, requester, req, dataFeeWei, operators, seed);
        emit CommitteeElected(taskId, operators, seed, acceptDeadline);
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
        Config storage config = s_config;
        uint256 protocolFeeWei = (uint256(feeWei) * config.protocolFeeBps) / BPS;
        uint256 n = signers.length;
        uint256 shareWei = (feeWei - protocolFeeWei) / n;
        uint256 treasuryWei = protocolFeeWei + (feeWei - protocolFeeWei) % n;
        // Both amounts are parts of feeWei, a uint96.
        // forge-lint: disable-next-line(unsafe-typecast)
        _credit(config.treasury, taskId, uint96(treasuryWei));
        for (uint256 i; i < n; ++i) {
            // forge-lint: disable-next-line(unsafe-typecast)
            _credit(signers[i], taskId, uint96(shareWei));
        }
        if (t.datasetCount != 0) {
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

        Config memory config = s_config;
        uint96 slashedWei = i_nodes.slash(operator, config.equivocationSlashWei, address(this));
        _creditSlash(taskId, slashedWei, config);
        emit EquivocationSlashed(taskId, operator, slashedWei, msg.sender);
    }

    /// @dev Split a slash that landed in this contract: reporter share to msg.sender, rest to the treasury.
    function _creditSlash(uint256 taskId, uint96 slashedWei, Config memory config) private {
        // At most slashedWei, a uint96, since reporterRewardBps <= BPS.
        // forge-lint: disable-next-line(unsafe-typecast)
        uint96 reporterWei = uint96((uint256(slashedWei) * config.reporterRewardBps) / BPS);
        _credit(msg.sender, taskId, reporterWei);
        _credit(config.treasury, taskId, slashedWei - reporterWei);
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
        s_config = config;
        uint64 epoch = s_configEpoch + 1;
        s_configEpoch = epoch;
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
    function _findCaller(uint192 committee, uint8 k, address caller)
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
    function _findOperator(uint192 committee, uint8 k, address operator) private view returns (bool found, uint8 slot) {
        if (operator == address(0)) return (false, 0);
        for (uint8 i; i < k; ++i) {
            if (i_nodes.getOperatorAt(_indexAt(committee, i)) == operator) return (true, i);
        }
        return (false, 0);
    }

    function _operators(uint192 committee, uint256 k) private view returns (address[] memory operators) {
        operators = new address[](k);
        for (uint256 i; i < k; ++i) {
            operators[i] = i_nodes.getOperatorAt(_indexAt(committee, i));
        }
    }

    function _indices(uint192 committee, uint256 k) private pure returns (uint32[] memory indices) {
        indices = new uint32[](k);
        for (uint256 i; i < k; ++i) {
            indices[i] = _indexAt(committee, i);
        }
    }

    function _indexAt(uint192 committee, uint256 slot) private pure returns (uint32) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint32((uint256(committee) >> (slot * INDEX_BITS)) & INDEX_MASK); // 24 bits
    }

    /// @dev `committee` with the node index of `slot` replaced by `index`. Node indices are
    ///      stored in 24 bits (the NodeRegistry caps its node count at 2^24 - 1); index 0 or a
    ///      larger one would be a registry fault and reverts.
    function _withIndex(uint192 committee, uint256 slot, uint32 index) private pure returns (uint192) {
        if (index == 0 || index > INDEX_MASK) revert TaskManager__BadCommittee(0, 0);
        uint256 shift = slot * INDEX_BITS;
        // slot < MAX_COMMITTEE, so every bit set lies below bit 192.
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint192((uint256(committee) & ~(INDEX_MASK << shift)) | (uint256(index) << shift));
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
