// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {DatanetRegistry} from "./DatanetRegistry.sol";

/// @title ModelRegistry
/// @notice Registers LoRA adapters: who owns them, what they cost and how each
/// fee is split. Each adapter id has numbered versions (new weights trained on
/// newer datanet versions); price and split belong to the id, so callers see one
/// price whichever version serves them.
contract ModelRegistry {
    uint16 public constant BPS = 10_000;

    /// Shares of each fee, in basis points, summing to BPS.
    struct FeeSplit {
        uint16 ownerBps; // adapter owner (the model developer)
        uint16 contributorsBps; // data contributors, by attribution
        uint16 nodeBps; // node that served the call
    }

    struct Adapter {
        address owner;
        uint96 pricePer1kTokens; // in OpenToken base units
        FeeSplit split;
        uint32 versionCount;
        bool retired;
    }

    struct AdapterVersion {
        bytes32 contentHash; // SHA-256 of the PEFT adapter files
        bytes32 baseModelHash; // SHA-256 of the base model weights
        uint64 registeredAt;
        bytes32[] datanetRoots; // datanet version roots the adapter was trained on
    }

    DatanetRegistry public immutable datanets;
    uint256 public adapterCount;
    mapping(uint256 adapterId => Adapter) private _adapters;
    mapping(uint256 adapterId => mapping(uint32 version => AdapterVersion)) private _versions;
    mapping(bytes32 contentHash => uint256 adapterId) public adapterOfContent;

    error UnknownAdapter(uint256 adapterId);
    error NotOwner(uint256 adapterId, address caller);
    error Retired(uint256 adapterId);
    error BadSplit(uint256 totalBps);
    error ZeroHash();
    error ContentAlreadyRegistered(bytes32 contentHash, uint256 adapterId);
    error UnknownDatanetRoot(bytes32 root);
    error UnknownVersion(uint256 adapterId, uint32 version);

    event AdapterRegistered(
        uint256 indexed adapterId, address indexed owner, uint96 pricePer1kTokens, FeeSplit split
    );
    event AdapterVersionPublished(
        uint256 indexed adapterId,
        uint32 indexed version,
        bytes32 indexed contentHash,
        bytes32 baseModelHash,
        bytes32[] datanetRoots
    );
    event PriceUpdated(uint256 indexed adapterId, uint96 pricePer1kTokens);
    event AdapterRetired(uint256 indexed adapterId);

    constructor(DatanetRegistry datanetRegistry) {
        datanets = datanetRegistry;
    }

    function register(
        bytes32 contentHash,
        bytes32 baseModelHash,
        bytes32[] calldata datanetRoots,
        uint96 pricePer1kTokens,
        FeeSplit calldata split
    ) external returns (uint256 adapterId) {
        uint256 total = uint256(split.ownerBps) + split.contributorsBps + split.nodeBps;
        if (total != BPS) revert BadSplit(total);
        adapterId = ++adapterCount;
        Adapter storage a = _adapters[adapterId];
        a.owner = msg.sender;
        a.pricePer1kTokens = pricePer1kTokens;
        a.split = split;
        emit AdapterRegistered(adapterId, msg.sender, pricePer1kTokens, split);
        _publish(adapterId, a, contentHash, baseModelHash, datanetRoots);
    }

    function publishVersion(
        uint256 adapterId,
        bytes32 contentHash,
        bytes32 baseModelHash,
        bytes32[] calldata datanetRoots
    ) external returns (uint32 version) {
        Adapter storage a = _owned(adapterId);
        version = _publish(adapterId, a, contentHash, baseModelHash, datanetRoots);
    }

    function setPrice(uint256 adapterId, uint96 pricePer1kTokens) external {
        _owned(adapterId).pricePer1kTokens = pricePer1kTokens;
        emit PriceUpdated(adapterId, pricePer1kTokens);
    }

    function retire(uint256 adapterId) external {
        _owned(adapterId).retired = true;
        emit AdapterRetired(adapterId);
    }

    function adapter(uint256 adapterId) external view returns (Adapter memory a) {
        a = _adapters[adapterId];
        if (a.owner == address(0)) revert UnknownAdapter(adapterId);
    }

    function adapterVersion(uint256 adapterId, uint32 version) external view returns (AdapterVersion memory v) {
        v = _versions[adapterId][version];
        if (v.contentHash == bytes32(0)) revert UnknownVersion(adapterId, version);
    }

    function _publish(
        uint256 adapterId,
        Adapter storage a,
        bytes32 contentHash,
        bytes32 baseModelHash,
        bytes32[] calldata datanetRoots
    ) private returns (uint32 version) {
        if (contentHash == bytes32(0) || baseModelHash == bytes32(0)) revert ZeroHash();
        uint256 existing = adapterOfContent[contentHash];
        if (existing != 0) revert ContentAlreadyRegistered(contentHash, existing);
        for (uint256 i = 0; i < datanetRoots.length; ++i) {
            if (datanets.datanetOfRoot(datanetRoots[i]) == 0) revert UnknownDatanetRoot(datanetRoots[i]);
        }
        version = ++a.versionCount;
        AdapterVersion storage v = _versions[adapterId][version];
        v.contentHash = contentHash;
        v.baseModelHash = baseModelHash;
        v.registeredAt = uint64(block.timestamp);
        v.datanetRoots = datanetRoots;
        adapterOfContent[contentHash] = adapterId;
        emit AdapterVersionPublished(adapterId, version, contentHash, baseModelHash, datanetRoots);
    }

    function _owned(uint256 adapterId) private view returns (Adapter storage a) {
        a = _adapters[adapterId];
        if (a.owner == address(0)) revert UnknownAdapter(adapterId);
        if (a.owner != msg.sender) revert NotOwner(adapterId, msg.sender);
        if (a.retired) revert Retired(adapterId);
    }
}
