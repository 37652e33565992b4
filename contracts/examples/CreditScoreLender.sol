// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

import {IDataOracle, IDatumConsumer} from "../interfaces/IDataOracle.sol";
import {ITaskManager} from "../interfaces/ITaskManager.sol";
import {IDataRegistry} from "../interfaces/IDataRegistry.sol";

/// @title CreditScoreLender
/// @notice Example consumer dApp. A lender sets an applicant's credit limit from the average
///         income of the applicant's segment, computed privately across two banks' datasets by a
///         Datum statistics task (kind 3). Neither bank reveals its rows; the lender only learns
///         the quorum-signed mean.
/// @dev The task's public output is `abi.encode(uint256 meanIncome)` with `INCOME_DECIMALS`
///      decimals. The credit limit is `meanIncome * limitBps / 10000`, in the same unit.
contract CreditScoreLender is IDatumConsumer, Ownable {
    using SafeERC20 for IERC20;

    /// @notice Task kind of a statistics task.
    uint8 public constant KIND_STATS = 3;
    /// @notice Decimals of the mean income in the public output (and of the credit limit).
    uint8 public constant INCOME_DECIMALS = 2;
    /// @notice Gas the oracle gives `onDatumResult`.
    uint32 public constant CALLBACK_GAS_LIMIT = 100_000;
    uint256 private constant BPS = 10_000;

    /// @notice A credit application waiting for (or answered by) the oracle.
    struct Application {
        address applicant;
        bytes32 segmentSpecHash;
        bool pending;
    }

    /// @notice A credit limit was requested for `applicant`; oracle request `requestId` carries it.
    event CreditLimitRequested(uint256 indexed requestId, address indexed applicant, bytes32 segmentSpecHash);
    /// @notice The oracle answered: the segment's mean income and the resulting credit limit.
    event CreditLimitSet(uint256 indexed requestId, address indexed applicant, uint256 meanIncome, uint256 creditLimit);
    /// @notice The owner changed the share of mean income granted as credit.
    event LimitBpsChanged(uint16 limitBps);

    /// @notice Only the oracle may deliver answers.
    error CreditScoreLender__OnlyOracle(address caller);
    /// @notice The request id is not a pending application of this lender.
    error CreditScoreLender__UnknownRequest(uint256 requestId);
    /// @notice The public output is not one abi-encoded uint256.
    error CreditScoreLender__BadOutput(uint256 length);
    /// @notice The applicant is the zero address.
    error CreditScoreLender__BadApplicant();
    /// @notice A limit share above 100%.
    error CreditScoreLender__BadLimitBps(uint16 limitBps);

    IDataOracle private immutable i_oracle;
    ITaskManager private immutable i_taskManager;
    IERC20 private immutable i_token;
    IDataRegistry private immutable i_data;
    uint64 private immutable i_bankDatasetA;
    uint64 private immutable i_bankDatasetB;

    uint16 private s_limitBps;
    mapping(uint256 requestId => Application) private s_applications;
    mapping(address applicant => uint256 creditLimit) private s_creditLimits;

    /// @param oracle The Datum oracle answers come from.
    /// @param taskManager The TaskManager behind the oracle (refunds of expired tasks are pulled from it).
    /// @param token The token fees are paid in.
    /// @param data The DataRegistry pricing the banks' datasets.
    /// @param bankDatasetA The first bank's income dataset.
    /// @param bankDatasetB The second bank's income dataset.
    /// @param limitBps Share of the segment's mean income granted as credit, in basis points.
    /// @param initialOwner The lender's operator.
    constructor(
        IDataOracle oracle,
        ITaskManager taskManager,
        IERC20 token,
        IDataRegistry data,
        uint64 bankDatasetA,
        uint64 bankDatasetB,
        uint16 limitBps,
        address initialOwner
    ) Ownable(initialOwner) {
        if (limitBps > BPS) revert CreditScoreLender__BadLimitBps(limitBps);
        i_oracle = oracle;
        i_taskManager = taskManager;
        i_token = token;
        i_data = data;
        i_bankDatasetA = bankDatasetA;
        i_bankDatasetB = bankDatasetB;
        s_limitBps = limitBps;
    }

    /// @notice Ask the oracle for the mean income of the applicant's segment across both banks.
    /// @dev Pays `feeWei` plus both datasets' prices from this contract's token balance.
    /// @param applicant Who the credit limit is for.
    /// @param segmentSpecHash Canonical hash of the statistics spec (segment filter, column, both datasets).
    /// @param specURI Where the committee fetches the spec.
    /// @param feeWei Fee for the committee and the protocol.
    /// @param deadline Unix time after which the task refunds.
    /// @param committeeSize Number of nodes computing the mean.
    /// @param quorum Matching signatures needed.
    /// @return requestId The oracle request.
    function requestCreditLimit(
        address applicant,
        bytes32 segmentSpecHash,
        string calldata specURI,
        uint96 feeWei,
        uint64 deadline,
        uint8 committeeSize,
        uint8 quorum
    ) external onlyOwner returns (uint256 requestId) {
        if (applicant == address(0)) revert CreditScoreLender__BadApplicant();
        uint64[] memory datasets = new uint64[](2);
        datasets[0] = i_bankDatasetA;
        datasets[1] = i_bankDatasetB;
        uint256 totalWei =
            uint256(feeWei) + i_data.getAsset(datasets[0]).priceWei + i_data.getAsset(datasets[1]).priceWei;
        i_token.forceApprove(address(i_oracle), totalWei);
        requestId = i_oracle.request(
            KIND_STATS, segmentSpecHash, specURI, datasets, feeWei, deadline, committeeSize, quorum, CALLBACK_GAS_LIMIT
        );
        s_applications[requestId] = Application({applicant: applicant, segmentSpecHash: segmentSpecHash, pending: true});
        emit CreditLimitRequested(requestId, applicant, segmentSpecHash);
    }

    /// @inheritdoc IDatumConsumer
    /// @dev Only the oracle, only for this lender's pending requests, only a 32-byte output.
    function onDatumResult(uint256 requestId, bytes calldata publicOutput) external {
        if (msg.sender != address(i_oracle)) revert CreditScoreLender__OnlyOracle(msg.sender);
        Application storage application = s_applications[requestId];
        if (!application.pending) revert CreditScoreLender__UnknownRequest(requestId);
        if (publicOutput.length != 32) revert CreditScoreLender__BadOutput(publicOutput.length);
        uint256 meanIncome = abi.decode(publicOutput, (uint256));
        uint256 creditLimit = (meanIncome * s_limitBps) / BPS;
        application.pending = false;
        address applicant = application.applicant;
        s_creditLimits[applicant] = creditLimit;
        emit CreditLimitSet(requestId, applicant, meanIncome, creditLimit);
    }

    /// @notice Change the share of mean income granted as credit (owner only).
    /// @param limitBps New share in basis points, at most 10000.
    function setLimitBps(uint16 limitBps) external onlyOwner {
        if (limitBps > BPS) revert CreditScoreLender__BadLimitBps(limitBps);
        s_limitBps = limitBps;
        emit LimitBpsChanged(limitBps);
    }

    /// @notice Pull this lender's refunds (tasks that expired) from the TaskManager.
    /// @return amountWei What was paid to this contract.
    function claimRefunds() external onlyOwner returns (uint256 amountWei) {
        return i_taskManager.withdraw();
    }

    /// @notice Move tokens out of the lender (owner only).
    /// @param to Recipient.
    /// @param amountWei Amount.
    function withdrawTokens(address to, uint256 amountWei) external onlyOwner {
        i_token.safeTransfer(to, amountWei);
    }

    /// @notice The current credit limit of `applicant` (0 when none was set).
    function getCreditLimit(address applicant) external view returns (uint256) {
        return s_creditLimits[applicant];
    }

    /// @notice The application behind oracle request `requestId`.
    function getApplication(uint256 requestId) external view returns (Application memory) {
        return s_applications[requestId];
    }

    /// @notice Share of the mean income granted as credit, in basis points.
    function getLimitBps() external view returns (uint16) {
        return s_limitBps;
    }

    /// @notice The two banks' datasets the mean is computed over.
    function getBankDatasets() external view returns (uint64, uint64) {
        return (i_bankDatasetA, i_bankDatasetB);
    }

    /// @notice The oracle this lender trusts.
    function getOracle() external view returns (IDataOracle) {
        return i_oracle;
    }
}
