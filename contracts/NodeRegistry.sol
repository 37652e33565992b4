// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title NodeRegistry
/// @notice Operator nodes of the Datum network: stake, endpoint, signing key and capabilities;
///         an unbonding delay; slashing by the TaskManager only; stake-weighted committee
///         election over a Fenwick tree of node weights.
/// @dev Node indices are 1-based and never reused. A node's weight is its active stake when
///      that stake is at least `i_minStakeWei`, else 0. `s_tree` is a Fenwick (binary indexed)
///      tree over the weights: `s_tree[i]` holds the sum of weights in `(i - lowbit(i), i]`,
///      for `1 <= i <= nodeCount`. Every stake change updates it in O(log n); an election
///      reads O(k log n) tree nodes and writes nothing.
contract NodeRegistry is INodeRegistry, Ownable, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Thrown when the registry already holds MAX_NODES nodes.
    error NodeRegistry__RegistryFull(uint32 maxNodes);

    /// @notice Most nodes the registry holds (the TaskManager packs node indices in 16 bits).
    uint32 public constant MAX_NODES = 2 ** 16 - 1;
    /// @notice Largest page `getNodes` returns.
    uint32 public constant MAX_PAGE = 100;
    /// @notice Longest endpoint URL, in bytes.
    uint256 public constant MAX_ENDPOINT_LENGTH = 256;

    /// @dev One slot per index: its operator and its current election weight.
    struct IndexEntry {
        address operator;
        uint96 weight;
    }

    /// @dev Election totals, packed in one slot (one SLOAD per election).
    struct Totals {
        uint128 totalWeight;
        uint32 nodeCount;
        uint32 eligibleCount;
    }

    IERC20 private immutable i_token;
    uint96 private immutable i_minStakeWei;
    uint64 private immutable i_unbondingDelay;

    address private s_taskManager;
    Totals private s_totals;
    mapping(address operator => Node) private s_nodes;
    mapping(address signer => address operator) private s_operatorBySigner;
    mapping(uint256 index => IndexEntry) private s_entries;
    mapping(uint256 index => uint256 subtreeWeight) private s_tree;

    modifier onlyTaskManager() {
        if (msg.sender != s_taskManager) revert NodeRegistry__OnlyTaskManager(msg.sender);
        _;
    }

    /// @param token The staking token (DatumToken).
    /// @param minStakeWei Minimum active stake to register and to be electable.
    /// @param unbondingDelay Seconds between requestUnbond and withdrawUnbonded.
    /// @param initialOwner Owner allowed to set the TaskManager.
    constructor(IERC20 token, uint96 minStakeWei, uint64 unbondingDelay, address initialOwner) Ownable(initialOwner) {
        i_token = token;
        i_minStakeWei = minStakeWei;
        i_unbondingDelay = unbondingDelay;
    }

    // ------------------------------------------------------------------------------------
    // Operator actions
    // ------------------------------------------------------------------------------------

    /// @inheritdoc INodeRegistry
    function register(address signer, string calldata endpoint, uint64 capabilities, uint96 stakeWei)
        external
        nonReentrant
        returns (uint32 index)
    {
        Node storage node = s_nodes[msg.sender];
        if (node.index != 0) revert NodeRegistry__AlreadyRegistered(msg.sender);
        if (signer == address(0) || s_operatorBySigner[signer] != address(0)) {
            revert NodeRegistry__SignerUnavailable(signer);
        }
        _checkEndpoint(endpoint);
        if (stakeWei < i_minStakeWei) revert NodeRegistry__StakeBelowMinimum(stakeWei, i_minStakeWei);

        Totals memory totals = s_totals;
        if (totals.nodeCount == MAX_NODES) revert NodeRegistry__RegistryFull(MAX_NODES);
        index = totals.nodeCount + 1;
        uint96 weight = _weightOf(stakeWei);

        node.signer = signer;
        node.index = index;
        node.capabilities = capabilities;
        node.stakeWei = stakeWei;
        node.endpoint = endpoint;
        s_operatorBySigner[signer] = msg.sender;
        s_entries[index] = IndexEntry({operator: msg.sender, weight: weight});
        _treeAppend(index, weight);
        totals.nodeCount = index;
        totals.totalWeight += weight;
        if (weight != 0) ++totals.eligibleCount;
        s_totals = totals;
        emit NodeRegistered(msg.sender, signer, index, stakeWei, capabilities, endpoint);

        i_token.safeTransferFrom(msg.sender, address(this), stakeWei);
    }

    /// @inheritdoc INodeRegistry
    function addStake(uint96 amountWei) external nonReentrant {
        Node storage node = _registeredNode(msg.sender);
        if (amountWei == 0) revert NodeRegistry__ZeroAmount();

        uint96 newStake = node.stakeWei + amountWei;
        node.stakeWei = newStake;
        _updateWeight(node.index, newStake);
        emit StakeChanged(msg.sender, newStake, node.unbondingWei, node.unbondReleaseAt);

        i_token.safeTransferFrom(msg.sender, address(this), amountWei);
    }

    /// @inheritdoc INodeRegistry
    function requestUnbond(uint96 amountWei) external {
        Node storage node = _registeredNode(msg.sender);
        if (amountWei == 0) revert NodeRegistry__ZeroAmount();
        uint96 stake = node.stakeWei;
        if (amountWei > stake) revert NodeRegistry__InsufficientStake(amountWei, stake);

        uint96 newStake = stake - amountWei;
        uint96 unbonding = node.unbondingWei + amountWei;
        uint64 releaseAt = uint64(block.timestamp) + i_unbondingDelay;
        node.stakeWei = newStake;
        node.unbondingWei = unbonding;
        node.unbondReleaseAt = releaseAt;
        _updateWeight(node.index, newStake);
        emit StakeChanged(msg.sender, newStake, unbonding, releaseAt);
    }

    /// @inheritdoc INodeRegistry
    function withdrawUnbonded() external nonReentrant returns (uint96 amountWei) {
        Node storage node = _registeredNode(msg.sender);
        amountWei = node.unbondingWei;
        uint64 releaseAt = node.unbondReleaseAt;
        // Timestamp drift of a few seconds is irrelevant against an unbonding delay of days.
        // forge-lint: disable-next-line(block-timestamp)
        if (amountWei == 0 || block.timestamp < releaseAt) {
            revert NodeRegistry__UnbondingLocked(releaseAt, uint64(block.timestamp));
        }

        node.unbondingWei = 0;
        node.unbondReleaseAt = 0;
        emit StakeWithdrawn(msg.sender, amountWei);

        i_token.safeTransfer(msg.sender, amountWei);
    }

    /// @inheritdoc INodeRegistry
    function updateNode(address signer, string calldata endpoint, uint64 capabilities) external {
        Node storage node = _registeredNode(msg.sender);
        address oldSigner = node.signer;
        bool signerChanged = signer != oldSigner;
        if (signerChanged && (signer == address(0) || s_operatorBySigner[signer] != address(0))) {
            revert NodeRegistry__SignerUnavailable(signer);
        }
        _checkEndpoint(endpoint);

        if (signerChanged) {
            delete s_operatorBySigner[oldSigner];
            s_operatorBySigner[signer] = msg.sender;
            node.signer = signer;
        }
        node.endpoint = endpoint;
        node.capabilities = capabilities;
        emit NodeUpdated(msg.sender, signer, capabilities, endpoint);
    }

    // ------------------------------------------------------------------------------------
    // TaskManager and owner
    // ------------------------------------------------------------------------------------

    /// @inheritdoc INodeRegistry
    /// @dev Takes from the active stake first, then from the unbonding stake. An amount of
    ///      zero, or a node with nothing left, slashes nothing and returns 0 without reverting,
    ///      so a slashing path in the TaskManager never blocks.
    function slash(address operator, uint96 amountWei, address recipient)
        external
        onlyTaskManager
        nonReentrant
        returns (uint96 slashedWei)
    {
        Node storage node = _registeredNode(operator);
        uint96 stake = node.stakeWei;
        uint96 unbonding = node.unbondingWei;

        uint96 fromStake = amountWei < stake ? amountWei : stake;
        uint96 rest = amountWei - fromStake;
        uint96 fromUnbonding = rest < unbonding ? rest : unbonding;
        slashedWei = fromStake + fromUnbonding;
        if (slashedWei == 0) return 0;

        if (fromStake != 0) {
            stake -= fromStake;
            node.stakeWei = stake;
            _updateWeight(node.index, stake);
        }
        if (fromUnbonding != 0) {
            unbonding -= fromUnbonding;
            node.unbondingWei = unbonding;
        }
        emit StakeChanged(operator, stake, unbonding, node.unbondReleaseAt);
        emit NodeSlashed(operator, slashedWei, recipient);

        i_token.safeTransfer(recipient, slashedWei);
    }

    /// @inheritdoc INodeRegistry
    function setTaskManager(address taskManager) external onlyOwner {
        if (taskManager == address(0) || s_taskManager != address(0)) revert NodeRegistry__TaskManagerAlreadySet();
        s_taskManager = taskManager;
        emit TaskManagerSet(taskManager);
    }

    // ------------------------------------------------------------------------------------
    // Election
    // ------------------------------------------------------------------------------------

    /// @inheritdoc INodeRegistry
    /// @dev Exclusions may repeat, be 0, be out of range or have zero weight; each distinct
    ///      in-range index with a non-zero weight is removed from the draw once. Picked and
    ///      excluded nodes are kept in a small memory list; at every tree node visited by the
    ///      descent, the weights of listed indices inside that node's range are subtracted.
    ///      Cost: O(k log n) storage reads plus O((k + |exclude|)^2 log n) memory work.
    function electCommittee(bytes32 seed, uint256 k, uint32[] calldata exclude)
        external
        view
        returns (uint32[] memory indices)
    {
        indices = _elect(seed, k, exclude);
    }

    /// @notice `electCommittee`, plus the operator of every picked index (`operators[i]` is the
    ///         operator at `indices[i]`), so a caller needs no `getOperatorAt` call per member.
    /// @dev Same draw, same result and same errors as `electCommittee`.
    /// @param seed Election seed.
    /// @param k Number of members to draw.
    /// @param exclude Indices never picked.
    /// @return indices The picked 1-based node indices, in draw order.
    /// @return operators The operators of `indices`, in the same order.
    function electCommitteeWithOperators(bytes32 seed, uint256 k, uint32[] calldata exclude)
        external
        view
        returns (uint32[] memory indices, address[] memory operators)
    {
        indices = _elect(seed, k, exclude);
        operators = new address[](k);
        for (uint256 i; i < k; ++i) {
            operators[i] = s_entries[indices[i]].operator;
        }
    }

    // ------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------

    /// @inheritdoc INodeRegistry
    function getNode(address operator) external view returns (Node memory) {
        return s_nodes[operator];
    }

    /// @inheritdoc INodeRegistry
    function getOperatorBySigner(address signer) external view returns (address) {
        return s_operatorBySigner[signer];
    }

    /// @inheritdoc INodeRegistry
    /// @dev Zero address for 0 or an index above the node count.
    function getOperatorAt(uint32 index) external view returns (address) {
        return s_entries[index].operator;
    }

    /// @inheritdoc INodeRegistry
    function getNodeCount() external view returns (uint32) {
        return s_totals.nodeCount;
    }

    /// @inheritdoc INodeRegistry
    /// @dev Empty arrays when `offset` is at or past the node count.
    function getNodes(uint32 offset, uint32 limit)
        external
        view
        returns (address[] memory operators, Node[] memory nodes)
    {
        if (limit == 0 || limit > MAX_PAGE) revert NodeRegistry__BadPage(offset, limit);
        uint256 count = s_totals.nodeCount;
        uint256 len = offset >= count ? 0 : Math.min(limit, count - offset);
        operators = new address[](len);
        nodes = new Node[](len);
        for (uint256 i; i < len; ++i) {
            address operator = s_entries[uint256(offset) + i + 1].operator;
            operators[i] = operator;
            nodes[i] = s_nodes[operator];
        }
    }

    /// @inheritdoc INodeRegistry
    /// @dev Zero for 0 or an index above the node count.
    function getWeight(uint32 index) external view returns (uint256) {
        return s_entries[index].weight;
    }

    /// @inheritdoc INodeRegistry
    function getTotalWeight() external view returns (uint256) {
        return s_totals.totalWeight;
    }

    /// @inheritdoc INodeRegistry
    function getEligibleCount() external view returns (uint32) {
        return s_totals.eligibleCount;
    }

    /// @inheritdoc INodeRegistry
    function getMinStake() external view returns (uint96) {
        return i_minStakeWei;
    }

    /// @inheritdoc INodeRegistry
    function getUnbondingDelay() external view returns (uint64) {
        return i_unbondingDelay;
    }

    /// @notice The staking token.
    function getToken() external view returns (IERC20) {
        return i_token;
    }

    /// @notice The TaskManager allowed to slash (zero until set).
    function getTaskManager() external view returns (address) {
        return s_taskManager;
    }

    /// @notice Sum of the weights of indices 1..`index` (clamped to the node count).
    /// @dev Read straight from the Fenwick tree; for off-chain checks and tests.
    function getPrefixWeight(uint32 index) external view returns (uint256 sum) {
        uint256 i = Math.min(index, s_totals.nodeCount);
        while (i != 0) {
            sum += s_tree[i];
            i &= i - 1;
        }
    }

    // ------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------

    function _registeredNode(address operator) private view returns (Node storage node) {
        node = s_nodes[operator];
        if (node.index == 0) revert NodeRegistry__NotRegistered(operator);
    }

    function _checkEndpoint(string calldata endpoint) private pure {
        uint256 len = bytes(endpoint).length;
        if (len == 0 || len > MAX_ENDPOINT_LENGTH) revert NodeRegistry__BadEndpoint(len);
    }

    function _weightOf(uint96 stakeWei) private view returns (uint96) {
        return stakeWei >= i_minStakeWei ? stakeWei : 0;
    }

    /// @dev Set the weight of `index` from its new active stake; updates the tree and totals.
    function _updateWeight(uint32 index, uint96 newStakeWei) private {
        uint96 newWeight = _weightOf(newStakeWei);
        IndexEntry storage entry = s_entries[index];
        uint96 oldWeight = entry.weight;
        if (newWeight == oldWeight) return;
        entry.weight = newWeight;

        Totals memory totals = s_totals;
        uint256 n = totals.nodeCount;
        if (newWeight > oldWeight) {
            uint128 delta = newWeight - oldWeight;
            for (uint256 i = index; i <= n; i += i & (~i + 1)) {
                s_tree[i] += delta;
            }
            totals.totalWeight += delta;
        } else {
            uint128 delta = oldWeight - newWeight;
            for (uint256 i = index; i <= n; i += i & (~i + 1)) {
                s_tree[i] -= delta;
            }
            totals.totalWeight -= delta;
        }
        if (oldWeight == 0) ++totals.eligibleCount;
        else if (newWeight == 0) --totals.eligibleCount;
        s_totals = totals;
    }

    /// @dev Initialise the tree node of a freshly appended `index`: its own weight plus the
    ///      tree nodes covering (index - lowbit(index), index - 1].
    function _treeAppend(uint256 index, uint256 weight) private {
        uint256 sum = weight;
        uint256 low = index - (index & (~index + 1));
        for (uint256 j = index - 1; j > low; j &= j - 1) {
            sum += s_tree[j];
        }
        s_tree[index] = sum;
    }

    /// @dev The election behind `electCommittee` and `electCommitteeWithOperators`.
    function _elect(bytes32 seed, uint256 k, uint32[] calldata exclude)
        private
        view
        returns (uint32[] memory indices)
    {
        Totals memory totals = s_totals;
        uint256 n = totals.nodeCount;

        // Removed indices (excluded, then picked) and their weights.
        uint256[] memory removed = new uint256[](exclude.length + k);
        uint256[] memory removedWeight = new uint256[](exclude.length + k);
        (uint256 m, uint256 excludedWeight) = _collectExcluded(exclude, n, removed, removedWeight);
        uint256 remaining = totals.totalWeight - excludedWeight;
        uint256 available = totals.eligibleCount - m;
        if (k > available) revert NodeRegistry__NotEnoughNodes(k, available);

        indices = new uint32[](k);
        if (k == 0) return indices;
        // The highest power of two <= n, where the descent starts.
        // forge-lint: disable-next-line(incorrect-shift)
        uint256 topStep = 1 << Math.log2(n);

        for (uint256 i; i < k; ++i) {
            uint256 r;
            assembly ("memory-safe") {
                mstore(0x00, seed)
                mstore(0x20, i)
                r := keccak256(0x00, 0x40)
            }
            (uint256 picked, uint256 pickedWeight) =
                _descend(r % remaining, remaining, n, topStep, removed, removedWeight, m);
            // casting to 'uint32' is safe because picked <= nodeCount <= MAX_NODES
            // forge-lint: disable-next-line(unsafe-typecast)
            indices[i] = uint32(picked);
            removed[m] = picked;
            removedWeight[m] = pickedWeight;
            unchecked {
                ++m;
                remaining -= pickedWeight;
            }
        }
    }

    /// @dev Write the distinct in-range, non-zero-weight excluded indices into `removed`;
    ///      return how many and their total weight.
    function _collectExcluded(
        uint32[] calldata exclude,
        uint256 n,
        uint256[] memory removed,
        uint256[] memory removedWeight
    ) private view returns (uint256 m, uint256 excludedWeight) {
        for (uint256 e; e < exclude.length; ++e) {
            uint256 idx = exclude[e];
            if (idx == 0 || idx > n || _contains(removed, m, idx)) continue;
            uint256 w = s_entries[idx].weight;
            if (w == 0) continue;
            removed[m] = idx;
            removedWeight[m] = w;
            unchecked {
                ++m;
                excludedWeight += w;
            }
        }
    }

    /// @dev Fenwick descent for the smallest index whose adjusted prefix weight exceeds `r`
    ///      (adjusted: the first `m` entries of `removed` count as zero). Requires
    ///      r < rest, the adjusted total. At each visited tree node (pos, c] the removed weights
    ///      inside that range are subtracted in memory. `rest` is kept as the adjusted weight of
    ///      (pos, n]: when the descent reaches c == n, that tree node's adjusted sum is exactly
    ///      `rest`, so it is not read from storage (the tree and the totals describe the same
    ///      weights; the node is always rejected since r < rest). `picked` holds pos until the
    ///      end. `pickedWeight` holds, until the end, the adjusted sum of the last tree node that
    ///      overshot, i.e. the range (picked - lowbit(picked), picked], and `sinceReject` what
    ///      was accepted after it, i.e. (picked - lowbit(picked), picked - 1]; their difference
    ///      is the picked node's own weight, with no extra storage read.
    function _descend(
        uint256 r,
        uint256 rest,
        uint256 n,
        uint256 topStep,
        uint256[] memory removed,
        uint256[] memory removedWeight,
        uint256 m
    ) private view returns (uint256 picked, uint256 pickedWeight) {
        uint256 sinceReject;
        // Assembly: this loop is the election's hot path. s_tree[c] is read from the mapping's
        // slot keccak256(abi.encode(c, s_tree.slot)).
        assembly ("memory-safe") {
            mstore(0x20, s_tree.slot)
            let idxEnd := add(add(removed, 0x20), shl(5, m))
            for { let step := topStep } step { step := shr(1, step) } {
                let c := add(picked, step)
                if iszero(gt(c, n)) {
                    let v := rest
                    if iszero(eq(c, n)) {
                        mstore(0x00, c)
                        v := sload(keccak256(0x00, 0x40))
                        // v -= removedWeight[j] for every j < m with picked < removed[j] <= c.
                        // Each such weight is part of s_tree[c], so v stays non-negative.
                        for { let p := add(removed, 0x20) } lt(p, idxEnd) { p := add(p, 0x20) } {
                            if and(gt(mload(p), picked), iszero(gt(mload(p), c))) {
                                v := sub(v, mload(add(p, sub(removedWeight, removed))))
                            }
                        }
                    }
                    switch gt(v, r)
                    case 0 {
                        r := sub(r, v)
                        rest := sub(rest, v)
                        sinceReject := add(sinceReject, v)
                        picked := c
                    }
                    default {
                        pickedWeight := v
                        sinceReject := 0
                    }
                }
            }
        }
        unchecked {
            ++picked;
            pickedWeight -= sinceReject;
        }
    }

    /// @dev Whether `value` is among the first `len` (<= list.length) entries of `list`.
    function _contains(uint256[] memory list, uint256 len, uint256 value) private pure returns (bool found) {
        assembly ("memory-safe") {
            let ptr := add(list, 0x20)
            for { let end := add(ptr, shl(5, len)) } lt(ptr, end) { ptr := add(ptr, 0x20) } {
                if eq(mload(ptr), value) {
                    found := 1
                    break
                }
            }
        }
    }
}
