"""The node-to-node API: aiohttp server and client, authenticated by the operators' chain keys.

`signing` (the canonical request string, EIP-191 signatures, headers), `replay` (nonce
memory), `access` (node standing, task roles, route rules), `chain_access` (the
NodeRegistry/TaskManager-backed authorizers), `blobs` (write-once streamed uploads),
`routes` (route table, limits, payloads, the `NodeHandlers` protocol), `server` (the app
factory and verification pipeline), `client` (`P2PClient`). Design: ``docs/P2P.md``.
"""

from .access import (
    Access,
    Caller,
    NodeAuthorizer,
    NodeStanding,
    StaticAuthorizer,
    StaticTaskParties,
    TaskParties,
    TaskPartySet,
    TaskRole,
)
from .blobs import BlobStore, StoredBlob
from .chain_access import ChainAuthorizer, ChainTaskParties
from .client import BlobReceipt, P2PClient, Peer, PeerResponse
from .errors import (
    P2PError,
    PeerError,
    PeerFailed,
    PeerNotFound,
    PeerRefused,
    PeerRejected,
    PeerUnavailable,
)
from .routes import Limits, NodeHandlers, ResultSignature, Route, route_table
from .server import P2PServer, ServerConfig, create_app
from .signing import Audience, RequestAuth, canonical_request, sign_request

__all__ = [
    "Access",
    "Audience",
    "BlobReceipt",
    "BlobStore",
    "Caller",
    "ChainAuthorizer",
    "ChainTaskParties",
    "Limits",
    "NodeAuthorizer",
    "NodeHandlers",
    "NodeStanding",
    "P2PClient",
    "P2PError",
    "P2PServer",
    "Peer",
    "PeerError",
    "PeerFailed",
    "PeerNotFound",
    "PeerRefused",
    "PeerRejected",
    "PeerResponse",
    "PeerUnavailable",
    "RequestAuth",
    "ResultSignature",
    "Route",
    "ServerConfig",
    "StaticAuthorizer",
    "StaticTaskParties",
    "StoredBlob",
    "TaskParties",
    "TaskPartySet",
    "TaskRole",
    "canonical_request",
    "create_app",
    "route_table",
    "sign_request",
]
