"""Throttling of `POST /auth/token`: a bound on password checks at once (each is scrypt,
32 MiB of memory and ~0.2 s of a core) and a lockout, per user name and per address, after
repeated failures, doubling with each further one. In this process's memory: a restart
forgets it, and several API processes each count on their own (the bound is per process)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from api.security_policy import SecurityPolicy

MAX_TRACKED = 10_000  # names and addresses kept at most (the oldest forgotten first)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    until: float = 0.0  # monotonic time the lockout ends; 0: none
    last: float = 0.0


class LoginGuard:
    def __init__(self, policy: SecurityPolicy) -> None:
        self.policy = policy
        self.checks = asyncio.Semaphore(policy.login_concurrency)
        self._seen: dict[tuple[str, str], _Failures] = {}

    def locked_for(self, keys: list[tuple[str, str]]) -> float:
        """Seconds until every lockout of `keys` ends (0: none)."""
        now = time.monotonic()
        return max((f.until - now for k in keys if (f := self._seen.get(k))), default=0.0)

    def failed(self, keys: list[tuple[str, str]]) -> list[tuple[str, str, int, float]]:
        """Count a failure of each key; the (kind, value, failures, seconds) locked out now."""
        now = time.monotonic()
        p = self.policy
        locked = []
        for key in keys:
            f = self._seen.pop(key, None) or _Failures()
            if now - f.last > p.login_lockout_max:  # quiet long enough: start over
                f = _Failures()
            f.count += 1
            f.last = now
            limit = p.login_max_failures if key[0] == "user" else p.login_max_failures_ip
            if f.count >= limit:
                seconds = min(p.login_lockout * 2 ** (f.count - limit), p.login_lockout_max)
                f.until = now + seconds
                locked.append((key[0], key[1], f.count, seconds))
            self._seen[key] = f  # (re)inserted last: the dict is oldest first
        while len(self._seen) > MAX_TRACKED:
            del self._seen[next(iter(self._seen))]
        return locked

    def succeeded(self, name_key: tuple[str, str]) -> None:
        """A right password ends the name's count (not the address's: one good account must
        not reset an address guessing others)."""
        self._seen.pop(name_key, None)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}
