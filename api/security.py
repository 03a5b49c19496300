"""Who may do what: roles, their permissions, and the dependency every route declares.

CONTRACT (issue 11): the names below are what every part codes against. The "auth" part
implements `authenticate()` (API keys, login tokens) and everything behind it.

A route declares the permission it needs:

    router = APIRouter(dependencies=[Depends(require(Permission.READ))])      # every route
    async def approve(..., who: Annotated[Principal, Depends(require(Permission.CONTROL_APPROVE))])

A role does only its own work: the administrator manages users and reads the audit log, and
has no operating rights; approving a command needs a different user than the one who asked;
executing is the collector's (the runtime), never an API caller's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from fastapi import Request


class Permission(StrEnum):
    READ = "read"  # every GET of data, the live feed and page
    BILLING_EXPORT = "billing.export"
    READS_EDIT = "reads.edit"  # edit or estimate a read
    INVENTORY_WRITE = "inventory.write"  # create/update/delete/import inventory
    CASES_WORK = "cases.work"  # inspection worklist transitions
    NOTICES_WRITE = "notices.write"  # planned-outage notices
    CONTROL_REQUEST = "control.request"
    CONTROL_APPROVE = "control.approve"  # never one's own request
    AUDIT_READ = "audit.read"  # the audit log and its verification
    USERS_MANAGE = "users.manage"  # users, roles, API keys


class Role(StrEnum):
    VIEWER = "viewer"
    METERING_ENGINEER = "metering_engineer"
    LOAD_OPERATOR = "load_operator"
    BILLING = "billing"
    INSPECTOR = "inspector"
    ADMIN = "admin"


P = Permission
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({P.READ}),
    Role.METERING_ENGINEER: frozenset({P.READ, P.INVENTORY_WRITE}),
    Role.LOAD_OPERATOR: frozenset({P.READ, P.NOTICES_WRITE, P.CONTROL_REQUEST, P.CONTROL_APPROVE}),
    Role.BILLING: frozenset({P.READ, P.BILLING_EXPORT, P.READS_EDIT}),
    Role.INSPECTOR: frozenset({P.READ, P.CASES_WORK, P.AUDIT_READ}),
    Role.ADMIN: frozenset({P.READ, P.USERS_MANAGE, P.AUDIT_READ}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a user (password login → token) or an API key (machines)."""

    name: str  # the user's name; an API key acts as its owner, audited as "<user>/key:<id>"
    roles: frozenset[Role]
    kind: Literal["user", "api_key"]
    actor: str  # what the audit log records as `actor`

    @property
    def permissions(self) -> frozenset[Permission]:
        return frozenset().union(*(ROLE_PERMISSIONS[r] for r in self.roles))

    def can(self, permission: Permission) -> bool:
        return permission in self.permissions


async def authenticate(request: Request) -> Principal:
    """The caller of `request`, or HTTPException 401 (with WWW-Authenticate). Accepts
    `Authorization: Bearer <token or API key>` and `X-API-Key: <key>`. (auth part)"""
    raise NotImplementedError("issue 11 auth part")


def require(permission: Permission) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, if it holds `permission`; else 401 (no or bad credentials)
    or 403 (authenticated, not allowed)."""
    raise NotImplementedError("issue 11 auth part")
