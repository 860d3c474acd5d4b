// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title DatanetRegistry
/// @notice Anchors datanets and their versions. A version is the Merkle root of
/// the accepted contributions plus the content id (raw SHA-256 digest of the
/// CID) of the manifest that lists them; the data itself stays off-chain.
contract DatanetRegistry {
    struct Datanet {
        address curator;
        uint64 versionCount;
        bytes32 metadataCid;
    }

    struct Version {
        bytes32 root;
        bytes32 manifestCid;
        uint64 committedAt;
    }

    uint256 public datanetCount;
    mapping(uint256 datanetId => Datanet) private _datanets;
    mapping(uint256 datanetId => mapping(uint64 version => Version)) private _versions;
    /// Which datanet committed a root (0 = never committed); lets ModelRegistry
    /// refuse adapters that cite roots nobody anchored.
    mapping(bytes32 root => uint256 datanetId) public datanetOfRoot;

    error UnknownDatanet(uint256 datanetId);
    error NotCurator(uint256 datanetId, address caller);
    error ZeroValue();
    error RootAlreadyCommitted(bytes32 root, uint256 datanetId);
    error UnknownVersion(uint256 datanetId, uint64 version);

    event DatanetCreated(uint256 indexed datanetId, address indexed curator, bytes32 metadataCid);
    event VersionCommitted(uint256 indexed datanetId, uint64 indexed version, bytes32 root, bytes32 manifestCid);
    event CuratorChanged(uint256 indexed datanetId, address indexed curator);

    function createDatanet(bytes32 metadataCid) external returns (uint256 datanetId) {
        datanetId = ++datanetCount;
        _datanets[datanetId] = Datanet({curator: msg.sender, versionCount: 0, metadataCid: metadataCid});
        emit DatanetCreated(datanetId, msg.sender, metadataCid);
    }

    function commitVersion(uint256 datanetId, bytes32 root, bytes32 manifestCid) external returns (uint64 number) {
        Datanet storage d = _curated(datanetId);
        if (root == bytes32(0) || manifestCid == bytes32(0)) revert ZeroValue();
        uint256 owner = datanetOfRoot[root];
        if (owner != 0) revert RootAlreadyCommitted(root, owner);
        number = ++d.versionCount;
        _versions[datanetId][number] =
            Version({root: root, manifestCid: manifestCid, committedAt: uint64(block.timestamp)});
        datanetOfRoot[root] = datanetId;
        emit VersionCommitted(datanetId, number, root, manifestCid);
    }

    function setCurator(uint256 datanetId, address curator) external {
        if (curator == address(0)) revert ZeroValue();
        _curated(datanetId).curator = curator;
        emit CuratorChanged(datanetId, curator);
    }

    function datanet(uint256 datanetId) external view returns (Datanet memory) {
        Datanet memory d = _datanets[datanetId];
        if (d.curator == address(0)) revert UnknownDatanet(datanetId);
        return d;
    }

    function version(uint256 datanetId, uint64 v) external view returns (Version memory) {
        Version memory ver = _versions[datanetId][v];
        if (ver.root == bytes32(0)) revert UnknownVersion(datanetId, v);
        return ver;
    }

    function _curated(uint256 datanetId) private view returns (Datanet storage d) {
        d = _datanets[datanetId];
        if (d.curator == address(0)) revert UnknownDatanet(datanetId);
        if (d.curator != msg.sender) revert NotCurator(datanetId, msg.sender);
    }
}
