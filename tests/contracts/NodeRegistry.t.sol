// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {DatumToken} from "../../contracts/DatumToken.sol";
import {NodeRegistry} from "../../contracts/NodeRegistry.sol";
import {INodeRegistry} from "../../contracts/interfaces/INodeRegistry.sol";
import {TestBase} from "./utils/Vm.sol";

/// @notice Shared fixture: a token, a registry whose TaskManager is the test contract, and
///         helpers to register funded operators.
abstract contract NodeRegistryFixture is TestBase {
    /// @dev forge prints `log(string,uint256)` calls made to this address (shown with -vv).
    address internal constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    uint96 internal constant MIN_STAKE = 100 ether;
    uint64 internal constant DELAY = 7 days;
    string internal constant ENDPOINT = "https://node.example:8443";

    DatumToken internal s_token;
    NodeRegistry internal s_reg;
    address internal s_owner = address(0xA11CE);
    address internal s_recipient = address(0xBEEF);

    function setUp() public virtual {
        s_token = new DatumToken(address(this), 1e9 ether);
        s_reg = new NodeRegistry(IERC20(address(s_token)), MIN_STAKE, DELAY, s_owner);
        vm.prank(s_owner);
        s_reg.setTaskManager(address(this));
        vm.warp(1_700_000_000);
    }

    /// @dev A raw call: the console address has no code, so a typed call would revert.
    function _log(string memory label, uint256 value) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,uint256)", label, value));
        ok;
    }

    function _operator(uint256 i) internal pure returns (address) {
        return address(uint160(0x1000 + i));
    }

    function _signer(uint256 i) internal pure returns (address) {
        return address(uint160(0x900000 + i));
    }

    /// @dev Fund `op` with `amount` and approve the registry for it.
    function _fund(address op, uint256 amount) internal {
        s_token.transfer(op, amount);
        vm.prank(op);
        s_token.approve(address(s_reg), type(uint256).max);
    }

    function _register(uint256 i, uint96 stake) internal returns (uint32 index) {
        address op = _operator(i);
        _fund(op, stake);
        vm.prank(op);
        index = s_reg.register(_signer(i), ENDPOINT, 0x3, stake);
    }

    function _registerMany(uint96[] memory stakes) internal {
        for (uint256 i; i < stakes.length; ++i) {
            _register(i + 1, stakes[i]);
        }
    }

    /// @dev Independent O(n) reference for the documented election rule.
    function _referenceElect(bytes32 seed, uint256 k, uint32[] memory exclude)
        internal
        view
        returns (uint32[] memory out)
    {
        uint256 n = s_reg.getNodeCount();
        uint256[] memory w = new uint256[](n + 1);
        uint256 remaining;
        for (uint256 i = 1; i <= n; ++i) {
            w[i] = s_reg.getWeight(uint32(i));
        }
        for (uint256 e; e < exclude.length; ++e) {
            if (exclude[e] >= 1 && exclude[e] <= n) w[exclude[e]] = 0;
        }
        for (uint256 i = 1; i <= n; ++i) {
            remaining += w[i];
        }
        out = new uint32[](k);
        for (uint256 d; d < k; ++d) {
            uint256 r = uint256(keccak256(abi.encode(seed, d))) % remaining;
            uint256 acc;
            for (uint256 i = 1; i <= n; ++i) {
                acc += w[i];
                if (acc > r) {
                    out[d] = uint32(i);
                    remaining -= w[i];
                    w[i] = 0;
                    break;
                }
            }
        }
    }

    /// @dev Sum of getWeight over all indices.
    function _sumWeights() internal view returns (uint256 sum, uint32 nonZero) {
        uint32 n = s_reg.getNodeCount();
        for (uint32 i = 1; i <= n; ++i) {
            uint256 w = s_reg.getWeight(i);
            sum += w;
            if (w != 0) ++nonZero;
        }
    }

    /// @dev Every prefix read from the election tree equals the running sum of weights; totals agree.
    function _checkTree() internal view {
        uint32 n = s_reg.getNodeCount();
        uint256 running;
        uint32 nonZero;
        for (uint32 i = 1; i <= n; ++i) {
            uint256 w = s_reg.getWeight(i);
            running += w;
            if (w != 0) ++nonZero;
            vm.assertEq(s_reg.getPrefixWeight(i), running, "prefix weight");
        }
        vm.assertEq(s_reg.getTotalWeight(), running, "total weight");
        vm.assertEq(uint256(s_reg.getEligibleCount()), uint256(nonZero), "eligible count");
    }

    function _noExclude() internal pure returns (uint32[] memory) {
        return new uint32[](0);
    }
}

contract NodeRegistryTest is NodeRegistryFixture {
    // ------------------------------------------------------------------ constructor / views

    function test_Constructor_SetsParameters() public view {
        vm.assertEq(uint256(s_reg.getMinStake()), uint256(MIN_STAKE), "min stake");
        vm.assertEq(uint256(s_reg.getUnbondingDelay()), uint256(DELAY), "delay");
        vm.assertEq(address(s_reg.getToken()), address(s_token), "token");
        vm.assertEq(s_reg.owner(), s_owner, "owner");
        vm.assertEq(s_reg.getTaskManager(), address(this), "task manager");
        vm.assertEq(uint256(s_reg.MAX_NODES()), 2 ** 16 - 1, "max nodes");
        vm.assertEq(uint256(s_reg.getNodeCount()), 0, "no nodes");
        vm.assertEq(s_reg.getTotalWeight(), 0, "no weight");
    }

    function test_RevertWhen_ConstructorOwnerIsZero() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new NodeRegistry(IERC20(address(s_token)), MIN_STAKE, DELAY, address(0));
    }

    // ------------------------------------------------------------------ register

    function test_Register_StoresNodeAndPullsStake() public {
        address op = _operator(1);
        _fund(op, 150 ether);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.NodeRegistered(op, _signer(1), 1, 150 ether, 0x5, ENDPOINT);
        vm.prank(op);
        uint32 index = s_reg.register(_signer(1), ENDPOINT, 0x5, 150 ether);

        vm.assertEq(uint256(index), 1, "first index");
        INodeRegistry.Node memory node = s_reg.getNode(op);
        vm.assertEq(node.signer, _signer(1), "signer");
        vm.assertEq(uint256(node.index), 1, "index");
        vm.assertEq(uint256(node.capabilities), 0x5, "caps");
        vm.assertEq(uint256(node.stakeWei), 150 ether, "stake");
        vm.assertEq(uint256(node.unbondingWei), 0, "unbonding");
        vm.assertEq(node.endpoint, ENDPOINT, "endpoint");
        vm.assertEq(s_reg.getOperatorBySigner(_signer(1)), op, "signer map");
        vm.assertEq(s_reg.getOperatorAt(1), op, "index map");
        vm.assertEq(s_token.balanceOf(address(s_reg)), 150 ether, "registry balance");
        vm.assertEq(s_token.balanceOf(op), 0, "operator paid");
        vm.assertEq(s_reg.getWeight(1), 150 ether, "weight");
        vm.assertEq(s_reg.getTotalWeight(), 150 ether, "total");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 1, "eligible");
    }

    function test_Register_AssignsSequentialIndicesAndBuildsTree() public {
        uint96[] memory stakes = new uint96[](13);
        for (uint256 i; i < stakes.length; ++i) {
            stakes[i] = uint96(MIN_STAKE + i * 7 ether);
        }
        _registerMany(stakes);
        vm.assertEq(uint256(s_reg.getNodeCount()), 13, "count");
        for (uint32 i = 1; i <= 13; ++i) {
            vm.assertEq(s_reg.getOperatorAt(i), _operator(i), "operator at");
            vm.assertEq(uint256(s_reg.getNode(_operator(i)).index), i, "index");
        }
        _checkTree();
    }

    /// @dev The ternary tree grows a level when the node count passes 3, 9, 27 and 81: the
    ///      prefix sums stay exact at and after every such step, after stake changes at the
    ///      edges of the levels' ranges, and elections over 100 nodes match the reference.
    function test_Tree_GrowsPastEachPowerOfThree() public {
        for (uint256 i = 1; i <= 100; ++i) {
            _register(i, uint96(MIN_STAKE + ((i * 53) % 97) * 3 ether));
            if (i <= 4 || i == 9 || i == 10 || i == 27 || i == 28 || i == 81 || i == 82) _checkTree();
        }
        _checkTree();

        uint32[7] memory edges = [uint32(1), 27, 28, 50, 81, 82, 100];
        for (uint256 e; e < edges.length; ++e) {
            address op = _operator(edges[e]);
            if (e % 3 == 0) {
                uint96 stake = s_reg.getNode(op).stakeWei;
                vm.prank(op);
                s_reg.requestUnbond(stake); // weight 0
            } else if (e % 3 == 1) {
                _fund(op, 40 ether);
                vm.prank(op);
                s_reg.addStake(40 ether);
            } else {
                s_reg.slash(op, 7 ether, s_recipient);
            }
        }
        _checkTree();

        uint32[] memory exclude = new uint32[](5);
        exclude[0] = 28;
        exclude[1] = 81;
        exclude[2] = 0;
        exclude[3] = 500;
        exclude[4] = 28;
        for (uint256 s; s < 12; ++s) {
            bytes32 seed = keccak256(abi.encode("hundred", s));
            uint32[] memory ex = s % 2 == 0 ? _noExclude() : exclude;
            uint32[] memory got = s_reg.electCommittee(seed, 8, ex);
            uint32[] memory want = _referenceElect(seed, 8, ex);
            for (uint256 i; i < 8; ++i) {
                vm.assertEq(uint256(got[i]), uint256(want[i]), "reference over 100 nodes");
            }
        }
    }

    function test_Register_AcceptsMaxLengthEndpoint() public {
        address op = _operator(1);
        _fund(op, MIN_STAKE);
        string memory ep = string(new bytes(256));
        vm.prank(op);
        s_reg.register(_signer(1), ep, 0, MIN_STAKE);
        vm.assertEq(bytes(s_reg.getNode(op).endpoint).length, 256, "endpoint length");
    }

    function test_Register_SignerMayBeTheOperator() public {
        address op = _operator(1);
        _fund(op, MIN_STAKE);
        vm.prank(op);
        s_reg.register(op, ENDPOINT, 0, MIN_STAKE);
        vm.assertEq(s_reg.getOperatorBySigner(op), op, "self signer");
    }

    function test_RevertWhen_RegisterTwice() public {
        _register(1, MIN_STAKE);
        _fund(_operator(1), MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__AlreadyRegistered.selector, _operator(1)));
        vm.prank(_operator(1));
        s_reg.register(_signer(9), ENDPOINT, 0, MIN_STAKE);
    }

    function test_RevertWhen_RegisterWithZeroSigner() public {
        _fund(_operator(1), MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__SignerUnavailable.selector, address(0)));
        vm.prank(_operator(1));
        s_reg.register(address(0), ENDPOINT, 0, MIN_STAKE);
    }

    function test_RevertWhen_RegisterWithUsedSigner() public {
        _register(1, MIN_STAKE);
        _fund(_operator(2), MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__SignerUnavailable.selector, _signer(1)));
        vm.prank(_operator(2));
        s_reg.register(_signer(1), ENDPOINT, 0, MIN_STAKE);
    }

    function test_RevertWhen_RegisterWithEmptyEndpoint() public {
        _fund(_operator(1), MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadEndpoint.selector, 0));
        vm.prank(_operator(1));
        s_reg.register(_signer(1), "", 0, MIN_STAKE);
    }

    function test_RevertWhen_RegisterWithTooLongEndpoint() public {
        _fund(_operator(1), MIN_STAKE);
        string memory ep = string(new bytes(257));
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadEndpoint.selector, 257));
        vm.prank(_operator(1));
        s_reg.register(_signer(1), ep, 0, MIN_STAKE);
    }

    function test_RevertWhen_RegisterBelowMinimumStake() public {
        _fund(_operator(1), MIN_STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.NodeRegistry__StakeBelowMinimum.selector, MIN_STAKE - 1, MIN_STAKE)
        );
        vm.prank(_operator(1));
        s_reg.register(_signer(1), ENDPOINT, 0, MIN_STAKE - 1);
    }

    function test_RevertWhen_RegisterWithoutAllowance() public {
        s_token.transfer(_operator(1), MIN_STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(s_reg), 0, MIN_STAKE)
        );
        vm.prank(_operator(1));
        s_reg.register(_signer(1), ENDPOINT, 0, MIN_STAKE);
    }

    // ------------------------------------------------------------------ addStake

    function test_AddStake_IncreasesStakeAndWeight() public {
        _register(1, MIN_STAKE);
        _register(2, MIN_STAKE);
        _fund(_operator(1), 40 ether);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.StakeChanged(_operator(1), MIN_STAKE + 40 ether, 0, 0);
        vm.prank(_operator(1));
        s_reg.addStake(40 ether);
        vm.assertEq(uint256(s_reg.getNode(_operator(1)).stakeWei), MIN_STAKE + 40 ether, "stake");
        vm.assertEq(s_reg.getWeight(1), MIN_STAKE + 40 ether, "weight");
        vm.assertEq(s_token.balanceOf(address(s_reg)), 2 * MIN_STAKE + 40 ether, "balance");
        _checkTree();
    }

    function test_AddStake_RestoresEligibility() public {
        _register(1, MIN_STAKE);
        vm.prank(_operator(1));
        s_reg.requestUnbond(1 ether);
        vm.assertEq(s_reg.getWeight(1), 0, "below min: no weight");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 0, "not eligible");
        _fund(_operator(1), 1 ether);
        vm.prank(_operator(1));
        s_reg.addStake(1 ether);
        vm.assertEq(s_reg.getWeight(1), MIN_STAKE, "weight back");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 1, "eligible again");
        _checkTree();
    }

    function test_RevertWhen_AddStakeNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotRegistered.selector, _operator(1)));
        vm.prank(_operator(1));
        s_reg.addStake(1 ether);
    }

    function test_RevertWhen_AddStakeZero() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__ZeroAmount.selector));
        vm.prank(_operator(1));
        s_reg.addStake(0);
    }

    // ------------------------------------------------------------------ requestUnbond

    function test_RequestUnbond_MovesStakeAndSetsReleaseTime() public {
        _register(1, 300 ether);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.StakeChanged(_operator(1), 200 ether, 100 ether, releaseAt);
        vm.prank(_operator(1));
        s_reg.requestUnbond(100 ether);
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(uint256(node.stakeWei), 200 ether, "stake");
        vm.assertEq(uint256(node.unbondingWei), 100 ether, "unbonding");
        vm.assertEq(uint256(node.unbondReleaseAt), releaseAt, "release");
        vm.assertEq(s_reg.getWeight(1), 200 ether, "weight");
        vm.assertEq(s_token.balanceOf(address(s_reg)), 300 ether, "tokens stay");
        _checkTree();
    }

    function test_RequestUnbond_RestartsDelay() public {
        _register(1, 300 ether);
        vm.prank(_operator(1));
        s_reg.requestUnbond(50 ether);
        vm.warp(block.timestamp + DELAY - 1);
        vm.prank(_operator(1));
        s_reg.requestUnbond(50 ether);
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(uint256(node.unbondingWei), 100 ether, "accumulated");
        vm.assertEq(uint256(node.unbondReleaseAt), block.timestamp + DELAY, "restarted");
    }

    function test_RequestUnbond_BelowMinimumDropsWeight() public {
        _register(1, MIN_STAKE);
        _register(2, 2 * MIN_STAKE);
        vm.prank(_operator(2));
        s_reg.requestUnbond(MIN_STAKE + 1);
        vm.assertEq(s_reg.getWeight(2), 0, "no weight");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 1, "eligible");
        vm.assertEq(s_reg.getTotalWeight(), MIN_STAKE, "total");
        _checkTree();
    }

    function test_RequestUnbond_AllStake() public {
        _register(1, MIN_STAKE);
        vm.prank(_operator(1));
        s_reg.requestUnbond(MIN_STAKE);
        vm.assertEq(uint256(s_reg.getNode(_operator(1)).stakeWei), 0, "stake");
        vm.assertEq(s_reg.getTotalWeight(), 0, "total");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 0, "eligible");
    }

    function test_RevertWhen_RequestUnbondNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotRegistered.selector, _operator(1)));
        vm.prank(_operator(1));
        s_reg.requestUnbond(1);
    }

    function test_RevertWhen_RequestUnbondZero() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__ZeroAmount.selector));
        vm.prank(_operator(1));
        s_reg.requestUnbond(0);
    }

    function test_RevertWhen_RequestUnbondMoreThanStake() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.NodeRegistry__InsufficientStake.selector, MIN_STAKE + 1, MIN_STAKE)
        );
        vm.prank(_operator(1));
        s_reg.requestUnbond(MIN_STAKE + 1);
    }

    // ------------------------------------------------------------------ withdrawUnbonded

    function test_WithdrawUnbonded_PaysAtReleaseTime() public {
        _register(1, 300 ether);
        vm.prank(_operator(1));
        s_reg.requestUnbond(120 ether);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.StakeWithdrawn(_operator(1), 120 ether);
        vm.prank(_operator(1));
        uint96 paid = s_reg.withdrawUnbonded();
        vm.assertEq(uint256(paid), 120 ether, "paid");
        vm.assertEq(s_token.balanceOf(_operator(1)), 120 ether, "operator balance");
        vm.assertEq(s_token.balanceOf(address(s_reg)), 180 ether, "registry balance");
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(uint256(node.unbondingWei), 0, "unbonding cleared");
        vm.assertEq(uint256(node.unbondReleaseAt), 0, "release cleared");
        vm.assertEq(uint256(node.stakeWei), 180 ether, "stake kept");
    }

    function test_RevertWhen_WithdrawUnbondedBeforeRelease() public {
        _register(1, 300 ether);
        vm.prank(_operator(1));
        s_reg.requestUnbond(120 ether);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.warp(releaseAt - 1);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.NodeRegistry__UnbondingLocked.selector, releaseAt, releaseAt - 1)
        );
        vm.prank(_operator(1));
        s_reg.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedWithNothingUnbonding() public {
        _register(1, 300 ether);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.NodeRegistry__UnbondingLocked.selector, 0, uint64(block.timestamp))
        );
        vm.prank(_operator(1));
        s_reg.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedTwice() public {
        _register(1, 300 ether);
        vm.prank(_operator(1));
        s_reg.requestUnbond(1 ether);
        vm.warp(block.timestamp + DELAY);
        vm.prank(_operator(1));
        s_reg.withdrawUnbonded();
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.NodeRegistry__UnbondingLocked.selector, 0, uint64(block.timestamp))
        );
        vm.prank(_operator(1));
        s_reg.withdrawUnbonded();
    }

    function test_RevertWhen_WithdrawUnbondedNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotRegistered.selector, _operator(1)));
        vm.prank(_operator(1));
        s_reg.withdrawUnbonded();
    }

    // ------------------------------------------------------------------ updateNode

    function test_UpdateNode_ChangesEndpointCapabilitiesAndSigner() public {
        _register(1, MIN_STAKE);
        address newSigner = _signer(77);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.NodeUpdated(_operator(1), newSigner, 0xF0, "https://new.example");
        vm.prank(_operator(1));
        s_reg.updateNode(newSigner, "https://new.example", 0xF0);
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(node.signer, newSigner, "signer");
        vm.assertEq(node.endpoint, "https://new.example", "endpoint");
        vm.assertEq(uint256(node.capabilities), 0xF0, "caps");
        vm.assertEq(s_reg.getOperatorBySigner(newSigner), _operator(1), "new signer mapped");
        vm.assertEq(s_reg.getOperatorBySigner(_signer(1)), address(0), "old signer freed");
    }

    function test_UpdateNode_KeepsSameSigner() public {
        _register(1, MIN_STAKE);
        vm.prank(_operator(1));
        s_reg.updateNode(_signer(1), "https://same.example", 0x1);
        vm.assertEq(s_reg.getOperatorBySigner(_signer(1)), _operator(1), "still mapped");
        vm.assertEq(s_reg.getNode(_operator(1)).endpoint, "https://same.example", "endpoint");
    }

    function test_UpdateNode_FreedSignerCanBeReused() public {
        _register(1, MIN_STAKE);
        vm.prank(_operator(1));
        s_reg.updateNode(_signer(50), ENDPOINT, 0);
        _fund(_operator(2), MIN_STAKE);
        vm.prank(_operator(2));
        s_reg.register(_signer(1), ENDPOINT, 0, MIN_STAKE);
        vm.assertEq(s_reg.getOperatorBySigner(_signer(1)), _operator(2), "reused");
        vm.assertEq(s_reg.getOperatorBySigner(_signer(50)), _operator(1), "other kept");
    }

    function test_RevertWhen_UpdateNodeNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotRegistered.selector, _operator(1)));
        vm.prank(_operator(1));
        s_reg.updateNode(_signer(1), ENDPOINT, 0);
    }

    function test_RevertWhen_UpdateNodeWithZeroSigner() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__SignerUnavailable.selector, address(0)));
        vm.prank(_operator(1));
        s_reg.updateNode(address(0), ENDPOINT, 0);
    }

    function test_RevertWhen_UpdateNodeWithSignerOfAnother() public {
        _register(1, MIN_STAKE);
        _register(2, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__SignerUnavailable.selector, _signer(2)));
        vm.prank(_operator(1));
        s_reg.updateNode(_signer(2), ENDPOINT, 0);
    }

    function test_RevertWhen_UpdateNodeWithEmptyEndpoint() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadEndpoint.selector, 0));
        vm.prank(_operator(1));
        s_reg.updateNode(_signer(5), "", 0);
    }

    function test_RevertWhen_UpdateNodeWithTooLongEndpoint() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadEndpoint.selector, 300));
        vm.prank(_operator(1));
        s_reg.updateNode(_signer(1), string(new bytes(300)), 0);
    }

    // ------------------------------------------------------------------ slash

    function test_Slash_TakesFromActiveStake() public {
        _register(1, 300 ether);
        _register(2, MIN_STAKE);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.StakeChanged(_operator(1), 250 ether, 0, 0);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.NodeSlashed(_operator(1), 50 ether, s_recipient);
        uint96 slashed = s_reg.slash(_operator(1), 50 ether, s_recipient);
        vm.assertEq(uint256(slashed), 50 ether, "slashed");
        vm.assertEq(uint256(s_reg.getNode(_operator(1)).stakeWei), 250 ether, "stake");
        vm.assertEq(s_token.balanceOf(s_recipient), 50 ether, "recipient");
        vm.assertEq(s_token.balanceOf(address(s_reg)), 350 ether, "registry");
        vm.assertEq(s_reg.getWeight(1), 250 ether, "weight");
        _checkTree();
    }

    function test_Slash_TakesUnbondingAfterStake() public {
        _register(1, 300 ether);
        vm.prank(_operator(1));
        s_reg.requestUnbond(200 ether);
        uint64 releaseAt = uint64(block.timestamp) + DELAY;
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit INodeRegistry.StakeChanged(_operator(1), 0, 150 ether, releaseAt);
        uint96 slashed = s_reg.slash(_operator(1), 150 ether, s_recipient);
        vm.assertEq(uint256(slashed), 150 ether, "slashed");
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(uint256(node.stakeWei), 0, "stake emptied first");
        vm.assertEq(uint256(node.unbondingWei), 150 ether, "unbonding reduced");
        vm.assertEq(s_reg.getTotalWeight(), 0, "no weight");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 0, "not eligible");
        vm.assertEq(s_token.balanceOf(s_recipient), 150 ether, "recipient");
    }

    function test_Slash_NeverMoreThanTheNodeHas() public {
        _register(1, 300 ether);
        vm.prank(_operator(1));
        s_reg.requestUnbond(100 ether);
        uint96 slashed = s_reg.slash(_operator(1), 1_000 ether, s_recipient);
        vm.assertEq(uint256(slashed), 300 ether, "capped");
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(uint256(node.stakeWei) + node.unbondingWei, 0, "emptied");
        vm.assertEq(s_token.balanceOf(address(s_reg)), 0, "registry empty");
        vm.assertEq(s_reg.slash(_operator(1), 1 ether, s_recipient), 0, "nothing left");
    }

    function test_Slash_ZeroAmountIsANoop() public {
        _register(1, 300 ether);
        vm.recordLogs();
        uint96 slashed = s_reg.slash(_operator(1), 0, s_recipient);
        vm.assertEq(uint256(slashed), 0, "zero");
        vm.assertEq(vm.getRecordedLogs().length, 0, "no events");
        vm.assertEq(uint256(s_reg.getNode(_operator(1)).stakeWei), 300 ether, "untouched");
    }

    function test_Slash_BelowMinimumDropsEligibility() public {
        _register(1, MIN_STAKE);
        _register(2, MIN_STAKE);
        s_reg.slash(_operator(1), 1, s_recipient);
        vm.assertEq(s_reg.getWeight(1), 0, "no weight");
        vm.assertEq(uint256(s_reg.getEligibleCount()), 1, "eligible");
        _checkTree();
    }

    function test_RevertWhen_SlashNotTaskManager() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__OnlyTaskManager.selector, s_owner));
        vm.prank(s_owner);
        s_reg.slash(_operator(1), 1, s_recipient);
    }

    function test_RevertWhen_SlashNotRegistered() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotRegistered.selector, _operator(1)));
        s_reg.slash(_operator(1), 1, s_recipient);
    }

    function test_RevertWhen_SlashToZeroRecipient() public {
        _register(1, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InvalidReceiver.selector, address(0)));
        s_reg.slash(_operator(1), 1, address(0));
    }

    // ------------------------------------------------------------------ setTaskManager

    function test_SetTaskManager_SetsOnce() public {
        NodeRegistry reg = new NodeRegistry(IERC20(address(s_token)), MIN_STAKE, DELAY, s_owner);
        vm.expectEmit(true, true, true, true, address(reg));
        emit INodeRegistry.TaskManagerSet(address(0x7A5C));
        vm.prank(s_owner);
        reg.setTaskManager(address(0x7A5C));
        vm.assertEq(reg.getTaskManager(), address(0x7A5C), "set");
    }

    function test_RevertWhen_SetTaskManagerNotOwner() public {
        NodeRegistry reg = new NodeRegistry(IERC20(address(s_token)), MIN_STAKE, DELAY, s_owner);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(this)));
        reg.setTaskManager(address(0x7A5C));
    }

    function test_RevertWhen_SetTaskManagerZero() public {
        NodeRegistry reg = new NodeRegistry(IERC20(address(s_token)), MIN_STAKE, DELAY, s_owner);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__TaskManagerAlreadySet.selector));
        vm.prank(s_owner);
        reg.setTaskManager(address(0));
    }

    function test_RevertWhen_SetTaskManagerTwice() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__TaskManagerAlreadySet.selector));
        vm.prank(s_owner);
        s_reg.setTaskManager(address(0x7A5C));
    }

    // ------------------------------------------------------------------ paging and views

    function test_GetNodes_Pages() public {
        uint96[] memory stakes = new uint96[](5);
        for (uint256 i; i < 5; ++i) {
            stakes[i] = uint96(MIN_STAKE + i);
        }
        _registerMany(stakes);
        (address[] memory ops, INodeRegistry.Node[] memory nodes) = s_reg.getNodes(1, 3);
        vm.assertEq(ops.length, 3, "page length");
        for (uint256 i; i < 3; ++i) {
            vm.assertEq(ops[i], _operator(i + 2), "operator");
            vm.assertEq(uint256(nodes[i].index), i + 2, "index");
            vm.assertEq(uint256(nodes[i].stakeWei), MIN_STAKE + i + 1, "stake");
        }
        (ops, nodes) = s_reg.getNodes(3, 100);
        vm.assertEq(ops.length, 2, "tail");
        vm.assertEq(ops[1], _operator(5), "last");
        (ops, nodes) = s_reg.getNodes(5, 10);
        vm.assertEq(ops.length, 0, "past the end");
        vm.assertEq(nodes.length, 0, "past the end nodes");
    }

    function test_RevertWhen_GetNodesLimitZero() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadPage.selector, 0, 0));
        s_reg.getNodes(0, 0);
    }

    function test_RevertWhen_GetNodesLimitTooLarge() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadPage.selector, 3, 101));
        s_reg.getNodes(3, 101);
    }

    function test_Views_OutOfRangeIndicesAreEmpty() public {
        _register(1, MIN_STAKE);
        vm.assertEq(s_reg.getOperatorAt(0), address(0), "index 0");
        vm.assertEq(s_reg.getOperatorAt(2), address(0), "past end");
        vm.assertEq(s_reg.getWeight(0), 0, "weight 0");
        vm.assertEq(s_reg.getWeight(2), 0, "weight past end");
        vm.assertEq(s_reg.getPrefixWeight(50), MIN_STAKE, "prefix clamps");
        vm.assertEq(uint256(s_reg.getNode(_operator(9)).index), 0, "unknown operator");
        vm.assertEq(s_reg.getOperatorBySigner(_signer(9)), address(0), "unknown signer");
    }

    // ------------------------------------------------------------------ election

    function _sixteenNodes() internal {
        uint96[] memory stakes = new uint96[](16);
        for (uint256 i; i < 16; ++i) {
            stakes[i] = uint96(MIN_STAKE + ((i * 37) % 11) * 25 ether);
        }
        _registerMany(stakes);
    }

    function test_ElectCommittee_DistinctMembersMatchingReference() public {
        _sixteenNodes();
        for (uint256 s; s < 20; ++s) {
            bytes32 seed = keccak256(abi.encode("seed", s));
            uint32[] memory got = s_reg.electCommittee(seed, 8, _noExclude());
            uint32[] memory want = _referenceElect(seed, 8, _noExclude());
            vm.assertEq(got.length, 8, "length");
            for (uint256 i; i < 8; ++i) {
                vm.assertEq(uint256(got[i]), uint256(want[i]), "reference");
                vm.assertTrue(got[i] >= 1 && got[i] <= 16, "in range");
                for (uint256 j; j < i; ++j) {
                    vm.assertTrue(got[i] != got[j], "distinct");
                }
            }
        }
    }

    function test_ElectCommitteeWithOperators_MatchesElectCommitteeAndOperators() public {
        _sixteenNodes();
        uint32[] memory exclude = new uint32[](3);
        exclude[0] = 16;
        exclude[1] = 3;
        exclude[2] = 40;
        for (uint256 s; s < 20; ++s) {
            bytes32 seed = keccak256(abi.encode("with operators", s));
            uint32[] memory ex = s % 2 == 0 ? _noExclude() : exclude;
            uint32[] memory want = s_reg.electCommittee(seed, 5, ex);
            (uint32[] memory got, address[] memory ops) = s_reg.electCommitteeWithOperators(seed, 5, ex);
            vm.assertEq(got.length, want.length, "indices length");
            vm.assertEq(ops.length, want.length, "operators length");
            for (uint256 i; i < want.length; ++i) {
                vm.assertEq(uint256(got[i]), uint256(want[i]), "same indices");
                vm.assertEq(ops[i], s_reg.getOperatorAt(want[i]), "operator of index");
            }
        }
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, 17, 16));
        s_reg.electCommitteeWithOperators(bytes32(0), 17, _noExclude());
    }

    function test_ElectCommittee_FirstDrawFollowsPrefixSums() public {
        uint96[] memory stakes = new uint96[](3);
        stakes[0] = 100 ether;
        stakes[1] = 200 ether;
        stakes[2] = 300 ether;
        _registerMany(stakes);
        bytes32 seed = keccak256("x");
        uint256 r = uint256(keccak256(abi.encode(seed, uint256(0)))) % 600 ether;
        uint32 want = r < 100 ether ? 1 : (r < 300 ether ? 2 : 3);
        vm.assertEq(uint256(s_reg.electCommittee(seed, 1, _noExclude())[0]), uint256(want), "first draw");
    }

    function test_ElectCommittee_AllNodesWhenKEqualsEligible() public {
        _sixteenNodes();
        uint32[] memory got = s_reg.electCommittee(bytes32(uint256(42)), 16, _noExclude());
        bool[17] memory seen;
        for (uint256 i; i < 16; ++i) {
            vm.assertTrue(!seen[got[i]], "distinct");
            seen[got[i]] = true;
        }
    }

    function test_ElectCommittee_NeverPicksExcluded() public {
        _sixteenNodes();
        uint32[] memory exclude = new uint32[](9);
        uint32[9] memory ex = [uint32(3), 3, 0, 99, 7, 16, 1, 8, 7];
        for (uint256 i; i < 9; ++i) {
            exclude[i] = ex[i];
        }
        for (uint256 s; s < 20; ++s) {
            bytes32 seed = keccak256(abi.encode(s));
            uint32[] memory got = s_reg.electCommittee(seed, 10, exclude);
            uint32[] memory want = _referenceElect(seed, 10, exclude);
            for (uint256 i; i < 10; ++i) {
                vm.assertEq(uint256(got[i]), uint256(want[i]), "reference");
                uint32 g = got[i];
                vm.assertTrue(g != 3 && g != 7 && g != 16 && g != 1 && g != 8, "excluded picked");
            }
        }
    }

    function test_ElectCommittee_ExcludingAllButKLeavesExactlyThoseK() public {
        _sixteenNodes();
        uint32[] memory exclude = new uint32[](13);
        for (uint32 i; i < 13; ++i) {
            exclude[i] = i + 2; // keep 1, 15, 16
        }
        uint32[] memory got = s_reg.electCommittee(bytes32(uint256(7)), 3, exclude);
        uint256 mask;
        for (uint256 i; i < 3; ++i) {
            mask |= 1 << got[i];
        }
        vm.assertEq(mask, (1 << 1) | (1 << 15) | (1 << 16), "exactly the rest");
    }

    function test_ElectCommittee_SkipsZeroWeightNodes() public {
        _sixteenNodes();
        uint96 stake4 = s_reg.getNode(_operator(4)).stakeWei;
        uint96 stake9 = s_reg.getNode(_operator(9)).stakeWei;
        vm.prank(_operator(4));
        s_reg.requestUnbond(stake4);
        vm.prank(_operator(9));
        s_reg.requestUnbond(1 + stake9 - MIN_STAKE); // just below min
        vm.assertEq(uint256(s_reg.getEligibleCount()), 14, "eligible");
        uint32[] memory exclude = new uint32[](2);
        exclude[0] = 4; // zero weight: must not reduce the eligible count twice
        exclude[1] = 9;
        uint32[] memory got = s_reg.electCommittee(bytes32(uint256(5)), 14, exclude);
        for (uint256 i; i < 14; ++i) {
            vm.assertTrue(got[i] != 4 && got[i] != 9, "zero weight picked");
        }
    }

    function test_ElectCommittee_KZeroReturnsEmpty() public view {
        vm.assertEq(s_reg.electCommittee(bytes32(0), 0, _noExclude()).length, 0, "empty");
    }

    function test_ElectCommittee_StakeWeighting() public {
        uint96[] memory stakes = new uint96[](4);
        stakes[0] = 100 ether;
        stakes[1] = 300 ether;
        stakes[2] = 100 ether;
        stakes[3] = 100 ether;
        _registerMany(stakes);
        uint256[5] memory counts;
        for (uint256 s; s < 200; ++s) {
            uint32[] memory got = s_reg.electCommittee(keccak256(abi.encode("w", s)), 1, _noExclude());
            ++counts[got[0]];
        }
        // Expected: node 2 at 1/2 (100 of 200), the others at 1/6 (~33) each.
        vm.assertGt(counts[2], counts[1], "3x beats node 1");
        vm.assertGt(counts[2], counts[3], "3x beats node 3");
        vm.assertGt(counts[2], counts[4], "3x beats node 4");
        vm.assertGe(counts[2], 70, "3x lower bound");
        vm.assertLe(counts[2], 130, "3x upper bound");
        for (uint256 i = 1; i <= 4; ++i) {
            if (i != 2) vm.assertGe(counts[i], 10, "1x still picked");
        }
    }

    function test_ElectCommittee_GasWithinBudget() public {
        _sixteenNodes();
        uint32[] memory none = _noExclude();
        for (uint256 k = 1; k <= 8; ++k) {
            vm.cool(address(s_reg));
            uint256 before = gasleft();
            s_reg.electCommittee(keccak256(abi.encode(k)), k, none);
            uint256 used = before - gasleft();
            _log("electCommittee gas, k", k);
            _log("  gas", used);
            vm.assertLe(used, 30_000 + 10_000 * k, "gas goal 30k + 10k*k");
        }
        // A slot refill: one draw excluding a committee of 8 and a no-show (8 of them in range).
        // Each in-range exclusion costs one cold storage read of its weight (2.1k) plus memory
        // work, so the budget adds 5k per excluded index to the k = 1 goal.
        uint32[] memory exclude = new uint32[](9);
        for (uint32 i; i < 9; ++i) {
            exclude[i] = 2 * i + 1;
        }
        vm.cool(address(s_reg));
        uint256 g = gasleft();
        s_reg.electCommittee(bytes32(uint256(1)), 1, exclude);
        uint256 refill = g - gasleft();
        _log("refill draw (k=1, 9 excluded) gas", refill);
        vm.assertLe(refill, 30_000 + 10_000 + 5_000 * 9, "refill within the k=1 goal plus 5k per exclusion");
    }

    function test_RevertWhen_ElectMoreThanEligible() public {
        _register(1, MIN_STAKE);
        _register(2, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, 3, 2));
        s_reg.electCommittee(bytes32(0), 3, _noExclude());
    }

    function test_RevertWhen_ElectWithNoNodes() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, 1, 0));
        s_reg.electCommittee(bytes32(0), 1, _noExclude());
    }

    function test_RevertWhen_ElectMoreThanNonExcluded() public {
        _register(1, MIN_STAKE);
        _register(2, MIN_STAKE);
        _register(3, MIN_STAKE);
        uint32[] memory exclude = new uint32[](4);
        exclude[0] = 2;
        exclude[1] = 2; // a repeat counts once
        exclude[2] = 0; // out of range: ignored
        exclude[3] = 4; // out of range: ignored
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, 3, 2));
        s_reg.electCommittee(bytes32(0), 3, exclude);
    }

    function test_RevertWhen_ElectCountingZeroWeightNodes() public {
        _register(1, MIN_STAKE);
        _register(2, MIN_STAKE);
        vm.prank(_operator(2));
        s_reg.requestUnbond(1);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, 2, 1));
        s_reg.electCommittee(bytes32(0), 2, _noExclude());
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_StakeUnbondWithdrawArithmetic(uint96 stake, uint96 added, uint96 unbond, uint32 waited) public {
        stake = uint96(bound(stake, MIN_STAKE, 1e6 ether));
        added = uint96(bound(added, 1, 1e6 ether));
        unbond = uint96(bound(unbond, 1, uint256(stake) + added));
        waited = uint32(bound(waited, 0, 2 * DELAY));
        _register(1, stake);
        _fund(_operator(1), added);
        vm.prank(_operator(1));
        s_reg.addStake(added);
        vm.prank(_operator(1));
        s_reg.requestUnbond(unbond);

        uint96 left = stake + added - unbond;
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        vm.assertEq(uint256(node.stakeWei), left, "stake");
        vm.assertEq(uint256(node.unbondingWei), unbond, "unbonding");
        vm.assertEq(s_reg.getWeight(1), left >= MIN_STAKE ? left : 0, "weight");
        vm.assertEq(s_token.balanceOf(address(s_reg)), uint256(stake) + added, "held");

        vm.warp(block.timestamp + waited);
        vm.prank(_operator(1));
        if (waited < DELAY) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    INodeRegistry.NodeRegistry__UnbondingLocked.selector, node.unbondReleaseAt, uint64(block.timestamp)
                )
            );
            s_reg.withdrawUnbonded();
        } else {
            vm.assertEq(uint256(s_reg.withdrawUnbonded()), unbond, "withdrawn");
            vm.assertEq(s_token.balanceOf(address(s_reg)), left, "held after");
            vm.assertEq(s_token.balanceOf(_operator(1)), unbond, "paid");
        }
        _checkTree();
    }

    function testFuzz_SlashArithmetic(uint96 stake, uint96 unbond, uint96 amount) public {
        stake = uint96(bound(stake, MIN_STAKE, 1e9 ether / 4));
        unbond = uint96(bound(unbond, 0, stake));
        amount = uint96(bound(amount, 0, 1e9 ether));
        _register(1, stake);
        _register(2, MIN_STAKE);
        if (unbond != 0) {
            vm.prank(_operator(1));
            s_reg.requestUnbond(unbond);
        }
        uint96 active = stake - unbond;
        uint96 slashed = s_reg.slash(_operator(1), amount, s_recipient);

        uint256 expected = amount < stake ? amount : stake;
        vm.assertEq(uint256(slashed), expected, "slashed");
        INodeRegistry.Node memory node = s_reg.getNode(_operator(1));
        uint256 fromActive = amount < active ? amount : active;
        vm.assertEq(uint256(node.stakeWei), active - fromActive, "active first");
        vm.assertEq(uint256(node.unbondingWei), uint256(unbond) - (expected - fromActive), "then unbonding");
        vm.assertEq(s_token.balanceOf(s_recipient), expected, "recipient");
        vm.assertEq(
            s_token.balanceOf(address(s_reg)), uint256(node.stakeWei) + node.unbondingWei + MIN_STAKE, "conservation"
        );
        _checkTree();
    }

    function testFuzz_ElectionMatchesReference(
        bytes32 seed,
        uint256 nodes,
        uint256 k,
        uint256 stakeSalt,
        uint32 ex0,
        uint32 ex1
    ) public {
        nodes = bound(nodes, 1, 24);
        uint96[] memory stakes = new uint96[](nodes);
        for (uint256 i; i < nodes; ++i) {
            // Some nodes below the minimum (weight 0), the rest spread over two orders of magnitude.
            uint256 x = uint256(keccak256(abi.encode(stakeSalt, i))) % 1000;
            stakes[i] = uint96(x < 150 ? MIN_STAKE : MIN_STAKE + x * 1 ether);
        }
        _registerMany(stakes);
        for (uint256 i; i < nodes; ++i) {
            if (uint256(keccak256(abi.encode(stakeSalt, i, "low"))) % 5 == 0) {
                vm.prank(_operator(i + 1));
                s_reg.requestUnbond(stakes[i] - MIN_STAKE + 1);
            }
        }
        _checkTree();
        uint32[] memory exclude = new uint32[](3);
        exclude[0] = uint32(bound(ex0, 0, nodes + 1));
        exclude[1] = uint32(bound(ex1, 0, nodes + 1));
        exclude[2] = exclude[0];
        (, uint32 eligible) = _sumWeights();
        uint256 excludedEligible;
        for (uint256 e; e < 2; ++e) {
            if (e == 1 && exclude[1] == exclude[0]) continue;
            if (s_reg.getWeight(exclude[e]) != 0) ++excludedEligible;
        }
        uint256 avail = eligible - excludedEligible;
        k = bound(k, 0, avail + 1);
        if (k > avail) {
            vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, k, avail));
            s_reg.electCommittee(seed, k, exclude);
            return;
        }
        uint32[] memory got = s_reg.electCommittee(seed, k, exclude);
        uint32[] memory want = _referenceElect(seed, k, exclude);
        for (uint256 i; i < k; ++i) {
            vm.assertEq(uint256(got[i]), uint256(want[i]), "reference");
            vm.assertTrue(got[i] != exclude[0] && got[i] != exclude[1], "excluded");
            vm.assertTrue(s_reg.getWeight(got[i]) != 0, "zero weight picked");
        }
    }
}
