// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

import {DatumToken} from "../../contracts/DatumToken.sol";
import {NodeRegistry} from "../../contracts/NodeRegistry.sol";
import {INodeRegistry} from "../../contracts/interfaces/INodeRegistry.sol";
import {TestBase, Vm} from "./utils/Vm.sol";

/// @notice Drives the registry with bounded random actions by a fixed set of operators. It is
///         also the registry's TaskManager, so it can slash. Ghost variables record the token
///         flows and any violation seen at the moment of an action.
contract NodeRegistryHandler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant ACTORS = 6;
    uint96 internal constant MAX_AMOUNT = 1e6 ether;

    NodeRegistry public immutable registry;
    DatumToken public immutable token;
    address public constant SLASH_RECIPIENT = address(0x5EA1);

    uint256 public ghostDeposited;
    uint256 public ghostWithdrawn;
    uint256 public ghostSlashed;
    bool public ghostSlashExceeded;
    bool public ghostEarlyWithdrawal;
    uint256 public ghostCalls;

    constructor(NodeRegistry registry_, DatumToken token_) {
        registry = registry_;
        token = token_;
    }

    function actor(uint256 i) public pure returns (address) {
        return address(uint160(0xA000 + i));
    }

    function actorCount() external pure returns (uint256) {
        return ACTORS;
    }

    function register(uint256 actorSeed, uint256 stake) external {
        address op = actor(actorSeed % ACTORS);
        if (registry.getNode(op).index != 0) return;
        uint96 amount = uint96(_bound(stake, registry.getMinStake(), MAX_AMOUNT));
        _fund(op, amount);
        vm.prank(op);
        registry.register(address(uint160(op) + 0x100), "https://n.example", 1, amount);
        ghostDeposited += amount;
        ++ghostCalls;
    }

    function addStake(uint256 actorSeed, uint256 amount) external {
        address op = actor(actorSeed % ACTORS);
        if (registry.getNode(op).index == 0) return;
        uint96 a = uint96(_bound(amount, 1, MAX_AMOUNT));
        _fund(op, a);
        vm.prank(op);
        registry.addStake(a);
        ghostDeposited += a;
        ++ghostCalls;
    }

    function requestUnbond(uint256 actorSeed, uint256 amount) external {
        address op = actor(actorSeed % ACTORS);
        INodeRegistry.Node memory node = registry.getNode(op);
        if (node.index == 0 || node.stakeWei == 0) return;
        uint96 a = uint96(_bound(amount, 1, node.stakeWei));
        vm.prank(op);
        registry.requestUnbond(a);
        ++ghostCalls;
    }

    /// @dev Tries to withdraw whatever the state is; a success before the release time (or with
    ///      nothing unbonding) is recorded as a violation.
    function withdraw(uint256 actorSeed) external {
        address op = actor(actorSeed % ACTORS);
        INodeRegistry.Node memory node = registry.getNode(op);
        if (node.index == 0) return;
        vm.prank(op);
        try registry.withdrawUnbonded() returns (uint96 paid) {
            if (block.timestamp < node.unbondReleaseAt || node.unbondingWei == 0 || paid != node.unbondingWei) {
                ghostEarlyWithdrawal = true;
            }
            ghostWithdrawn += paid;
            ++ghostCalls;
        } catch {}
    }

    function slash(uint256 actorSeed, uint256 amount) external {
        address op = actor(actorSeed % ACTORS);
        INodeRegistry.Node memory before = registry.getNode(op);
        if (before.index == 0) return;
        uint96 a = uint96(_bound(amount, 0, 2 * uint256(MAX_AMOUNT)));
        uint96 slashed = registry.slash(op, a, SLASH_RECIPIENT);
        INodeRegistry.Node memory after_ = registry.getNode(op);
        uint256 held = uint256(before.stakeWei) + before.unbondingWei;
        uint256 expected = a < held ? a : held;
        if (
            slashed != expected || slashed > held || uint256(after_.stakeWei) + after_.unbondingWei != held - slashed
                || after_.unbondingWei > before.unbondingWei
        ) {
            ghostSlashExceeded = true;
        }
        ghostSlashed += slashed;
        ++ghostCalls;
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + _bound(secs, 0, 2 * uint256(registry.getUnbondingDelay())));
    }

    function _fund(address op, uint256 amount) internal {
        token.transfer(op, amount);
        vm.prank(op);
        token.approve(address(registry), amount);
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        if (x >= lo && x <= hi) return x;
        return lo + (x % (hi - lo + 1));
    }
}

contract NodeRegistryInvariantTest is TestBase {
    uint96 internal constant MIN_STAKE = 100 ether;

    DatumToken internal s_token;
    NodeRegistry internal s_reg;
    NodeRegistryHandler internal s_handler;

    function setUp() public {
        vm.warp(1_700_000_000);
        s_token = new DatumToken(address(this), 1e12 ether);
        s_reg = new NodeRegistry(IERC20(address(s_token)), MIN_STAKE, 3 days, address(this));
        s_handler = new NodeRegistryHandler(s_reg, s_token);
        s_reg.setTaskManager(address(s_handler));
        s_token.transfer(address(s_handler), 1e12 ether);
        targetContract(address(s_handler));
    }

    /// @notice The registry holds exactly the stakes plus the unbonding amounts.
    function invariant_BalanceEqualsStakesPlusUnbonding() public view {
        uint256 sum;
        for (uint256 i; i < s_handler.actorCount(); ++i) {
            INodeRegistry.Node memory node = s_reg.getNode(s_handler.actor(i));
            sum += uint256(node.stakeWei) + node.unbondingWei;
        }
        vm.assertEq(s_token.balanceOf(address(s_reg)), sum, "balance == stakes + unbonding");
    }

    /// @notice Every token in is either still held, withdrawn after unbonding, or slashed out.
    function invariant_TokenFlowsConserved() public view {
        vm.assertEq(
            s_handler.ghostDeposited() - s_handler.ghostWithdrawn() - s_handler.ghostSlashed(),
            s_token.balanceOf(address(s_reg)),
            "deposits - withdrawals - slashes == balance"
        );
        vm.assertEq(
            s_token.balanceOf(s_handler.SLASH_RECIPIENT()), s_handler.ghostSlashed(), "slashed tokens delivered"
        );
    }

    /// @notice No slash ever took more than the node held, or other than min(amount, held).
    function invariant_SlashNeverExceedsStake() public view {
        vm.assertFalse(s_handler.ghostSlashExceeded(), "slash exceeded the stake");
    }

    /// @notice No unbonding stake was ever paid out before its release time.
    function invariant_NoEarlyWithdrawal() public view {
        vm.assertFalse(s_handler.ghostEarlyWithdrawal(), "early withdrawal");
    }

    /// @notice The election tree agrees with the per-node weights: every prefix, the total and
    ///         the eligible count; each weight is the stake when at least the minimum.
    function invariant_TreeMatchesWeights() public view {
        uint32 n = s_reg.getNodeCount();
        uint256 running;
        uint32 eligible;
        for (uint32 i = 1; i <= n; ++i) {
            INodeRegistry.Node memory node = s_reg.getNode(s_reg.getOperatorAt(i));
            uint256 w = s_reg.getWeight(i);
            vm.assertEq(w, node.stakeWei >= MIN_STAKE ? node.stakeWei : 0, "weight rule");
            running += w;
            if (w != 0) ++eligible;
            vm.assertEq(s_reg.getPrefixWeight(i), running, "prefix");
        }
        vm.assertEq(s_reg.getTotalWeight(), running, "total == sum of weights");
        vm.assertEq(uint256(s_reg.getEligibleCount()), uint256(eligible), "eligible count");
    }

    /// @notice Whenever enough nodes are eligible, an election returns distinct weighted members.
    function invariant_ElectionWellFormed() public view {
        uint32 eligible = s_reg.getEligibleCount();
        if (eligible == 0) return;
        uint256 k = eligible < 3 ? eligible : 3;
        uint32[] memory got = s_reg.electCommittee(keccak256(abi.encode(block.timestamp)), k, new uint32[](0));
        for (uint256 i; i < k; ++i) {
            vm.assertTrue(s_reg.getWeight(got[i]) != 0, "member has weight");
            for (uint256 j; j < i; ++j) {
                vm.assertTrue(got[i] != got[j], "distinct");
            }
        }
    }
}
