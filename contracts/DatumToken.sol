// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title DatumToken
/// @notice The Datum network token (DTM): stakes, task fees, dataset prices and rewards.
/// @dev Plain ERC-20 with EIP-2612 permit. The whole supply is minted once at deployment;
///      there is no owner and no further minting.
contract DatumToken is ERC20, ERC20Permit {
    /// @notice Mint `initialSupply` wei to `initialHolder`.
    /// @param initialHolder Receiver of the whole supply (reverts with ERC20InvalidReceiver if zero).
    /// @param initialSupply Total supply in wei.
    constructor(address initialHolder, uint256 initialSupply) ERC20("Datum", "DTM") ERC20Permit("Datum") {
        _mint(initialHolder, initialSupply);
    }
}
