// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {IDataRegistry} from "./interfaces/IDataRegistry.sol";

/// @title DataRegistry
/// @notice Datasets and models registered by their owners: metadata URI and hash, a row-count
///         commitment, a price per task, and a consent policy that the TaskManager enforces
///         (and consumes one use of) when a task is requested.
/// @dev Asset ids start at 1 and are never reused. Consent checks run in this order:
///      revoked, expired, task kind, requester, remaining uses.
contract DataRegistry is IDataRegistry, Ownable {
    /// @notice Longest metadata URI, in bytes.
    uint256 public constant MAX_URI_LENGTH = 256;
    /// @notice Largest page `getAssets` returns.
    uint64 public constant MAX_PAGE = 100;
    /// @notice `remainingUses` value meaning "unlimited" (never decremented).
    uint32 public constant UNLIMITED_USES = type(uint32).max;

    address private s_taskManager;
    uint64 private s_assetCount;
    mapping(uint64 id => Asset) private s_assets;
    mapping(uint64 id => mapping(address requester => bool)) private s_allowedRequesters;

    modifier onlyAssetOwner(uint64 id) {
        Asset storage asset = _existing(id);
        if (asset.owner != msg.sender) revert DataRegistry__NotOwner(id, msg.sender);
        if (asset.revoked) revert DataRegistry__Revoked(id);
        _;
    }

    /// @param initialOwner Owner allowed to set the TaskManager.
    constructor(address initialOwner) Ownable(initialOwner) {}

    // ------------------------------------------------------------------------------------
    // Asset owners
    // ------------------------------------------------------------------------------------

    /// @inheritdoc IDataRegistry
    /// @dev Also emits ConsentGranted with the initial policy and price.
    function registerDataset(
        string calldata metadataURI,
        bytes32 metadataHash,
        uint64 rowCount,
        uint96 priceWei,
        ConsentPolicy calldata policy
    ) external returns (uint64 id) {
        id = _register(metadataURI, metadataHash, rowCount, priceWei, policy, false);
        emit DatasetRegistered(id, msg.sender, metadataHash, rowCount, priceWei, metadataURI);
        emit ConsentGranted(id, policy, priceWei);
    }

    /// @inheritdoc IDataRegistry
    /// @dev Also emits ConsentGranted with the initial policy and price. Models have rowCount 0.
    function registerModel(
        string calldata metadataURI,
        bytes32 metadataHash,
        uint96 priceWei,
        ConsentPolicy calldata policy
    ) external returns (uint64 id) {
        id = _register(metadataURI, metadataHash, 0, priceWei, policy, true);
        emit ModelRegistered(id, msg.sender, metadataHash, priceWei, metadataURI);
        emit ConsentGranted(id, policy, priceWei);
    }

    /// @inheritdoc IDataRegistry
    /// @dev Reverts Revoked on a revoked asset. Tasks already requested keep the price they escrowed.
    function setPolicy(uint64 id, ConsentPolicy calldata policy, uint96 priceWei) external onlyAssetOwner(id) {
        Asset storage asset = s_assets[id];
        asset.policy = policy;
        asset.priceWei = priceWei;
        emit ConsentGranted(id, policy, priceWei);
    }

    /// @inheritdoc IDataRegistry
    /// @dev Reverts Revoked on a revoked asset.
    function setRequesterAllowed(uint64 id, address requester, bool allowed) external onlyAssetOwner(id) {
        s_allowedRequesters[id][requester] = allowed;
        emit RequesterAllowed(id, requester, allowed);
    }

    /// @inheritdoc IDataRegistry
    /// @dev Reverts Revoked when already revoked.
    function revoke(uint64 id) external onlyAssetOwner(id) {
        s_assets[id].revoked = true;
        emit AssetRevoked(id);
    }

    // ------------------------------------------------------------------------------------
    // TaskManager and owner
    // ------------------------------------------------------------------------------------

    /// @inheritdoc IDataRegistry
    function consume(uint64 id, address requester, uint8 kind) external returns (address owner, uint96 priceWei) {
        if (msg.sender != s_taskManager) revert DataRegistry__OnlyTaskManager(msg.sender);
        Asset storage asset = _existing(id);
        bytes4 denied = _denial(id, asset, requester, kind);
        if (denied != bytes4(0)) _revertDenial(denied, id, asset, requester, kind);

        uint32 uses = asset.policy.remainingUses;
        if (uses != UNLIMITED_USES) {
            unchecked {
                uses -= 1; // _denial rejected 0
            }
            asset.policy.remainingUses = uses;
        }
        emit AssetConsumed(id, requester, kind, uses);
        return (asset.owner, asset.priceWei);
    }

    /// @inheritdoc IDataRegistry
    function setTaskManager(address taskManager) external onlyOwner {
        if (taskManager == address(0) || s_taskManager != address(0)) revert DataRegistry__TaskManagerAlreadySet();
        s_taskManager = taskManager;
        emit TaskManagerSet(taskManager);
    }

    // ------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------

    /// @inheritdoc IDataRegistry
    /// @dev Reverts UnknownAsset for an id that was never registered.
    function getAsset(uint64 id) external view returns (Asset memory) {
        return _existing(id);
    }

    /// @inheritdoc IDataRegistry
    /// @dev False for an unknown id.
    function isAllowed(uint64 id, address requester, uint8 kind) external view returns (bool) {
        if (id == 0 || id > s_assetCount) return false;
        return _denial(id, s_assets[id], requester, kind) == bytes4(0);
    }

    /// @inheritdoc IDataRegistry
    function isRequesterAllowed(uint64 id, address requester) external view returns (bool) {
        return s_allowedRequesters[id][requester];
    }

    /// @inheritdoc IDataRegistry
    function getAssetCount() external view returns (uint64) {
        return s_assetCount;
    }

    /// @notice Assets with ids offset+1 .. offset+limit (fewer at the end of the list).
    /// @param offset Number of ids to skip.
    /// @param limit Page size, 1..MAX_PAGE.
    /// @return ids The ids of the returned assets.
    /// @return assets The asset records.
    function getAssets(uint64 offset, uint64 limit) external view returns (uint64[] memory ids, Asset[] memory assets) {
        if (limit == 0 || limit > MAX_PAGE) revert DataRegistry__BadPage(offset, limit);
        uint64 count = s_assetCount;
        uint64 len = offset >= count ? 0 : (count - offset < limit ? count - offset : limit);
        ids = new uint64[](len);
        assets = new Asset[](len);
        for (uint64 i; i < len; ++i) {
            uint64 id = offset + i + 1;
            ids[i] = id;
            assets[i] = s_assets[id];
        }
    }

    /// @notice The TaskManager allowed to consume (zero until set).
    function getTaskManager() external view returns (address) {
        return s_taskManager;
    }

    // ------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------

    function _register(
        string calldata metadataURI,
        bytes32 metadataHash,
        uint64 rowCount,
        uint96 priceWei,
        ConsentPolicy calldata policy,
        bool isModel
    ) private returns (uint64 id) {
        uint256 len = bytes(metadataURI).length;
        if (len == 0 || len > MAX_URI_LENGTH || metadataHash == bytes32(0)) revert DataRegistry__BadMetadata();
        id = ++s_assetCount;
        Asset storage asset = s_assets[id];
        asset.owner = msg.sender;
        asset.priceWei = priceWei;
        asset.isModel = isModel;
        asset.rowCount = rowCount;
        asset.metadataHash = metadataHash;
        asset.policy = policy;
        asset.metadataURI = metadataURI;
    }

    function _existing(uint64 id) private view returns (Asset storage asset) {
        if (id == 0 || id > s_assetCount) revert DataRegistry__UnknownAsset(id);
        return s_assets[id];
    }

    /// @dev The selector of the first failing consent check, or zero when the use is allowed.
    function _denial(uint64 id, Asset storage asset, address requester, uint8 kind) private view returns (bytes4) {
        if (asset.revoked) return DataRegistry__Revoked.selector;
        ConsentPolicy memory policy = asset.policy;
        // Expiry is coarse (days); a validator's few seconds of timestamp drift do not matter.
        // forge-lint: disable-next-line(block-timestamp)
        if (policy.expiresAt != 0 && block.timestamp > policy.expiresAt) return DataRegistry__Expired.selector;
        if (kind >= 64 || (policy.allowedKinds >> kind) & 1 == 0) return DataRegistry__KindNotAllowed.selector;
        if (!policy.open && !s_allowedRequesters[id][requester]) return DataRegistry__RequesterNotAllowed.selector;
        if (policy.remainingUses == 0) return DataRegistry__NoUsesLeft.selector;
        return bytes4(0);
    }

    function _revertDenial(bytes4 denied, uint64 id, Asset storage asset, address requester, uint8 kind) private view {
        if (denied == DataRegistry__Revoked.selector) revert DataRegistry__Revoked(id);
        if (denied == DataRegistry__Expired.selector) revert DataRegistry__Expired(id, asset.policy.expiresAt);
        if (denied == DataRegistry__KindNotAllowed.selector) revert DataRegistry__KindNotAllowed(id, kind);
        if (denied == DataRegistry__RequesterNotAllowed.selector) {
            revert DataRegistry__RequesterNotAllowed(id, requester);
        }
        revert DataRegistry__NoUsesLeft(id);
    }
}
