// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

import {DatumToken} from "../../contracts/DatumToken.sol";
import {TestBase} from "./utils/Vm.sol";

contract DatumTokenTest is TestBase {
    bytes32 internal constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");
    uint256 internal constant SUPPLY = 1_000_000_000 ether;
    uint256 internal constant HOLDER_KEY = 0xA11CE;

    DatumToken internal s_token;
    address internal s_holder;
    address internal s_spender = address(0x5BE2);

    function setUp() public {
        s_holder = vm.addr(HOLDER_KEY);
        s_token = new DatumToken(s_holder, SUPPLY);
    }

    function _permitDigest(address owner, address spender, uint256 value, uint256 nonce, uint256 deadline)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, value, nonce, deadline));
        return keccak256(abi.encodePacked("\x19\x01", s_token.DOMAIN_SEPARATOR(), structHash));
    }

    function test_Constructor_MintsSupplyToHolder() public view {
        vm.assertEq(s_token.name(), "Datum", "name");
        vm.assertEq(s_token.symbol(), "DTM", "symbol");
        vm.assertEq(uint256(s_token.decimals()), 18, "decimals");
        vm.assertEq(s_token.totalSupply(), SUPPLY, "supply");
        vm.assertEq(s_token.balanceOf(s_holder), SUPPLY, "holder balance");
    }

    function test_DomainSeparator_BindsNameChainAndContract() public view {
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("Datum"),
                keccak256("1"),
                block.chainid,
                address(s_token)
            )
        );
        vm.assertEq(s_token.DOMAIN_SEPARATOR(), expected, "domain");
    }

    function test_Transfer_MovesBalance() public {
        vm.prank(s_holder);
        s_token.transfer(s_spender, 5 ether);
        vm.assertEq(s_token.balanceOf(s_spender), 5 ether, "to");
        vm.assertEq(s_token.balanceOf(s_holder), SUPPLY - 5 ether, "from");
    }

    function test_TransferFrom_SpendsAllowance() public {
        vm.prank(s_holder);
        s_token.approve(s_spender, 10 ether);
        vm.prank(s_spender);
        s_token.transferFrom(s_holder, address(0xCAFE), 4 ether);
        vm.assertEq(s_token.balanceOf(address(0xCAFE)), 4 ether, "moved");
        vm.assertEq(s_token.allowance(s_holder, s_spender), 6 ether, "allowance left");
    }

    function test_Permit_SetsAllowanceAndBumpsNonce() public {
        uint256 deadline = block.timestamp + 1 hours;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(HOLDER_KEY, _permitDigest(s_holder, s_spender, 7 ether, 0, deadline));
        s_token.permit(s_holder, s_spender, 7 ether, deadline, v, r, s);
        vm.assertEq(s_token.allowance(s_holder, s_spender), 7 ether, "allowance");
        vm.assertEq(s_token.nonces(s_holder), 1, "nonce");
    }

    function test_RevertWhen_ConstructorHolderIsZero() public {
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InvalidReceiver.selector, address(0)));
        new DatumToken(address(0), 1);
    }

    function test_RevertWhen_TransferExceedsBalance() public {
        vm.expectRevert(abi.encodeWithSelector(IERC20Errors.ERC20InsufficientBalance.selector, s_spender, 0, 1));
        vm.prank(s_spender);
        s_token.transfer(s_holder, 1);
    }

    function test_RevertWhen_TransferFromExceedsAllowance() public {
        vm.prank(s_holder);
        s_token.approve(s_spender, 1 ether);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, s_spender, 1 ether, 2 ether)
        );
        vm.prank(s_spender);
        s_token.transferFrom(s_holder, s_spender, 2 ether);
    }

    function test_RevertWhen_PermitExpired() public {
        uint256 deadline = block.timestamp;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(HOLDER_KEY, _permitDigest(s_holder, s_spender, 1, 0, deadline));
        vm.warp(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612ExpiredSignature.selector, deadline));
        s_token.permit(s_holder, s_spender, 1, deadline, v, r, s);
    }

    function test_RevertWhen_PermitSignedByAnotherKey() public {
        uint256 deadline = block.timestamp + 1;
        uint256 otherKey = 0xB0B;
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(otherKey, _permitDigest(s_holder, s_spender, 1, 0, deadline));
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612InvalidSigner.selector, vm.addr(otherKey), s_holder));
        s_token.permit(s_holder, s_spender, 1, deadline, v, r, s);
    }

    function test_RevertWhen_PermitReplayed() public {
        uint256 deadline = block.timestamp + 1;
        bytes32 digest = _permitDigest(s_holder, s_spender, 1, 0, deadline);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(HOLDER_KEY, digest);
        s_token.permit(s_holder, s_spender, 1, deadline, v, r, s);
        // The nonce moved on, so the same signature now recovers to some other address.
        address recovered = ecrecover(_permitDigest(s_holder, s_spender, 1, 1, deadline), v, r, s);
        vm.expectRevert(abi.encodeWithSelector(ERC20Permit.ERC2612InvalidSigner.selector, recovered, s_holder));
        s_token.permit(s_holder, s_spender, 1, deadline, v, r, s);
    }

    function testFuzz_TransferConservesSupply(uint256 amount, address to) public {
        vm.assume(to != address(0) && to != s_holder);
        amount = bound(amount, 0, SUPPLY);
        vm.prank(s_holder);
        s_token.transfer(to, amount);
        vm.assertEq(s_token.balanceOf(to) + s_token.balanceOf(s_holder), SUPPLY, "conserved");
        vm.assertEq(s_token.totalSupply(), SUPPLY, "supply fixed");
    }
}
