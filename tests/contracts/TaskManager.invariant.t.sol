// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Vm} from "./utils/Vm.sol";
import {Fixture} from "./utils/Fixture.sol";
import {DatumToken} from "../../contracts/DatumToken.sol";
import {NodeRegistry} from "../../contracts/NodeRegistry.sol";
import {TaskManager} from "../../contracts/TaskManager.sol";
import {ITaskManager} from "../../contracts/interfaces/ITaskManager.sol";
import {INodeRegistry} from "../../contracts/interfaces/INodeRegistry.sol";

/// @notice Drives the TaskManager and NodeRegistry through random sequences of requests,
///         acceptances, results, refunds, slashes, withdrawals, stake moves and time, and keeps
///         ghost accounting of what the contracts should hold.
contract TaskManagerHandler {
    Vm private constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    TaskManager private immutable i_tm;
    NodeRegistry private immutable i_nodes;
    DatumToken private immutable i_token;
    address private immutable i_requester;
    address private immutable i_treasury;

    address[] private s_operators;
    uint256[] private s_signerKeys; // by operator position
    uint64[] private s_datasets;
    address[] private s_reporters;
    address[] private s_accounts; // everyone who can be owed anything
    uint256[] private s_taskIds;

    /// @notice Escrow of open tasks, as the handler counted it.
    uint256 public ghost_openEscrow;
    /// @notice Successful finalizations / refunds per task.
    mapping(uint256 taskId => uint256) public ghost_finalized;
    mapping(uint256 taskId => uint256) public ghost_refunded;
    /// @notice Slashes that took more than the node held or more than the configured amount,
    ///         or whose split did not add up.
    uint256 public ghost_badSlashes;
    uint256 public ghost_slashCount;
    uint256 public ghost_finalizeCount;
    uint256 public ghost_refundCount;

    constructor(
        TaskManager tm,
        NodeRegistry nodes,
        DatumToken token,
        address requester,
        address treasury,
        address[] memory operators,
        uint256[] memory signerKeys,
        uint64[] memory datasets,
        address[] memory datasetOwners,
        address[] memory reporters
    ) {
        i_tm = tm;
        i_nodes = nodes;
        i_token = token;
        i_requester = requester;
        i_treasury = treasury;
        s_operators = operators;
        s_signerKeys = signerKeys;
        s_datasets = datasets;
        s_reporters = reporters;
        s_accounts.push(requester);
        s_accounts.push(treasury);
        for (uint256 i; i < operators.length; ++i) {
            s_accounts.push(operators[i]);
        }
        for (uint256 i; i < datasetOwners.length; ++i) {
            s_accounts.push(datasetOwners[i]);
        }
        for (uint256 i; i < reporters.length; ++i) {
            s_accounts.push(reporters[i]);
        }
    }

    // ------------------------------------------------------------------ actions

    function request(uint256 kSeed, uint256 feeSeed, uint256 deadlineSeed, uint256 dataSeed) external {
        uint8 k = uint8(_bound(kSeed, 1, 5));
        uint8 quorum = k / 2 + 1;
        uint64[] memory ids = new uint64[](_bound(dataSeed, 0, s_datasets.length));
        for (uint256 i; i < ids.length; ++i) {
            ids[i] = s_datasets[i];
        }
        ITaskManager.TaskRequest memory req = ITaskManager.TaskRequest({
            kind: 3,
            committeeSize: k,
            quorum: quorum,
            deadline: uint64(block.timestamp + _bound(deadlineSeed, 1 hours + 1, 3 days)),
            feeWei: _bound96(feeSeed, 1, 1_000e18),
            specHash: keccak256(abi.encode(feeSeed)),
            specURI: "ipfs://spec",
            datasetIds: ids
        });
        vm.prank(i_requester);
        try i_tm.requestTask(req) returns (uint256 taskId) {
            s_taskIds.push(taskId);
            ITaskManager.Task memory t = i_tm.getTask(taskId);
            ghost_openEscrow += uint256(t.feeWei) + t.dataFeeWei;
        } catch {}
    }

    function accept(uint256 taskSeed, uint256 slotSeed, bool asSigner) external {
        if (s_taskIds.length == 0) return;
        uint256 taskId = s_taskIds[_bound(taskSeed, 0, s_taskIds.length - 1)];
        address[] memory committee = i_tm.getCommittee(taskId);
        address member = committee[_bound(slotSeed, 0, committee.length - 1)];
        vm.prank(asSigner ? vm.addr(_signerKeyOf(member)) : member);
        try i_tm.acceptTask(taskId) {} catch {}
    }

    function acceptAll(uint256 taskSeed) external {
        if (s_taskIds.length == 0) return;
        uint256 taskId = s_taskIds[_bound(taskSeed, 0, s_taskIds.length - 1)];
        address[] memory committee = i_tm.getCommittee(taskId);
        for (uint256 i; i < committee.length; ++i) {
            vm.prank(committee[i]);
            try i_tm.acceptTask(taskId) {} catch {}
        }
    }

    /// @dev Usually signs with every accepted member; one time in four with a random prefix of
    ///      them (often below quorum).
    function finalize(uint256 taskSeed, uint256 signerSeed) external {
        if (s_taskIds.length == 0) return;
        uint256 taskId = s_taskIds[_bound(taskSeed, 0, s_taskIds.length - 1)];
        ITaskManager.Task memory t = i_tm.getTask(taskId);
        address[] memory committee = i_tm.getCommittee(taskId);

        // Sign with the accepted members (a random non-empty prefix of them in slot order).
        uint256[] memory keys = new uint256[](committee.length);
        uint256 n;
        uint256 want = signerSeed % 4 == 0 ? _bound(signerSeed >> 2, 1, committee.length) : committee.length;
        for (uint256 i; i < committee.length && n < want; ++i) {
            if ((t.acceptedMask >> i) & 1 == 1) keys[n++] = _signerKeyOf(committee[i]);
        }
        if (n == 0) return;
        assembly {
            mstore(keys, n)
        }
        bytes[] memory sigs = _signSorted(taskId, _sort(keys));
        try i_tm.submitResult(taskId, keccak256("result"), "", i_tm.getConfigEpoch(), sigs) {
            ghost_finalized[taskId] += 1;
            ghost_finalizeCount += 1;
            ghost_openEscrow -= uint256(t.feeWei) + t.dataFeeWei;
        } catch {}
    }

    function refund(uint256 taskSeed) external {
        if (s_taskIds.length == 0) return;
        uint256 taskId = s_taskIds[_bound(taskSeed, 0, s_taskIds.length - 1)];
        ITaskManager.Task memory t = i_tm.getTask(taskId);
        try i_tm.refund(taskId) {
            ghost_refunded[taskId] += 1;
            ghost_refundCount += 1;
            ghost_openEscrow -= uint256(t.feeWei) + t.dataFeeWei;
        } catch {}
    }

    function slashNoShow(uint256 taskSeed, uint256 slotSeed, uint256 reporterSeed) external {
        if (s_taskIds.length == 0) return;
        uint256 taskId = s_taskIds[_bound(taskSeed, 0, s_taskIds.length - 1)];
        address[] memory committee = i_tm.getCommittee(taskId);
        uint8 slot = uint8(_bound(slotSeed, 0, committee.length - 1));
        address reporter = s_reporters[_bound(reporterSeed, 0, s_reporters.length - 1)];
        uint256 held = _held(committee[slot]);
        uint256 owedBefore = i_tm.getOwed(reporter) + i_tm.getOwed(i_treasury);
        uint96 amount = i_tm.getConfig().noShowSlashWei;
        vm.prank(reporter);
        try i_tm.slashNoShow(taskId, slot) {
            _checkSlash(committee[slot], held, amount, i_tm.getOwed(reporter) + i_tm.getOwed(i_treasury) - owedBefore);
        } catch {}
    }

    function equivocate(uint256 taskSeed, uint256 slotSeed, uint256 reporterSeed) external {
        if (s_taskIds.length == 0) return;
        uint256 taskId = s_taskIds[_bound(taskSeed, 0, s_taskIds.length - 1)];
        address[] memory committee = i_tm.getCommittee(taskId);
        address member = committee[_bound(slotSeed, 0, committee.length - 1)];
        address reporter = s_reporters[_bound(reporterSeed, 0, s_reporters.length - 1)];
        uint256 key = _signerKeyOf(member);
        uint64 epoch = i_tm.getConfigEpoch();
        bytes memory a = _sig(key, i_tm.getResultDigest(taskId, keccak256("A"), bytes32(0), epoch));
        bytes memory b = _sig(key, i_tm.getResultDigest(taskId, keccak256("B"), bytes32(0), epoch));
        uint256 held = _held(member);
        uint256 owedBefore = i_tm.getOwed(reporter) + i_tm.getOwed(i_treasury);
        uint96 amount = i_tm.getConfig().equivocationSlashWei;
        vm.prank(reporter);
        try i_tm.reportEquivocation(taskId, keccak256("A"), bytes32(0), a, keccak256("B"), bytes32(0), b, epoch) {
            _checkSlash(member, held, amount, i_tm.getOwed(reporter) + i_tm.getOwed(i_treasury) - owedBefore);
        } catch {}
    }

    function withdraw(uint256 accountSeed) external {
        address account = s_accounts[_bound(accountSeed, 0, s_accounts.length - 1)];
        vm.prank(account);
        try i_tm.withdraw() {} catch {}
    }

    function addStake(uint256 opSeed, uint256 amountSeed) external {
        address op = s_operators[_bound(opSeed, 0, s_operators.length - 1)];
        uint96 amount = _bound96(amountSeed, 1, 500e18);
        if (i_token.balanceOf(op) < amount) return;
        vm.startPrank(op);
        i_token.approve(address(i_nodes), amount);
        try i_nodes.addStake(amount) {} catch {}
        vm.stopPrank();
    }

    function requestUnbond(uint256 opSeed, uint256 amountSeed) external {
        address op = s_operators[_bound(opSeed, 0, s_operators.length - 1)];
        uint96 stake = i_nodes.getNode(op).stakeWei;
        if (stake == 0) return;
        vm.prank(op);
        try i_nodes.requestUnbond(_bound96(amountSeed, 1, stake)) {} catch {}
    }

    function withdrawUnbonded(uint256 opSeed) external {
        address op = s_operators[_bound(opSeed, 0, s_operators.length - 1)];
        vm.prank(op);
        try i_nodes.withdrawUnbonded() {} catch {}
    }

    function warp(uint256 secondsSeed) external {
        vm.warp(block.timestamp + _bound(secondsSeed, 1, 2 days));
    }

    // ------------------------------------------------------------------ views for the invariants

    function getTaskIds() external view returns (uint256[] memory) {
        return s_taskIds;
    }

    function getAccounts() external view returns (address[] memory) {
        return s_accounts;
    }

    function getOperators() external view returns (address[] memory) {
        return s_operators;
    }

    // ------------------------------------------------------------------ internals

    function _checkSlash(address op, uint256 heldBefore, uint96 amount, uint256 credited) private {
        ghost_slashCount += 1;
        uint256 taken = heldBefore - _held(op);
        uint256 expected = amount < heldBefore ? amount : heldBefore;
        if (taken != expected || credited != taken) ghost_badSlashes += 1;
    }

    function _held(address op) private view returns (uint256) {
        INodeRegistry.Node memory node = i_nodes.getNode(op);
        return uint256(node.stakeWei) + node.unbondingWei;
    }

    function _signerKeyOf(address op) private view returns (uint256) {
        for (uint256 i; i < s_operators.length; ++i) {
            if (s_operators[i] == op) return s_signerKeys[i];
        }
        revert("unknown operator");
    }

    function _sig(uint256 key, bytes32 digest) private pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _signSorted(uint256 taskId, uint256[] memory keys) private view returns (bytes[] memory sigs) {
        bytes32 digest = i_tm.getResultDigest(taskId, keccak256("result"), keccak256(""), i_tm.getConfigEpoch());
        sigs = new bytes[](keys.length);
        for (uint256 i; i < keys.length; ++i) {
            sigs[i] = _sig(keys[i], digest);
        }
    }

    function _sort(uint256[] memory keys) private pure returns (uint256[] memory) {
        for (uint256 i = 1; i < keys.length; ++i) {
            uint256 key = keys[i];
            address a = vm.addr(key);
            uint256 j = i;
            while (j > 0 && vm.addr(keys[j - 1]) > a) {
                keys[j] = keys[j - 1];
                --j;
            }
            keys[j] = key;
        }
        return keys;
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) private pure returns (uint256) {
        return lo + (x % (hi - lo + 1));
    }

    function _bound96(uint256 x, uint96 lo, uint96 hi) private pure returns (uint96) {
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint96(_bound(x, lo, hi)); // within [lo, hi]
    }
}

/// @notice Conservation laws and once-only transitions under random operation sequences.
contract TaskManagerInvariantTest is Fixture {
    uint256 private constant NODES = 7;

    TaskManagerHandler private s_handler;

    function setUp() public {
        _deploy(NODES);
        vm.prevrandao(bytes32(uint256(0x1A7A)));
        uint64[] memory datasets = new uint64[](2);
        datasets[0] = _registerDataset(bankA, 3e18);
        datasets[1] = _registerDataset(bankB, 0);
        address[] memory owners = new address[](2);
        owners[0] = bankA;
        owners[1] = bankB;
        address[] memory reporters = new address[](2);
        reporters[0] = reporter;
        reporters[1] = stranger;
        uint256[] memory keys = new uint256[](NODES);
        for (uint256 i; i < NODES; ++i) {
            keys[i] = signerKeyOf[operators[i]];
            _fund(operators[i], 2_000e18);
        }
        s_handler =
            new TaskManagerHandler(tm, nodes, token, requester, treasury, operators, keys, datasets, owners, reporters);
        targetContract(address(s_handler));
    }

    /// @notice The handler's paths really succeed (so the invariants are not vacuous).
    function test_HandlerReachesFinalizeRefundAndSlashes() public {
        s_handler.request(2, 10e18, 0, 1); // k = 3, one dataset
        s_handler.acceptAll(0);
        s_handler.finalize(0, 1);
        vm.assertEq(s_handler.ghost_finalizeCount(), 1, "finalized");
        s_handler.equivocate(0, 0, 0);
        vm.assertEq(s_handler.ghost_slashCount(), 1, "equivocation slashed");

        s_handler.request(2, 5e18, 0, 2); // task 2
        s_handler.warp(2 hours);
        s_handler.slashNoShow(1, 0, 1);
        vm.assertEq(s_handler.ghost_slashCount(), 2, "no-show slashed");
        s_handler.warp(3 days);
        s_handler.refund(1);
        vm.assertEq(s_handler.ghost_refundCount(), 1, "refunded");
        s_handler.refund(1);
        s_handler.finalize(0, 1);
        vm.assertEq(s_handler.ghost_refundCount() + s_handler.ghost_finalizeCount(), 2, "closed once each");
        vm.assertEq(s_handler.ghost_badSlashes(), 0, "slashes exact");
        invariant_TaskManagerBalanceIsEscrowPlusOwed();
        invariant_NodeRegistryBalanceIsStakePlusUnbonding();
        invariant_TaskClosesAtMostOnce();
    }

    /// @notice TaskManager's token balance == escrow of open tasks + everything owed.
    function invariant_TaskManagerBalanceIsEscrowPlusOwed() public view {
        address[] memory accounts = s_handler.getAccounts();
        uint256 owed;
        for (uint256 i; i < accounts.length; ++i) {
            owed += tm.getOwed(accounts[i]);
        }
        uint256 openEscrow;
        uint256[] memory ids = s_handler.getTaskIds();
        for (uint256 i; i < ids.length; ++i) {
            ITaskManager.Task memory t = tm.getTask(ids[i]);
            if (t.state == ITaskManager.TaskState.Requested || t.state == ITaskManager.TaskState.Active) {
                openEscrow += uint256(t.feeWei) + t.dataFeeWei;
            }
        }
        vm.assertEq(openEscrow, s_handler.ghost_openEscrow(), "open escrow matches the ghost");
        vm.assertEq(token.balanceOf(address(tm)), openEscrow + owed, "TaskManager balance == escrow + owed");
    }

    /// @notice NodeRegistry's token balance == sum of stakes and unbonding amounts.
    function invariant_NodeRegistryBalanceIsStakePlusUnbonding() public view {
        address[] memory ops = s_handler.getOperators();
        uint256 held;
        for (uint256 i; i < ops.length; ++i) {
            INodeRegistry.Node memory node = nodes.getNode(ops[i]);
            held += uint256(node.stakeWei) + node.unbondingWei;
        }
        vm.assertEq(token.balanceOf(address(nodes)), held, "NodeRegistry balance == stakes + unbonding");
    }

    /// @notice A task finalizes or refunds at most once, and its state says which.
    function invariant_TaskClosesAtMostOnce() public view {
        uint256[] memory ids = s_handler.getTaskIds();
        for (uint256 i; i < ids.length; ++i) {
            uint256 f = s_handler.ghost_finalized(ids[i]);
            uint256 r = s_handler.ghost_refunded(ids[i]);
            vm.assertLe(f + r, 1, "closed at most once");
            ITaskManager.TaskState state = tm.getTask(ids[i]).state;
            vm.assertEq(state == ITaskManager.TaskState.Finalized, f == 1, "finalized iff counted");
            vm.assertEq(state == ITaskManager.TaskState.Refunded, r == 1, "refunded iff counted");
        }
    }

    /// @notice A slash takes min(amount, stake + unbonding), never more, and credits exactly that.
    function invariant_SlashNeverExceedsStake() public view {
        vm.assertEq(s_handler.ghost_badSlashes(), 0, "slash within the stake, split exactly");
    }
}
