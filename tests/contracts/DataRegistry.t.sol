// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {DataRegistry} from "../../contracts/DataRegistry.sol";
import {IDataRegistry} from "../../contracts/interfaces/IDataRegistry.sol";
import {TestBase} from "./utils/Vm.sol";

contract DataRegistryTest is TestBase {
    uint32 internal constant UNLIMITED = type(uint32).max;
    string internal constant URI = "ipfs://bafy-dataset-metadata";
    bytes32 internal constant HASH = keccak256("metadata");

    DataRegistry internal s_reg;
    address internal s_owner = address(0xA11CE);
    address internal s_dataOwner = address(0xDA7A);
    address internal s_requester = address(0x5EE4);
    // The test contract acts as the TaskManager.

    function setUp() public {
        vm.warp(1_700_000_000);
        s_reg = new DataRegistry(s_owner);
        vm.prank(s_owner);
        s_reg.setTaskManager(address(this));
    }

    function _policy(uint64 kinds, bool open, uint64 expiresAt, uint32 uses)
        internal
        pure
        returns (IDataRegistry.ConsentPolicy memory)
    {
        return IDataRegistry.ConsentPolicy({
            allowedKinds: kinds, open: open, expiresAt: expiresAt, remainingUses: uses, minGroupSize: 10
        });
    }

    function _dataset(IDataRegistry.ConsentPolicy memory policy) internal returns (uint64 id) {
        vm.prank(s_dataOwner);
        id = s_reg.registerDataset(URI, HASH, 5_000, 3 ether, policy);
    }

    function _openDataset() internal returns (uint64) {
        return _dataset(_policy(0x6, true, 0, UNLIMITED)); // kinds 1 and 2
    }

    function _assertPolicy(IDataRegistry.ConsentPolicy memory a, IDataRegistry.ConsentPolicy memory b) internal pure {
        vm.assertEq(uint256(a.allowedKinds), uint256(b.allowedKinds), "kinds");
        vm.assertEq(a.open, b.open, "open");
        vm.assertEq(uint256(a.expiresAt), uint256(b.expiresAt), "expiry");
        vm.assertEq(uint256(a.remainingUses), uint256(b.remainingUses), "uses");
        vm.assertEq(uint256(a.minGroupSize), uint256(b.minGroupSize), "min group");
    }

    // ------------------------------------------------------------------ constructor / admin

    function test_Constructor_SetsOwner() public view {
        vm.assertEq(s_reg.owner(), s_owner, "owner");
        vm.assertEq(uint256(s_reg.getAssetCount()), 0, "empty");
        vm.assertEq(s_reg.getTaskManager(), address(this), "task manager");
    }

    function test_SetTaskManager_SetsOnce() public {
        DataRegistry reg = new DataRegistry(s_owner);
        vm.expectEmit(true, true, true, true, address(reg));
        emit IDataRegistry.TaskManagerSet(address(0x7A5C));
        vm.prank(s_owner);
        reg.setTaskManager(address(0x7A5C));
        vm.assertEq(reg.getTaskManager(), address(0x7A5C), "set");
    }

    function test_RevertWhen_SetTaskManagerNotOwner() public {
        DataRegistry reg = new DataRegistry(s_owner);
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableUnauthorizedAccount.selector, address(this)));
        reg.setTaskManager(address(0x7A5C));
    }

    function test_RevertWhen_SetTaskManagerZero() public {
        DataRegistry reg = new DataRegistry(s_owner);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__TaskManagerAlreadySet.selector));
        vm.prank(s_owner);
        reg.setTaskManager(address(0));
    }

    function test_RevertWhen_SetTaskManagerTwice() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__TaskManagerAlreadySet.selector));
        vm.prank(s_owner);
        s_reg.setTaskManager(address(0x7A5C));
    }

    function test_RevertWhen_ConstructorOwnerIsZero() public {
        vm.expectRevert(abi.encodeWithSelector(Ownable.OwnableInvalidOwner.selector, address(0)));
        new DataRegistry(address(0));
    }

    // ------------------------------------------------------------------ registration

    function test_RegisterDataset_StoresAssetAndEmits() public {
        IDataRegistry.ConsentPolicy memory p = _policy(0x6, false, 1_800_000_000, 7);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.DatasetRegistered(1, s_dataOwner, HASH, 5_000, 3 ether, URI);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.ConsentGranted(1, p, 3 ether);
        uint64 id = _dataset(p);

        vm.assertEq(uint256(id), 1, "ids start at 1");
        vm.assertEq(uint256(s_reg.getAssetCount()), 1, "count");
        IDataRegistry.Asset memory a = s_reg.getAsset(id);
        vm.assertEq(a.owner, s_dataOwner, "owner");
        vm.assertEq(uint256(a.priceWei), 3 ether, "price");
        vm.assertFalse(a.isModel, "dataset");
        vm.assertFalse(a.revoked, "not revoked");
        vm.assertEq(uint256(a.rowCount), 5_000, "rows");
        vm.assertEq(a.metadataHash, HASH, "hash");
        vm.assertEq(a.metadataURI, URI, "uri");
        _assertPolicy(a.policy, p);
    }

    function test_RegisterModel_StoresAssetAndEmits() public {
        _openDataset();
        IDataRegistry.ConsentPolicy memory p = _policy(0x1, true, 0, UNLIMITED);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.ModelRegistered(2, s_dataOwner, HASH, 9 ether, "ipfs://model");
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.ConsentGranted(2, p, 9 ether);
        vm.prank(s_dataOwner);
        uint64 id = s_reg.registerModel("ipfs://model", HASH, 9 ether, p);
        vm.assertEq(uint256(id), 2, "second id");
        IDataRegistry.Asset memory a = s_reg.getAsset(id);
        vm.assertTrue(a.isModel, "model");
        vm.assertEq(uint256(a.rowCount), 0, "no rows");
        vm.assertEq(uint256(a.priceWei), 9 ether, "price");
        vm.assertEq(a.metadataURI, "ipfs://model", "uri");
    }

    function test_RegisterDataset_AcceptsMaxLengthURI() public {
        vm.prank(s_dataOwner);
        uint64 id = s_reg.registerDataset(string(new bytes(256)), HASH, 1, 0, _policy(1, true, 0, 1));
        vm.assertEq(bytes(s_reg.getAsset(id).metadataURI).length, 256, "uri length");
    }

    function test_RevertWhen_RegisterDatasetEmptyURI() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadMetadata.selector));
        s_reg.registerDataset("", HASH, 1, 0, _policy(1, true, 0, 1));
    }

    function test_RevertWhen_RegisterDatasetURITooLong() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadMetadata.selector));
        s_reg.registerDataset(string(new bytes(257)), HASH, 1, 0, _policy(1, true, 0, 1));
    }

    function test_RevertWhen_RegisterDatasetZeroHash() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadMetadata.selector));
        s_reg.registerDataset(URI, bytes32(0), 1, 0, _policy(1, true, 0, 1));
    }

    function test_RevertWhen_RegisterModelEmptyURI() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadMetadata.selector));
        s_reg.registerModel("", HASH, 0, _policy(1, true, 0, 1));
    }

    function test_RevertWhen_RegisterModelURITooLong() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadMetadata.selector));
        s_reg.registerModel(string(new bytes(257)), HASH, 0, _policy(1, true, 0, 1));
    }

    function test_RevertWhen_RegisterModelZeroHash() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadMetadata.selector));
        s_reg.registerModel(URI, bytes32(0), 0, _policy(1, true, 0, 1));
    }

    // ------------------------------------------------------------------ owner actions

    function test_SetPolicy_ReplacesPolicyAndPrice() public {
        uint64 id = _openDataset();
        IDataRegistry.ConsentPolicy memory p = _policy(0x8, false, 1_900_000_000, 3);
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.ConsentGranted(id, p, 11 ether);
        vm.prank(s_dataOwner);
        s_reg.setPolicy(id, p, 11 ether);
        IDataRegistry.Asset memory a = s_reg.getAsset(id);
        _assertPolicy(a.policy, p);
        vm.assertEq(uint256(a.priceWei), 11 ether, "price");
    }

    function test_RevertWhen_SetPolicyUnknownAsset() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__UnknownAsset.selector, 1));
        s_reg.setPolicy(1, _policy(1, true, 0, 1), 0);
    }

    function test_RevertWhen_SetPolicyNotOwner() public {
        uint64 id = _openDataset();
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__NotOwner.selector, id, s_requester));
        vm.prank(s_requester);
        s_reg.setPolicy(id, _policy(1, true, 0, 1), 0);
    }

    function test_RevertWhen_SetPolicyRevoked() public {
        uint64 id = _openDataset();
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__Revoked.selector, id));
        vm.prank(s_dataOwner);
        s_reg.setPolicy(id, _policy(1, true, 0, 1), 0);
    }

    function test_SetRequesterAllowed_AddsAndRemoves() public {
        uint64 id = _dataset(_policy(0x6, false, 0, UNLIMITED));
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.RequesterAllowed(id, s_requester, true);
        vm.prank(s_dataOwner);
        s_reg.setRequesterAllowed(id, s_requester, true);
        vm.assertTrue(s_reg.isRequesterAllowed(id, s_requester), "allowed");
        vm.assertTrue(s_reg.isAllowed(id, s_requester, 1), "consent");

        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.RequesterAllowed(id, s_requester, false);
        vm.prank(s_dataOwner);
        s_reg.setRequesterAllowed(id, s_requester, false);
        vm.assertFalse(s_reg.isRequesterAllowed(id, s_requester), "removed");
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 1), "no consent");
    }

    function test_RevertWhen_SetRequesterAllowedUnknownAsset() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__UnknownAsset.selector, 3));
        s_reg.setRequesterAllowed(3, s_requester, true);
    }

    function test_RevertWhen_SetRequesterAllowedNotOwner() public {
        uint64 id = _openDataset();
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__NotOwner.selector, id, s_requester));
        vm.prank(s_requester);
        s_reg.setRequesterAllowed(id, s_requester, true);
    }

    function test_RevertWhen_SetRequesterAllowedRevoked() public {
        uint64 id = _openDataset();
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__Revoked.selector, id));
        vm.prank(s_dataOwner);
        s_reg.setRequesterAllowed(id, s_requester, true);
    }

    function test_Revoke_BlocksUse() public {
        uint64 id = _openDataset();
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.AssetRevoked(id);
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
        vm.assertTrue(s_reg.getAsset(id).revoked, "revoked");
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 1), "no consent");
    }

    function test_RevertWhen_RevokeUnknownAsset() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__UnknownAsset.selector, 0));
        s_reg.revoke(0);
    }

    function test_RevertWhen_RevokeNotOwner() public {
        uint64 id = _openDataset();
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__NotOwner.selector, id, s_owner));
        vm.prank(s_owner);
        s_reg.revoke(id);
    }

    function test_RevertWhen_RevokeTwice() public {
        uint64 id = _openDataset();
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__Revoked.selector, id));
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
    }

    // ------------------------------------------------------------------ consume

    function test_Consume_DecrementsUsesAndReturnsOwnerAndPrice() public {
        uint64 id = _dataset(_policy(0x6, true, 0, 2));
        vm.expectEmit(true, true, true, true, address(s_reg));
        emit IDataRegistry.AssetConsumed(id, s_requester, 2, 1);
        (address owner, uint96 price) = s_reg.consume(id, s_requester, 2);
        vm.assertEq(owner, s_dataOwner, "owner");
        vm.assertEq(uint256(price), 3 ether, "price");
        vm.assertEq(uint256(s_reg.getAsset(id).policy.remainingUses), 1, "one left");
        s_reg.consume(id, s_requester, 1);
        vm.assertEq(uint256(s_reg.getAsset(id).policy.remainingUses), 0, "spent");
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 1), "no uses");
    }

    function test_Consume_UnlimitedUsesNeverDecrement() public {
        uint64 id = _openDataset();
        for (uint256 i; i < 3; ++i) {
            vm.expectEmit(true, true, true, true, address(s_reg));
            emit IDataRegistry.AssetConsumed(id, s_requester, 1, UNLIMITED);
            s_reg.consume(id, s_requester, 1);
        }
        vm.assertEq(uint256(s_reg.getAsset(id).policy.remainingUses), UNLIMITED, "unlimited");
    }

    function test_Consume_AllowListedRequester() public {
        uint64 id = _dataset(_policy(0x6, false, 0, UNLIMITED));
        vm.prank(s_dataOwner);
        s_reg.setRequesterAllowed(id, s_requester, true);
        (address owner,) = s_reg.consume(id, s_requester, 1);
        vm.assertEq(owner, s_dataOwner, "consumed");
    }

    function test_Consume_AtExpiryInstant() public {
        uint64 id = _dataset(_policy(0x6, true, uint64(block.timestamp), UNLIMITED));
        s_reg.consume(id, s_requester, 1); // expires strictly after expiresAt
        vm.assertTrue(s_reg.isAllowed(id, s_requester, 1), "still allowed at expiresAt");
    }

    function test_Consume_Kind63() public {
        uint64 id = _dataset(_policy(uint64(1) << 63, true, 0, UNLIMITED));
        s_reg.consume(id, s_requester, 63);
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 62), "kind 62 not allowed");
    }

    function test_RevertWhen_ConsumeNotTaskManager() public {
        uint64 id = _openDataset();
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__OnlyTaskManager.selector, s_requester));
        vm.prank(s_requester);
        s_reg.consume(id, s_requester, 1);
    }

    function test_RevertWhen_ConsumeUnknownAsset() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__UnknownAsset.selector, 5));
        s_reg.consume(5, s_requester, 1);
    }

    function test_RevertWhen_ConsumeRevoked() public {
        uint64 id = _openDataset();
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__Revoked.selector, id));
        s_reg.consume(id, s_requester, 1);
    }

    function test_RevertWhen_ConsumeExpired() public {
        uint64 expiresAt = uint64(block.timestamp) + 1 days;
        uint64 id = _dataset(_policy(0x6, true, expiresAt, UNLIMITED));
        vm.warp(expiresAt + 1);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__Expired.selector, id, expiresAt));
        s_reg.consume(id, s_requester, 1);
    }

    function test_RevertWhen_ConsumeKindNotAllowed() public {
        uint64 id = _openDataset();
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__KindNotAllowed.selector, id, 0));
        s_reg.consume(id, s_requester, 0);
    }

    function test_RevertWhen_ConsumeKindOutOfRange() public {
        uint64 id = _dataset(_policy(type(uint64).max, true, 0, UNLIMITED));
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__KindNotAllowed.selector, id, 64));
        s_reg.consume(id, s_requester, 64);
    }

    function test_RevertWhen_ConsumeRequesterNotAllowed() public {
        uint64 id = _dataset(_policy(0x6, false, 0, UNLIMITED));
        vm.expectRevert(
            abi.encodeWithSelector(IDataRegistry.DataRegistry__RequesterNotAllowed.selector, id, s_requester)
        );
        s_reg.consume(id, s_requester, 1);
    }

    function test_RevertWhen_ConsumeNoUsesLeft() public {
        uint64 id = _dataset(_policy(0x6, true, 0, 0));
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__NoUsesLeft.selector, id));
        s_reg.consume(id, s_requester, 1);
    }

    function test_RevertWhen_ConsumeChecksRevokedBeforeOtherFailures() public {
        // Expired, wrong kind, not allowed, no uses: the revoked check comes first.
        uint64 id = _dataset(_policy(0, false, uint64(block.timestamp), 0));
        vm.prank(s_dataOwner);
        s_reg.revoke(id);
        vm.warp(block.timestamp + 10);
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__Revoked.selector, id));
        s_reg.consume(id, s_requester, 1);
    }

    // ------------------------------------------------------------------ views

    function test_IsAllowed_MirrorsConsume() public {
        uint64 id = _dataset(_policy(0x6, false, uint64(block.timestamp) + 100, 1));
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 1), "not listed");
        vm.prank(s_dataOwner);
        s_reg.setRequesterAllowed(id, s_requester, true);
        vm.assertTrue(s_reg.isAllowed(id, s_requester, 1), "listed");
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 0), "kind 0");
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 200), "kind 200");
        vm.assertFalse(s_reg.isAllowed(id + 1, s_requester, 1), "unknown id");
        vm.assertFalse(s_reg.isAllowed(0, s_requester, 1), "id 0");
        vm.assertEq(uint256(s_reg.getAsset(id).policy.remainingUses), 1, "isAllowed consumes nothing");
        vm.warp(block.timestamp + 101);
        vm.assertFalse(s_reg.isAllowed(id, s_requester, 1), "expired");
    }

    function test_RevertWhen_GetAssetUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__UnknownAsset.selector, 1));
        s_reg.getAsset(1);
    }

    function test_GetAssets_Pages() public {
        for (uint256 i; i < 5; ++i) {
            vm.prank(s_dataOwner);
            s_reg.registerDataset(URI, HASH, uint64(100 + i), 0, _policy(1, true, 0, 1));
        }
        (uint64[] memory ids, IDataRegistry.Asset[] memory assets) = s_reg.getAssets(1, 3);
        vm.assertEq(ids.length, 3, "page");
        for (uint256 i; i < 3; ++i) {
            vm.assertEq(uint256(ids[i]), i + 2, "id");
            vm.assertEq(uint256(assets[i].rowCount), 101 + i, "rows");
        }
        (ids, assets) = s_reg.getAssets(4, 100);
        vm.assertEq(ids.length, 1, "tail");
        vm.assertEq(uint256(ids[0]), 5, "last id");
        (ids, assets) = s_reg.getAssets(5, 1);
        vm.assertEq(ids.length, 0, "past the end");
        vm.assertEq(assets.length, 0, "past the end assets");
    }

    function test_RevertWhen_GetAssetsLimitZero() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadPage.selector, 0, 0));
        s_reg.getAssets(0, 0);
    }

    function test_RevertWhen_GetAssetsLimitTooLarge() public {
        vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__BadPage.selector, 2, 101));
        s_reg.getAssets(2, 101);
    }

    // ------------------------------------------------------------------ fuzz

    function testFuzz_ConsumeUsesArithmetic(uint32 uses, uint8 consumes) public {
        uses = uint32(bound(uses, 0, 20));
        consumes = uint8(bound(consumes, 0, 25));
        uint64 id = _dataset(_policy(0x2, true, 0, uses));
        for (uint256 i; i < consumes; ++i) {
            if (i < uses) {
                s_reg.consume(id, s_requester, 1);
            } else {
                vm.expectRevert(abi.encodeWithSelector(IDataRegistry.DataRegistry__NoUsesLeft.selector, id));
                s_reg.consume(id, s_requester, 1);
            }
        }
        uint256 left = consumes >= uses ? 0 : uses - consumes;
        vm.assertEq(uint256(s_reg.getAsset(id).policy.remainingUses), left, "remaining");
        vm.assertEq(s_reg.isAllowed(id, s_requester, 1), left != 0, "isAllowed agrees");
    }

    function testFuzz_IsAllowedAgreesWithConsume(
        uint64 kinds,
        bool open,
        uint32 expiryOffset,
        bool listed,
        uint8 kind,
        uint32 uses
    ) public {
        uint64 expiresAt = expiryOffset == 0 ? 0 : uint64(block.timestamp) - 500 + (expiryOffset % 1000);
        uint64 id = _dataset(_policy(kinds, open, expiresAt, uses));
        if (listed) {
            vm.prank(s_dataOwner);
            s_reg.setRequesterAllowed(id, s_requester, true);
        }
        bool allowed = s_reg.isAllowed(id, s_requester, kind);
        bool expected = (expiresAt == 0 || block.timestamp <= expiresAt) && kind < 64 && ((kinds >> kind) & 1) == 1
            && (open || listed) && uses != 0;
        vm.assertEq(allowed, expected, "isAllowed");
        if (!allowed) vm.expectRevert();
        s_reg.consume(id, s_requester, kind);
    }
}
