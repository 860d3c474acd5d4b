// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

/// @title PaymentEscrow
/// @notice Prepaid balances spent by signed cumulative vouchers. A payer signs
/// (payer, payee, cumulativeAmount) off-chain with every call; the payee
/// redeems only its latest voucher and receives the increase over what it has
/// already redeemed, so one transaction settles any number of calls and a
/// replayed or older voucher pays nothing. Withdrawals wait `withdrawDelay` so
/// payees can redeem outstanding vouchers against the deposit first.
contract PaymentEscrow is EIP712 {
    using SafeERC20 for IERC20;

    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(address payer,address payee,uint256 cumulativeAmount)");

    struct Voucher {
        address payer;
        address payee;
        uint256 cumulativeAmount;
    }

    struct Account {
        uint128 balance;
        uint128 withdrawRequested;
        uint64 withdrawableAt;
    }

    IERC20 public immutable token;
    uint64 public immutable withdrawDelay;
    mapping(address payer => Account) private _accounts;
    mapping(address payer => mapping(address payee => uint256)) public redeemed;

    error ZeroAmount();
    error BadSignature(address recovered, address payer);
    error VoucherNotIncreasing(uint256 cumulativeAmount, uint256 alreadyRedeemed);
    error InsufficientDeposit(uint256 needed, uint256 available);
    error NoWithdrawal();
    error WithdrawalLocked(uint64 withdrawableAt);
    error AmountTooLarge();

    event Deposited(address indexed payer, uint256 amount);
    event VoucherRedeemed(address indexed payer, address indexed payee, uint256 cumulativeAmount, uint256 paid);
    event WithdrawRequested(address indexed payer, uint256 amount, uint64 withdrawableAt);
    event Withdrawn(address indexed payer, uint256 amount);

    constructor(IERC20 paymentToken, uint64 delaySeconds) EIP712("CredencePaymentEscrow", "1") {
        token = paymentToken;
        withdrawDelay = delaySeconds;
    }

    function deposit(uint256 amount) external {
        _deposit(msg.sender, amount);
    }

    /// Deposit with an EIP-2612 permit instead of a prior approve. The permit is
    /// tried, not required: if someone front-ran it, the allowance is already set.
    function depositWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s) external {
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _deposit(msg.sender, amount);
    }

    function redeem(Voucher calldata voucher, bytes calldata signature) external returns (uint256 paid) {
        address signer = ECDSA.recover(voucherDigest(voucher), signature);
        if (signer != voucher.payer) revert BadSignature(signer, voucher.payer);
        uint256 already = redeemed[voucher.payer][voucher.payee];
        if (voucher.cumulativeAmount <= already) revert VoucherNotIncreasing(voucher.cumulativeAmount, already);
        paid = voucher.cumulativeAmount - already;
        Account storage a = _accounts[voucher.payer];
        if (paid > a.balance) revert InsufficientDeposit(paid, a.balance);
        a.balance -= uint128(paid);
        redeemed[voucher.payer][voucher.payee] = voucher.cumulativeAmount;
        token.safeTransfer(voucher.payee, paid);
        emit VoucherRedeemed(voucher.payer, voucher.payee, voucher.cumulativeAmount, paid);
    }

    /// Starts (or restarts, with a new amount) the delay before `withdraw`.
    function requestWithdraw(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        if (amount > type(uint128).max) revert AmountTooLarge();
        Account storage a = _accounts[msg.sender];
        a.withdrawRequested = uint128(amount);
        a.withdrawableAt = uint64(block.timestamp) + withdrawDelay;
        emit WithdrawRequested(msg.sender, amount, a.withdrawableAt);
    }

    /// Pays out the requested amount, capped by what vouchers left of the balance.
    function withdraw() external returns (uint256 amount) {
        Account storage a = _accounts[msg.sender];
        if (a.withdrawRequested == 0) revert NoWithdrawal();
        if (block.timestamp < a.withdrawableAt) revert WithdrawalLocked(a.withdrawableAt);
        amount = a.withdrawRequested < a.balance ? a.withdrawRequested : a.balance;
        a.balance -= uint128(amount);
        a.withdrawRequested = 0;
        a.withdrawableAt = 0;
        token.safeTransfer(msg.sender, amount);
        emit Withdrawn(msg.sender, amount);
    }

    function account(address payer) external view returns (Account memory) {
        return _accounts[payer];
    }

    function voucherDigest(Voucher calldata voucher) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(VOUCHER_TYPEHASH, voucher.payer, voucher.payee, voucher.cumulativeAmount))
        );
    }

    function _deposit(address payer, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        Account storage a = _accounts[payer];
        if (amount > type(uint128).max - a.balance) revert AmountTooLarge();
        a.balance += uint128(amount);
        token.safeTransferFrom(payer, address(this), amount);
        emit Deposited(payer, amount);
    }
}
