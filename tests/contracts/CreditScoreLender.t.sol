// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {Fixture} from "./utils/Fixture.sol";
import {CreditScoreLender} from "../../contracts/examples/CreditScoreLender.sol";
import {IDataOracle} from "../../contracts/interfaces/IDataOracle.sol";
import {ITaskManager} from "../../contracts/interfaces/ITaskManager.sol";
import {IDataRegistry} from "../../contracts/interfaces/IDataRegistry.sol";

/// @notice The example lender end to end: request over two banks' datasets, quorum result,
///         callback, credit limit; and every guard of the callback.
contract CreditScoreLenderTest is Fixture {
    uint96 private constant PRICE_A = 7e18;
    uint96 private constant PRICE_B = 11e18;
    uint16 private constant LIMIT_BPS = 3_000; // 30% of the segment's mean income
    uint256 private constant MEAN_INCOME = 5_123_456; // 51,234.56 with 2 decimals
    bytes32 private constant SEGMENT_SPEC = keccak256("mean(income) over bankA+bankB where segment = 'nurses, 30-40'");

    address private lenderOwner = address(0x1E4D);
    address private applicant = address(0xA991);
    uint64 private s_idA;
    uint64 private s_idB;
    CreditScoreLender private s_lender;

    function setUp() public {
        _deploy(NODE_COUNT);
        vm.prevrandao(bytes32(uint256(0xC4ED17)));
        s_idA = _registerDataset(bankA, PRICE_A);
        s_idB = _registerDataset(bankB, PRICE_B);
        s_lender = new CreditScoreLender(oracle, tm, token, data, s_idA, s_idB, LIMIT_BPS, lenderOwner);
        _fund(address(s_lender), 1_000e18);
    }

    function _requestLimit() private returns (uint256 requestId, uint256 taskId) {
        vm.prank(lenderOwner);
        requestId = s_lender.requestCreditLimit(
            applicant, SEGMENT_SPEC, "ipfs://segment-spec", FEE, uint64(block.timestamp + 1 days), 3, 2
        );
        taskId = oracle.getRequest(requestId).taskId;
    }

    function _signedResult(uint256 taskId, bytes memory output) private returns (bytes[] memory) {
        _acceptAll(taskId);
        return _signSorted(taskId, _firstKeys(taskId, 2), RESULT_HASH, output);
    }

    function test_Constructor_SetsParameters() public view {
        vm.assertEq(address(s_lender.getOracle()), address(oracle), "oracle");
        (uint64 a, uint64 b) = s_lender.getBankDatasets();
        vm.assertEq(a, s_idA, "bank A");
        vm.assertEq(b, s_idB, "bank B");
        vm.assertEq(s_lender.getLimitBps(), LIMIT_BPS, "bps");
        vm.assertEq(s_lender.owner(), lenderOwner, "owner");
    }

    function test_EndToEnd_RequestFulfillSetsTheCreditLimit() public {
        uint256 lenderBefore = token.balanceOf(address(s_lender));
        vm.expectEmit(true, true, true, true, address(s_lender));
        emit CreditScoreLender.CreditLimitRequested(1, applicant, SEGMENT_SPEC);
        (uint256 requestId, uint256 taskId) = _requestLimit();

        ITaskManager.Task memory t = tm.getTask(taskId);
        vm.assertEq(t.kind, 3, "statistics task");
        vm.assertEq(t.requester, address(s_lender), "lender is the requester");
        uint64[] memory ids = tm.getTaskDatasets(taskId);
        vm.assertEq(ids.length, 2, "both banks");
        vm.assertEq(token.balanceOf(address(s_lender)), lenderBefore - FEE - PRICE_A - PRICE_B, "lender paid");
        vm.assertEq(token.allowance(address(s_lender), address(oracle)), 0, "exact approval used up");
        CreditScoreLender.Application memory app = s_lender.getApplication(requestId);
        vm.assertEq(app.applicant, applicant, "applicant");
        vm.assertTrue(app.pending, "pending");

        bytes memory output = abi.encode(MEAN_INCOME);
        bytes[] memory sigs = _signedResult(taskId, output);
        uint256 expectedLimit = MEAN_INCOME * LIMIT_BPS / 10_000;
        vm.expectEmit(true, true, true, true, address(s_lender));
        emit CreditScoreLender.CreditLimitSet(requestId, applicant, MEAN_INCOME, expectedLimit);
        vm.prank(stranger);
        oracle.fulfill(requestId, RESULT_HASH, output, 1, sigs);

        vm.assertEq(s_lender.getCreditLimit(applicant), expectedLimit, "credit limit");
        vm.assertFalse(s_lender.getApplication(requestId).pending, "answered");
        vm.assertTrue(oracle.getRequest(requestId).callbackSucceeded, "callback ok");
        vm.assertEq(tm.getOwed(bankA), PRICE_A, "bank A paid");
        vm.assertEq(tm.getOwed(bankB), PRICE_B, "bank B paid");
    }

    function test_Deliver_ResultFinalizedDirectly() public {
        (uint256 requestId, uint256 taskId) = _requestLimit();
        bytes memory output = abi.encode(MEAN_INCOME);
        tm.submitResult(taskId, RESULT_HASH, output, 1, _signedResult(taskId, output));
        oracle.deliver(requestId, output);
        vm.assertEq(s_lender.getCreditLimit(applicant), MEAN_INCOME * LIMIT_BPS / 10_000, "limit set");
    }

    function test_MalformedOutputFailsOnlyTheCallback() public {
        (uint256 requestId, uint256 taskId) = _requestLimit();
        bytes memory output = abi.encode(MEAN_INCOME, uint256(1));
        oracle.fulfill(requestId, RESULT_HASH, output, 1, _signedResult(taskId, output));
        vm.assertFalse(oracle.getRequest(requestId).callbackSucceeded, "lender rejected it");
        vm.assertTrue(oracle.getRequest(requestId).delivered, "still delivered");
        vm.assertTrue(s_lender.getApplication(requestId).pending, "application still open");
        vm.assertEq(s_lender.getCreditLimit(applicant), 0, "no limit");
        vm.assertEq(uint8(tm.getTask(taskId).state), uint8(ITaskManager.TaskState.Finalized), "task paid anyway");
    }

    function test_ClaimRefundsAndWithdrawTokens() public {
        (, uint256 taskId) = _requestLimit();
        vm.warp(tm.getTask(taskId).deadline + 1);
        tm.refund(taskId);
        uint256 before = token.balanceOf(address(s_lender));
        vm.prank(lenderOwner);
        uint256 got = s_lender.claimRefunds();
        vm.assertEq(got, FEE + PRICE_A + PRICE_B, "escrow back");
        vm.assertEq(token.balanceOf(address(s_lender)), before + got, "in the lender");
        uint256 all = token.balanceOf(address(s_lender));
        vm.prank(lenderOwner);
        s_lender.withdrawTokens(lenderOwner, all);
        vm.assertEq(token.balanceOf(lenderOwner), all, "moved out");
    }

    function test_SetLimitBps() public {
        vm.expectEmit(true, true, true, true, address(s_lender));
        emit CreditScoreLender.LimitBpsChanged(10_000);
        vm.prank(lenderOwner);
        s_lender.setLimitBps(10_000);
        vm.assertEq(s_lender.getLimitBps(), 10_000, "stored");
    }

    function test_RevertWhen_CallbackNotFromTheOracle() public {
        (uint256 requestId,) = _requestLimit();
        vm.expectRevert(abi.encodeWithSelector(CreditScoreLender.CreditScoreLender__OnlyOracle.selector, stranger));
        vm.prank(stranger);
        s_lender.onDatumResult(requestId, abi.encode(MEAN_INCOME));
    }

    function test_RevertWhen_CallbackForAnotherRequest() public {
        vm.expectRevert(abi.encodeWithSelector(CreditScoreLender.CreditScoreLender__UnknownRequest.selector, 77));
        vm.prank(address(oracle));
        s_lender.onDatumResult(77, abi.encode(MEAN_INCOME));
    }

    function test_RevertWhen_CallbackOutputIsNotOneWord() public {
        (uint256 requestId,) = _requestLimit();
        vm.expectRevert(abi.encodeWithSelector(CreditScoreLender.CreditScoreLender__BadOutput.selector, 31));
        vm.prank(address(oracle));
        s_lender.onDatumResult(requestId, new bytes(31));
    }

    function test_RevertWhen_CallbackAnswersTwice() public {
        (uint256 requestId,) = _requestLimit();
        vm.prank(address(oracle));
        s_lender.onDatumResult(requestId, abi.encode(MEAN_INCOME));
        vm.expectRevert(abi.encodeWithSelector(CreditScoreLender.CreditScoreLender__UnknownRequest.selector, requestId));
        vm.prank(address(oracle));
        s_lender.onDatumResult(requestId, abi.encode(MEAN_INCOME));
    }

    function test_RevertWhen_RequestByNonOwner() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        vm.prank(stranger);
        s_lender.requestCreditLimit(applicant, SEGMENT_SPEC, "ipfs://x", FEE, uint64(block.timestamp + 1 days), 3, 2);
    }

    function test_RevertWhen_RequestForZeroApplicant() public {
        vm.expectRevert(CreditScoreLender.CreditScoreLender__BadApplicant.selector);
        vm.prank(lenderOwner);
        s_lender.requestCreditLimit(address(0), SEGMENT_SPEC, "ipfs://x", FEE, uint64(block.timestamp + 1 days), 3, 2);
    }

    function test_RevertWhen_BankDoesNotConsentToTheLender() public {
        IDataRegistry.ConsentPolicy memory closed = _openPolicy();
        closed.open = false;
        vm.prank(bankB);
        data.setPolicy(s_idB, closed, PRICE_B);
        vm.expectRevert(
            abi.encodeWithSelector(IDataRegistry.DataRegistry__RequesterNotAllowed.selector, s_idB, address(s_lender))
        );
        vm.prank(lenderOwner);
        s_lender.requestCreditLimit(applicant, SEGMENT_SPEC, "ipfs://x", FEE, uint64(block.timestamp + 1 days), 3, 2);
    }

    function test_RevertWhen_LimitBpsAboveOneHundredPercent() public {
        vm.expectRevert(abi.encodeWithSelector(CreditScoreLender.CreditScoreLender__BadLimitBps.selector, 10_001));
        vm.prank(lenderOwner);
        s_lender.setLimitBps(10_001);
        vm.expectRevert(abi.encodeWithSelector(CreditScoreLender.CreditScoreLender__BadLimitBps.selector, 10_001));
        new CreditScoreLender(oracle, tm, token, data, s_idA, s_idB, 10_001, lenderOwner);
    }

    function test_RevertWhen_OwnerFunctionsByNonOwner() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        vm.prank(stranger);
        s_lender.setLimitBps(1);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        vm.prank(stranger);
        s_lender.claimRefunds();
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, stranger));
        vm.prank(stranger);
        s_lender.withdrawTokens(stranger, 1);
    }
}
