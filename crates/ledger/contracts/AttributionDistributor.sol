// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title AttributionDistributor
/// @notice Pays data contributors, model owners and nodes from per-epoch Merkle
/// roots. Each leaf is (account, cumulative amount earned since genesis), so a
/// single claim against any final root collects everything earned up to that
/// epoch. A posted root waits `challengeWindow` seconds, during which the
/// guardian can reject it; afterwards anyone finalizes it. Claims read one
/// final-root slot, which keeps a claim under ~80k gas.
contract AttributionDistributor is Ownable {
    using SafeERC20 for IERC20;

    /// The receipts root and total are anchored in the EpochPosted event
    /// only: nothing on-chain reads them, and storage would cost 40k per post.
    struct Posted {
        bytes32 root; // Merkle root of (account, cumulativeAmount) leaves
        uint64 postedAt;
        bool challenged;
    }

    IERC20 public immutable token;
    uint64 public immutable challengeWindow;
    address public poster;
    address public guardian;
    uint64 public lastEpoch;
    /// Tokens pulled from the poster so far: the largest `total` ever posted.
    uint256 public funded;
    mapping(uint64 epoch => Posted) private _posted;
    mapping(uint64 epoch => bytes32 root) public finalRoot;
    mapping(address account => uint256 amount) public claimed;

    error NotPoster(address caller);
    error NotGuardian(address caller);
    error EpochOutOfOrder(uint64 expected, uint64 given);
    error ZeroRoot();
    error UnknownEpoch(uint64 epoch);
    error ChallengeWindowOpen(uint64 endsAt);
    error ChallengeWindowClosed(uint64 epoch);
    error EpochChallenged(uint64 epoch);
    error AlreadyFinal(uint64 epoch);
    error NotFinal(uint64 epoch);
    error InvalidProof();
    error NothingToClaim(uint256 cumulativeAmount, uint256 alreadyClaimed);

    event EpochPosted(uint64 indexed epoch, bytes32 root, bytes32 receiptsRoot, uint256 total);
    event EpochRejected(uint64 indexed epoch, bytes32 evidence);
    event EpochFinalized(uint64 indexed epoch, bytes32 root);
    event Claimed(uint64 indexed epoch, address indexed account, uint256 cumulativeAmount, uint256 paid);
    event PosterChanged(address indexed poster);
    event GuardianChanged(address indexed guardian);

    constructor(IERC20 payoutToken, uint64 windowSeconds, address initialOwner, address initialPoster, address initialGuardian)
        Ownable(initialOwner)
    {
        token = payoutToken;
        challengeWindow = windowSeconds;
        poster = initialPoster;
        guardian = initialGuardian;
        emit PosterChanged(initialPoster);
        emit GuardianChanged(initialGuardian);
    }

    function setPoster(address newPoster) external onlyOwner {
        poster = newPoster;
        emit PosterChanged(newPoster);
    }

    function setGuardian(address newGuardian) external onlyOwner {
        guardian = newGuardian;
        emit GuardianChanged(newGuardian);
    }

    /// Posts the next epoch and pulls from the poster whatever `total` exceeds
    /// what was funded before, so the contract always holds every posted total.
    function postEpoch(uint64 epoch, bytes32 root, bytes32 receiptsRoot, uint128 total) external {
        if (msg.sender != poster) revert NotPoster(msg.sender);
        if (epoch != lastEpoch + 1) revert EpochOutOfOrder(lastEpoch + 1, epoch);
        if (root == bytes32(0)) revert ZeroRoot();
        lastEpoch = epoch;
        _posted[epoch] = Posted(root, uint64(block.timestamp), false);
        uint256 already = funded;
        if (total > already) {
            funded = total;
            token.safeTransferFrom(msg.sender, address(this), total - already);
        }
        emit EpochPosted(epoch, root, receiptsRoot, total);
    }

    function challenge(uint64 epoch, bytes32 evidence) external {
        if (msg.sender != guardian && msg.sender != owner()) revert NotGuardian(msg.sender);
        Posted storage p = _known(epoch);
        if (block.timestamp >= p.postedAt + challengeWindow) revert ChallengeWindowClosed(epoch);
        p.challenged = true;
        emit EpochRejected(epoch, evidence);
    }

    /// Anyone may finalize an unchallenged epoch once its window has passed.
    function finalize(uint64 epoch) external {
        Posted storage p = _known(epoch);
        if (p.challenged) revert EpochChallenged(epoch);
        uint64 endsAt = p.postedAt + challengeWindow;
        if (block.timestamp < endsAt) revert ChallengeWindowOpen(endsAt);
        if (finalRoot[epoch] != bytes32(0)) revert AlreadyFinal(epoch);
        finalRoot[epoch] = p.root;
        emit EpochFinalized(epoch, p.root);
    }

    /// Pays `account` the part of `cumulativeAmount` not yet claimed. Any final
    /// epoch works: amounts are cumulative, so an older root just pays less.
    function claim(uint64 epoch, address account, uint256 cumulativeAmount, bytes32[] calldata proof)
        external
        returns (uint256 paid)
    {
        bytes32 root = finalRoot[epoch];
        if (root == bytes32(0)) revert NotFinal(epoch);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))));
        if (!MerkleProof.verifyCalldata(proof, root, leaf)) revert InvalidProof();
        uint256 already = claimed[account];
        if (cumulativeAmount <= already) revert NothingToClaim(cumulativeAmount, already);
        claimed[account] = cumulativeAmount;
        paid = cumulativeAmount - already;
        token.safeTransfer(account, paid);
        emit Claimed(epoch, account, cumulativeAmount, paid);
    }

    function posted(uint64 epoch) external view returns (Posted memory) {
        return _known(epoch);
    }

    function _known(uint64 epoch) private view returns (Posted storage p) {
        p = _posted[epoch];
        if (p.root == bytes32(0)) revert UnknownEpoch(epoch);
    }
}
