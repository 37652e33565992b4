"""The chain edge of Datum: everything that talks to the contracts.

`artifacts` (forge build output), `rpc` (connection, transient-only retries, typed view
calls), `errors` (revert data -> `ContractRevert` subclasses), `txmanager` (nonces, fees,
gas), `deploy` (contracts + `Deployment` manifest), `contracts` (bindings), `signer`
(EIP-712 results), and one module per contract role: `staking`, `datasets`, `tasks`.
"""
