"""The EIP-712 Result digest equals eth-account's typed-data hash, and signatures recover."""

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_keys import keys
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.chain.signer import (
    ResultDomain,
    public_output_hash,
    result_digest,
    sign_result,
    sorted_by_signer,
)

SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
RESULT_TYPES = {
    "Result": [
        {"name": "taskId", "type": "uint256"},
        {"name": "resultHash", "type": "bytes32"},
        {"name": "publicOutputHash", "type": "bytes32"},
        {"name": "configEpoch", "type": "uint64"},
    ]
}
bytes32 = st.binary(min_size=32, max_size=32)


def eth_account_digest(domain: ResultDomain, task_id: int, result: bytes, output: bytes, epoch: int) -> bytes:
    message = {"taskId": task_id, "resultHash": result, "publicOutputHash": output, "configEpoch": epoch}
    signable = encode_typed_data(domain.typed_data(), RESULT_TYPES, message)
    return b"\x19" + signable.version + signable.header + signable.body


@settings(max_examples=60)
@given(
    chain_id=st.integers(1, 2**64),
    contract=st.binary(min_size=20, max_size=20),
    task_id=st.integers(0, 2**256 - 1),
    result=bytes32,
    output=bytes32,
    epoch=st.integers(0, 2**64 - 1),
)
def test_digest_matches_eth_account(
    chain_id: int, contract: bytes, task_id: int, result: bytes, output: bytes, epoch: int
) -> None:
    domain = ResultDomain(chain_id, "0x" + contract.hex())
    expected = keccak(eth_account_digest(domain, task_id, result, output, epoch))
    assert result_digest(domain, task_id, result, output, epoch) == expected


def test_signature_recovers_to_the_signer_with_low_s() -> None:
    key = Account.create()
    domain = ResultDomain(31337, "0x" + "ab" * 20)
    signed = sign_result(key.key, domain, 5, b"\x01" * 32, public_output_hash(b"answer"), 1)
    assert signed.signer == key.address
    assert len(signed.signature) == 65
    assert signed.signature[64] in (27, 28)
    assert int.from_bytes(signed.signature[32:64], "big") <= SECP256K1_HALF_N
    sig = signed.signature
    vrs = keys.Signature(sig[:64] + bytes([sig[64] - 27]))
    assert vrs.recover_public_key_from_msg_hash(signed.digest).to_checksum_address() == key.address


def test_every_domain_field_and_epoch_changes_the_digest() -> None:
    base = ResultDomain(1, "0x" + "11" * 20)
    args = (9, b"\x02" * 32, b"\x03" * 32, 1)
    digest = result_digest(base, *args)
    assert result_digest(ResultDomain(2, base.verifying_contract), *args) != digest
    assert result_digest(ResultDomain(1, "0x" + "12" * 20), *args) != digest
    assert result_digest(base, 9, b"\x02" * 32, b"\x03" * 32, 2) != digest
    assert result_digest(base, 10, b"\x02" * 32, b"\x03" * 32, 1) != digest


def test_sorted_by_signer_orders_by_address_number_and_rejects_duplicates() -> None:
    domain = ResultDomain(1, "0x" + "11" * 20)
    keys = [Account.create() for _ in range(6)]
    signed = [sign_result(k.key, domain, 1, b"\x00" * 32, b"\x00" * 32, 1) for k in keys]
    ordered = sorted_by_signer(signed)
    numbers = [int(s.signer, 16) for s in ordered]
    assert numbers == sorted(numbers)
    assert {s.signer for s in ordered} == {k.address for k in keys}
    with pytest.raises(ValueError):
        sorted_by_signer([signed[0], signed[0]])


def test_rejects_hashes_of_the_wrong_length() -> None:
    with pytest.raises(ValueError):
        result_digest(ResultDomain(1, "0x" + "11" * 20), 1, b"\x00" * 31, b"\x00" * 32, 1)
