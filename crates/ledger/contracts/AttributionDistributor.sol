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
/// guardian can reject it; afterwards anyone finalizes it.
///
/// A claim reads one final-root slot and updates the account's claimed
/// amount. That amount's slot is "warmed" by the poster when the account
/// first appears in a root (`warm`): a marker bit makes it non-zero, so the
/// account's first claim updates a non-zero slot (5k gas) instead of
/// creating one (22.1k), and a claim into an empty wallet stays under 80k.
/// The poster pays the slot's creation once per account, from the node's
/// share of fees, instead of every contributor paying it on their first claim.
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
    /// Claimed amount in the low 255 bits, `WARM` marking a warmed slot.
    mapping(address account => uint256 amountAndMarker) private _claimed;

    uint256 private constant WARM = 1 << 255;
    uint256 private constant AMOUNT = WARM - 1;

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
    event Warmed(uint256 accounts);
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

    /// Marks the claim slots of `accounts` (those not yet warm) so their
    /// first claims cost less; the poster calls it for accounts new to a root.
    function warm(address[] calldata accounts) external {
        if (msg.sender != poster) revert NotPoster(msg.sender);
        uint256 count;
        for (uint256 i; i < accounts.length; ++i) {
            if (_claimed[accounts[i]] == 0) {
                _claimed[accounts[i]] = WARM;
                ++count;
            }
        }
        emit Warmed(count);
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
        uint256 slot = _claimed[account];
        uint256 already = slot & AMOUNT;
        // Amounts are bounded by the uint128 totals posted, far below the marker bit.
        if (cumulativeAmount <= already) revert NothingToClaim(cumulativeAmount, already);
        _claimed[account] = (slot & WARM) | cumulativeAmount;
        paid = cumulativeAmount - already;
        token.safeTransfer(account, paid);
        emit Claimed(epoch, account, cumulativeAmount, paid);
    }

    /// What `account` has claimed so far.
    function claimed(address account) external view returns (uint256) {
        return _claimed[account] & AMOUNT;
    }

    /// Whether `account`'s claim slot is warm (see `warm`).
    function warmed(address account) external view returns (bool) {
        return _claimed[account] != 0;
    }

    function posted(uint64 epoch) external view returns (Posted memory) {
        return _known(epoch);
    }

    function _known(uint64 epoch) private view returns (Posted storage p) {
        p = _posted[epoch];
        if (p.root == bytes32(0)) revert UnknownEpoch(epoch);
    }
}
