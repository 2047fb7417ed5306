"""Fair use of the API: per-client request rates and a cap on exports running at once.

The state lives in Redis, so every Gunicorn worker (and thread) shares one view of it:
- rates: one GCRA bucket per client (`RATE_SCRIPT`: a key holding the bucket's theoretical arrival time);
- exports: sorted sets of leases (`SLOT_SCRIPT`), one for the pool and one per client, scored by the time a lease
  expires, so an export whose worker died frees its slot after FIREHOSE_API_EXPORT_TIMEOUT + LEASE_MARGIN_S.
Both scripts read Redis' clock (TIME), so workers with skewed clocks agree.

Who the client is (`client_of`): the address Gunicorn sees, or, when that is a trusted proxy (the reverse proxy on
loopback), the last address of X-Forwarded-For (the one the proxy appended). A request from a trusted address
without X-Forwarded-For comes from the box itself (the local Prometheus, an operator) and is not limited. IPv6
clients are counted per /64. A client that sends a known API key (X-API-Key) is counted per key, with the key's
higher limits. When Redis cannot be reached the limits are not applied (logged): the archive stays searchable.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from firehose.config import Settings

log = logging.getLogger(__name__)

KEY_PREFIX = "firehose:limits:"
LEASE_MARGIN_S = 60.0
API_KEY_HEADER = "HTTP_X_API_KEY"

# GCRA: KEYS[1] the bucket; ARGV[1] milliseconds per request, ARGV[2] burst tolerance in ms.
# Returns 0 (admitted) or the milliseconds until the next request would be admitted.
RATE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tonumber(ARGV[2]) - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', tat + interval - now + 1000)
return 0
"""

# KEYS[1] the pool's leases, KEYS[2] the client's; ARGV: token, pool cap, client cap, lease ms.
# Returns 0 (lease taken), 1 (the pool is full) or 2 (the client has its share).
SLOT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 2 end
local expires = now + tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], expires, ARGV[1])
redis.call('ZADD', KEYS[2], expires, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[4]))
return 0
"""


class Refused(Exception):
    """A request the limits turn away: `status` (401, 403 or 429), the message, and for 429 the seconds to wait."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True)
class Client:
    """Whom a request is counted against: `bucket` names it in Redis; `local` requests are not limited."""

    bucket: str
    keyed: bool = False
    local: bool = False


@dataclass(frozen=True)
class Lease:
    """One export slot held; give it back with `Limiter.release`."""

    token: str
    keys: tuple[str, str]


def client_of(environ: Mapping[str, Any], settings: Settings) -> Client:
    """The client of a WSGI request (see the module's description). Raises Refused(401) for an unknown API key."""
    address = str(environ.get("REMOTE_ADDR", "") or "")
    if address in settings.api_trusted_proxies:
        forwarded = str(environ.get("HTTP_X_FORWARDED_FOR", "") or "")
        if not forwarded.strip():
            return Client("local", local=True)
        address = forwarded.rsplit(",", maxsplit=1)[-1].strip()
    key = str(environ.get(API_KEY_HEADER, "") or "")
    if key:
        for known in settings.api_keys:
            if hmac.compare_digest(key.encode(), known.encode()):
                return Client("key:" + hashlib.sha256(known.encode()).hexdigest()[:16], keyed=True)
        raise Refused(401, "unknown API key in X-API-Key; leave the header out to use the anonymous limits")
    return Client("ip:" + _address_bucket(address))


def _address_bucket(address: str) -> str:
    """The address itself, or its /64 for IPv6 (one subscriber usually holds a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class Limiter:
    """The API's limits over a shared Redis (`connect` returns this process's client)."""

    def __init__(self, settings: Settings, connect: Callable[[], redis.Redis]) -> None:
        self.settings = settings
        self._connect = connect
        self._scripts: dict[str, Any] = {}

    def admit(self, client: Client) -> None:
        """Count one request of `client`; raise Refused(429) when it is over its rate."""
        per_minute = self.settings.api_key_rate_per_minute if client.keyed else self.settings.api_rate_per_minute
        if client.local or per_minute <= 0:
            return
        interval = 60_000 / per_minute
        tolerance = interval * max(self.settings.api_rate_burst - 1, 0)
        wait_ms = self._run(RATE_SCRIPT, [KEY_PREFIX + "rate:" + client.bucket],
                            [math.ceil(interval), math.floor(tolerance)])
        if wait_ms:
            seconds = max(1, math.ceil(int(wait_ms) / 1000))
            raise Refused(429, f"too many requests: at most {per_minute} a minute (bursts of "
                          f"{self.settings.api_rate_burst}); retry after {seconds} s", seconds)

    def export_slot(self, client: Client) -> Lease | None:
        """Take an export slot for `client` (None when exports are not capped or `client` is local); raise
        Refused(403) when exports need a key and there is none, Refused(429) when no slot is free."""
        if self.settings.api_export_key_required and not client.keyed and not client.local:
            raise Refused(403, "exports need an API key on this server: send it in the X-API-Key header")
        slots = self.settings.api_key_export_slots if client.keyed else self.settings.api_export_slots
        if client.local or slots <= 0:
            return None
        per_client = slots if client.keyed else self.settings.api_exports_per_client
        pool = KEY_PREFIX + ("exports:keyed" if client.keyed else "exports:anonymous")
        lease = Lease(secrets.token_hex(8), (pool, KEY_PREFIX + "exports:" + client.bucket))
        lease_ms = math.ceil((self.settings.api_export_timeout + LEASE_MARGIN_S) * 1000)
        verdict = self._run(SLOT_SCRIPT, list(lease.keys), [lease.token, slots, per_client, lease_ms])
        if verdict is None:
            return None
        if int(verdict) == 1:
            raise Refused(429, f"{slots} exports are running, the most this server runs at once; retry after "
                          f"{self.settings.api_export_retry_seconds} s (or narrow the export)",
                          self.settings.api_export_retry_seconds)
        if int(verdict) == 2:
            raise Refused(429, f"you have {per_client} export(s) running already; wait for it to finish",
                          self.settings.api_export_retry_seconds)
        return lease

    def release(self, lease: Lease | None) -> None:
        """Give an export slot back (a lease that cannot be returned expires by itself)."""
        if lease is None:
            return
        try:
            pipe = self._connect().pipeline(transaction=False)
            for key in lease.keys:
                pipe.zrem(key, lease.token)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("could not return an export slot (it expires by itself): %s", exc)

    def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run a limits script; None (and a warning) when Redis cannot be reached: requests are then let through."""
        try:
            client = self._connect()
            if script not in self._scripts:
                self._scripts[script] = client.register_script(script)
            return self._scripts[script](keys=keys, args=args, client=client)
        except (redis.RedisError, OSError) as exc:
            log.warning("rate limits not applied: Redis does not answer (%s)", exc)
            return None
