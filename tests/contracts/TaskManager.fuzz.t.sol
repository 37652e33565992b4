// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {ITaskManager} from "../../contracts/interfaces/ITaskManager.sol";

/// @notice Fuzzed money arithmetic: every finalization credits exactly the escrow, split as
///         CONTRACTS.md says; refunds return exactly the escrow; slashes split exactly.
contract TaskManagerFuzzTest is Fixture {
    uint256 private constant NODES = 8;
    bytes private constant OUTPUT = abi.encode(uint256(42));

    function setUp() public {
        _deploy(NODES);
        vm.prevrandao(bytes32(uint256(0xF022)));
    }

    function _setBps(uint16 protocolFeeBps, uint16 reporterBps) private {
        ITaskManager.Config memory c = _defaultConfig();
        c.protocolFeeBps = protocolFeeBps;
        c.reporterRewardBps = reporterBps;
        tm.setConfig(c);
    }

    function _owedOf(address[] memory accounts) private view returns (uint256[] memory owed) {
        owed = new uint256[](accounts.length);
        for (uint256 i; i < accounts.length; ++i) {
            owed[i] = tm.getOwed(accounts[i]);
        }
    }

    struct SplitCase {
        uint256 fee;
        uint256 bps;
        uint256 nSigners;
        uint256 priceA;
        uint256 priceB;
        uint256 taskId;
    }

    function testFuzz_FinalizeCreditsExactlyTheEscrow(
        uint96 fee,
        uint16 bps,
        uint8 k,
        uint8 extraSigners,
        uint96 priceA,
        uint96 priceB
    ) public {
        SplitCase memory c;
        c.fee = bound(fee, 1, 300_000e18);
        c.bps = bound(bps, 0, 10_000);
        k = uint8(bound(k, 1, NODES));
        uint8 quorum = k / 2 + 1;
        c.nSigners = quorum + bound(extraSigners, 0, k - quorum);
        c.priceA = bound(priceA, 0, 300_000e18);
        c.priceB = bound(priceB, 0, 300_000e18);
        _setBps(uint16(c.bps), 0);

        uint64 idA = _registerDataset(bankA, uint96(c.priceA));
        uint64 idB = _registerDataset(bankB, uint96(c.priceB));
        vm.prank(requester);
        c.taskId = tm.requestTask(_taskRequest(k, quorum, uint96(c.fee), _ids(idA, idB)));
        _acceptAll(c.taskId);
        vm.assertEq(token.balanceOf(address(tm)), c.fee + c.priceA + c.priceB, "escrowed");
        _finalizeAndCheck(c);
    }

    function _finalizeAndCheck(SplitCase memory c) private {
        uint256[] memory keys = _firstKeys(c.taskId, c.nSigners);
        address[] memory paid = _operatorsOfSorted(keys);
        bytes[] memory sigs = _signSorted(c.taskId, keys, RESULT_HASH, OUTPUT);
        tm.submitResult(c.taskId, RESULT_HASH, OUTPUT, tm.getConfigEpoch(), sigs);

        uint256 escrow = c.fee + c.priceA + c.priceB;
        uint256 protocolFee = c.fee * c.bps / 10_000;
        uint256 share = (c.fee - protocolFee) / c.nSigners;
        uint256 total = tm.getOwed(treasury) + tm.getOwed(bankA) + tm.getOwed(bankB);
        for (uint256 i; i < c.nSigners; ++i) {
            vm.assertEq(tm.getOwed(paid[i]), share, "equal share per signer");
            total += share;
        }
        vm.assertEq(total, escrow, "credits == escrow");
        vm.assertEq(tm.getOwed(bankA), c.priceA, "price A to its owner");
        vm.assertEq(tm.getOwed(bankB), c.priceB, "price B to its owner");
        uint256 toTreasury = tm.getOwed(treasury);
        vm.assertGe(toTreasury, protocolFee, "treasury gets at least the protocol fee");
        vm.assertLt(toTreasury - protocolFee, c.nSigners, "remainder below the signer count");
        vm.assertEq(token.balanceOf(address(tm)), escrow, "nothing moved before withdraw");
    }

    function testFuzz_RefundReturnsExactlyTheEscrow(uint96 fee, uint96 price, uint32 lateBy) public {
        fee = uint96(bound(fee, 1, 500_000e18));
        price = uint96(bound(price, 0, 400_000e18));
        uint64 idA = _registerDataset(bankA, price);
        uint256 before = token.balanceOf(requester);
        vm.prank(requester);
        uint256 taskId = tm.requestTask(_taskRequest(3, 2, fee, _ids(idA)));
        vm.warp(uint256(tm.getTask(taskId).deadline) + 1 + lateBy);
        tm.refund(taskId);
        vm.assertEq(tm.getOwed(requester), uint256(fee) + price, "owed == escrow");
        vm.assertEq(tm.getOwed(bankA), 0, "owner not paid");
        vm.prank(requester);
        tm.withdraw();
        vm.assertEq(token.balanceOf(requester), before, "requester whole again");
        vm.assertEq(token.balanceOf(address(tm)), 0, "TaskManager empty");
    }

    function testFuzz_NoShowSlashSplitsExactly(uint96 slashWei, uint16 reporterBps) public {
        slashWei = uint96(bound(slashWei, 0, 2 * uint256(NODE_STAKE)));
        reporterBps = uint16(bound(reporterBps, 0, 10_000));
        ITaskManager.Config memory c = _defaultConfig();
        c.noShowSlashWei = slashWei;
        c.reporterRewardBps = reporterBps;
        tm.setConfig(c);

        uint256 taskId = _request(3, 2);
        address noShow = tm.getCommittee(taskId)[0];
        vm.warp(block.timestamp + ACCEPT_WINDOW + 1);
        uint256 tmBefore = token.balanceOf(address(tm));
        vm.prank(reporter);
        tm.slashNoShow(taskId, 0);

        uint256 expected = slashWei < NODE_STAKE ? slashWei : NODE_STAKE;
        vm.assertEq(NODE_STAKE - nodes.getNode(noShow).stakeWei, expected, "never more than the stake");
        uint256 reporterShare = expected * reporterBps / 10_000;
        vm.assertEq(tm.getOwed(reporter), reporterShare, "reporter share");
        vm.assertEq(tm.getOwed(treasury), expected - reporterShare, "treasury rest");
        vm.assertEq(token.balanceOf(address(tm)) - tmBefore, expected, "tokens arrived");
    }
}
