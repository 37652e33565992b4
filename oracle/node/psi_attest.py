"""What the committee signs for a PSI task: a commitment to the receiver's result that the
receiver and the provider both attest (docs/PSI_NETWORK.md, steps 5-7).

* The receiver commits to its result file: ``C = sha256("datum-psi-result-v1" || salt || bytes)``
  with a fresh 32-byte salt (hiding), and signs a receipt naming the task, spec, session,
  dataset and C (EIP-191 text, its chain key).
* The provider's node countersigns the receipt's sha256 with its set size, after its own
  engine finished the same session.
* The attestation (receipt + statement + both signatures) is canonical JSON; its sha256 is
  the task's on-chain ``resultHash``. Each committee member verifies it against the chain
  (`verify_attestation`) before it signs.

Personal-sign texts start with a tag and version, and their fields are validated to their
own alphabets (no newlines), so the text is an injective encoding of the fields.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from compute.errors import SpecError

from .psi_spec import SessionId, parse_message

__all__ = [
    "AttestationError",
    "AttestationFacts",
    "PsiAttestation",
    "PsiReceipt",
    "countersign",
    "result_commitment",
    "sign_receipt",
    "verify_attestation",
    "verify_receipt",
]

RESULT_PERSON = b"datum-psi-result-v1"

Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
Hash32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
Signature65 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{130}$")]


class AttestationError(SpecError):
    """A receipt or attestation that does not verify (names what is wrong, never data)."""


def result_commitment(salt: bytes, result: bytes) -> bytes:
    """The receiver's hiding commitment to its result file."""
    if len(salt) != 32:
        raise ValueError("the salt is 32 bytes")
    return hashlib.sha256(RESULT_PERSON + salt + result).digest()


class PsiReceipt(BaseModel):
    """The receiver's signed statement: in `session_id` it got a result committed as C."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chain_id: Annotated[int, Field(ge=1)]
    task_manager: Address
    task_id: Annotated[int, Field(ge=1, lt=2**63)]
    spec_hash: Hash32
    session_id: SessionId
    dataset_id: Annotated[int, Field(ge=1, lt=2**64)]
    result_commitment: Hash32
    receiver: Address
    signature: Signature65

    def text(self) -> str:
        """The personal-sign text the receiver signs."""
        return "\n".join(
            [
                "DATUM-PSI-RECEIPT-V1",
                f"eip155:{self.chain_id}:{self.task_manager.lower()}",
                f"task:{self.task_id}",
                f"spec:{self.spec_hash}",
                f"session:{self.session_id}",
                f"dataset:{self.dataset_id}",
                f"result:{self.result_commitment}",
            ]
        )

    def digest(self) -> str:
        """sha256 of the signed text (what the provider countersigns), 0x hex."""
        return "0x" + hashlib.sha256(self.text().encode()).hexdigest()

    def to_bytes(self) -> bytes:
        """Canonical JSON."""
        return _canonical(self.model_dump())


class PsiAttestation(BaseModel):
    """The receipt with the provider's countersignature: what the committee signs for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["datum.psi-attestation.v1"] = Field(alias="schema")
    receipt: PsiReceipt
    provider: Address
    provider_rows: Annotated[int, Field(ge=0, lt=2**64)]
    provider_signature: Signature65

    def provider_text(self) -> str:
        """The personal-sign text the provider's node signs."""
        r = self.receipt
        return "\n".join(
            [
                "DATUM-PSI-PROVIDER-V1",
                f"eip155:{r.chain_id}:{r.task_manager.lower()}",
                f"task:{r.task_id}",
                f"spec:{r.spec_hash}",
                f"session:{r.session_id}",
                f"dataset:{r.dataset_id}",
                f"rows:{self.provider_rows}",
                f"receipt:{r.digest()}",
            ]
        )

    def to_bytes(self) -> bytes:
        """Canonical JSON: its sha256 is the on-chain resultHash."""
        return _canonical(self.model_dump(by_alias=True))

    def result_hash(self) -> bytes:
        """sha256 of the canonical bytes."""
        return hashlib.sha256(self.to_bytes()).digest()


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sign(account: LocalAccount, text: str) -> str:
    return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()


def _recover(text: str, signature: str) -> str | None:
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=bytes.fromhex(signature[2:])))
    except Exception:  # noqa: BLE001 - any malformed signature is just "no signer"
        return None


def sign_receipt(
    account: LocalAccount,
    *,
    chain_id: int,
    task_manager: str,
    task_id: int,
    spec_hash: bytes,
    session_id: str,
    dataset_id: int,
    commitment: bytes,
) -> PsiReceipt:
    """The receiver's signed receipt."""
    fields: dict[str, object] = {
        "chain_id": chain_id,
        "task_manager": task_manager,
        "task_id": task_id,
        "spec_hash": "0x" + spec_hash.hex(),
        "session_id": session_id,
        "dataset_id": dataset_id,
        "result_commitment": "0x" + commitment.hex(),
        "receiver": str(account.address),
        "signature": "0x" + "00" * 65,
    }
    unsigned = PsiReceipt.model_validate(fields)
    return unsigned.model_copy(update={"signature": _sign(account, unsigned.text())})


def countersign(account: LocalAccount, receipt: PsiReceipt, provider_rows: int) -> PsiAttestation:
    """The provider node's attestation over a verified receipt."""
    unsigned = PsiAttestation.model_validate(
        {
            "schema": "datum.psi-attestation.v1",
            "receipt": receipt.model_dump(),
            "provider": str(account.address),
            "provider_rows": provider_rows,
            "provider_signature": "0x" + "00" * 65,
        }
    )
    return unsigned.model_copy(update={"provider_signature": _sign(account, unsigned.provider_text())})


@dataclass(frozen=True)
class AttestationFacts:
    """What the chain says about a task, to check a receipt or attestation against.

    `provider_keys[id]` are the addresses that may sign for dataset `id` (its owner and the
    signing key of the owner's node); `row_counts[id]` its committed row count.
    """

    chain_id: int
    task_manager: str
    task_id: int
    spec_hash: bytes
    requester: str
    provider_keys: Mapping[int, tuple[str, ...]]
    row_counts: Mapping[int, int]


def verify_receipt(receipt: PsiReceipt, facts: AttestationFacts, session_id: str | None = None) -> PsiReceipt:
    """The receipt, when it is for this task (and session) and signed by the task's requester."""
    expected = {
        "chain_id": facts.chain_id,
        "task manager": facts.task_manager.lower(),
        "task id": facts.task_id,
        "spec hash": "0x" + facts.spec_hash.hex(),
    }
    got = {
        "chain_id": receipt.chain_id,
        "task manager": receipt.task_manager.lower(),
        "task id": receipt.task_id,
        "spec hash": receipt.spec_hash,
    }
    for name, value in expected.items():
        if got[name] != value:
            raise AttestationError(f"the receipt names another {name}")
    if session_id is not None and receipt.session_id != session_id:
        raise AttestationError("the receipt names another session")
    if receipt.dataset_id not in facts.provider_keys:
        raise AttestationError(f"dataset {receipt.dataset_id} is not one of the task's datasets")
    if receipt.receiver.lower() != facts.requester.lower():
        raise AttestationError("the receipt's receiver is not the task's requester")
    signer = _recover(receipt.text(), receipt.signature)
    if signer is None or signer.lower() != facts.requester.lower():
        raise AttestationError("the receipt is not signed by the task's requester")
    return receipt


def verify_attestation(data: bytes, facts: AttestationFacts) -> PsiAttestation:
    """Parse and check an attestation: the receipt, the provider's key, signature and row count."""
    try:
        attestation = parse_message(PsiAttestation, data, "the attestation")
    except SpecError as exc:
        raise AttestationError(str(exc)) from None
    if attestation.to_bytes() != data:
        raise AttestationError("the attestation is not in canonical form")
    receipt = verify_receipt(attestation.receipt, facts)
    allowed = {a.lower() for a in facts.provider_keys[receipt.dataset_id]}
    if attestation.provider.lower() not in allowed:
        raise AttestationError(f"{attestation.provider} may not attest for dataset {receipt.dataset_id}")
    signer = _recover(attestation.provider_text(), attestation.provider_signature)
    if signer is None or signer.lower() != attestation.provider.lower():
        raise AttestationError("the provider's statement is not signed by its key")
    committed = facts.row_counts[receipt.dataset_id]
    if attestation.provider_rows != committed:
        raise AttestationError(
            f"the provider ran with {attestation.provider_rows} keys, dataset {receipt.dataset_id} "
            f"commits to {committed} rows"
        )
    return attestation
