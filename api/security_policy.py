"""The security settings the API applies (from gridread/settings.py, one object so that
create_app takes one parameter for them): login throttling and the audit chain's export."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    login_concurrency: int = 2  # password checks at once (scrypt: 32 MiB, ~0.2 s each)
    login_max_failures: int = 5  # failed logins of one user name before it is locked out
    login_max_failures_ip: int = 20  # failed logins from one address before it is locked out
    login_lockout: float = 60.0  # first lockout, seconds; doubles with each further failure
    login_lockout_max: float = 3600.0  # the longest lockout, seconds
    audit_head_interval: float = 300.0  # seconds between exports of the audit chain's head
