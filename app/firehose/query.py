"""The query layer: search parameters, page cursors, and DuckDB over the date-partitioned Parquet files.

- `parse_search(pairs, settings, ...)` turns request parameters into a validated `SearchQuery` or raises
  `BadParameter` naming the parameter and saying what it accepts.
- `CursorCodec` makes opaque, HMAC-signed keyset cursors bound to the query they came from.
- `Database` is one DuckDB instance per worker process, opened lazily (after Gunicorn's fork), with a cursor per
  thread and purpose; `Searcher` runs searches, exports, the identity lookups, freshness and stats over it.

Every user value reaches DuckDB as a bound parameter; the only SQL text built at run time is fixed fragments
chosen by which filters are present. Searches walk date partitions newest first (oldest first for
`sort=oldest`), one small group at a time, with `ORDER BY time_us, uri LIMIT n`, and stop as soon as the page is
full. Each call runs under a time budget: a timer calls `interrupt()` on the thread's DuckDB cursor, which cancels
the running statement and leaves the connection usable; the caller gets `QueryTimeout`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import string
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

from firehose import storage
from firehose.config import Settings
from firehose.schema import TABLE_NAMES

log = logging.getLogger(__name__)

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SORTS = ("latest", "oldest")
BOOL_TRUE = ("true", "1", "yes")
BOOL_FALSE = ("false", "0", "no")
MAX_WORDS = 32
MAX_TAGS = 10
MAX_VALUE_LENGTH = 2048
EXPORT_BATCH_ROWS = 50_000
FRESHNESS_FILES_PER_TABLE = 3
STATS_CACHE_SECONDS = 10.0
FRESHNESS_CACHE_SECONDS = 5.0
FIRST_WINDOW_ROWS = 131_072
WINDOW_GROWTH = 4  # each further window holds this many times more rows (2, 8 and 16 measured slower for rare words)
OPEN_END = 253_402_300_800_000_000  # 10000-01-01: later than any time Python's datetime can show

# Columns of a search result, in the order they are selected.
RESULT_COLUMNS = (
    "time_us", "did", "uri", "cid", "text", "langs", "reply_parent_uri", "reply_root_uri", "embed_type",
    "embed_uri", "mentions", "links", "tags", "created_at",
)
# Columns of an export, in CSV order; `username` is added per batch from the DID.
EXPORT_COLUMNS = (
    "timestamp", "username", "text", "uri", "did", "cid", "created_at", "langs", "reply_parent_uri",
    "reply_root_uri", "embed_type", "embed_uri", "mentions", "links", "tags",
)
_EXPORT_SELECT = (
    "strftime(make_timestamp(time_us), '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, text, uri, did, cid, created_at, "
    "to_json(langs)::VARCHAR AS langs, reply_parent_uri, reply_root_uri, embed_type, embed_uri, "
    "to_json(mentions)::VARCHAR AS mentions, to_json(links)::VARCHAR AS links, to_json(tags)::VARCHAR AS tags, "
    "time_us"
)
# Host of a URL (scheme://[userinfo@]host[:port]...). A constant: a regex passed as a parameter is slow.
_HOST_RE_SQL = r"'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'"

# Every parameter /search and /export accept: name -> (canonical name, may repeat).
PARAMETERS: dict[str, tuple[str, bool]] = {
    "text": ("text", False), "q": ("text", False),
    "username": ("author", False), "author": ("author", False),
    "start": ("since", False), "since": ("since", False),
    "end": ("until", False), "until": ("until", False),
    "exact": ("exact", False), "lang": ("lang", False), "mentions": ("mentions", False),
    "domain": ("domain", False), "url": ("url", False), "tag": ("tag", True), "sort": ("sort", False),
    "limit": ("limit", False), "cursor": ("cursor", False),
}
EXPORT_EXCLUDED = ("cursor",)


class BadParameter(ValueError):
    """A request parameter is invalid; `parameter` names it and the message says what is accepted."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


class QueryTimeout(RuntimeError):
    """A query ran past its time budget and was cancelled."""


@dataclass(frozen=True)
class SearchQuery:
    """A validated search: filters (as given and normalised), sort, page size and position."""

    text: str | None = None
    words: tuple[str, ...] = ()
    exact: bool = False
    author: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    since: str | None = None
    until: str | None = None
    lang: str | None = None
    mentions: str | None = None
    domain: str | None = None
    url: str | None = None
    tags: tuple[str, ...] = ()
    sort: str = "latest"
    limit: int = 50
    cursor: str | None = None

    def echo(self) -> dict[str, Any]:
        """The normalised parameters, as echoed in `meta.query` (empty ones left out)."""
        shown = {k: v for k, v in asdict(self).items() if k not in ("since_us", "until_us", "words", "cursor")}
        shown["tags"] = list(self.tags)
        return {k: v for k, v in shown.items() if v not in (None, [], ())}

    def fingerprint(self) -> str:
        """A digest of the filters and sort (not limit/cursor): a cursor is only valid for the same query."""
        parts = asdict(self)
        for key in ("limit", "cursor", "since", "until"):
            parts.pop(key)
        return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class Filters:
    """What the SQL filters on: a `SearchQuery` with handles resolved to DIDs and needles lower-cased."""

    needles: tuple[str, ...] = ()
    author_did: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    lang: str | None = None
    mentions_did: str | None = None
    domain: str | None = None
    url: str | None = None
    tags: tuple[str, ...] = ()
    sort: str = "latest"


@dataclass(frozen=True)
class Position:
    """Where a page starts: after the row (time_us, uri), with `served` results already returned."""

    time_us: int
    uri: str
    served: int


@dataclass(frozen=True)
class Chunk:
    """One Parquet row group of `posts`: its file, row count and time range (inclusive, unix microseconds)."""

    path: str
    rows: int
    lo: int
    hi: int


@dataclass
class Page:
    """One page of search results and where the next one starts (None when there is none)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_position: Position | None = None


# ---------------------------------------------------------------------------------------------- parameters


def parse_search(pairs: Sequence[tuple[str, str]], settings: Settings, *, export: bool = False) -> SearchQuery:
    """Validate request parameters (name, value pairs, already decoded) into a `SearchQuery`."""
    values = _collect(pairs, export=export)
    text = _text(values.get("text"), settings.api_max_text_length)
    exact = _boolean("exact", values.get("exact"))
    words = () if text is None or exact else tuple(dict.fromkeys(text.split()))
    if len(words) > MAX_WORDS:
        raise BadParameter("text", f"at most {MAX_WORDS} words are matched; shorten the search text")
    since_us, since = _instant("since", values.get("since"), end=False)
    until_us, until = _instant("until", values.get("until"), end=True)
    if since_us is not None and until_us is not None and until_us <= since_us:
        raise BadParameter("until", f"the end ({until}) must be after the start ({since})")
    max_limit = settings.api_export_max_rows if export else settings.api_page_size
    return SearchQuery(
        text=text,
        words=words,
        exact=exact and text is not None,
        author=_identifier("username", values.get("author")),
        since_us=since_us,
        until_us=until_us,
        since=since,
        until=until,
        lang=_lang(values.get("lang")),
        mentions=_identifier("mentions", values.get("mentions")),
        domain=_domain(values.get("domain")),
        url=_plain("url", values.get("url")),
        tags=tuple(dict.fromkeys(_tag(t) for t in values.get("tag", []) if t.strip())),
        sort=_sort(values.get("sort")),
        limit=_limit(values.get("limit"), max_limit),
        cursor=_plain("cursor", values.get("cursor")),
    )


def _collect(pairs: Sequence[tuple[str, str]], *, export: bool) -> dict[str, Any]:
    """Group parameters by canonical name; reject unknown names, NUL bytes and repeats of single parameters."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for name, value in pairs:
        known = PARAMETERS.get(name)
        if known is None or (export and name in EXPORT_EXCLUDED):
            allowed = ", ".join(n for n in PARAMETERS if not (export and n in EXPORT_EXCLUDED))
            raise BadParameter(name[:64], f"unknown parameter; accepted: {allowed}")
        if "\x00" in value:
            raise BadParameter(name, "contains a NUL character; remove it")
        canonical, repeatable = known
        if repeatable:
            tags = values.setdefault(canonical, [])
            if len(tags) >= MAX_TAGS:
                raise BadParameter(name, f"give at most {MAX_TAGS} values")
            tags.append(value)
            continue
        if canonical in given:
            other = given[canonical]
            what = "more than once" if other == name else f"together with {other} (they are synonyms)"
            raise BadParameter(name, f"given {what}; give it once")
        given[canonical] = name
        values[canonical] = value
    return values


def _text(value: str | None, max_length: int) -> str | None:
    if value is None:
        return None
    if len(value) > max_length:
        raise BadParameter("text", f"is {len(value)} characters long; the maximum is {max_length}")
    stripped = " ".join(value.split())
    return stripped or None


def _plain(name: str, value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_VALUE_LENGTH:
        raise BadParameter(name, f"is longer than {MAX_VALUE_LENGTH} characters")
    return value.strip()


def _boolean(name: str, value: str | None) -> bool:
    if value is None or value == "":
        return False
    lowered = value.strip().lower()
    if lowered in BOOL_TRUE:
        return True
    if lowered in BOOL_FALSE:
        return False
    raise BadParameter(name, f"must be a boolean: one of {', '.join(BOOL_TRUE + BOOL_FALSE)}; got {value[:40]!r}")


_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")


def _instant(name: str, value: str | None, *, end: bool) -> tuple[int | None, str | None]:
    """(unix microseconds, ISO text) of a date or datetime; a bare date as an end means the end of that day."""
    if value is None or not value.strip():
        return None, None
    raw = value.strip()
    hint = "use an ISO 8601 date (2024-05-01) or UTC datetime (2024-05-01T13:45:00Z)"
    try:
        if _DATE_RE.match(raw):
            day = dt.date.fromisoformat(raw)
            when = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            if end:
                when += dt.timedelta(days=1)
        elif _DATETIME_RE.match(raw):
            text = re.sub(r"(\.\d{6})\d+", r"\1", raw)  # Python parses at most microseconds
            when = dt.datetime.fromisoformat(text)
            when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
        else:
            raise ValueError("not ISO 8601")
    except (ValueError, OverflowError) as exc:
        raise BadParameter(name, f"{raw[:40]!r} is not a valid date or time ({exc}); {hint}") from None
    micros = (when - EPOCH) // dt.timedelta(microseconds=1)
    if micros < 0:
        raise BadParameter(name, f"{raw[:40]!r} is before 1970; {hint}")
    return micros, when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _identifier(name: str, value: str | None) -> str | None:
    """A handle (normalised) or a DID, as typed; None when absent."""
    from firehose.handles import is_did, normalise_handle

    if value is None or not value.strip():
        return None
    raw = value.strip()
    if is_did(raw):
        return raw
    handle = normalise_handle(raw)
    if handle is None:
        raise BadParameter(name, f"{raw[:80]!r} is neither a handle (alice.bsky.social) nor a DID (did:plc:...)")
    return handle


_LANG_RE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")


def _lang(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    lang = value.strip().lower()
    if not _LANG_RE.match(lang):
        raise BadParameter("lang", f"{value[:40]!r} is not a BCP-47 language code (en, pt-BR, ja)")
    return lang


_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$")


def _domain(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    domain = value.strip().lower().rstrip(".")
    if len(domain) > 253 or not _DOMAIN_RE.match(domain):
        raise BadParameter("domain", f"{value[:80]!r} is not a host name (example.com)")
    return domain


def _tag(value: str) -> str:
    tag = value.strip().removeprefix("#").strip()
    if not tag or len(tag) > 640 or any(c.isspace() for c in tag):
        raise BadParameter("tag", f"{value[:40]!r} is not a hashtag: one word, with or without '#', <= 640 characters")
    return tag


def _sort(value: str | None) -> str:
    if value is None or not value.strip():
        return "latest"
    sort = value.strip().lower()
    if sort == "top":
        raise BadParameter("sort", "'top' (engagement ranking) is not supported by this archive; use latest or oldest")
    if sort not in SORTS:
        raise BadParameter("sort", f"{value[:40]!r} is not supported; use one of: {', '.join(SORTS)}")
    return sort


def _limit(value: str | None, maximum: int) -> int:
    if value is None or value.strip() == "":
        return maximum
    raw = value.strip()
    if not raw.isdigit() or not raw.isascii() or len(raw) > 12 or not 1 <= int(raw) <= maximum:
        raise BadParameter("limit", f"must be a whole number from 1 to {maximum}; got {raw[:40]!r}")
    return int(raw)


# ------------------------------------------------------------------------------------------------- cursors


class CursorCodec:
    """Opaque page cursors: base64url(JSON position) + '.' + HMAC-SHA256 over it and the query fingerprint."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, body: bytes, fingerprint: str) -> str:
        digest = hmac.new(self._secret, body + b"|" + fingerprint.encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def encode(self, position: Position, fingerprint: str) -> str:
        """The cursor for `position` within the query with `fingerprint`."""
        body = orjson.dumps([position.time_us, position.uri, position.served])
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload.encode(), fingerprint)}"

    def decode(self, cursor: str, fingerprint: str) -> Position:
        """The position in `cursor`; BadParameter when it is garbled, forged or from another query."""
        invalid = BadParameter("cursor", "is not a cursor this server issued for this query; "
                               "repeat the search without it and use meta.cursor from the response")
        payload, _, signature = cursor.partition(".")
        if not payload or not signature or not payload.isascii() or not signature.isascii():
            raise invalid
        if not hmac.compare_digest(self._sign(payload.encode(), fingerprint), signature):
            raise invalid
        try:
            time_us, uri, served = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            if not (isinstance(time_us, int) and isinstance(uri, str) and isinstance(served, int)):
                raise ValueError("wrong types")
        except (ValueError, TypeError) as exc:
            raise invalid from exc
        return Position(time_us, uri, served)


# ------------------------------------------------------------------------------------------------ database


class Watchdog:
    """Cancels whatever `con` runs once `seconds` have passed, until the watchdog is closed."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self._con = con
        self._lock = threading.Lock()
        self._active = True
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._active:
                self.fired = True
                self._con.interrupt()

    def close(self) -> None:
        """Disarm: after this returns the timer never interrupts the connection."""
        with self._lock:
            self._active = False
        self._timer.cancel()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Database:
    """One in-memory DuckDB instance per worker process, created on first use (so after Gunicorn's fork);
    each thread gets its own cursor per purpose (a DuckDB connection must not run two statements at once)."""

    def __init__(self, threads: int, memory_limit: str) -> None:
        self._config = {"threads": threads, "memory_limit": memory_limit}
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._local = threading.local()

    def connection(self) -> duckdb.DuckDBPyConnection:
        """The process's base connection (opened now if this process has none yet)."""
        with self._lock:
            if self._con is None or self._pid != os.getpid():
                self._con = duckdb.connect(":memory:", config=dict(self._config))
                try:  # Parquet footers are immutable here (files only appear by rename), so cache them
                    self._con.execute("LOAD parquet; SET parquet_metadata_cache = true")
                except duckdb.Error as exc:
                    log.info("parquet_metadata_cache not available: %s", exc)
                self._pid = os.getpid()
                self._local = threading.local()
            return self._con

    def cursor(self, purpose: str = "query") -> duckdb.DuckDBPyConnection:
        """This thread's cursor for `purpose` (query, handles, meta)."""
        base = self.connection()
        cursors = getattr(self._local, "cursors", None)
        if cursors is None:
            cursors = self._local.cursors = {}
        cur = cursors.get(purpose)
        if cur is None:
            cur = cursors[purpose] = base.cursor()
        return cur


def _iso(time_us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _date_of(time_us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%d")


_RE2_PUNCTUATION = frozenset(string.punctuation)


def re2_literal(text: str) -> str:
    """`text` as an RE2 pattern matching exactly itself (every ASCII punctuation escaped; %, _ and \\ too)."""
    return "".join("\\" + ch if ch in _RE2_PUNCTUATION else ch for ch in text)


def where_clause(filters: Filters, after: Position | None) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed SQL fragments) and its bound parameters for `filters` after `after`."""
    conds: list[str] = []
    params: list[Any] = []
    for needle in filters.needles:
        # RE2's case-insensitive match of an escaped literal: Unicode-aware like lower(), ~40% cheaper per row
        # (it folds while it scans instead of building a lower-cased copy of every text)
        conds.append("regexp_matches(text, ?)")
        params.append("(?i)" + re2_literal(needle))
    if filters.author_did is not None:
        conds.append("did = ?")
        params.append(filters.author_did)
    if filters.since_us is not None:
        conds.append("time_us >= ?")
        params.append(filters.since_us)
    if filters.until_us is not None:
        conds.append("time_us < ?")
        params.append(filters.until_us)
    if filters.lang is not None:
        conds.append("len(list_filter(langs, lambda x: lower(x) = ? OR starts_with(lower(x), ?))) > 0")
        params += [filters.lang, filters.lang + "-"]
    if filters.mentions_did is not None:
        conds.append("list_contains(mentions, ?)")
        params.append(filters.mentions_did)
    if filters.domain is not None:
        conds.append(
            f"len(list_filter(list_transform(links, lambda l: lower(regexp_extract(l, {_HOST_RE_SQL}, 1))), "
            "lambda h: h = ? OR ends_with(h, ?))) > 0"
        )
        params += [filters.domain, "." + filters.domain]
    if filters.url is not None:
        conds.append("len(list_filter(links, lambda l: starts_with(l, ?))) > 0")
        params.append(filters.url)
    for tag in filters.tags:
        conds.append("len(list_filter(tags, lambda t: lower(t) = ?)) > 0")
        params.append(tag)
    if after is not None:
        op = "<" if filters.sort == "latest" else ">"
        conds.append(f"(time_us {op} ? OR (time_us = ? AND uri {op} ?))")
        params += [after.time_us, after.time_us, after.uri]
    return (" AND ".join(conds) or "TRUE"), params


def _overlapping(chunks: list[Chunk], low: int, high: int) -> list[str]:
    """The distinct files (in first-seen order) with a row group overlapping [low, high)."""
    return list(dict.fromkeys(c.path for c in chunks if c.hi >= low and c.lo < high))


def _order(sort: str) -> str:
    return "time_us DESC, uri DESC" if sort == "latest" else "time_us ASC, uri ASC"


class Searcher:
    """Searches, exports and metadata reads over `<data_dir>`; one per worker (created by the API app)."""

    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.db = database or Database(settings.api_duckdb_threads, settings.api_duckdb_memory)
        self._meta_lock = threading.Lock()
        self._footer_rows: dict[str, tuple[int, int, int]] = {}
        self._row_groups: dict[str, tuple[tuple[int, int], list[tuple[int, int, int]]]] = {}
        self._unreadable: set[str] = set()
        self._day_files: dict[str, set[str]] = {}
        self._stats_cache: tuple[float, dict[str, Any]] | None = None
        self._fresh_cache: tuple[float, int | None] | None = None

    # --- partitions

    def day_chunks(self, date: str) -> list[Chunk]:
        """Row groups of one `posts` partition with their time ranges from the Parquet statistics (each file's
        footer is read once and cached; a file whose footer cannot be read is skipped with a warning)."""
        paths: list[tuple[str, int, int]] = []
        for path in storage.partition_files(self.data_dir, "posts", date):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue  # replaced by compaction meanwhile
            paths.append((str(path), st.st_mtime_ns, st.st_size))
        with self._meta_lock:
            missing = [p[0] for p in paths if self._row_groups.get(p[0], ((0, 0),))[0] != p[1:]]
        if missing:
            found = self._read_row_groups(missing)
            day = int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000
            with self._meta_lock:
                for path, mtime, size in paths:
                    if path in missing:  # no time statistics: assume the file spans its whole day
                        groups = found.get(path, [(0, day, day + 86_400_000_000 - 1)])
                        self._row_groups[path] = ((mtime, size), groups if path not in self._unreadable else [])
        with self._meta_lock:
            current = {p[0] for p in paths}
            for gone in self._day_files.get(date, set()) - current:  # replaced by compaction
                self._row_groups.pop(gone, None)
            self._day_files[date] = current
            return [Chunk(path, rows, lo, hi) for path, *_ in paths for rows, lo, hi in self._row_groups[path][1]]

    def _read_row_groups(self, files: list[str]) -> dict[str, list[tuple[int, int, int]]]:
        sql = ("SELECT file_name, row_group_id, any_value(row_group_num_rows), "
               "min(TRY_CAST(stats_min_value AS BIGINT)), max(TRY_CAST(stats_max_value AS BIGINT)) "
               "FROM parquet_metadata(?) WHERE path_in_schema = 'time_us' GROUP BY ALL ORDER BY 1, 2")
        cur = self.db.cursor("meta")
        try:
            rows = cur.execute(sql, [files]).fetchall()
        except duckdb.Error:
            rows = []
            for name in files:  # find the unreadable one(s); the rest still count
                try:
                    rows += cur.execute(sql, [[name]]).fetchall()
                except duckdb.Error as exc:
                    log.warning("skipping %s: its Parquet footer cannot be read (%s)", name, exc)
                    self._unreadable.add(name)
        found: dict[str, list[tuple[int, int, int]]] = {}
        for name, _rg, count, lo, hi in rows:
            if lo is not None and hi is not None:
                found.setdefault(name, []).append((int(count), int(lo), int(hi)))
        return found

    def windows(self, filters: Filters, after: Position | None) -> Iterator[tuple[list[str], int, int]]:
        """(files, low, high) time windows [low, high) in scan order that together cover the search range.

        Windows follow the data: row groups (time-clustered: the flush writes in arrival order, compaction
        sorts) are taken newest first (oldest first for sort=oldest), partition by partition, until they hold
        about FIRST_WINDOW_ROWS rows (and at least one row group per DuckDB thread), then twice as many for each
        further window. A common word fills its page
        from the first small window; a rare one costs one scan of the range plus a few extra statements.
        Footers of older partitions are not even read while newer ones fill the page. Each window passes DuckDB
        only the files whose row groups overlap it."""
        latest = filters.sort == "latest"
        low = filters.since_us if filters.since_us is not None else 0
        high = filters.until_us if filters.until_us is not None else OPEN_END
        if after is not None:
            if latest:
                high = min(high, after.time_us + 1)
            else:
                low = max(low, after.time_us)
        if high <= low:
            return
        first_day = _date_of(low) if low > 0 else "0000-00-00"
        last_day = _date_of(high - 1) if high < OPEN_END else "9999-99-99"
        dates = [d for d in storage.list_dates(self.data_dir, "posts") if first_day <= d <= last_day]
        if not latest:
            dates.reverse()
        pending: list[Chunk] = []
        target, rows, count = FIRST_WINDOW_ROWS, 0, 0
        min_chunks = self.settings.api_duckdb_threads  # DuckDB parallelises over row groups: keep all threads busy
        edge: int | None = None
        for date in dates:
            chunks = [c for c in self.day_chunks(date) if c.hi >= low and c.lo < high]
            if not chunks:
                continue
            chunks.sort(key=(lambda c: -c.hi) if latest else (lambda c: c.lo))
            if edge is None:
                edge = min(high, chunks[0].hi + 1) if latest else max(low, chunks[0].lo)
            pending += chunks
            for chunk in chunks:
                rows += chunk.rows
                count += 1
                if rows < target or count < min_chunks:
                    continue
                cut = max(chunk.lo, low) if latest else min(chunk.hi + 1, high)
                if (cut < edge) if latest else (cut > edge):
                    window = (cut, edge) if latest else (edge, cut)
                    yield _overlapping(pending, *window), *window
                    edge, rows, count, target = cut, 0, 0, target * WINDOW_GROWTH
                    pending = [c for c in pending if (c.lo < edge if latest else c.hi >= edge)]
        if edge is not None and ((edge > low) if latest else (edge < high)):
            window = (low, edge) if latest else (edge, high)
            files = _overlapping(pending, *window)
            if files:
                yield files, *window

    def lowercase(self, words: Sequence[str]) -> tuple[str, ...]:
        """Lower-case `words` with DuckDB's own lower(), so needle and text are folded the same way."""
        if not words:
            return ()
        row = self.db.cursor("meta").execute("SELECT list_transform(?::VARCHAR[], lambda w: lower(w))",
                                             [list(words)]).fetchone()
        return tuple(row[0]) if row else tuple(w.lower() for w in words)

    # --- search

    def search(self, filters: Filters, limit: int, after: Position | None, *, cap: int,
               budget: float | None = None) -> Page:
        """Up to `limit` results after `after` (newest first for sort=latest), at most `cap` over all pages."""
        served = after.served if after else 0
        want = min(limit, cap - served)
        if want <= 0:
            return Page()
        cur = self.db.cursor("query")
        keys: list[tuple[int, str, tuple[str, ...]]] = []  # (time_us, uri, files it came from), in page order
        seconds = budget or self.settings.api_query_timeout
        timeout = QueryTimeout(f"the search ran past its {seconds:g} s budget and was cancelled")
        where, params = where_clause(filters, after)
        # Two phases: find the page's keys reading only the filter and key columns, then fetch the full rows of
        # those few keys (decoding every result column of every scanned row doubled the cost of a rare word).
        sql = (f"SELECT time_us, uri FROM read_parquet(?, hive_partitioning = false) "
               f"WHERE time_us >= ? AND time_us < ? AND {where} ORDER BY {_order(filters.sort)} LIMIT ?")
        with Watchdog(cur, seconds) as dog:
            try:
                for files, low, high in self.windows(filters, after):
                    found = cur.execute(sql, [files, low, high, *params, want + 1 - len(keys)]).fetchall()
                    keys += [(t, u, tuple(files)) for t, u in found]
                    if len(keys) > want:
                        break
                    if dog.fired:  # the timer went off between two statements
                        raise timeout
                rows = self._fetch_rows(cur, keys[:want])
                if dog.fired:
                    raise timeout
            except duckdb.InterruptException as exc:
                raise timeout from exc
            except duckdb.Error:
                if dog.fired:
                    raise timeout from None
                raise
        page = Page(rows=[self._row(r) for r in rows])
        if len(keys) > want and served + want < cap:  # one key past the page: there is a next page
            last = page.rows[-1]
            page.next_position = Position(last["time_us"], last["uri"], served + want)
        return page

    @staticmethod
    def _fetch_rows(cur: duckdb.DuckDBPyConnection, keys: list[tuple[int, str, tuple[str, ...]]]
                    ) -> list[tuple[Any, ...]]:
        """The result columns of the posts `keys` names, in the order of `keys` (row groups pruned by time)."""
        by_files: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        for time_us, uri, files in keys:
            by_files.setdefault(files, []).append((time_us, uri))
        found: dict[tuple[int, str], tuple[Any, ...]] = {}
        select = ", ".join(RESULT_COLUMNS)
        for files, wanted in by_files.items():
            times = [t for t, _ in wanted]
            rows = cur.execute(
                f"SELECT {select} FROM read_parquet(?, hive_partitioning = false) "
                "WHERE time_us >= ? AND time_us <= ? AND uri IN (SELECT unnest(?::VARCHAR[]))",
                [list(files), min(times), max(times), [u for _, u in wanted]],
            ).fetchall()
            wanted_set = set(wanted)
            for row in rows:
                key = (row[0], row[2])
                if key in wanted_set:
                    found[key] = row
        return [found[(t, u)] for t, u, _ in keys]

    @staticmethod
    def _row(values: tuple[Any, ...]) -> dict[str, Any]:
        row = dict(zip(RESULT_COLUMNS, values, strict=True))
        row["timestamp"] = _iso(row["time_us"])
        return row

    # --- export

    def export(self, filters: Filters, max_rows: int) -> Iterator[pa.RecordBatch]:
        """Record batches (EXPORT_COLUMNS minus username, plus time_us) of up to `max_rows` matches in sort order.
        The first batch is computed before this returns, under `api_query_timeout` (QueryTimeout and DuckDB errors
        surface here, so the API can still answer with a status); the rest streams under `api_export_timeout`,
        after which the stream just ends (logged)."""
        cur = self.db.cursor("query")
        dogs = [Watchdog(cur, self.settings.api_query_timeout)]
        batches = self._export_batches(cur, filters, max_rows, dogs)
        try:
            first = next(batches, None)
        except duckdb.InterruptException as exc:
            raise QueryTimeout(f"the export's first rows took longer than {self.settings.api_query_timeout:g} s "
                               "and it was cancelled; narrow the filters (dates, author, words)") from exc
        finally:
            dogs[0].close()
        return self._stream(cur, first, batches, dogs)

    def _stream(self, cur: duckdb.DuckDBPyConnection, first: pa.RecordBatch | None,
                batches: Iterator[pa.RecordBatch], dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        dogs[0] = Watchdog(cur, self.settings.api_export_timeout)  # armed only once the stream really starts
        try:
            if first is None:
                return
            yield first
            yield from batches
        except duckdb.InterruptException:
            log.warning("export cut off after %s s (FIREHOSE_API_EXPORT_TIMEOUT)", self.settings.api_export_timeout)
        except duckdb.Error:
            log.exception("export failed after the response started; the CSV is truncated")
        finally:
            dogs[0].close()
            batches.close()

    def _export_batches(self, cur: duckdb.DuckDBPyConnection, filters: Filters, max_rows: int,
                        dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        """Batches window by window; `dogs[0]` is the watchdog currently in charge (checked between statements,
        where an interrupt would be lost)."""
        left = max_rows
        where, params = where_clause(filters, None)
        sql = (f"SELECT {_EXPORT_SELECT} FROM read_parquet(?, hive_partitioning = false) "
               f"WHERE time_us >= ? AND time_us < ? AND {where} ORDER BY {_order(filters.sort)} LIMIT ?")
        for files, low, high in self.windows(filters, None):
            if dogs[0].fired:
                raise duckdb.InterruptException("time budget used up")
            reader = cur.sql(sql, params=[files, low, high, *params, left]).to_arrow_reader(EXPORT_BATCH_ROWS)
            for batch in reader:
                if batch.num_rows:
                    left -= batch.num_rows
                    yield batch
            if dogs[0].fired:  # it went off just before or during this statement: the result may be cut short
                raise duckdb.InterruptException("time budget used up")
            if left <= 0:
                return

    # --- identity

    def identity_files(self) -> list[str]:
        """Every file of the `identity` table."""
        return [str(f) for d in storage.list_dates(self.data_dir, "identity")
                for f in storage.partition_files(self.data_dir, "identity", d)]

    def identity_handles(self, dids: list[str]) -> dict[str, str]:
        """The newest non-null handle of each DID in `dids` according to the identity table."""
        files = self.identity_files()
        if not files or not dids:
            return {}
        sql = ("SELECT did, arg_max(handle, time_us) FROM read_parquet(?, hive_partitioning = false) "
               "WHERE handle IS NOT NULL AND did = ANY(?) GROUP BY did")
        try:
            rows = self.db.cursor("handles").execute(sql, [files, dids]).fetchall()
        except duckdb.Error as exc:
            log.warning("identity lookup failed: %s", exc)
            return {}
        return {did: handle.lower() for did, handle in rows if handle}

    def identity_did(self, handle: str) -> str | None:
        """The DID that most recently announced `handle` in the identity table, or None."""
        files = self.identity_files()
        if not files:
            return None
        sql = ("SELECT did FROM read_parquet(?, hive_partitioning = false) WHERE lower(handle) = ? "
               "ORDER BY time_us DESC LIMIT 1")
        try:
            row = self.db.cursor("handles").execute(sql, [files, handle]).fetchone()
        except duckdb.Error as exc:
            log.warning("identity lookup failed: %s", exc)
            return None
        return row[0] if row else None

    # --- freshness and stats

    def newest_time_us(self) -> int | None:
        """The newest event time over all tables, from the Parquet statistics of the newest files (cached briefly)."""
        now = time.monotonic()
        with self._meta_lock:
            if self._fresh_cache and now - self._fresh_cache[0] < FRESHNESS_CACHE_SECONDS:
                return self._fresh_cache[1]
        files: list[str] = []
        for table in TABLE_NAMES:
            dates = storage.list_dates(self.data_dir, table)
            if dates:
                newest = storage.partition_files(self.data_dir, table, dates[0])
                newest.sort(key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
                files += [str(p) for p in newest[-FRESHNESS_FILES_PER_TABLE:]]
        value: int | None = None
        if files:
            sql = ("SELECT max(TRY_CAST(stats_max_value AS BIGINT)) FROM parquet_metadata(?) "
                   "WHERE path_in_schema = 'time_us'")
            row = self.db.cursor("meta").execute(sql, [files]).fetchone()
            value = int(row[0]) if row and row[0] is not None else None
        with self._meta_lock:
            self._fresh_cache = (now, value)
        return value

    def stats(self) -> dict[str, Any]:
        """Rows, files and bytes per table per day, from Parquet footers (each file's footer read once)."""
        now = time.monotonic()
        with self._meta_lock:
            if self._stats_cache and now - self._stats_cache[0] < STATS_CACHE_SECONDS:
                return self._stats_cache[1]
        listing: dict[str, dict[str, list[tuple[str, int, int]]]] = {}
        unknown: list[str] = []
        seen: set[str] = set()
        for table in TABLE_NAMES:
            for date in storage.list_dates(self.data_dir, table):
                for path in storage.partition_files(self.data_dir, table, date):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue  # replaced by compaction meanwhile
                    key = str(path)
                    seen.add(key)
                    listing.setdefault(table, {}).setdefault(date, []).append((key, st.st_mtime_ns, st.st_size))
                    cached = self._footer_rows.get(key)
                    if cached is None or cached[:2] != (st.st_mtime_ns, st.st_size):
                        unknown.append(key)
        counts = self._count_rows(unknown)
        with self._meta_lock:
            for key in list(self._footer_rows):
                if key not in seen:
                    del self._footer_rows[key]
            tables: dict[str, Any] = {}
            for table, dates in listing.items():
                days = {}
                for date, files in dates.items():
                    rows = 0
                    for key, mtime, size in files:
                        if key in counts:
                            self._footer_rows[key] = (mtime, size, counts[key])
                        rows += self._footer_rows.get(key, (0, 0, 0))[2]
                    days[date] = {"rows": rows, "files": len(files), "bytes": sum(f[2] for f in files)}
                tables[table] = {"rows": sum(d["rows"] for d in days.values()),
                                 "bytes": sum(d["bytes"] for d in days.values()), "days": days}
            result = {"tables": tables}
            self._stats_cache = (now, result)
        return result

    def _count_rows(self, files: list[str]) -> dict[str, int]:
        if not files:
            return {}
        try:
            rows = self.db.cursor("meta").execute(
                "SELECT file_name, num_rows FROM parquet_file_metadata(?)", [files]).fetchall()
        except duckdb.Error:
            rows = []
            for f in files:  # one unreadable file (being replaced) must not hide the others
                try:
                    rows += self.db.cursor("meta").execute(
                        "SELECT file_name, num_rows FROM parquet_file_metadata(?)", [f]).fetchall()
                except duckdb.Error as exc:
                    log.warning("cannot read the footer of %s: %s", f, exc)
        return {name: int(n) for name, n in rows}
