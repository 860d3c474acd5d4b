// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";
import {ERC20Votes} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Votes.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title ContributionVotes
/// @notice Non-transferable voting units earned by contribution. The minter
/// (the settlement node, replaceable by governance) mints units for accepted
/// datanet records and for paid usage attributed to an account; the exact rule
/// is documented in docs/ledger.md. Units cannot be bought or moved, so voting
/// power follows contribution rather than capital. Accounts delegate to
/// themselves on their first mint so power counts without an extra transaction.
contract ContributionVotes is ERC20, ERC20Permit, ERC20Votes, Ownable {
    address public minter;

    error NonTransferable();
    error NotMinter(address caller);

    event MinterChanged(address indexed minter);
    event ContributionMinted(address indexed account, uint256 amount, bytes32 indexed reason);

    constructor(address initialOwner, address initialMinter)
        ERC20("Credence Contribution Votes", "cVOTE")
        ERC20Permit("Credence Contribution Votes")
        Ownable(initialOwner)
    {
        minter = initialMinter;
        emit MinterChanged(initialMinter);
    }

    function setMinter(address newMinter) external onlyOwner {
        minter = newMinter;
        emit MinterChanged(newMinter);
    }

    /// @param reason what was rewarded, e.g. a datanet version root or an epoch receipts root.
    function mint(address account, uint256 amount, bytes32 reason) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        if (delegates(account) == address(0)) _delegate(account, account);
        _mint(account, amount);
        emit ContributionMinted(account, amount, reason);
    }

    function _update(address from, address to, uint256 value) internal override(ERC20, ERC20Votes) {
        // Only mints (from 0) and burns (to 0) move units.
        if (from != address(0) && to != address(0)) revert NonTransferable();
        super._update(from, to, value);
    }

    function approve(address, uint256) public pure override returns (bool) {
        revert NonTransferable();
    }

    function nonces(address owner) public view override(ERC20Permit, Nonces) returns (uint256) {
        return super.nonces(owner);
    }
}
