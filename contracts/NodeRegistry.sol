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
///         election over a ternary sum tree of node weights.
/// @dev Node indices are 1-based and never reused. A node's weight is its active stake when
///      that stake is at least `i_minStakeWei`, else 0. The weights are summed in a ternary
///      tree whose two stored child sums share one storage slot (`s_tree`, see `_treeKey`):
///      a tree node at level L >= 1 with id j covers positions [j 3^L, (j + 1) 3^L) (position
///      = index - 1) and holds the sums of its children 0 and 1 (uint128 each, low half first);
///      child 2's sum is the node's own sum minus those two, and the root's sum is the total
///      weight. The tree has `treeDepth` levels, the least with 3^treeDepth >= nodeCount.
///      Every stake change updates at most one slot per level, O(log3 n); an election reads
///      one slot per level and draw, O(k log3 n), and writes nothing. Every sum fits 128 bits:
///      at most 65535 weights below 2^96.
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

    /// @dev Mask of child 0's sum (the low half) in a tree slot.
    uint256 private constant CHILD_MASK = 0xffffffffffffffffffffffffffffffff;
    /// @dev Mask of the operator (the low 160 bits) in an `IndexEntry` slot.
    uint256 private constant ADDRESS_MASK = 0x00ffffffffffffffffffffffffffffffffffffffff;

    /// @dev One slot per index: its operator and its current election weight.
    struct IndexEntry {
        address operator;
        uint96 weight;
    }

    /// @dev Election totals and the tree's depth, packed in one slot (one SLOAD per election).
    struct Totals {
        uint128 totalWeight;
        uint32 nodeCount;
        uint32 eligibleCount;
        uint8 treeDepth; // the root covers positions [0, 3^treeDepth)
    }

    IERC20 private immutable i_token;
    uint96 private immutable i_minStakeWei;
    uint64 private immutable i_unbondingDelay;

    address private s_taskManager;
    Totals private s_totals;
    mapping(address operator => Node) private s_nodes;
    mapping(address signer => address operator) private s_operatorBySigner;
    mapping(uint256 index => IndexEntry) private s_entries;
    /// @dev Ternary tree node `_treeKey(level, id)` => child 1 sum << 128 | child 0 sum.
    mapping(uint256 key => uint256 childSums) private s_tree;

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
        _treeAppend(totals, weight);
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
    ///      descent, the weights of listed indices inside its children's ranges are subtracted.
    ///      Cost: one storage read per tree level and draw, O(k log3 n), plus one per distinct
    ///      in-range exclusion, and O(k (k + |exclude|) log3 n) memory work.
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
        // operators[i] = s_entries[indices[i]].operator, the low 160 bits of the entry's slot
        // keccak256(abi.encode(indices[i], s_entries.slot)); both arrays have length k.
        assembly ("memory-safe") {
            mstore(0x20, s_entries.slot)
            for { let i := 0 } lt(i, k) { i := add(i, 1) } {
                let offset := shl(5, add(i, 1))
                mstore(0x00, mload(add(indices, offset)))
                mstore(add(operators, offset), and(sload(keccak256(0x00, 0x40)), ADDRESS_MASK))
            }
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
    /// @dev Read from the election tree (one slot per level), for off-chain checks and tests:
    ///      at every level, the stored sums of the siblings left of the path to position
    ///      `index`. When the clamped count fills the whole tree (3^treeDepth nodes) the answer
    ///      is the root's sum, the total weight.
    function getPrefixWeight(uint32 index) external view returns (uint256 sum) {
        Totals memory totals = s_totals;
        uint256 count = Math.min(index, totals.nodeCount);
        uint256 depth = totals.treeDepth;
        if (count == 3 ** depth) return totals.totalWeight;
        uint256 q = count; // position `count` as an id at the current level
        for (uint256 level = 1; level <= depth; ++level) {
            uint256 parent = q / 3;
            uint256 child = q % 3;
            if (child != 0) {
                uint256 sums = s_tree[_treeKey(level, parent)];
                sum += sums & CHILD_MASK;
                if (child == 2) sum += sums >> 128;
            }
            q = parent;
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
        if (newWeight > oldWeight) {
            uint128 delta = newWeight - oldWeight;
            _treeAdd(index - 1, delta, totals.treeDepth);
            totals.totalWeight += delta;
        } else {
            uint128 delta = oldWeight - newWeight;
            _treeSub(index - 1, delta, totals.treeDepth);
            totals.totalWeight -= delta;
        }
        if (oldWeight == 0) ++totals.eligibleCount;
        else if (newWeight == 0) --totals.eligibleCount;
        s_totals = totals;
    }

    /// @dev Storage key of the tree node at `level` (1..treeDepth) with id `id`.
    function _treeKey(uint256 level, uint256 id) private pure returns (uint256) {
        return (level << 32) | id;
    }

    /// @dev Add the new node at position `totals.nodeCount` with `weight` (before `totals`
    ///      counts it). When the tree is full (3^treeDepth nodes) it grows a root whose child 0
    ///      is the old tree, so that child's sum is the old total weight.
    function _treeAppend(Totals memory totals, uint256 weight) private {
        uint256 position = totals.nodeCount;
        uint256 depth = totals.treeDepth;
        if (position == 3 ** depth) {
            ++depth;
            // depth <= 11: 3^11 > MAX_NODES
            // forge-lint: disable-next-line(unsafe-typecast)
            totals.treeDepth = uint8(depth);
            if (totals.totalWeight != 0) s_tree[_treeKey(depth, 0)] = totals.totalWeight;
        }
        if (weight != 0) _treeAdd(position, weight, depth);
    }

    /// @dev Add `delta` to the sums of the tree nodes above `position` that store it (child 0
    ///      or 1 of its ancestor at that level; a child 2 sum is implicit). No half overflows:
    ///      every sum stays below 2^112.
    function _treeAdd(uint256 position, uint256 delta, uint256 depth) private {
        uint256 q = position;
        for (uint256 level = 1; level <= depth; ++level) {
            uint256 parent = q / 3;
            // A tree position, not a random draw.
            // slither-disable-next-line weak-prng
            uint256 child = q % 3;
            if (child != 2) s_tree[_treeKey(level, parent)] += delta << (child * 128);
            q = parent;
        }
    }

    /// @dev Subtract `delta` (at most the position's current weight) as `_treeAdd` adds it; a
    ///      stored sum includes that weight, so no half borrows from the other.
    function _treeSub(uint256 position, uint256 delta, uint256 depth) private {
        uint256 q = position;
        for (uint256 level = 1; level <= depth; ++level) {
            uint256 parent = q / 3;
            // A tree position, not a random draw.
            // slither-disable-next-line weak-prng
            uint256 child = q % 3;
            if (child != 2) s_tree[_treeKey(level, parent)] -= delta << (child * 128);
            q = parent;
        }
    }

    /// @dev The election behind `electCommittee` and `electCommitteeWithOperators`.
    function _elect(bytes32 seed, uint256 k, uint32[] calldata exclude) private view returns (uint32[] memory indices) {
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
        uint256 depth = totals.treeDepth;

        for (uint256 i; i < k; ++i) {
            uint256 r;
            assembly ("memory-safe") {
                mstore(0x00, seed)
                mstore(0x20, i)
                r := keccak256(0x00, 0x40)
            }
            (uint256 picked, uint256 pickedWeight) =
                _descend(r % remaining, remaining, depth, removed, removedWeight, m);
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

    /// @dev Tree descent for the smallest index whose adjusted prefix weight exceeds `r`
    ///      (adjusted: the first `m` entries of `removed` count as zero). Requires r < rest, the
    ///      adjusted total. From the root down, one slot per level: the node's two stored child
    ///      sums less the removed weights inside each child's range; child 2's adjusted sum is
    ///      the node's (`rest`) minus both. The first child whose adjusted sum exceeds what is
    ///      left of `r` is entered. Every adjusted sum stays non-negative (a removed weight is
    ///      part of the sums that contain it), and r < rest holds at every level, so child 2 is
    ///      only entered with a positive sum. At the bottom `rest` is the picked node's weight.
    function _descend(
        uint256 r,
        uint256 rest,
        uint256 depth,
        uint256[] memory removed,
        uint256[] memory removedWeight,
        uint256 m
    ) private view returns (uint256 picked, uint256 pickedWeight) {
        // Assembly: this loop is the election's hot path. The node (level, id) is read from the
        // mapping's slot keccak256(abi.encode(_treeKey(level, id), s_tree.slot)). `picked` is
        // the index of the current node's first position until the end; `m` becomes the end of
        // the removed list and `removedWeight` its distance from `removed`.
        assembly ("memory-safe") {
            mstore(0x20, s_tree.slot)
            m := add(add(removed, 0x20), shl(5, m))
            removedWeight := sub(removedWeight, removed)
            let unit := exp(3, depth) // positions under one node of the current level
            let id := 0
            picked := 1
            for {} depth { depth := sub(depth, 1) } {
                unit := div(unit, 3)
                mstore(0x00, or(shl(32, depth), id))
                let a1 := sload(keccak256(0x00, 0x40))
                let a0 := and(a1, CHILD_MASK)
                a1 := shr(128, a1)
                // Less the removed weights: offset d below unit is child 0, below 2 unit child 1
                // (an index before `picked` wraps around to a huge offset).
                for { let p := add(removed, 0x20) } lt(p, m) { p := add(p, 0x20) } {
                    let d := sub(mload(p), picked)
                    if lt(d, shl(1, unit)) {
                        switch lt(d, unit)
                        case 1 { a0 := sub(a0, mload(add(p, removedWeight))) }
                        default { a1 := sub(a1, mload(add(p, removedWeight))) }
                    }
                }
                id := mul(id, 3)
                switch lt(r, a0)
                case 1 { rest := a0 }
                default {
                    r := sub(r, a0)
                    switch lt(r, a1)
                    case 1 {
                        rest := a1
                        id := add(id, 1)
                        picked := add(picked, unit)
                    }
                    default {
                        r := sub(r, a1)
                        rest := sub(sub(rest, a0), a1)
                        id := add(id, 2)
                        picked := add(picked, shl(1, unit))
                    }
                }
            }
            pickedWeight := rest
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
