// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title IDataRegistry
/// @notice Datasets and models registered by their owners: metadata URI + hash, a row-count
///         commitment, a price, and a consent policy enforced when a task consumes them.
interface IDataRegistry {
    /// @notice What the owner consents to.
    struct ConsentPolicy {
        uint64 allowedKinds;    // bit i set = task kind i may use the asset
        bool open;              // true: any requester; false: only allow-listed requesters
        uint64 expiresAt;       // unix time after which no new task may use it; 0 = never
        uint32 remainingUses;   // decremented per task; type(uint32).max = unlimited
        uint32 minGroupSize;    // smallest number of rows an aggregate may cover (statistics)
    }

    /// @notice One registered dataset or model.
    struct Asset {
        address owner;
        uint96 priceWei;        // paid to the owner per task that finalizes
        bool isModel;
        bool revoked;
        uint64 rowCount;        // committed number of rows (0 for models)
        bytes32 metadataHash;   // hash of the metadata document at metadataURI
        ConsentPolicy policy;
        string metadataURI;
    }

    /// @notice A dataset was registered.
    event DatasetRegistered(uint64 indexed id, address indexed owner, bytes32 metadataHash, uint64 rowCount, uint96 priceWei, string metadataURI);
    /// @notice A model was registered.
    event ModelRegistered(uint64 indexed id, address indexed owner, bytes32 metadataHash, uint96 priceWei, string metadataURI);
    /// @notice The consent policy or price of an asset was set.
    event ConsentGranted(uint64 indexed id, ConsentPolicy policy, uint96 priceWei);
    /// @notice A requester was added to or removed from an asset's allow-list.
    event RequesterAllowed(uint64 indexed id, address indexed requester, bool allowed);
    /// @notice The owner revoked the asset: no new task may use it.
    event AssetRevoked(uint64 indexed id);
    /// @notice A task consumed one use of the asset.
    event AssetConsumed(uint64 indexed id, address indexed requester, uint8 kind, uint32 remainingUses);
    /// @notice The TaskManager allowed to consume was set (once).
    event TaskManagerSet(address indexed taskManager);

    /// @notice No asset with this id.
    error DataRegistry__UnknownAsset(uint64 id);
    /// @notice The caller is not the asset's owner.
    error DataRegistry__NotOwner(uint64 id, address caller);
    /// @notice The asset was revoked.
    error DataRegistry__Revoked(uint64 id);
    /// @notice The consent policy expired.
    error DataRegistry__Expired(uint64 id, uint64 expiresAt);
    /// @notice The task kind is not allowed by the policy.
    error DataRegistry__KindNotAllowed(uint64 id, uint8 kind);
    /// @notice The requester is not allowed by the policy.
    error DataRegistry__RequesterNotAllowed(uint64 id, address requester);
    /// @notice The use budget is spent.
    error DataRegistry__NoUsesLeft(uint64 id);
    /// @notice Only the TaskManager may call this.
    error DataRegistry__OnlyTaskManager(address caller);
    /// @notice The TaskManager was already set, or the address is zero.
    error DataRegistry__TaskManagerAlreadySet();
    /// @notice A metadata URI that is empty or too long, or a zero metadata hash.
    error DataRegistry__BadMetadata();
    /// @notice A page limit of zero or above the maximum page size.
    error DataRegistry__BadPage(uint64 offset, uint64 limit);

    /// @notice Register a dataset owned by msg.sender.
    function registerDataset(string calldata metadataURI, bytes32 metadataHash, uint64 rowCount, uint96 priceWei, ConsentPolicy calldata policy) external returns (uint64 id);
    /// @notice Register a model owned by msg.sender.
    function registerModel(string calldata metadataURI, bytes32 metadataHash, uint96 priceWei, ConsentPolicy calldata policy) external returns (uint64 id);
    /// @notice Replace the consent policy and price (owner only).
    function setPolicy(uint64 id, ConsentPolicy calldata policy, uint96 priceWei) external;
    /// @notice Add or remove a requester from the allow-list (owner only).
    function setRequesterAllowed(uint64 id, address requester, bool allowed) external;
    /// @notice Revoke the asset for good (owner only).
    function revoke(uint64 id) external;
    /// @notice Check consent for (requester, kind) and consume one use. Only the TaskManager.
    function consume(uint64 id, address requester, uint8 kind) external returns (address owner, uint96 priceWei);
    /// @notice Set the TaskManager once (contract owner only).
    function setTaskManager(address taskManager) external;

    /// @notice The asset record.
    function getAsset(uint64 id) external view returns (Asset memory);
    /// @notice Whether a task of `kind` by `requester` may use the asset now (no use consumed).
    function isAllowed(uint64 id, address requester, uint8 kind) external view returns (bool);
    /// @notice Whether `requester` is on the asset's allow-list.
    function isRequesterAllowed(uint64 id, address requester) external view returns (bool);
    /// @notice Number of registered assets (the highest id; ids start at 1).
    function getAssetCount() external view returns (uint64);
}
