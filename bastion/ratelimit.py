"""Rate limits for the account endpoints: fixed-window counters in Redis, checked atomically.

Appwrite keys its log-in limit on the email alone, so ten bad guesses from anywhere lock the
owner out, and nothing stops one address spraying a password across many emails. Here every
attempt counts against two counters: (endpoint, email, client IP) with ``rate_limit_per_email``
and (endpoint, client IP) with ``rate_limit_per_ip``. An attacker hammering a victim's email only
exhausts the counter for their own IP, and spraying emails from one IP runs into the per-IP limit.
Where a password is guessed, a third counter, (endpoint, email) with the looser
``rate_limit_per_account``, caps the attempts on one account from all addresses together, so an
attacker rotating addresses cannot guess on forever; the price is that whoever knows the email
can use that budget up (see the README).

An endpoint may count only its failures instead (log-in does: a user who logs in often is no
attacker): :meth:`RateLimitCore.check` before the work, :meth:`RateLimitCore.hit` after a failure.

Keys, tagged by the hashed address or email, so the counters spread over a cluster's slots
(one shared tag sent every log-in of the site to one shard) while the two counters of one
address share a slot and are checked by one script::

    <key_prefix>:rl:{<h(ip)>}:<endpoint>:ip
    <key_prefix>:rl:{<h(ip)>}:<endpoint>:email:<h(email)>
    <key_prefix>:rl:{<h(email)>}:<endpoint>:account

The account counter lives in another slot, so it is a second script: asked together with the
first where nothing is counted (``check``), after it where the attempt counts (``hit``: an
attempt the address's counters refuse never reaches the account's).

``h`` is SHA-256 (hex, first 32 characters) of the normalised value, so keys hold no raw email or
address and no character an attacker chose. It is pseudonymisation, not secrecy: the IPv4 space
is small enough to hash in full.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from bastion.errors import RateLimited
from bastion.fronts import AsyncFront, OldStoreNames, SyncFront, step
from bastion.redisio import Batch, Call, Script, Steps
from bastion.settings import Settings

ENDPOINT = re.compile(r"[a-z][a-z0-9_.-]{0,31}")
"""What an endpoint name may look like: a short name chosen by the app, such as ``login``."""
# One IPv6 subscriber usually holds a whole /64, so counting single addresses would give them
# 2**64 fresh counters; they are counted per /64 instead.
IPV6_PREFIX = 64
_DIGEST_CHARS = 32

# The start of both scripts. KEYS: the counters. ARGV: window ms, then each counter's limit, in
# KEYS order. Both return {allowed (0/1), limit, remaining, ms until reset} of the strictest
# counter; this part returns the refusal when any counter is exhausted.
_REFUSE_IF_EXHAUSTED = """
local window = tonumber(ARGV[1])
local function ttl_of(key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    -- A counter without an expiry (written by something else) would block forever.
    redis.call('PEXPIRE', key, window)
    ttl = window
  end
  return ttl
end
local blocked = nil
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local count = tonumber(redis.call('GET', key) or '0')
  if count >= limit then
    -- The caller must wait for every exhausted counter, so report the one that resets last.
    local ttl = ttl_of(key)
    if blocked == nil or ttl > blocked[4] then blocked = {0, limit, 0, ttl} end
  end
end
if blocked then return blocked end
"""

SCRIPTS = {
    # A denied attempt increments nothing, so hammering at the limit never extends a lockout;
    # an allowed one increments every counter, so all of them see the same attempts.
    "ratelimit_hit": _REFUSE_IF_EXHAUSTED
    + """
local best = nil
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local count = redis.call('INCR', key)
  local ttl
  if count == 1 then
    redis.call('PEXPIRE', key, window)
    ttl = window
  else
    ttl = ttl_of(key)
  end
  local remaining = limit - count
  if best == nil or remaining < best[3] or (remaining == best[3] and ttl > best[4]) then
    best = {1, limit, remaining, ttl}
  end
end
return best
""",
    # The same answer, counting nothing: for endpoints that count only failed attempts, asked
    # before the costly work (a log-in's argon2 verify). "remaining" is what is left as it is.
    "ratelimit_check": _REFUSE_IF_EXHAUSTED
    + """
local best = nil
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local count = tonumber(redis.call('GET', key) or '0')
  local ttl = window
  if count > 0 then ttl = ttl_of(key) end
  local remaining = limit - count
  if best == nil or remaining < best[3] or (remaining == best[3] and ttl > best[4]) then
    best = {1, limit, remaining, ttl}
  end
end
return best
""",
}


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one attempt, as seen by its strictest counter."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    """Seconds until the strictest counter's window ends."""
    decided_at: float = field(default_factory=time.time, compare=False)
    """Unix time of the decision, so the reset time in the headers does not drift."""

    @property
    def reset_at(self) -> int:
        """Unix seconds (rounded up) when the strictest counter's window ends."""
        return math.ceil(self.decided_at + self.reset_after)

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*`` headers as Appwrite sends them, plus ``Retry-After`` when denied."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            # Rounded up and at least 1, so a client that obeys never retries too early.
            headers["Retry-After"] = str(max(1, math.ceil(self.reset_after)))
        return headers

    def raise_if_denied(self) -> None:
        """Raise ``RateLimited`` (429, with the headers) if the attempt was refused."""
        if not self.allowed:
            raise RateLimited(headers=self.headers())


def normalize_email(email: str) -> str:
    """The email as one bucket: NFKC, casefolded, trimmed (``User@X.com`` = ``user@x.com``)."""
    # Casefolding can undo NFKC for a few characters, hence the second pass.
    folded = unicodedata.normalize("NFKC", email).strip().casefold()
    return unicodedata.normalize("NFKC", folded)


def normalize_ip(ip: str) -> str:
    """The client address as one bucket: canonical IPv4, or the IPv6 /64 it belongs to."""
    text = ip.strip()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        # Not an address (a unix socket, a test client): still a bucket of its own, hashed.
        return text
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        mask = ((1 << IPV6_PREFIX) - 1) << (128 - IPV6_PREFIX)
        return f"{ipaddress.IPv6Address(int(address) & mask)}/{IPV6_PREFIX}"
    return str(address)


def _digest(kind: str, value: str) -> str:
    # The kind separates domains, so an email and an address never share a digest.
    data = f"{kind}\0{value}".encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:_DIGEST_CHARS]


class RateLimitCore:
    """Rate-limit operations as sans-IO steps."""

    def __init__(self, settings: Settings) -> None:
        self._prefix = f"{settings.key_prefix}:rl"
        self.per_email = settings.rate_limit_per_email
        self.per_ip = settings.rate_limit_per_ip
        self.per_account = settings.rate_limit_per_account
        self.window_ms = settings.rate_limit_window * 1000

    def keys(self, endpoint: str, *, email: str | None, ip: str) -> tuple[str | None, str]:
        """The (email and IP, IP) counter keys of an attempt; no email means no email counter."""
        if not ENDPOINT.fullmatch(endpoint):
            raise ValueError(
                f"invalid rate-limit endpoint {endpoint!r}: expected {ENDPOINT.pattern}"
            )
        ip_digest = _digest("ip", normalize_ip(ip))
        per_ip = f"{self._prefix}:{{{ip_digest}}}:{endpoint}:ip"
        if email is None:
            return None, per_ip
        email_digest = _digest("email", normalize_email(email))
        return f"{self._prefix}:{{{ip_digest}}}:{endpoint}:email:{email_digest}", per_ip

    def account_key(self, endpoint: str, email: str) -> str:
        """The counter of one account on an endpoint, whatever the client IP."""
        if not ENDPOINT.fullmatch(endpoint):
            raise ValueError(
                f"invalid rate-limit endpoint {endpoint!r}: expected {ENDPOINT.pattern}"
            )
        return f"{self._prefix}:{{{_digest('email', normalize_email(email))}}}:{endpoint}:account"

    def hit(
        self, endpoint: str, *, email: str | None, ip: str, per_account: bool = False
    ) -> Steps[RateDecision]:
        """Count one attempt if every counter has room; otherwise refuse it and count nothing.

        ``per_account`` adds the email's counter across all addresses (``rate_limit_per_account``).
        Call ``raise_if_denied()`` on the result to enforce it.
        """
        return (yield from self._run("ratelimit_hit", endpoint, email, ip, per_account))

    def check(
        self, endpoint: str, *, email: str | None, ip: str, per_account: bool = False
    ) -> Steps[RateDecision]:
        """Whether an attempt would be allowed now, counting nothing (``hit`` counts one)."""
        # For endpoints that count failures only: check before the work, hit after a failure.
        # Attempts in flight together all pass the check, so the work may run up to (attempts
        # in flight - 1) times past the limit; the counters themselves never pass it.
        return (yield from self._run("ratelimit_check", endpoint, email, ip, per_account))

    def _run(
        self, script: str, endpoint: str, email: str | None, ip: str, per_account: bool
    ) -> Steps[RateDecision]:
        per_email, per_ip = self.keys(endpoint, email=email, ip=ip)
        keys, limits = [per_ip], [self.per_ip]
        if per_email is not None:
            keys.insert(0, per_email)
            limits.insert(0, self.per_email)
        by_address = Script(script, keys, [self.window_ms, *limits])
        if not per_account or email is None:
            return _decision((yield by_address))
        by_account = Script(
            script, [self.account_key(endpoint, email)], [self.window_ms, self.per_account]
        )
        if script == "ratelimit_check":
            replies = yield Batch([by_address, by_account])
        else:
            first = yield by_address
            if not first[0]:
                return _decision(first)
            replies = [first, (yield by_account)]
        # As one script over every counter would answer: the refusal that lasts longest, else
        # the counter with the least left.
        refused = [r for r in replies if not r[0]]
        if refused:
            return _decision(max(refused, key=lambda r: int(r[3])))
        return _decision(min(replies, key=lambda r: (int(r[2]), -int(r[3]))))

    def reset(self, endpoint: str, *, email: str | None, ip: str) -> Steps[bool]:
        """Clear the (email, IP) counter, e.g. after a successful log-in; True if it existed."""
        # The per-IP counter stays: clearing it on success would let anyone holding one valid
        # account log in between guesses and spray other emails from the same address forever.
        per_email, _ = self.keys(endpoint, email=email, ip=ip)
        if per_email is None:
            return False
        removed = yield Call("delete", (per_email,))
        return bool(removed)


def _decision(reply: list[Any]) -> RateDecision:
    allowed, limit, remaining, ttl_ms = reply
    return RateDecision(bool(allowed), int(limit), int(remaining), int(ttl_ms) / 1000)


class _RateLimitSteps:
    """The rate-limit operations, on :class:`AsyncRateLimiter` and :class:`SyncRateLimiter`."""

    hit = step(RateLimitCore.hit)
    check = step(RateLimitCore.check)
    reset = step(RateLimitCore.reset)


class AsyncRateLimiter(_RateLimitSteps, OldStoreNames, AsyncFront[RateLimitCore]):
    """Rate limits for asyncio code (the account service runs the steps itself)."""


class SyncRateLimiter(_RateLimitSteps, OldStoreNames, SyncFront[RateLimitCore]):
    """Rate limits for threaded code."""
