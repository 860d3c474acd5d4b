// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title Staking
/// @notice Bonds OpenToken for node operators and agents. Unstaking first moves
/// tokens into a cooldown (still slashable, so misbehaviour found late can be
/// punished), then releases them. Only the owner (the governance timelock)
/// slashes; slashed tokens go to the owner's treasury.
contract Staking is Ownable {
    using SafeERC20 for IERC20;

    struct Stake {
        uint128 staked;
        uint128 cooling;
        uint64 releaseAt;
    }

    IERC20 public immutable token;
    uint64 public immutable cooldown;
    uint256 public totalStaked;
    mapping(address staker => Stake) private _stakes;

    error ZeroAmount();
    error InsufficientStake(uint256 requested, uint256 available);
    error NothingCooling();
    error CoolingDown(uint64 releaseAt);

    event Staked(address indexed staker, uint256 amount);
    event UnstakeRequested(address indexed staker, uint256 amount, uint64 releaseAt);
    event Unstaked(address indexed staker, uint256 amount);
    event Slashed(address indexed staker, uint256 amount, bytes32 evidence);

    constructor(IERC20 stakeToken, uint64 cooldownSeconds, address governance) Ownable(governance) {
        token = stakeToken;
        cooldown = cooldownSeconds;
    }

    function stake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        _stakes[msg.sender].staked += _u128(amount);
        totalStaked += amount;
        token.safeTransferFrom(msg.sender, address(this), amount);
        emit Staked(msg.sender, amount);
    }

    /// Moves `amount` into cooldown; a later request adds to it and restarts the clock.
    function requestUnstake(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        Stake storage s = _stakes[msg.sender];
        if (amount > s.staked) revert InsufficientStake(amount, s.staked);
        s.staked -= uint128(amount);
        s.cooling += uint128(amount);
        s.releaseAt = uint64(block.timestamp) + cooldown;
        emit UnstakeRequested(msg.sender, amount, s.releaseAt);
    }

    function unstake() external returns (uint256 amount) {
        Stake storage s = _stakes[msg.sender];
        amount = s.cooling;
        if (amount == 0) revert NothingCooling();
        if (block.timestamp < s.releaseAt) revert CoolingDown(s.releaseAt);
        s.cooling = 0;
        s.releaseAt = 0;
        totalStaked -= amount;
        token.safeTransfer(msg.sender, amount);
        emit Unstaked(msg.sender, amount);
    }

    /// Takes up to `amount` from the stake, then from the cooling balance.
    function slash(address staker, uint256 amount, bytes32 evidence) external onlyOwner returns (uint256 taken) {
        Stake storage s = _stakes[staker];
        uint256 available = uint256(s.staked) + s.cooling;
        if (amount == 0) revert ZeroAmount();
        if (amount > available) revert InsufficientStake(amount, available);
        uint256 fromStaked = amount > s.staked ? s.staked : amount;
        s.staked -= uint128(fromStaked);
        s.cooling -= uint128(amount - fromStaked); // <= cooling because amount <= available
        totalStaked -= amount;
        taken = amount;
        token.safeTransfer(owner(), amount);
        emit Slashed(staker, amount, evidence);
    }

    function stakeOf(address staker) external view returns (Stake memory) {
        return _stakes[staker];
    }

    function _u128(uint256 amount) private pure returns (uint128) {
        if (amount > type(uint128).max) revert InsufficientStake(amount, type(uint128).max);
        return uint128(amount);
    }
}
