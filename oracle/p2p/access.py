"""Who may call what: node standing, task roles, route access rules and the decision.

A route's `Access` lets in *active nodes* (a registered signing key whose operator's stake
is at least the minimum) and/or senders holding one of its *roles in the task* named in the
path. `NodeAuthorizer` answers the first from the NodeRegistry, `TaskParties` the second
(the node daemon's callback). `StaticAuthorizer` and `StaticTaskParties` are in-memory
versions for tests and tools; the chain-backed ones are in `oracle.p2p.chain_access`.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from eth_utils.address import to_checksum_address

from .errors import Forbidden

__all__ = [
    "Access",
    "Caller",
    "NodeAuthorizer",
    "NodeStanding",
    "StaticAuthorizer",
    "StaticTaskParties",
    "TaskParties",
    "TaskPartySet",
    "TaskRole",
    "authorize",
]


class TaskRole(StrEnum):
    """A sender's part in one task."""

    REQUESTER = "requester"
    RECEIVER = "receiver"  # may fetch the private result
    DATA_PROVIDER = "data_provider"
    COMMITTEE = "committee"


@dataclass(frozen=True)
class NodeStanding:
    """What the NodeRegistry says about one signing key."""

    signer: str
    operator: str | None  # None: the key is no registered node's signing key
    stake_wei: int
    min_stake_wei: int

    @property
    def registered(self) -> bool:
        """The key signs for a registered operator."""
        return self.operator is not None

    @property
    def active(self) -> bool:
        """Registered with an active stake of at least the minimum."""
        return self.operator is not None and self.stake_wei >= self.min_stake_wei


class NodeAuthorizer(Protocol):
    """Maps a signing key to its node standing (the NodeRegistry's view)."""

    async def standing_of(self, signer: str) -> NodeStanding:
        """The standing of `signer` (checksummed); `AuthorizerUnavailable` when it cannot tell."""
        ...


class TaskParties(Protocol):
    """The node daemon's callback: which roles an address holds in a task."""

    async def roles_of(self, task_id: int, address: str) -> frozenset[TaskRole]:
        """Roles of `address` (checksummed) in `task_id`; empty for strangers and unknown tasks."""
        ...


@dataclass(frozen=True)
class Access:
    """A route's rule: active nodes may call it (`nodes`), and so may holders of `roles`."""

    nodes: bool
    roles: frozenset[TaskRole] = frozenset()

    def describe_roles(self) -> str:
        """``the requester or a data provider`` (for messages)."""
        words = {
            TaskRole.REQUESTER: "the requester",
            TaskRole.RECEIVER: "the receiver",
            TaskRole.DATA_PROVIDER: "a data provider",
            TaskRole.COMMITTEE: "a committee member",
        }
        return " or ".join(words[r] for r in TaskRole if r in self.roles)


@dataclass(frozen=True)
class Caller:
    """A verified sender as handlers see it."""

    address: str  # the key that signed (checksummed)
    standing: NodeStanding
    roles: frozenset[TaskRole] = field(default=frozenset())  # in the path's task

    @property
    def operator(self) -> str | None:
        """The operator the key signs for, when it is a registered node's key."""
        return self.standing.operator


async def authorize(
    access: Access,
    sender: str,
    task_id: int | None,
    authorizer: NodeAuthorizer,
    parties: TaskParties,
) -> Caller:
    """Decide whether `sender` may call a route with `access`; `Forbidden` with the reason if not."""
    standing = await authorizer.standing_of(sender)
    roles: frozenset[TaskRole] = frozenset()
    if task_id is not None and access.roles:
        identities = [sender] + ([standing.operator] if standing.operator else [])
        for identity in identities:
            roles |= await parties.roles_of(task_id, identity)
    caller = Caller(address=sender, standing=standing, roles=roles)
    if (access.nodes and standing.active) or roles & access.roles:
        return caller
    if access.roles and not access.nodes:
        raise Forbidden(f"{sender} is not {access.describe_roles()} of task {task_id}", code="not_task_party")
    alternative = f", nor {access.describe_roles()} of task {task_id}" if access.roles else ""
    if standing.registered:
        raise Forbidden(
            f"node {standing.operator} (signing key {sender}) has {standing.stake_wei} wei staked, below "
            f"the minimum {standing.min_stake_wei}{alternative}",
            code="stake_below_minimum",
        )
    raise Forbidden(f"{sender} is not the signing key of a registered node{alternative}", code="not_a_node")


class StaticAuthorizer:
    """An in-memory NodeRegistry: signing key -> (operator, stake)."""

    def __init__(self, min_stake_wei: int) -> None:
        self.min_stake_wei = min_stake_wei
        self._nodes: dict[str, tuple[str, int]] = {}

    def set_node(self, signer: str, operator: str, stake_wei: int) -> None:
        """Register or update a node."""
        self._nodes[signer.lower()] = (to_checksum_address(operator), stake_wei)

    def remove_node(self, signer: str) -> None:
        """Forget a node."""
        self._nodes.pop(signer.lower(), None)

    async def standing_of(self, signer: str) -> NodeStanding:
        """The standing of `signer`."""
        operator, stake = self._nodes.get(signer.lower(), (None, 0))
        return NodeStanding(to_checksum_address(signer), operator, stake, self.min_stake_wei)


@dataclass(frozen=True)
class TaskPartySet:
    """The parties of one task; the receiver defaults to the requester."""

    requester: str
    committee: tuple[str, ...] = ()
    data_providers: tuple[str, ...] = ()
    receiver: str | None = None

    def roles_of(self, address: str) -> frozenset[TaskRole]:
        """Roles of `address` in this task."""
        who = address.lower()

        def among(addresses: Iterable[str]) -> bool:
            return any(a.lower() == who for a in addresses)

        roles = set()
        if who == self.requester.lower():
            roles.add(TaskRole.REQUESTER)
        if who == (self.receiver or self.requester).lower():
            roles.add(TaskRole.RECEIVER)
        if among(self.committee):
            roles.add(TaskRole.COMMITTEE)
        if among(self.data_providers):
            roles.add(TaskRole.DATA_PROVIDER)
        return frozenset(roles)


class StaticTaskParties:
    """In-memory task parties: task id -> `TaskPartySet`."""

    def __init__(self) -> None:
        self.tasks: dict[int, TaskPartySet] = {}

    async def roles_of(self, task_id: int, address: str) -> frozenset[TaskRole]:
        """Roles of `address` in `task_id` (none for an unknown task)."""
        parties = self.tasks.get(task_id)
        return parties.roles_of(address) if parties else frozenset()
