"""Request signatures: the canonical string, its EIP-191 signature, and the five headers.

The string is nine newline-joined lines (tag, audience, method, raw path, sorted raw query,
body sha256, timestamp, nonce, sender); every field is checked against its own alphabet,
none of which holds a newline, so the encoding is injective. See ``docs/P2P.md``.
"""

import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_keys.exceptions import BadSignature
from eth_utils.address import to_checksum_address
from eth_utils.exceptions import ValidationError

from .errors import Unauthorized

__all__ = [
    "EMPTY_BODY_SHA256",
    "HEADER_NONCE",
    "HEADER_SENDER",
    "HEADER_SHA256",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "PROTOCOL_TAG",
    "Audience",
    "RequestAuth",
    "body_sha256",
    "canonical_query",
    "canonical_request",
    "new_nonce",
    "recover_sender",
    "sign_request",
]

PROTOCOL_TAG = "DATUM-P2P-V1"
HEADER_SENDER = "X-Datum-Sender"
HEADER_TIMESTAMP = "X-Datum-Timestamp"
HEADER_NONCE = "X-Datum-Nonce"
HEADER_SHA256 = "X-Datum-Content-SHA256"
HEADER_SIGNATURE = "X-Datum-Signature"
AUTH_HEADERS = (HEADER_SENDER, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SHA256, HEADER_SIGNATURE)

NONCE_BYTES = 16
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(rf"[0-9a-f]{{{2 * NONCE_BYTES}}}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_PATH = re.compile(r"/[\x21-\x7e]*")  # printable ASCII without spaces: what a request line carries
_QUERY = re.compile(r"[\x21-\x7e]*")


@dataclass(frozen=True)
class Audience:
    """The node a request is meant for: its chain and its signing address."""

    chain_id: int
    address: str

    def __post_init__(self) -> None:
        if self.chain_id <= 0:
            raise ValueError(f"chain id must be positive, got {self.chain_id}")
        if not _ADDRESS.fullmatch(self.address):
            raise ValueError(f"not an address: {self.address!r}")

    def __str__(self) -> str:
        return f"eip155:{self.chain_id}:{self.address.lower()}"


def body_sha256(body: bytes) -> str:
    """sha256 of a body, 64 lowercase hex."""
    return hashlib.sha256(body).hexdigest()


def new_nonce() -> str:
    """A fresh random nonce (16 bytes, lowercase hex)."""
    return secrets.token_hex(NONCE_BYTES)


def canonical_query(raw_query: str) -> str:
    """The raw ``&``-separated query items, empty ones dropped, sorted bytewise."""
    return "&".join(sorted(item for item in raw_query.split("&") if item))


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"invalid {what} for a signed request: {value[:80]!r}")
    return value


def canonical_request(
    *,
    audience: Audience,
    method: str,
    raw_path: str,
    raw_query: str,
    body_sha256: str,
    timestamp: int,
    nonce: str,
    sender: str,
) -> str:
    """The exact text that is signed; `ValueError` when a field is out of its alphabet."""
    if timestamp < 0:
        raise ValueError(f"negative timestamp {timestamp}")
    return "\n".join(
        (
            PROTOCOL_TAG,
            str(audience),
            _check(_METHOD, method, "method"),
            _check(_PATH, raw_path, "path"),
            _check(_QUERY, canonical_query(raw_query), "query"),
            _check(_SHA256, body_sha256, "body sha256"),
            str(timestamp),
            _check(_NONCE, nonce, "nonce"),
            _check(_ADDRESS, sender, "sender").lower(),
        )
    )


def recover_sender(canonical: str, signature: bytes) -> str | None:
    """The checksummed address that signed `canonical`, or None for an unusable signature."""
    try:
        return str(Account.recover_message(encode_defunct(text=canonical), signature=signature))
    except (BadSignature, ValidationError, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class RequestAuth:
    """The authentication headers of one request."""

    sender: str
    timestamp: int
    nonce: str
    body_sha256: str
    signature: bytes

    def headers(self) -> dict[str, str]:
        """As HTTP headers."""
        return {
            HEADER_SENDER: self.sender,
            HEADER_TIMESTAMP: str(self.timestamp),
            HEADER_NONCE: self.nonce,
            HEADER_SHA256: self.body_sha256,
            HEADER_SIGNATURE: "0x" + self.signature.hex(),
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> "RequestAuth":
        """Parse the headers; `Unauthorized` (missing_auth / malformed_auth) when they are unusable."""
        missing = [name for name in AUTH_HEADERS if name not in headers]
        if missing:
            raise Unauthorized(
                f"unsigned request: missing {', '.join(missing)}; sign it with the sender's key",
                code="missing_auth",
            )
        checks = (
            (HEADER_SENDER, _ADDRESS),
            (HEADER_TIMESTAMP, _TIMESTAMP),
            (HEADER_NONCE, _NONCE),
            (HEADER_SHA256, _SHA256),
            (HEADER_SIGNATURE, _SIGNATURE),
        )
        for name, pattern in checks:
            if not pattern.fullmatch(headers[name]):
                raise Unauthorized(f"malformed {name} header", code="malformed_auth")
        return cls(
            sender=to_checksum_address(headers[HEADER_SENDER]),
            timestamp=int(headers[HEADER_TIMESTAMP]),
            nonce=headers[HEADER_NONCE],
            body_sha256=headers[HEADER_SHA256],
            signature=bytes.fromhex(headers[HEADER_SIGNATURE][2:]),
        )

    def canonical(self, audience: Audience, method: str, raw_path: str, raw_query: str) -> str:
        """The canonical string these headers claim to sign for one request."""
        return canonical_request(
            audience=audience,
            method=method,
            raw_path=raw_path,
            raw_query=raw_query,
            body_sha256=self.body_sha256,
            timestamp=self.timestamp,
            nonce=self.nonce,
            sender=self.sender,
        )


def sign_request(
    account: LocalAccount,
    audience: Audience,
    method: str,
    raw_path: str,
    raw_query: str,
    body_digest: str,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> RequestAuth:
    """Sign one request (fresh timestamp and nonce unless given) and return its headers."""
    sent_at = int(time.time()) if timestamp is None else timestamp
    fresh = new_nonce() if nonce is None else nonce
    text = canonical_request(
        audience=audience,
        method=method,
        raw_path=raw_path,
        raw_query=raw_query,
        body_sha256=body_digest,
        timestamp=sent_at,
        nonce=fresh,
        sender=account.address,
    )
    signed = account.sign_message(encode_defunct(text=text))
    return RequestAuth(
        sender=account.address,
        timestamp=sent_at,
        nonce=fresh,
        body_sha256=body_digest,
        signature=bytes(signed.signature),
    )
