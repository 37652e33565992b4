// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

import {Fixture} from "./utils/Fixture.sol";
import {DatumToken} from "../../contracts/DatumToken.sol";
import {NodeRegistry} from "../../contracts/NodeRegistry.sol";
import {DataRegistry} from "../../contracts/DataRegistry.sol";
import {TaskManager} from "../../contracts/TaskManager.sol";
import {ITaskManager} from "../../contracts/interfaces/ITaskManager.sol";
import {INodeRegistry} from "../../contracts/interfaces/INodeRegistry.sol";
import {IDataRegistry} from "../../contracts/interfaces/IDataRegistry.sol";

/// @notice Unit tests of the TaskManager: every external function, every revert path.
contract TaskManagerTest is Fixture {
    uint256 private constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    bytes private constant OUTPUT = abi.encode(uint256(4_250_000));

    function setUp() public {
        _deploy(NODE_COUNT);
        vm.prevrandao(bytes32(uint256(0xD47A)));
    }

    // ================================================================ helpers

    function _electedOperators(bytes32 seed, uint256 k, uint32[] memory exclude)
        private
        view
        returns (address[] memory ops)
    {
        uint32[] memory idx = nodes.electCommittee(seed, k, exclude);
        ops = new address[](idx.length);
        for (uint256 i; i < idx.length; ++i) {
            ops[i] = nodes.getOperatorAt(idx[i]);
        }
    }

    function _assertAddresses(address[] memory a, address[] memory b, string memory what) private pure {
        vm.assertEq(a.length, b.length, string.concat(what, ": length"));
        for (uint256 i; i < a.length; ++i) {
            vm.assertEq(a[i], b[i], what);
        }
    }

    function _err(bytes4 selector, uint256 taskId) private pure returns (bytes memory) {
        return abi.encodeWithSelector(selector, taskId);
    }

    function _unexpected(uint256 taskId, ITaskManager.TaskState current, ITaskManager.TaskState expected)
        private
        pure
        returns (bytes memory)
    {
        return abi.encodeWithSelector(ITaskManager.TaskManager__UnexpectedState.selector, taskId, current, expected);
    }

    function _notMember(uint256 taskId, address account) private pure returns (bytes memory) {
        return abi.encodeWithSelector(ITaskManager.TaskManager__NotCommitteeMember.selector, taskId, account);
    }

    /// @dev An operator outside the committee of `taskId`.
    function _outsider(uint256 taskId) private view returns (address) {
        address[] memory committee = tm.getCommittee(taskId);
        for (uint256 i; i < operators.length; ++i) {
            bool inside;
            for (uint256 j; j < committee.length; ++j) {
                if (committee[j] == operators[i]) inside = true;
            }
            if (!inside) return operators[i];
        }
        revert("no outsider");
    }

    /// @dev Submit for config epoch 1 (no view call, so it is safe right after vm.expectRevert).
    function _submit(uint256 taskId, bytes[] memory sigs) private {
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, sigs);
    }

    // ================================================================ constructor and config

    function test_Constructor_SetsWiringConfigAndEpochOne() public view {
        vm.assertEq(tm.getConfigEpoch(), 1, "epoch starts at 1");
        vm.assertEq(address(tm.getToken()), address(token), "token");
        vm.assertEq(address(tm.getNodeRegistry()), address(nodes), "nodes");
        vm.assertEq(address(tm.getDataRegistry()), address(data), "data");
        vm.assertEq(tm.owner(), address(this), "owner");
        ITaskManager.Config memory c = tm.getConfig();
        vm.assertEq(c.protocolFeeBps, PROTOCOL_FEE_BPS, "fee bps");
        vm.assertEq(c.reporterRewardBps, REPORTER_BPS, "reporter bps");
        vm.assertEq(c.acceptWindow, ACCEPT_WINDOW, "accept window");
        vm.assertEq(c.noShowSlashWei, NO_SHOW_SLASH, "no-show slash");
        vm.assertEq(c.equivocationSlashWei, EQUIVOCATION_SLASH, "equivocation slash");
        vm.assertEq(c.maxDuration, MAX_DURATION, "max duration");
        vm.assertEq(c.treasury, treasury, "treasury");
        vm.assertEq(tm.getTaskCount(), 0, "no tasks");
        vm.assertEq(tm.MAX_COMMITTEE(), 8, "max committee");
        vm.assertEq(tm.MAX_DATASETS(), 8, "max datasets");
    }

    function test_RevertWhen_ConstructorGetsZeroAddress() public {
        ITaskManager.Config memory c = _defaultConfig();
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        new TaskManager(DatumToken(address(0)), nodes, data, c, address(this));
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        new TaskManager(token, NodeRegistry(address(0)), data, c, address(this));
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        new TaskManager(token, nodes, DataRegistry(address(0)), c, address(this));
    }

    function test_RevertWhen_ConstructorGetsBadConfig() public {
        ITaskManager.Config memory c = _defaultConfig();
        c.treasury = address(0);
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        new TaskManager(token, nodes, data, c, address(this));
    }

    function test_SetConfig_StoresBumpsEpochAndEmits() public {
        ITaskManager.Config memory c = _defaultConfig();
        c.protocolFeeBps = 10_000;
        c.reporterRewardBps = 10_000;
        c.acceptWindow = 1;
        c.maxDuration = 2;
        c.treasury = address(0xCAFE);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.ConfigChanged(2, c);
        tm.setConfig(c);
        vm.assertEq(tm.getConfigEpoch(), 2, "epoch bumped");
        ITaskManager.Config memory stored = tm.getConfig();
        vm.assertEq(stored.treasury, address(0xCAFE), "treasury stored");
        vm.assertEq(stored.maxDuration, 2, "max duration stored");
        tm.setConfig(c);
        vm.assertEq(tm.getConfigEpoch(), 3, "every change bumps");
    }

    function test_RevertWhen_SetConfigByNonOwner() public {
        ITaskManager.Config memory c = _defaultConfig();
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        vm.prank(stranger);
        tm.setConfig(c);
    }

    function test_RevertWhen_SetConfigOutOfRange() public {
        ITaskManager.Config memory c = _defaultConfig();
        c.protocolFeeBps = 10_001;
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        tm.setConfig(c);

        c = _defaultConfig();
        c.reporterRewardBps = 10_001;
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        tm.setConfig(c);

        c = _defaultConfig();
        c.treasury = address(0);
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        tm.setConfig(c);

        c = _defaultConfig();
        c.acceptWindow = 0;
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        tm.setConfig(c);

        c = _defaultConfig();
        c.maxDuration = c.acceptWindow;
        vm.expectRevert(ITaskManager.TaskManager__BadConfig.selector);
        tm.setConfig(c);

        vm.assertEq(tm.getConfigEpoch(), 1, "no change");
    }

    // ================================================================ requestTask

    function test_RequestTask_EscrowsFeeElectsCommitteeAndEmits() public {
        bytes32 seed = keccak256(abi.encode(block.prevrandao, uint256(1)));
        address[] memory expected = _electedOperators(seed, 3, new uint32[](0));
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, new uint64[](0));
        uint256 requesterBefore = token.balanceOf(requester);
        uint64 acceptDeadline = uint64(block.timestamp) + ACCEPT_WINDOW;

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(1, ITaskManager.TaskState.None, ITaskManager.TaskState.Requested);
        _expectTaskRequested(req.deadline, expected, seed);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.CommitteeElected(1, expected, seed, acceptDeadline);
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);

        vm.assertEq(taskId, 1, "first id");
        vm.assertEq(tm.getTaskCount(), 1, "count");
        vm.assertEq(token.balanceOf(address(tm)), FEE, "fee escrowed");
        vm.assertEq(token.balanceOf(requester), requesterBefore - FEE, "paid by requester");
        _assertAddresses(tm.getCommittee(taskId), expected, "committee");

        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(t.requester, requester, "requester");
        vm.assertEq(uint8(t.state), uint8(ITaskManager.TaskState.Requested), "state");
        vm.assertEq(t.kind, KIND_STATS, "kind");
        vm.assertEq(t.committeeSize, 3, "k");
        vm.assertEq(t.quorum, 2, "quorum");
        vm.assertEq(t.acceptedMask, 0, "accepted");
        vm.assertEq(t.slashedMask, 0, "slashed");
        vm.assertEq(t.deadline, req.deadline, "deadline");
        vm.assertEq(t.acceptDeadline, acceptDeadline, "accept deadline");
        vm.assertEq(t.feeWei, FEE, "fee");
        vm.assertEq(t.dataFeeWei, 0, "data fee");
        vm.assertEq(t.specHash, SPEC_HASH, "spec");
        vm.assertEq(t.resultHash, bytes32(0), "no result yet");
        vm.assertEq(t.publicOutputHash, bytes32(0), "no output yet");
        vm.assertEq(tm.getTaskDatasets(taskId).length, 0, "no datasets");

        uint32[] memory idx = tm.getCommitteeIndices(taskId);
        vm.assertEq(idx.length, 3, "indices");
        for (uint256 i; i < 3; ++i) {
            vm.assertEq(nodes.getOperatorAt(idx[i]), expected[i], "index matches operator");
        }
    }

    function _expectTaskRequested(uint64 deadline, address[] memory expected, bytes32 seed) private {
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskRequested(
            1, requester, KIND_STATS, SPEC_HASH, SPEC_URI, new uint64[](0), FEE, 0, deadline, 2, expected, seed
        );
    }

    function test_RequestTask_AssignsSequentialIdsAndDistinctSeeds() public {
        uint256 a = _request(3, 2);
        uint256 b = _request(3, 2);
        vm.assertEq(a, 1, "first");
        vm.assertEq(b, 2, "second");
        bytes32 seedB = keccak256(abi.encode(block.prevrandao, uint256(2)));
        _assertAddresses(tm.getCommittee(b), _electedOperators(seedB, 3, new uint32[](0)), "seed uses the task id");
        vm.assertEq(token.balanceOf(address(tm)), 2 * uint256(FEE), "two escrows");
    }

    function test_RequestTask_WithDatasetsEscrowsPricesAndConsumesUses() public {
        uint64 idA = _registerDataset(bankA, 7e18);
        uint64 idB = _registerDataset(bankB, 11e18);
        IDataRegistry.ConsentPolicy memory limited = _openPolicy();
        limited.remainingUses = 5;
        vm.prank(bankB);
        data.setPolicy(idB, limited, 11e18);

        vm.prank(requester);
        uint256 taskId = tm.requestTask(_taskRequest(3, 2, FEE, _ids(idA, idB)));

        vm.assertEq(token.balanceOf(address(tm)), uint256(FEE) + 18e18, "fee + prices");
        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(t.dataFeeWei, 18e18, "data fee");
        uint64[] memory ids = tm.getTaskDatasets(taskId);
        vm.assertEq(ids.length, 2, "two datasets");
        vm.assertEq(ids[0], idA, "A");
        vm.assertEq(ids[1], idB, "B");
        vm.assertEq(data.getAsset(idB).policy.remainingUses, 4, "one use consumed");
    }

    function test_RequestTaskFor_RecordsRequesterAndChargesPayer() public {
        address payer = address(0xFA11);
        _fund(payer, 1_000e18);
        vm.prank(payer);
        token.approve(address(tm), FEE);
        uint256 requesterBefore = token.balanceOf(requester);
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, new uint64[](0));
        vm.prank(payer);
        uint256 taskId = tm.requestTaskFor(requester, req);
        vm.assertEq(tm.getTask(taskId).requester, requester, "requester recorded");
        vm.assertEq(token.balanceOf(payer), 1_000e18 - uint256(FEE), "payer paid");
        vm.assertEq(token.balanceOf(requester), requesterBefore, "requester did not pay");
    }

    function test_RequestTask_AcceptsBoundaryDeadlinesAndQuorums() public {
        ITaskManager.TaskRequest memory req = _taskRequest(1, 1, FEE, new uint64[](0));
        req.deadline = uint64(block.timestamp) + ACCEPT_WINDOW + 1;
        vm.prank(requester);
        tm.requestTask(req);
        req = _taskRequest(8, 5, FEE, new uint64[](0));
        req.committeeSize = NODE_COUNT;
        req.quorum = 4;
        req.deadline = uint64(block.timestamp) + MAX_DURATION;
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);
        vm.assertEq(tm.getCommittee(taskId).length, NODE_COUNT, "all nodes elected");
    }

    function test_RevertWhen_RequestTaskHasBadCommittee() public {
        uint8[2][6] memory cases = [[0, 0], [9, 9], [3, 0], [3, 4], [4, 2], [2, 1]];
        for (uint256 i; i < cases.length; ++i) {
            ITaskManager.TaskRequest memory req = _taskRequest(cases[i][0], cases[i][1], FEE, new uint64[](0));
            vm.expectRevert(
                abi.encodeWithSelector(ITaskManager.TaskManager__BadCommittee.selector, cases[i][0], cases[i][1])
            );
            vm.prank(requester);
            tm.requestTask(req);
        }
    }

    function test_RevertWhen_RequestTaskIsMalformed() public {
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, 0, new uint64[](0));
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);

        req = _taskRequest(3, 2, FEE, new uint64[](0));
        req.specHash = bytes32(0);
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);

        req = _taskRequest(3, 2, FEE, new uint64[](0));
        req.specURI = "";
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);

        req = _taskRequest(3, 2, FEE, new uint64[](9));
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);

        req = _taskRequest(3, 2, FEE, new uint64[](0));
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTaskFor(address(0), req);
    }

    function test_RevertWhen_RequestTaskRepeatsADataset() public {
        uint64 idA = _registerDataset(bankA, 1e18);
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, _ids(idA, idA));
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);
    }

    function test_RevertWhen_RequestTaskEscrowOverflowsUint96() public {
        uint64 idA = _registerDataset(bankA, type(uint96).max);
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, 1, _ids(idA));
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);
    }

    function test_RevertWhen_RequestTaskFeeDoesNotFitStorage() public {
        // feeWei is stored in 88 bits: 2^88 - 1 is the largest fee a task takes.
        _fund(requester, uint256(type(uint88).max) + 1);
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, uint96(type(uint88).max) + 1, new uint64[](0));
        vm.expectRevert(ITaskManager.TaskManager__BadRequest.selector);
        vm.prank(requester);
        tm.requestTask(req);

        req.feeWei = type(uint88).max;
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);
        vm.assertEq(uint256(tm.getTask(taskId).feeWei), uint256(type(uint88).max), "largest fee stored");
    }

    function test_RevertWhen_RequestTaskHasBadDeadline() public {
        uint64 nowTs = uint64(block.timestamp);
        uint64[3] memory deadlines = [nowTs + ACCEPT_WINDOW, nowTs + MAX_DURATION + 1, nowTs - 1];
        for (uint256 i; i < deadlines.length; ++i) {
            ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, new uint64[](0));
            req.deadline = deadlines[i];
            vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__BadDeadline.selector, deadlines[i], nowTs));
            vm.prank(requester);
            tm.requestTask(req);
        }
    }

    function test_RevertWhen_RequestTaskDeadlineDoesNotFitStorage() public {
        ITaskManager.Config memory c = _defaultConfig();
        c.maxDuration = type(uint64).max / 2;
        tm.setConfig(c);
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, new uint64[](0));
        req.deadline = uint64(type(uint48).max) + 1;
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskManager.TaskManager__BadDeadline.selector, req.deadline, uint64(block.timestamp)
            )
        );
        vm.prank(requester);
        tm.requestTask(req);
    }

    function test_RevertWhen_RequestTaskDatasetRefusesConsent() public {
        uint64 idA = _registerDataset(bankA, 1e18);
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, _ids(idA));
        req.kind = 2;
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__KindNotAllowed.selector, idA, uint8(2)));
        vm.prank(requester);
        tm.requestTask(req);
    }

    function test_RevertWhen_RequestTaskHasMoreMembersThanNodes() public {
        ITaskManager.TaskRequest memory req = _taskRequest(7, 4, FEE, new uint64[](0));
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NodeRegistry__NotEnoughNodes.selector, 7, NODE_COUNT));
        vm.prank(requester);
        tm.requestTask(req);
    }

    function test_RevertWhen_RegistryElectsAnIndexThatCannotBeStored() public {
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, new uint64[](0));
        uint32[] memory picked = new uint32[](3);
        picked[0] = 1;
        picked[1] = 2;
        address[] memory pickedOperators = new address[](3);
        pickedOperators[0] = operators[0];
        pickedOperators[1] = operators[1];
        pickedOperators[2] = operators[2];
        // requestTask elects through electCommitteeWithOperators (indices and operators).
        bytes memory electCall = abi.encodeWithSelector(nodes.electCommitteeWithOperators.selector);

        picked[2] = 0;
        vm.mockCall(address(nodes), electCall, abi.encode(picked, pickedOperators));
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__BadCommittee.selector, 0, 0));
        vm.prank(requester);
        tm.requestTask(req);

        // Node indices are stored in 16 bits: 2^16 is the first index that does not fit.
        picked[2] = 1 << 16;
        vm.mockCall(address(nodes), electCall, abi.encode(picked, pickedOperators));
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__BadCommittee.selector, 0, 0));
        vm.prank(requester);
        tm.requestTask(req);
    }

    function test_RevertWhen_RequestTaskPayerHasNoAllowance() public {
        ITaskManager.TaskRequest memory req = _taskRequest(3, 2, FEE, new uint64[](0));
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(tm), 0, uint256(FEE))
        );
        vm.prank(stranger);
        tm.requestTask(req);
    }

    // ================================================================ acceptTask

    function test_AcceptTask_ByOperatorAndBySignerKeyThenActive() public {
        uint256 taskId = _request(3, 2);
        address[] memory committee = tm.getCommittee(taskId);

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskAccepted(taskId, committee[1], 1);
        vm.prank(committee[1]);
        tm.acceptTask(taskId);
        vm.assertEq(tm.getTask(taskId).acceptedMask, 2, "slot 1 accepted");

        // The signer key accepts on behalf of its operator.
        address signer0 = vm.addr(signerKeyOf[committee[0]]);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskAccepted(taskId, committee[0], 0);
        vm.prank(signer0);
        tm.acceptTask(taskId);
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Requested), "still requested");

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskAccepted(taskId, committee[2], 2);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(taskId, ITaskManager.TaskState.Requested, ITaskManager.TaskState.Active);
        vm.prank(committee[2]);
        tm.acceptTask(taskId);

        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(t.acceptedMask, 7, "all accepted");
        vm.assertEq(uint8(t.state), uint8(ITaskManager.TaskState.Active), "active");
    }

    function test_AcceptTask_AtTheLastSecondOfTheWindow() public {
        uint256 taskId = _request(3, 2);
        address member = tm.getCommittee(taskId)[0];
        vm.warp(tm.getTask(taskId).acceptDeadline);
        vm.prank(member);
        tm.acceptTask(taskId);
        vm.assertEq(tm.getTask(taskId).acceptedMask, 1, "accepted at the deadline");
    }

    function test_RevertWhen_AcceptTaskUnknown() public {
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 99));
        vm.prank(operators[0]);
        tm.acceptTask(99);
    }

    function test_RevertWhen_AcceptTaskNotRequested() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        address member = tm.getCommittee(taskId)[0];
        vm.expectRevert(_unexpected(taskId, ITaskManager.TaskState.Active, ITaskManager.TaskState.Requested));
        vm.prank(member);
        tm.acceptTask(taskId);
    }

    function test_RevertWhen_AcceptTaskAfterWindow() public {
        uint256 taskId = _request(3, 2);
        address member = tm.getCommittee(taskId)[0];
        uint64 acceptDeadline = tm.getTask(taskId).acceptDeadline;
        vm.warp(acceptDeadline + 1);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskManager.TaskManager__AcceptWindow.selector, taskId, acceptDeadline, acceptDeadline + 1
            )
        );
        vm.prank(member);
        tm.acceptTask(taskId);
    }

    function test_RevertWhen_AcceptTaskByNonMember() public {
        uint256 taskId = _request(3, 2);
        address outsider = _outsider(taskId);
        vm.expectRevert(_notMember(taskId, outsider));
        vm.prank(outsider);
        tm.acceptTask(taskId);
        vm.expectRevert(_notMember(taskId, stranger));
        vm.prank(stranger);
        tm.acceptTask(taskId);
        // An outsider's signer key is not a member either.
        address outsiderSigner = vm.addr(signerKeyOf[outsider]);
        vm.expectRevert(_notMember(taskId, outsiderSigner));
        vm.prank(outsiderSigner);
        tm.acceptTask(taskId);
    }

    function test_RevertWhen_AcceptTaskTwice() public {
        uint256 taskId = _request(3, 2);
        address member = tm.getCommittee(taskId)[2];
        vm.prank(member);
        tm.acceptTask(taskId);
        address memberSigner = vm.addr(signerKeyOf[member]);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__AlreadyAccepted.selector, taskId, uint8(2)));
        vm.prank(memberSigner);
        tm.acceptTask(taskId);
    }

    // ================================================================ slashNoShow

    function test_SlashNoShow_SlashesCreditsAndRefillsTheSlot() public {
        uint256 taskId = _request(3, 2);
        _acceptSlots(taskId, _slots(1, 2));
        address[] memory before = tm.getCommittee(taskId);
        uint32[] memory exclude = tm.getCommitteeIndices(taskId);
        vm.warp(tm.getTask(taskId).acceptDeadline + 1);

        bytes32 seed = keccak256(abi.encode(block.prevrandao, taskId, uint256(0), uint256(0)));
        address replacement = _electedOperators(seed, 1, exclude)[0];
        address[] memory after_ = new address[](3);
        after_[0] = replacement;
        after_[1] = before[1];
        after_[2] = before[2];
        uint96 reporterShare = NO_SHOW_SLASH * REPORTER_BPS / 10_000;
        uint256 tmBalance = token.balanceOf(address(tm));
        uint64 newAcceptDeadline = uint64(block.timestamp) + ACCEPT_WINDOW;

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.CommitteeElected(taskId, after_, seed, newAcceptDeadline);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.RewardCredited(reporter, taskId, reporterShare);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.RewardCredited(treasury, taskId, NO_SHOW_SLASH - reporterShare);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.NoShowSlashed(taskId, before[0], NO_SHOW_SLASH, replacement);
        vm.prank(reporter);
        tm.slashNoShow(taskId, 0);

        for (uint256 i; i < 3; ++i) {
            vm.assertTrue(replacement != before[i], "replacement is new");
        }
        _assertAddresses(tm.getCommittee(taskId), after_, "slot refilled");
        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(t.slashedMask, 0, "refilled slot is clean");
        vm.assertEq(t.acceptedMask, 6, "others still accepted");
        vm.assertEq(t.acceptDeadline, newAcceptDeadline, "new accept window");
        vm.assertEq(nodes.getNode(before[0]).stakeWei, NODE_STAKE - NO_SHOW_SLASH, "stake slashed");
        vm.assertEq(tm.getOwed(reporter), reporterShare, "reporter owed");
        vm.assertEq(tm.getOwed(treasury), NO_SHOW_SLASH - reporterShare, "treasury owed");
        vm.assertEq(token.balanceOf(address(tm)), tmBalance + NO_SHOW_SLASH, "slash landed in the TaskManager");

        // The replacement accepts in the new window and the task becomes Active.
        vm.prank(replacement);
        tm.acceptTask(taskId);
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Active), "active");
    }

    function test_SlashNoShow_SecondRefillUsesNextRound() public {
        uint256 taskId = _request(2, 2);
        vm.warp(tm.getTask(taskId).acceptDeadline + 1);
        vm.prank(reporter);
        tm.slashNoShow(taskId, 0);
        vm.warp(tm.getTask(taskId).acceptDeadline + 1);
        uint32[] memory exclude = tm.getCommitteeIndices(taskId);
        bytes32 seed = keccak256(abi.encode(block.prevrandao, taskId, uint256(1), uint256(1)));
        address expected = _electedOperators(seed, 1, exclude)[0];
        address noShow = tm.getCommittee(taskId)[1];
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.NoShowSlashed(taskId, noShow, NO_SHOW_SLASH, expected);
        vm.prank(reporter);
        tm.slashNoShow(taskId, 1);
        vm.assertEq(tm.getCommittee(taskId)[1], expected, "round 1 draw");
    }

    function test_SlashNoShow_KeepsSlotWhenNoNodeIsFree() public {
        ITaskManager.TaskRequest memory req = _taskRequest(NODE_COUNT, 4, FEE, new uint64[](0));
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);
        address[] memory before = tm.getCommittee(taskId);
        uint64 acceptDeadline = tm.getTask(taskId).acceptDeadline;
        vm.warp(acceptDeadline + 1);

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.NoShowSlashed(taskId, before[3], NO_SHOW_SLASH, address(0));
        vm.prank(reporter);
        tm.slashNoShow(taskId, 3);

        _assertAddresses(tm.getCommittee(taskId), before, "committee unchanged");
        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(t.slashedMask, 8, "slot 3 marked slashed");
        vm.assertEq(t.acceptDeadline, acceptDeadline, "window unchanged");
        vm.assertEq(nodes.getNode(before[3]).stakeWei, NODE_STAKE - NO_SHOW_SLASH, "slashed");
    }

    function test_SlashNoShow_TakesOnlyWhatIsLeft() public {
        ITaskManager.Config memory c = _defaultConfig();
        c.noShowSlashWei = NODE_STAKE * 2;
        c.reporterRewardBps = 0;
        tm.setConfig(c);
        ITaskManager.TaskRequest memory req = _taskRequest(NODE_COUNT, 4, FEE, new uint64[](0));
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);
        address noShow = tm.getCommittee(taskId)[0];
        vm.warp(tm.getTask(taskId).acceptDeadline + 1);
        vm.prank(reporter);
        tm.slashNoShow(taskId, 0);
        vm.assertEq(nodes.getNode(noShow).stakeWei, 0, "whole stake taken");
        vm.assertEq(tm.getOwed(treasury), NODE_STAKE, "never more than the stake");
        vm.assertEq(tm.getOwed(reporter), 0, "reporter share 0");
    }

    function test_RevertWhen_SlashNoShowUnknownTask() public {
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 5));
        tm.slashNoShow(5, 0);
    }

    function test_RevertWhen_SlashNoShowTaskActive() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        vm.expectRevert(_unexpected(taskId, ITaskManager.TaskState.Active, ITaskManager.TaskState.Requested));
        tm.slashNoShow(taskId, 0);
    }

    function test_RevertWhen_SlashNoShowSlotOutsideCommittee() public {
        uint256 taskId = _request(3, 2);
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        vm.expectRevert(_notMember(taskId, address(0)));
        tm.slashNoShow(taskId, 3);
    }

    function test_RevertWhen_SlashNoShowBeforeWindowCloses() public {
        uint256 taskId = _request(3, 2);
        uint64 acceptDeadline = tm.getTask(taskId).acceptDeadline;
        vm.warp(acceptDeadline);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskManager.TaskManager__AcceptWindow.selector, taskId, acceptDeadline, acceptDeadline
            )
        );
        tm.slashNoShow(taskId, 0);
    }

    function test_RevertWhen_SlashNoShowMemberAccepted() public {
        uint256 taskId = _request(3, 2);
        _acceptSlots(taskId, _slots(1));
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__NotNoShow.selector, taskId, uint8(1)));
        tm.slashNoShow(taskId, 1);
    }

    function test_RevertWhen_SlashNoShowElectionFailsOtherwise() public {
        uint256 taskId = _request(3, 2);
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        // Only NotEnoughNodes means "no node free"; any other failure is passed through.
        bytes memory failure = abi.encodeWithSelector(INodeRegistry.NodeRegistry__BadPage.selector, 1, 2);
        vm.mockCallRevert(address(nodes), abi.encodeWithSelector(INodeRegistry.electCommittee.selector), failure);
        vm.expectRevert(failure);
        tm.slashNoShow(taskId, 0);
    }

    function test_RevertWhen_SlashNoShowTwice() public {
        ITaskManager.TaskRequest memory req = _taskRequest(NODE_COUNT, 4, FEE, new uint64[](0));
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        tm.slashNoShow(taskId, 2);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__AlreadySlashed.selector, taskId, uint8(2)));
        tm.slashNoShow(taskId, 2);
    }

    // ================================================================ submitResult

    function test_SubmitResult_FinalizesAndSplitsTheFee() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        uint256[] memory keys = _firstKeys(taskId, 3);
        bytes[] memory sigs = _signSorted(taskId, keys, RESULT_HASH, OUTPUT);
        address[] memory paid = _operatorsOfSorted(keys);

        uint96 protocolFee = FEE * PROTOCOL_FEE_BPS / 10_000;
        uint96 share = (FEE - protocolFee) / 3;
        uint96 toTreasury = FEE - share * 3;

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(taskId, ITaskManager.TaskState.Active, ITaskManager.TaskState.Finalized);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.RewardCredited(treasury, taskId, toTreasury);
        for (uint256 i; i < 3; ++i) {
            vm.expectEmit(true, true, true, true, address(tm));
            emit ITaskManager.RewardCredited(paid[i], taskId, share);
        }
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskFinalized(taskId, RESULT_HASH, OUTPUT, paid);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, sigs);

        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(uint8(t.state), uint8(ITaskManager.TaskState.Finalized), "finalized");
        vm.assertEq(t.resultHash, RESULT_HASH, "result hash");
        vm.assertEq(t.publicOutputHash, keccak256(OUTPUT), "output hash");
        uint256 credited = tm.getOwed(treasury);
        for (uint256 i; i < 3; ++i) {
            vm.assertEq(tm.getOwed(paid[i]), share, "signer share");
            credited += tm.getOwed(paid[i]);
        }
        vm.assertEq(credited, FEE, "all escrow credited");
        vm.assertEq(token.balanceOf(address(tm)), FEE, "tokens stay until withdrawn");
    }

    function test_SubmitResult_QuorumOfAcceptedMembersWhileRequested() public {
        uint256 taskId = _request(3, 2);
        _acceptSlots(taskId, _slots(0, 2));
        uint256[] memory keys = _slotKeys(taskId, _slots(0, 2));
        bytes[] memory sigs = _signSorted(taskId, keys, RESULT_HASH, OUTPUT);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(taskId, ITaskManager.TaskState.Requested, ITaskManager.TaskState.Finalized);
        _submit(taskId, sigs);
        address[] memory committee = tm.getCommittee(taskId);
        vm.assertEq(tm.getOwed(committee[1]), 0, "non-signer not paid");
        vm.assertGt(tm.getOwed(committee[0]), 0, "signer paid");
    }

    function test_SubmitResult_PaysDatasetOwnersAndOperatorsNotSignerKeys() public {
        uint64 idA = _registerDataset(bankA, 7e18);
        uint64 idB = _registerDataset(bankB, 11e18);
        vm.prank(requester);
        uint256 taskId = tm.requestTask(_taskRequest(3, 2, FEE, _ids(idA, idB)));
        _acceptAll(taskId);
        uint256[] memory keys = _firstKeys(taskId, 2);
        bytes[] memory sigs = _signSorted(taskId, keys, RESULT_HASH, OUTPUT);
        _submit(taskId, sigs);

        vm.assertEq(tm.getOwed(bankA), 7e18, "bank A price");
        vm.assertEq(tm.getOwed(bankB), 11e18, "bank B price");
        uint256 protocolFee = uint256(FEE) * PROTOCOL_FEE_BPS / 10_000;
        uint256 share = (FEE - protocolFee) / 2;
        address[] memory paid = _operatorsOfSorted(keys);
        for (uint256 i; i < 2; ++i) {
            vm.assertEq(tm.getOwed(paid[i]), share, "operator paid");
            vm.assertEq(tm.getOwed(vm.addr(signerKeyOf[paid[i]])), 0, "signer key not paid");
        }
        vm.assertEq(tm.getOwed(treasury), FEE - 2 * share, "treasury");
    }

    function test_SubmitResult_AtTheDeadline() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        vm.warp(tm.getTask(taskId).deadline);
        _submit(taskId, sigs);
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Finalized), "finalized");
    }

    function test_RevertWhen_SubmitResultUnknownTask() public {
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 7));
        tm.submitResult(7, RESULT_HASH, OUTPUT, 1, new bytes[](0));
    }

    function test_RevertWhen_SubmitResultTwice() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        _submit(taskId, sigs);
        vm.expectRevert(_unexpected(taskId, ITaskManager.TaskState.Finalized, ITaskManager.TaskState.Active));
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, sigs);
    }

    function test_RevertWhen_SubmitResultAfterRefund() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        vm.warp(tm.getTask(taskId).deadline + 1);
        tm.refund(taskId);
        vm.expectRevert(_unexpected(taskId, ITaskManager.TaskState.Refunded, ITaskManager.TaskState.Active));
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, sigs);
    }

    function test_RevertWhen_SubmitResultAfterDeadline() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        uint64 deadline = tm.getTask(taskId).deadline;
        vm.warp(deadline + 1);
        vm.expectRevert(
            abi.encodeWithSelector(ITaskManager.TaskManager__Deadline.selector, taskId, deadline, deadline + 1)
        );
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, sigs);
    }

    function test_RevertWhen_SubmitResultForOldConfigEpoch() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory oldSigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        tm.setConfig(_defaultConfig());

        // Claiming the old epoch is rejected outright.
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__StaleConfigEpoch.selector, 1, 2));
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, oldSigs);

        // Claiming the new epoch with old signatures recovers to a stranger.
        bytes32 newDigest = tm.getResultDigest(taskId, RESULT_HASH, keccak256(OUTPUT), 2);
        address recovered = _recoverRaw(newDigest, oldSigs[0]);
        vm.expectRevert(_notMember(taskId, recovered));
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 2, oldSigs);

        // Fresh signatures for epoch 2 finalize.
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 2, sigs);
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Finalized), "finalized");
    }

    function test_RevertWhen_SubmitResultReplayedOnAnotherChain() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        vm.chainId(block.chainid + 1);
        bytes32 digestHere = tm.getResultDigest(taskId, RESULT_HASH, keccak256(OUTPUT), 1);
        address recovered = _recoverRaw(digestHere, sigs[0]);
        vm.expectRevert(_notMember(taskId, recovered));
        tm.submitResult(taskId, RESULT_HASH, OUTPUT, 1, sigs);
    }

    function test_RevertWhen_SubmitResultReplayedOnAnotherDeployment() public {
        // A second, identical deployment with the same node keys elects the same committee for task 1.
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);

        DatumToken token2 = new DatumToken(address(this), SUPPLY);
        NodeRegistry nodes2 = new NodeRegistry(token2, MIN_STAKE, UNBONDING_DELAY, address(this));
        DataRegistry data2 = new DataRegistry(address(this));
        TaskManager tm2 = new TaskManager(token2, nodes2, data2, _defaultConfig(), address(this));
        nodes2.setTaskManager(address(tm2));
        data2.setTaskManager(address(tm2));
        for (uint256 i; i < NODE_COUNT; ++i) {
            address op = operators[i];
            vm.assertTrue(token2.transfer(op, NODE_STAKE), "funded");
            vm.startPrank(op);
            token2.approve(address(nodes2), NODE_STAKE);
            nodes2.register(vm.addr(signerKeyOf[op]), "https://node.example:8443", type(uint64).max, NODE_STAKE);
            vm.stopPrank();
        }
        token2.approve(address(tm2), FEE);
        uint256 taskId2 = tm2.requestTask(_taskRequest(3, 2, FEE, new uint64[](0)));
        vm.assertEq(taskId2, taskId, "same task id");
        address[] memory committee2 = tm2.getCommittee(taskId2);
        _assertAddresses(committee2, tm.getCommittee(taskId), "same committee");
        for (uint256 i; i < 3; ++i) {
            vm.prank(committee2[i]);
            tm2.acceptTask(taskId2);
        }

        bytes32 digest2 = tm2.getResultDigest(taskId2, RESULT_HASH, keccak256(OUTPUT), 1);
        address recovered = _recoverRaw(digest2, sigs[0]);
        vm.expectRevert(_notMember(taskId2, recovered));
        tm2.submitResult(taskId2, RESULT_HASH, OUTPUT, 1, sigs);
    }

    function test_RevertWhen_SubmitResultOutputDiffersFromSigned() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        bytes memory forged = abi.encode(uint256(1));
        bytes32 digest = tm.getResultDigest(taskId, RESULT_HASH, keccak256(forged), 1);
        vm.expectRevert(_notMember(taskId, _recoverRaw(digest, sigs[0])));
        tm.submitResult(taskId, RESULT_HASH, forged, 1, sigs);
    }

    function test_RevertWhen_SubmitResultBelowQuorum() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 1), RESULT_HASH, OUTPUT);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__BelowQuorum.selector, 1, uint8(2)));
        _submit(taskId, sigs);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__BelowQuorum.selector, 0, uint8(2)));
        _submit(taskId, new bytes[](0));
    }

    function test_RevertWhen_SubmitResultHasMalformedSignature() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);

        bytes[] memory shortSig = new bytes[](2);
        shortSig[0] = sigs[0];
        shortSig[1] = _slice(sigs[1], 64);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__InvalidSignature.selector, 1));
        _submit(taskId, shortSig);

        // v = 0 does not recover.
        bytes[] memory badV = new bytes[](2);
        badV[0] = _withV(sigs[0], 0);
        badV[1] = sigs[1];
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__InvalidSignature.selector, 0));
        _submit(taskId, badV);
    }

    function test_RevertWhen_SubmitResultHasHighSSignature() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, OUTPUT);
        (bytes32 r, bytes32 s, uint8 v) = _split(sigs[0]);
        bytes memory malleable = abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : uint8(27));
        // The twin recovers to the same signer with plain ecrecover, but is rejected.
        bytes32 digest = tm.getResultDigest(taskId, RESULT_HASH, keccak256(OUTPUT), 1);
        vm.assertEq(_recoverRaw(digest, malleable), _recoverRaw(digest, sigs[0]), "same signer");
        sigs[0] = malleable;
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__InvalidSignature.selector, 0));
        _submit(taskId, sigs);
    }

    function test_RevertWhen_SubmitResultSignersNotAscending() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        uint256[] memory keys = _sortKeys(_firstKeys(taskId, 2));
        bytes[] memory desc = new bytes[](2);
        desc[0] = _signResult(keys[1], taskId, RESULT_HASH, OUTPUT);
        desc[1] = _signResult(keys[0], taskId, RESULT_HASH, OUTPUT);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskManager.TaskManager__SignersNotAscending.selector, vm.addr(keys[1]), vm.addr(keys[0])
            )
        );
        _submit(taskId, desc);
    }

    function test_RevertWhen_SubmitResultRepeatsASigner() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        uint256 key = _firstKeys(taskId, 1)[0];
        bytes[] memory dup = new bytes[](2);
        dup[0] = _signResult(key, taskId, RESULT_HASH, OUTPUT);
        dup[1] = dup[0];
        vm.expectRevert(
            abi.encodeWithSelector(ITaskManager.TaskManager__SignersNotAscending.selector, vm.addr(key), vm.addr(key))
        );
        _submit(taskId, dup);
    }

    function test_RevertWhen_SubmitResultSignedByNonMember() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        address[] memory committee = tm.getCommittee(taskId);
        uint256 memberKey = signerKeyOf[committee[0]];

        uint256 outsiderKey = signerKeyOf[_outsider(taskId)];
        bytes[] memory sigs = _signSorted(taskId, _pair(memberKey, outsiderKey), RESULT_HASH, OUTPUT);
        vm.expectRevert(_notMember(taskId, vm.addr(outsiderKey)));
        _submit(taskId, sigs);

        // A key no operator uses.
        sigs = _signSorted(taskId, _pair(memberKey, 0xDEAD), RESULT_HASH, OUTPUT);
        vm.expectRevert(_notMember(taskId, vm.addr(0xDEAD)));
        _submit(taskId, sigs);

        // A member's operator key is not its signing key.
        uint256 operatorKey = operatorKeyOf[committee[2]];
        sigs = _signSorted(taskId, _pair(memberKey, operatorKey), RESULT_HASH, OUTPUT);
        vm.expectRevert(_notMember(taskId, committee[2]));
        _submit(taskId, sigs);
    }

    function test_RevertWhen_SubmitResultSignerDidNotAccept() public {
        uint256 taskId = _request(3, 2);
        _acceptSlots(taskId, _slots(0, 1));
        address lateMember = tm.getCommittee(taskId)[2];
        bytes[] memory sigs = _signSorted(taskId, _slotKeys(taskId, _slots(0, 2)), RESULT_HASH, OUTPUT);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITaskManager.TaskManager__SignerNotAccepted.selector, taskId, vm.addr(signerKeyOf[lateMember])
            )
        );
        _submit(taskId, sigs);
    }

    function _pair(uint256 a, uint256 b) private pure returns (uint256[] memory keys) {
        keys = new uint256[](2);
        keys[0] = a;
        keys[1] = b;
    }

    // ================================================================ refund

    function test_Refund_CreditsEscrowToRequesterAfterDeadline() public {
        uint64 idA = _registerDataset(bankA, 7e18);
        vm.prank(requester);
        uint256 taskId = tm.requestTask(_taskRequest(3, 2, FEE, _ids(idA)));
        _acceptAll(taskId);
        vm.warp(tm.getTask(taskId).deadline + 1);
        uint96 amount = FEE + 7e18;

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(taskId, ITaskManager.TaskState.Active, ITaskManager.TaskState.Refunded);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.RewardCredited(requester, taskId, amount);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskRefunded(taskId, requester, amount);
        vm.prank(stranger);
        tm.refund(taskId);

        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Refunded), "refunded");
        vm.assertEq(tm.getOwed(requester), amount, "requester owed");
        vm.assertEq(tm.getOwed(bankA), 0, "dataset owner not paid");
        uint256 before = token.balanceOf(requester);
        vm.prank(requester);
        tm.withdraw();
        vm.assertEq(token.balanceOf(requester), before + amount, "paid back");
        vm.assertEq(token.balanceOf(address(tm)), 0, "nothing left");
    }

    function test_Refund_FromRequestedState() public {
        uint256 taskId = _request(3, 2);
        vm.warp(tm.getTask(taskId).deadline + 1);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.TaskStateChanged(taskId, ITaskManager.TaskState.Requested, ITaskManager.TaskState.Refunded);
        tm.refund(taskId);
        vm.assertEq(tm.getOwed(requester), FEE, "fee back");
    }

    function test_RevertWhen_RefundUnknownTask() public {
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 0));
        tm.refund(0);
    }

    function test_RevertWhen_RefundBeforeDeadlinePasses() public {
        uint256 taskId = _request(3, 2);
        uint64 deadline = tm.getTask(taskId).deadline;
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__Deadline.selector, taskId, deadline, deadline));
        tm.refund(taskId);
    }

    function test_RevertWhen_RefundTwiceOrAfterFinalization() public {
        uint256 taskId = _request(3, 2);
        vm.warp(tm.getTask(taskId).deadline + 1);
        tm.refund(taskId);
        vm.expectRevert(_unexpected(taskId, ITaskManager.TaskState.Refunded, ITaskManager.TaskState.Active));
        tm.refund(taskId);

        uint256 done = _request(3, 2);
        _acceptAll(done);
        _finalize(done, 2, OUTPUT);
        vm.warp(tm.getTask(done).deadline + 1);
        vm.expectRevert(_unexpected(done, ITaskManager.TaskState.Finalized, ITaskManager.TaskState.Active));
        tm.refund(done);
    }

    // ================================================================ reportEquivocation

    function _equivocate(uint256 taskId, uint256 key) private view returns (bytes memory a, bytes memory b) {
        a = _sig(key, tm.getResultDigest(taskId, RESULT_HASH, keccak256("answer A"), 1));
        b = _sig(key, tm.getResultDigest(taskId, RESULT_HASH, keccak256("answer B"), 1));
    }

    function test_ReportEquivocation_SlashesOncePerTaskAndPaysReporter() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        address member = tm.getCommittee(taskId)[1];
        (bytes memory a, bytes memory b) = _equivocate(taskId, signerKeyOf[member]);
        uint96 reporterShare = EQUIVOCATION_SLASH * REPORTER_BPS / 10_000;

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.RewardCredited(reporter, taskId, reporterShare);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.RewardCredited(treasury, taskId, EQUIVOCATION_SLASH - reporterShare);
        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.EquivocationSlashed(taskId, member, EQUIVOCATION_SLASH, reporter);
        vm.prank(reporter);
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer B"), b, 1);

        vm.assertEq(tm.getTask(taskId).slashedMask, 2, "slot 1 slashed");
        vm.assertEq(nodes.getNode(member).stakeWei, NODE_STAKE - EQUIVOCATION_SLASH, "stake slashed");
        vm.assertEq(tm.getOwed(reporter), reporterShare, "reporter");
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Active), "state unchanged");
    }

    function test_ReportEquivocation_AfterFinalizationWithDifferentResultHash() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        _finalize(taskId, 2, OUTPUT);
        address member = tm.getCommittee(taskId)[0];
        uint256 key = signerKeyOf[member];
        bytes memory a = _sig(key, tm.getResultDigest(taskId, RESULT_HASH, keccak256(OUTPUT), 1));
        bytes memory b = _sig(key, tm.getResultDigest(taskId, keccak256("other"), keccak256(OUTPUT), 1));
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256(OUTPUT), a, keccak256("other"), keccak256(OUTPUT), b, 1);
        vm.assertEq(tm.getTask(taskId).slashedMask, 1, "slashed after finalization");
    }

    function test_RevertWhen_ReportEquivocationUnknownTask() public {
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 3));
        tm.reportEquivocation(3, RESULT_HASH, bytes32(0), "", RESULT_HASH, bytes32(uint256(1)), "", 1);
    }

    function test_RevertWhen_ReportEquivocationSameResult() public {
        uint256 taskId = _request(3, 2);
        address member = tm.getCommittee(taskId)[0];
        (bytes memory a,) = _equivocate(taskId, signerKeyOf[member]);
        vm.expectRevert(ITaskManager.TaskManager__NotEquivocation.selector);
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer A"), a, 1);
    }

    function test_RevertWhen_ReportEquivocationSignersDiffer() public {
        uint256 taskId = _request(3, 2);
        address[] memory committee = tm.getCommittee(taskId);
        (bytes memory a,) = _equivocate(taskId, signerKeyOf[committee[0]]);
        (, bytes memory b) = _equivocate(taskId, signerKeyOf[committee[1]]);
        vm.expectRevert(ITaskManager.TaskManager__NotEquivocation.selector);
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer B"), b, 1);
    }

    function test_RevertWhen_ReportEquivocationInvalidSignature() public {
        uint256 taskId = _request(3, 2);
        (bytes memory a, bytes memory b) = _equivocate(taskId, signerKeyOf[tm.getCommittee(taskId)[0]]);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__InvalidSignature.selector, 0));
        tm.reportEquivocation(
            taskId, RESULT_HASH, keccak256("answer A"), _slice(a, 64), RESULT_HASH, keccak256("answer B"), b, 1
        );
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__InvalidSignature.selector, 1));
        tm.reportEquivocation(
            taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer B"), _withV(b, 1), 1
        );
    }

    function test_RevertWhen_ReportEquivocationByNonMember() public {
        uint256 taskId = _request(3, 2);
        address outsider = _outsider(taskId);
        (bytes memory a, bytes memory b) = _equivocate(taskId, signerKeyOf[outsider]);
        vm.expectRevert(_notMember(taskId, vm.addr(signerKeyOf[outsider])));
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer B"), b, 1);
    }

    function test_RevertWhen_ReportEquivocationTwice() public {
        uint256 taskId = _request(3, 2);
        (bytes memory a, bytes memory b) = _equivocate(taskId, signerKeyOf[tm.getCommittee(taskId)[2]]);
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer B"), b, 1);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__AlreadySlashed.selector, taskId, uint8(2)));
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer B"), b, RESULT_HASH, keccak256("answer A"), a, 1);
    }

    function test_RevertWhen_ReportEquivocationAfterNoShowSlash() public {
        ITaskManager.TaskRequest memory req = _taskRequest(NODE_COUNT, 4, FEE, new uint64[](0));
        vm.prank(requester);
        uint256 taskId = tm.requestTask(req);
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        tm.slashNoShow(taskId, 4);
        (bytes memory a, bytes memory b) = _equivocate(taskId, signerKeyOf[tm.getCommittee(taskId)[4]]);
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__AlreadySlashed.selector, taskId, uint8(4)));
        tm.reportEquivocation(taskId, RESULT_HASH, keccak256("answer A"), a, RESULT_HASH, keccak256("answer B"), b, 1);
    }

    // ================================================================ withdraw

    function test_Withdraw_PaysOwedAndZeroes() public {
        uint256 taskId = _request(3, 2);
        _acceptAll(taskId);
        _finalize(taskId, 3, OUTPUT);
        address member = tm.getCommittee(taskId)[0];
        uint256 owed = tm.getOwed(member);
        vm.assertGt(owed, 0, "has a reward");
        uint256 before = token.balanceOf(member);

        vm.expectEmit(true, true, true, true, address(tm));
        emit ITaskManager.Withdrawn(member, owed);
        vm.prank(member);
        uint256 paid = tm.withdraw();

        vm.assertEq(paid, owed, "returned amount");
        vm.assertEq(token.balanceOf(member), before + owed, "tokens moved");
        vm.assertEq(tm.getOwed(member), 0, "zeroed");
    }

    function test_RevertWhen_WithdrawNothingOwed() public {
        vm.expectRevert(abi.encodeWithSelector(ITaskManager.TaskManager__NothingOwed.selector, stranger));
        vm.prank(stranger);
        tm.withdraw();
    }

    // ================================================================ views

    function test_GetResultDigest_IsEip712OverTheResultStruct() public view {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Datum TaskManager"),
                keccak256("1"),
                block.chainid,
                address(tm)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Result(uint256 taskId,bytes32 resultHash,bytes32 publicOutputHash,uint64 configEpoch)"),
                uint256(5),
                RESULT_HASH,
                keccak256(OUTPUT),
                uint64(1)
            )
        );
        bytes32 expected = keccak256(abi.encodePacked("\x19\x01", domain, structHash));
        vm.assertEq(tm.getResultDigest(5, RESULT_HASH, keccak256(OUTPUT), 1), expected, "digest");
    }

    function test_RevertWhen_ViewsGetUnknownTask() public {
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 1));
        tm.getTask(1);
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 1));
        tm.getCommittee(1);
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 1));
        tm.getCommitteeIndices(1);
        vm.expectRevert(_err(ITaskManager.TaskManager__UnknownTask.selector, 1));
        tm.getTaskDatasets(1);
    }

    // ================================================================ signature byte helpers

    function _split(bytes memory sig) private pure returns (bytes32 r, bytes32 s, uint8 v) {
        assembly {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
    }

    function _recoverRaw(bytes32 digest, bytes memory sig) private pure returns (address) {
        (bytes32 r, bytes32 s, uint8 v) = _split(sig);
        return ecrecover(digest, v, r, s);
    }

    function _withV(bytes memory sig, uint8 v) private pure returns (bytes memory) {
        (bytes32 r, bytes32 s,) = _split(sig);
        return abi.encodePacked(r, s, v);
    }

    function _slice(bytes memory sig, uint256 len) private pure returns (bytes memory out) {
        out = new bytes(len);
        for (uint256 i; i < len; ++i) {
            out[i] = sig[i];
        }
    }
}
