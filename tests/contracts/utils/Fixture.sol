// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TestBase} from "./Vm.sol";

import {DatumToken} from "../../../contracts/DatumToken.sol";
import {NodeRegistry} from "../../../contracts/NodeRegistry.sol";
import {DataRegistry} from "../../../contracts/DataRegistry.sol";
import {TaskManager} from "../../../contracts/TaskManager.sol";
import {DataOracle} from "../../../contracts/DataOracle.sol";
import {ITaskManager} from "../../../contracts/interfaces/ITaskManager.sol";
import {IDataRegistry} from "../../../contracts/interfaces/IDataRegistry.sol";

/// @notice Shared deployment for the TaskManager / DataOracle suites: the token, both registries,
///         the TaskManager and the oracle, wired together, and `NODE_COUNT` staked nodes whose
///         operator and signer keys are known, so tests can sign results with `vm.sign`.
abstract contract Fixture is TestBase {
    uint256 internal constant SUPPLY = 1e27;
    uint96 internal constant MIN_STAKE = 100e18;
    uint96 internal constant NODE_STAKE = 1_000e18;
    uint64 internal constant UNBONDING_DELAY = 7 days;
    uint8 internal constant NODE_COUNT = 6;
    uint32 internal constant MAX_CALLBACK_GAS = 500_000;

    uint16 internal constant PROTOCOL_FEE_BPS = 1_000;
    uint16 internal constant REPORTER_BPS = 2_000;
    uint32 internal constant ACCEPT_WINDOW = 1 hours;
    uint96 internal constant NO_SHOW_SLASH = 50e18;
    uint96 internal constant EQUIVOCATION_SLASH = 200e18;
    uint64 internal constant MAX_DURATION = 7 days;

    uint96 internal constant FEE = 90e18;
    uint64 internal constant START = 1_700_000_000;
    uint8 internal constant KIND_STATS = 3;

    bytes32 internal constant SPEC_HASH = keccak256("spec: mean(income) where segment = 7");
    string internal constant SPEC_URI = "ipfs://spec-mean-income-segment-7";
    bytes32 internal constant RESULT_HASH = keccak256("ciphertext of the private result");

    DatumToken internal token;
    NodeRegistry internal nodes;
    DataRegistry internal data;
    TaskManager internal tm;
    DataOracle internal oracle;

    address internal treasury = address(0x7EA5);
    address internal requester = address(0xBEEF);
    address internal stranger = address(0x5A5A);
    address internal reporter = address(0x4E90);
    address internal bankA = address(0xBA4A);
    address internal bankB = address(0xBA4B);

    address[] internal operators;
    address[] internal signerAddrs;
    mapping(address operator => uint256 key) internal signerKeyOf;
    mapping(address operator => uint256 key) internal operatorKeyOf;

    /// @dev Deploy everything with `nodeCount` nodes of NODE_STAKE each.
    function _deploy(uint256 nodeCount) internal {
        vm.warp(START);
        token = new DatumToken(address(this), SUPPLY);
        nodes = new NodeRegistry(token, MIN_STAKE, UNBONDING_DELAY, address(this));
        data = new DataRegistry(address(this));
        tm = new TaskManager(token, nodes, data, _defaultConfig(), address(this));
        nodes.setTaskManager(address(tm));
        data.setTaskManager(address(tm));
        oracle = new DataOracle(tm, token, data, MAX_CALLBACK_GAS);

        for (uint256 i; i < nodeCount; ++i) {
            _registerNode(i, NODE_STAKE);
        }
        _fund(requester, 1_000_000e18);
        vm.prank(requester);
        token.approve(address(tm), type(uint256).max);
    }

    function _defaultConfig() internal view returns (ITaskManager.Config memory) {
        return ITaskManager.Config({
            protocolFeeBps: PROTOCOL_FEE_BPS,
            reporterRewardBps: REPORTER_BPS,
            acceptWindow: ACCEPT_WINDOW,
            noShowSlashWei: NO_SHOW_SLASH,
            equivocationSlashWei: EQUIVOCATION_SLASH,
            maxDuration: MAX_DURATION,
            treasury: treasury
        });
    }

    /// @dev Node i: operator key 0xA000 + i, signer key 0xB000 + i.
    function _registerNode(uint256 i, uint96 stake) internal returns (address operator) {
        uint256 operatorKey = 0xA000 + i;
        uint256 signerKey = 0xB000 + i;
        operator = vm.addr(operatorKey);
        address signer = vm.addr(signerKey);
        operators.push(operator);
        signerAddrs.push(signer);
        signerKeyOf[operator] = signerKey;
        operatorKeyOf[operator] = operatorKey;
        _fund(operator, stake);
        vm.startPrank(operator);
        token.approve(address(nodes), stake);
        nodes.register(signer, "https://node.example:8443", type(uint64).max, stake);
        vm.stopPrank();
    }

    function _fund(address account, uint256 amount) internal {
        vm.assertTrue(token.transfer(account, amount), "funded");
    }

    // ---------------------------------------------------------------- requests

    function _taskRequest(uint8 k, uint8 quorum, uint96 fee, uint64[] memory datasetIds)
        internal
        view
        returns (ITaskManager.TaskRequest memory)
    {
        return ITaskManager.TaskRequest({
            kind: KIND_STATS,
            committeeSize: k,
            quorum: quorum,
            deadline: uint64(block.timestamp) + 1 days,
            feeWei: fee,
            specHash: SPEC_HASH,
            specURI: SPEC_URI,
            datasetIds: datasetIds
        });
    }

    /// @dev A k-of-quorum task by `requester` with the default fee and no datasets.
    function _request(uint8 k, uint8 quorum) internal returns (uint256 taskId) {
        vm.prank(requester);
        return tm.requestTask(_taskRequest(k, quorum, FEE, new uint64[](0)));
    }

    function _acceptAll(uint256 taskId) internal {
        address[] memory committee = tm.getCommittee(taskId);
        for (uint256 i; i < committee.length; ++i) {
            vm.prank(committee[i]);
            tm.acceptTask(taskId);
        }
    }

    function _acceptSlots(uint256 taskId, uint256[] memory slots) internal {
        address[] memory committee = tm.getCommittee(taskId);
        for (uint256 i; i < slots.length; ++i) {
            vm.prank(committee[slots[i]]);
            tm.acceptTask(taskId);
        }
    }

    // ---------------------------------------------------------------- datasets

    function _openPolicy() internal pure returns (IDataRegistry.ConsentPolicy memory) {
        return IDataRegistry.ConsentPolicy({
            allowedKinds: uint64(1) << KIND_STATS,
            open: true,
            expiresAt: 0,
            remainingUses: type(uint32).max,
            minGroupSize: 10
        });
    }

    function _registerDataset(address owner, uint96 price) internal returns (uint64 id) {
        vm.prank(owner);
        id = data.registerDataset(
            "ipfs://bank-income-table", keccak256(abi.encode(owner, price)), 1_000, price, _openPolicy()
        );
    }

    // ---------------------------------------------------------------- signatures

    function _sig(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev Signature by `key` over the Result of `taskId` for the current config epoch.
    function _signResult(uint256 key, uint256 taskId, bytes32 resultHash, bytes memory publicOutput)
        internal
        view
        returns (bytes memory)
    {
        return _sig(key, tm.getResultDigest(taskId, resultHash, keccak256(publicOutput), tm.getConfigEpoch()));
    }

    /// @dev Signer keys of the operators at `slots` of the committee of `taskId`.
    function _slotKeys(uint256 taskId, uint256[] memory slots) internal view returns (uint256[] memory keys) {
        address[] memory committee = tm.getCommittee(taskId);
        keys = new uint256[](slots.length);
        for (uint256 i; i < slots.length; ++i) {
            keys[i] = signerKeyOf[committee[slots[i]]];
        }
    }

    /// @dev Signer keys of the first `n` committee slots.
    function _firstKeys(uint256 taskId, uint256 n) internal view returns (uint256[] memory) {
        uint256[] memory slots = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            slots[i] = i;
        }
        return _slotKeys(taskId, slots);
    }

    /// @dev A copy of `keys` sorted by signer address ascending (insertion sort; n <= 8).
    function _sortKeys(uint256[] memory input) internal pure returns (uint256[] memory keys) {
        keys = new uint256[](input.length);
        for (uint256 i; i < input.length; ++i) {
            keys[i] = input[i];
        }
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
    }

    /// @dev Signatures of `keys` over one Result, ordered by signer address as submitResult wants.
    function _signSorted(uint256 taskId, uint256[] memory keys, bytes32 resultHash, bytes memory publicOutput)
        internal
        view
        returns (bytes[] memory sigs)
    {
        keys = _sortKeys(keys);
        sigs = new bytes[](keys.length);
        for (uint256 i; i < keys.length; ++i) {
            sigs[i] = _signResult(keys[i], taskId, resultHash, publicOutput);
        }
    }

    /// @dev The operators of `keys` in the order `_signSorted` puts them (TaskFinalized.signers).
    function _operatorsOfSorted(uint256[] memory keys) internal view returns (address[] memory ops) {
        keys = _sortKeys(keys);
        ops = new address[](keys.length);
        for (uint256 i; i < keys.length; ++i) {
            ops[i] = nodes.getOperatorBySigner(vm.addr(keys[i]));
        }
    }

    function _finalize(uint256 taskId, uint256 nSigners, bytes memory publicOutput) internal {
        bytes[] memory sigs = _signSorted(taskId, _firstKeys(taskId, nSigners), RESULT_HASH, publicOutput);
        tm.submitResult(taskId, RESULT_HASH, publicOutput, tm.getConfigEpoch(), sigs);
    }

    function _ids(uint64 a) internal pure returns (uint64[] memory ids) {
        ids = new uint64[](1);
        ids[0] = a;
    }

    function _ids(uint64 a, uint64 b) internal pure returns (uint64[] memory ids) {
        ids = new uint64[](2);
        ids[0] = a;
        ids[1] = b;
    }

    function _slots(uint256 a) internal pure returns (uint256[] memory s) {
        s = new uint256[](1);
        s[0] = a;
    }

    function _slots(uint256 a, uint256 b) internal pure returns (uint256[] memory s) {
        s = new uint256[](2);
        s[0] = a;
        s[1] = b;
    }

    function _slots(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory s) {
        s = new uint256[](3);
        s[0] = a;
        s[1] = b;
        s[2] = c;
    }
}
