"""EIP-712 signatures over task results, as `TaskManager.submitResult` verifies them.

Domain ``{name: "Datum TaskManager", version: "1", chainId, verifyingContract}``; struct
``Result(uint256 taskId,bytes32 resultHash,bytes32 publicOutputHash,uint64 configEpoch)``.
`result_digest` equals the contract's ``getResultDigest``; signatures are 65 bytes
(r, s, v) with low s, and a submission passes them ascending by signer address.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import encode
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "RESULT_TYPE",
    "ResultDomain",
    "SignedResult",
    "public_output_hash",
    "result_digest",
    "sign_result",
    "sorted_by_signer",
]

DOMAIN_NAME = "Datum TaskManager"
DOMAIN_VERSION = "1"
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
RESULT_TYPE = "Result(uint256 taskId,bytes32 resultHash,bytes32 publicOutputHash,uint64 configEpoch)"

_DOMAIN_TYPEHASH = keccak(DOMAIN_TYPE.encode())
_RESULT_TYPEHASH = keccak(RESULT_TYPE.encode())


@dataclass(frozen=True)
class ResultDomain:
    """The EIP-712 domain of one TaskManager deployment."""

    chain_id: int
    verifying_contract: str

    @property
    def separator(self) -> bytes:
        """The domain separator (``_domainSeparatorV4()``)."""
        return keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    _DOMAIN_TYPEHASH,
                    keccak(DOMAIN_NAME.encode()),
                    keccak(DOMAIN_VERSION.encode()),
                    self.chain_id,
                    self.verifying_contract,
                ],
            )
        )

    def typed_data(self) -> dict[str, Any]:
        """The domain as eth-account's ``sign_typed_data`` takes it."""
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }


def public_output_hash(public_output: bytes) -> bytes:
    """``keccak256(publicOutput)``, the hash signed in place of the public output."""
    return keccak(public_output)


def _bytes32(name: str, value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(value)}")
    return value


def result_digest(
    domain: ResultDomain, task_id: int, result_hash: bytes, output_hash: bytes, config_epoch: int
) -> bytes:
    """The digest a committee member signs: ``keccak256(0x1901 || separator || structHash)``."""
    struct_hash = keccak(
        encode(
            ["bytes32", "uint256", "bytes32", "bytes32", "uint64"],
            [
                _RESULT_TYPEHASH,
                task_id,
                _bytes32("result_hash", result_hash),
                _bytes32("output_hash", output_hash),
                config_epoch,
            ],
        )
    )
    return keccak(b"\x19\x01" + domain.separator + struct_hash)


@dataclass(frozen=True)
class SignedResult:
    """One member's signature over a Result."""

    signer: str
    signature: bytes
    digest: bytes


def sign_result(
    private_key: bytes | str,
    domain: ResultDomain,
    task_id: int,
    result_hash: bytes,
    output_hash: bytes,
    config_epoch: int,
) -> SignedResult:
    """Sign a Result with a signing key (low-s, v in {27, 28}, as OZ ECDSA accepts)."""
    digest = result_digest(domain, task_id, result_hash, output_hash, config_epoch)
    signed = Account.unsafe_sign_hash(digest, private_key)
    signer = Account.from_key(private_key).address
    return SignedResult(signer=signer, signature=bytes(signed.signature), digest=digest)


def sorted_by_signer(signatures: Iterable[SignedResult]) -> list[SignedResult]:
    """Signatures ascending by signer address (as a 160-bit number); duplicates rejected."""
    ordered = sorted(signatures, key=lambda s: int(s.signer, 16))
    for previous, current in zip(ordered, ordered[1:], strict=False):
        if int(previous.signer, 16) == int(current.signer, 16):
            raise ValueError(f"two signatures from {current.signer}")
    return ordered
