"""Identity resolution as the AT Protocol specifies it: the `username` shown with each post, and the handle a user
types into the `author`/`mentions` filters.

DID -> handle (`IdentityResolver.names`, for display):
  1. the shared cache (`identity_cache`: an in-process front cache, then Redis; answers and "none"s);
  2. the archive's `identity` table (the newest handle each DID announced; the relay verified it);
  3. the DID document (PLC directory for did:plc, `https://<host>/.well-known/did.json` for did:web): its first
     `at://` handle counts only when that handle resolves back to the same DID (step 4 of the other direction).
     When the document has arrived within the caller's deadline but the check back has not, the handle it claims
     is shown marked unverified (`Names.unverified`); the check goes on and caches its answer for the next page.
Handle -> DID (`IdentityResolver.did_for`, for filters):
  1. a positive cache entry; 2. the identity table (the DID that most recently announced the handle); 3. a cached
  "none"; 4. DNS TXT `_atproto.<handle>`, then `https://<handle>/.well-known/atproto-did`, then an XRPC
  `com.atproto.identity.resolveHandle` service (FIREHOSE_RESOLVE_HANDLE_URL, optional); the first DID found counts
  only when its DID document lists `at://<handle>` in `alsoKnownAs`.

Network lookups run on a bounded per-worker thread pool (FIREHOSE_RESOLVE_WORKERS), deduplicated while in flight.
A call waits for them until its `deadline` (time.monotonic()) and no longer; a lookup may go on for one resolver
timeout after it was asked for, so what a page could not wait for is cached for the next. A slow, dead or
switched-off resolver never raises out of `names()`/`handles()`/`did_for()`: the name stays unresolved (the API
shows the DID), the failure is remembered in-process for FIREHOSE_RESOLVE_RETRY_SECONDS, and definite answers
(including "none") are cached in Redis for every worker and across restarts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from firehose.config import Settings, nameservers
from firehose.identity_cache import DID_TO_HANDLE, HANDLE_TO_DID, IdentityCache
from firehose.identity_net import Disabled, HttpsTarget, Network, OutOfTime, Unavailable
from firehose.identity_syntax import (
    handle_from_did_document,
    handles_in_document,
    is_did,
    normalise_handle,
    resolvable_handle,
)

__all__ = ["IdentityResolver", "Names", "is_did", "normalise_handle"]

log = logging.getLogger(__name__)

MAX_LOOKUPS_PER_CALL = 64
MAX_CLAIMS = 50_000  # handles claimed by DID documents whose check back is under way, per worker
WARN_EVERY_SECONDS = 60.0

IdentitySource = Callable[[list[str]], dict[str, str]]
ReverseSource = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Names:
    """The names to show for some DIDs: `handles` maps each DID that has one to it (the others show as the DID);
    `unverified` are the DIDs whose handle there is the one their DID document claims, not yet checked back."""

    handles: dict[str, str]
    unverified: frozenset[str] = frozenset()


def network_from_settings(settings: Settings) -> Network:
    """The resolvers `settings` configure."""
    target = HttpsTarget(settings.wellknown_port, settings.wellknown_host, settings.wellknown_ca_file)
    return Network(plc_url=settings.plc_url, plc_timeout=settings.plc_timeout,
                   resolve_handle_url=settings.resolve_handle_url, dns_enabled=settings.dns_enabled,
                   nameservers=nameservers(settings.dns_nameservers), wellknown_enabled=settings.wellknown_enabled,
                   target=target, timeout=settings.resolve_timeout)


def cache_from_settings(settings: Settings) -> IdentityCache:
    """The shared cache `settings` configure (Redis at FIREHOSE_REDIS_URL)."""
    return IdentityCache(settings.redis_url, settings.handle_cache_size, settings.handle_cache_seconds,
                         settings.handle_negative_seconds, settings.resolve_retry_seconds)


class IdentityResolver:
    """One API worker's DID <-> handle resolution: cache, identity table, then the network, verified both ways."""

    def __init__(self, settings: Settings, identity: IdentitySource, reverse: ReverseSource) -> None:
        """`identity(dids)` maps DIDs to their handles and `reverse(handle)` gives a handle's DID, both from the
        archive's identity table (firehose.query.Searcher.identity_handles / identity_did)."""
        self.cache = cache_from_settings(settings)
        self.network = network_from_settings(settings)
        self._identity = identity
        self._reverse = reverse
        self._workers = settings.resolve_workers
        self._timeout = settings.resolve_timeout
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._inflight: dict[tuple[str, str], Future[str | None]] = {}
        self._warned_at = -WARN_EVERY_SECONDS
        self._unwarned = 0
        self._claims: OrderedDict[str, str] = OrderedDict()  # did -> handle its document claims, check under way

    # --- the interface the API uses

    def names(self, dids: Iterable[str], deadline: float) -> Names:
        """The verified handles of `dids` (as `handles`), plus, for a DID whose document arrived by `deadline` but
        whose handle's check back has not, that claimed handle, listed in `unverified`."""
        wanted = list(dict.fromkeys(dids))
        verified = self.handles(wanted, deadline)
        with self._lock:
            claimed = {did: self._claims[did] for did in wanted if did not in verified and did in self._claims}
        return Names({**verified, **claimed}, frozenset(claimed))

    def handles(self, dids: Iterable[str], deadline: float) -> dict[str, str]:
        """Map each DID that has a verified handle to it (the others are left out: show the DID). Network lookups
        run until `deadline` (time.monotonic()); a deadline already passed means cache and identity table only."""
        wanted = [did for did in dict.fromkeys(dids) if isinstance(did, str) and is_did(did)]
        cached = self.cache.get_many(DID_TO_HANDLE, wanted)
        result = {did: handle for did, handle in cached.items() if handle}
        unknown = [did for did in wanted if did not in cached]
        if not unknown:
            return result
        for did, handle in self._table_handles(unknown).items():
            result[did] = handle
            self.cache.put(DID_TO_HANDLE, did, handle)
        rest = [did for did in unknown if did not in result][:MAX_LOOKUPS_PER_CALL]
        if deadline <= time.monotonic():
            return result
        futures = {did: self._submit(DID_TO_HANDLE, did, deadline) for did in rest}
        _wait_until(futures.values(), deadline)
        for did, future in futures.items():
            verified = _value(future)
            if verified:
                result[did] = verified
        return result

    def did_for(self, value: str, deadline: float) -> str | None:
        """The DID a user means by `value`: a DID as is, or the verified DID of a handle (any case, leading '@'
        allowed); None when it is neither or the handle does not resolve by `deadline` (already passed: cache and
        identity table only)."""
        text = value.strip() if isinstance(value, str) else ""
        if is_did(text):
            return text
        handle = normalise_handle(text)
        if handle is None or not resolvable_handle(handle):
            return None
        cached = self.cache.get(HANDLE_TO_DID, handle)
        if cached:
            return cached
        did = self._table_did(handle)
        if did:
            self.cache.put(HANDLE_TO_DID, handle, did)
            return did
        if cached is not None or deadline <= time.monotonic():
            return None
        future = self._submit(HANDLE_TO_DID, handle, deadline)
        _wait_until([future], deadline)
        return _value(future)

    def close(self) -> None:
        """Stop the lookup threads (lookups under way finish within their timeouts)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None

    # --- the archive's identity table (trusted: the relay verified what it announced)

    def _table_handles(self, dids: list[str]) -> dict[str, str]:
        try:
            found = self._identity(dids)
        except Exception:
            log.exception("identity table lookup failed; resolving over the network instead")
            return {}
        return {did: handle for did in dids if (handle := normalise_handle(found.get(did) or ""))}

    def _table_did(self, handle: str) -> str | None:
        try:
            did = self._reverse(handle)
        except Exception:
            log.exception("identity table lookup failed; resolving over the network instead")
            return None
        return did if did and is_did(did) else None

    # --- network lookups on the bounded pool

    def _submit(self, kind: str, name: str, deadline: float) -> Future[str | None]:
        """The lookup of `name` under way (or a new one). The caller waits until its `deadline`; the lookup itself
        may go on for one resolver timeout (FIREHOSE_RESOLVE_TIMEOUT) past now, so an answer that misses a page
        is cached for the next one."""
        key = (kind, name)
        with self._lock:
            future = self._inflight.get(key)
            if future is None:
                until = max(deadline, time.monotonic() + self._timeout)
                future = self._executor().submit(self._lookup, kind, name, until)
                self._inflight[key] = future
        future.add_done_callback(lambda done: self._forget(key, done))
        return future

    def _forget(self, key: tuple[str, str], done: Future[str | None]) -> None:
        with self._lock:
            if self._inflight.get(key) is done:
                del self._inflight[key]

    def _executor(self) -> ThreadPoolExecutor:
        """This process's pool (created again after a fork: threads do not survive one). Caller holds the lock."""
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="identity")
            self._pool_pid = os.getpid()
            self._inflight = {}
            self._claims.clear()  # the parent's checks under way do not run here: their claims would never go
        return self._pool

    def _lookup(self, kind: str, name: str, deadline: float) -> str | None:
        """Resolve and cache one name; never raises (a failure is remembered in-process and answers None)."""
        try:
            if kind == DID_TO_HANDLE:
                answer = self._verified_handle(name, deadline)
            else:
                answer = self._verified_did(name, deadline)
        except OutOfTime:
            return None  # queued past the deadline: ask again with the next request
        except Unavailable as exc:
            self._note_failure(name, str(exc))
            self.cache.put_failure(kind, name)
            return None
        except Exception as exc:
            log.exception("identity lookup of %s failed unexpectedly", name)
            self._note_failure(name, repr(exc))
            self.cache.put_failure(kind, name)
            return None
        self.cache.put(kind, name, answer)
        return answer

    def _verified_handle(self, did: str, deadline: float) -> str | None:
        """The primary handle of `did`'s document when that handle resolves back to `did`, else None."""
        doc = self.network.did_document(did, deadline)
        handle = handle_from_did_document(doc) if doc else None
        if handle is None or not resolvable_handle(handle):
            return None
        self._claim(did, handle)
        try:
            if self._forward(handle, deadline) != did:
                return None
        finally:
            with self._lock:
                self._claims.pop(did, None)
        self.cache.put(HANDLE_TO_DID, handle, did)
        return handle

    def _claim(self, did: str, handle: str) -> None:
        """Remember what `did`'s document claims while its check back runs (`names` shows it, unverified)."""
        with self._lock:
            self._claims[did] = handle
            self._claims.move_to_end(did)
            while len(self._claims) > MAX_CLAIMS:
                self._claims.popitem(last=False)

    def _verified_did(self, handle: str, deadline: float) -> str | None:
        """The DID `handle` resolves to when that DID's document lists `at://<handle>`, else None."""
        did = self._forward(handle, deadline)
        if did is None:
            return None
        doc = self.network.did_document(did, deadline)
        if doc is None or handle not in handles_in_document(doc):
            return None
        if handle_from_did_document(doc) == handle:
            self.cache.put(DID_TO_HANDLE, did, handle)
        return did

    def _forward(self, handle: str, deadline: float) -> str | None:
        """The DID `handle` claims: DNS TXT first, then well-known, then XRPC (the first answer wins). None when
        every enabled method says there is none; Unavailable when none answered and one of them failed."""
        failure: Unavailable | None = None
        for method in (self.network.did_by_dns, self.network.did_by_wellknown, self.network.did_by_xrpc):
            try:
                did = method(handle, deadline)
            except Disabled:
                continue
            except Unavailable as exc:
                failure = exc
                continue
            if did:
                return did
        if failure is not None:
            raise failure
        return None

    def _note_failure(self, name: str, reason: str) -> None:
        """Log resolver failures, at most one line a minute per worker."""
        now = time.monotonic()
        if now - self._warned_at < WARN_EVERY_SECONDS:
            self._unwarned += 1
            return
        log.warning("identity lookup of %s unavailable (%s; %d more since the last report); showing DIDs. Check "
                    "FIREHOSE_PLC_URL, FIREHOSE_DNS_NAMESERVERS and network access", name, reason, self._unwarned)
        self._warned_at, self._unwarned = now, 0


def _wait_until(futures: Iterable[Future[str | None]], deadline: float) -> None:
    pending = list(futures)
    left = deadline - time.monotonic()
    if pending and left > 0:
        wait(pending, timeout=left)


def _value(future: Future[str | None]) -> str | None:
    """The answer of a finished lookup, None while it runs (or if it was cancelled)."""
    if not future.done() or future.cancelled():
        return None
    return future.result()
