"""Request parameters of /search and /export: the one table of them, their validation, and page cursors.

- `PARAMETERS` is the single list of the filter parameters (names, aliases, OpenAPI schema, description, which
  endpoints take them). `parse_search` accepts exactly those names and `openapi_parameters` documents exactly
  them, so the two cannot drift apart.
- `parse_search(pairs, settings, ...)` turns request parameters into a validated `SearchQuery` or raises
  `BadParameter` naming the parameter and saying what it accepts.
- `CursorCodec` makes opaque, HMAC-signed keyset cursors (a `Position`) bound to the query they came from.

Nothing here touches DuckDB or the data directory.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from firehose.config import Settings
from firehose.identity_syntax import is_did, normalise_handle

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
SORTS = ("latest", "oldest")
BOOL_TRUE = ("true", "1", "yes")
BOOL_FALSE = ("false", "0", "no")
MAX_WORDS = 32
MAX_TAGS = 10
MAX_TAG_LENGTH = 640
MAX_DOMAIN_LENGTH = 253
MAX_VALUE_LENGTH = 2048

_LANG_RE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_DOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62})(\.[a-z0-9]([a-z0-9-]{0,62}))*$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$")

# An OpenAPI schema of one value: fixed, or computed from the settings and the endpoint (export=True).
Schema = dict[str, Any] | Callable[[Settings, bool], dict[str, Any]]


class BadParameter(ValueError):
    """A request parameter is invalid; `parameter` names it and the message says what is accepted."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


# ------------------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Parameter:
    """One filter parameter: `names` (the documented name first, then its aliases) all fill `key`."""

    names: tuple[str, ...]
    key: str
    description: str
    schema: Schema
    repeat: bool = False  # may be given several times (tag=a&tag=b); all values are kept
    export: bool = True  # /export takes it too
    search: bool = True  # /search takes it
    export_description: str | None = None  # the description on /export, when it differs


def _text_schema(settings: Settings, export: bool) -> dict[str, Any]:
    return {"type": "string", "maxLength": settings.api_max_text_length}


def _limit_schema(settings: Settings, export: bool) -> dict[str, Any]:
    most = max_limit(settings, export=export)
    return {"type": "integer", "minimum": 1, "maximum": most, "default": most}


_IDENT = {"type": "string", "maxLength": MAX_VALUE_LENGTH, "examples": ["alice.bsky.social", "did:plc:abc123"]}
_WHEN = {"type": "string", "examples": ["2024-05-01", "2024-05-01T13:45:00Z"]}
_BOOLEAN = {"type": "string", "enum": [v for pair in zip(BOOL_TRUE, BOOL_FALSE, strict=True) for v in pair],
            "default": "false"}

PARAMETERS: tuple[Parameter, ...] = (
    Parameter(("text", "q"), "text", "Words that must all occur as whole words (case-insensitive, any script; "
              "word* a prefix; CJK by substrings of 2+ characters); with exact=true the whole phrase, its words in "
              "a row. See Matching in docs/api.md.", _text_schema),
    Parameter(("username", "author"), "author", "Author handle or DID.", _IDENT),
    Parameter(("start", "since"), "since", "Earliest event time (inclusive): ISO date (start of day, UTC) or "
              "datetime.", _WHEN),
    Parameter(("end", "until"), "until", "Latest event time (exclusive): a datetime, or a date meaning the end of "
              "that day (UTC).", _WHEN),
    Parameter(("exact",), "exact", "Match text as one phrase instead of all words.", _BOOLEAN),
    Parameter(("lang",), "lang", "Language code; matches the post's langs exactly or as a prefix (en matches "
              "en-US).", {"type": "string", "pattern": _LANG_RE.pattern}),
    Parameter(("mentions",), "mentions", "Posts that mention this handle or DID.", _IDENT),
    Parameter(("domain",), "domain", "Posts linking to this host or a subdomain of it.",
              {"type": "string", "maxLength": MAX_DOMAIN_LENGTH}),
    Parameter(("url",), "url", "Posts with a link that starts with this URL.",
              {"type": "string", "maxLength": MAX_VALUE_LENGTH}),
    Parameter(("tag",), "tag", "Hashtag (with or without #, case-insensitive); repeat for several (all must "
              f"match, at most {MAX_TAGS}).", {"type": "string", "maxLength": MAX_TAG_LENGTH}, repeat=True),
    Parameter(("sort",), "sort", "Order by event time: latest (newest first) or oldest. 'top' is not supported "
              "(400).", {"type": "string", "enum": list(SORTS), "default": "latest"}),
    Parameter(("limit",), "limit", "Rows per page.", _limit_schema,
              export_description="Most rows in the file; when more posts match, the file ends with a truncation row "
              "(see the 200 response)."),
    Parameter(("cursor",), "cursor", "meta.cursor of the previous page (opaque, signed).", {"type": "string"},
              export=False),
    Parameter(("raw",), "raw", "Cells exactly as posted. By default a cell starting with =, +, -, @, TAB or CR gets "
              "a leading ' so spreadsheets do not run it as a formula (OWASP CSV injection).", _BOOLEAN,
              search=False),
)
_BY_NAME = {name: p for p in PARAMETERS for name in p.names}
_BY_KEY = {p.key: p for p in PARAMETERS}


def accepted(*, export: bool) -> list[Parameter]:
    """The parameters /search (export=False) or /export takes, in table order."""
    return [p for p in PARAMETERS if (p.export if export else p.search)]


def max_limit(settings: Settings, *, export: bool) -> int:
    """The largest `limit`: a page of /search, or the rows of one /export."""
    return settings.api_export_max_rows if export else settings.api_page_size


def openapi_parameters(settings: Settings, *, export: bool) -> list[dict[str, Any]]:
    """OpenAPI parameter objects of /search (export=False) or /export: each name, then each of its aliases."""
    objects: list[dict[str, Any]] = []
    for param in accepted(export=export):
        schema = param.schema(settings, export) if callable(param.schema) else param.schema
        description = (param.export_description if export else None) or param.description
        primary, *aliases = param.names
        if aliases:
            description += f" Alias: {', '.join(aliases)}."
        objects.append(_openapi_parameter(primary, schema, description, repeat=param.repeat))
        objects += [_openapi_parameter(a, schema, f"Alias of {primary}.", repeat=param.repeat) for a in aliases]
    return objects


def _openapi_parameter(name: str, schema: dict[str, Any], description: str, *, repeat: bool) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": name, "in": "query", "required": False, "description": description}
    if repeat:
        obj.update(schema={"type": "array", "items": copy.deepcopy(schema)}, style="form", explode=True)
    else:
        obj["schema"] = copy.deepcopy(schema)
    return obj


# ---------------------------------------------------------------------------------------------- queries


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
    raw: bool = False

    def echo(self) -> dict[str, Any]:
        """The normalised parameters, as echoed in `meta.query` (empty ones left out)."""
        hidden = ("since_us", "until_us", "words", "cursor", "raw")
        shown = {k: v for k, v in asdict(self).items() if k not in hidden}
        shown["tags"] = list(self.tags)
        return {k: v for k, v in shown.items() if v not in (None, [], ())}

    def fingerprint(self) -> str:
        """A digest of the filters and sort (not limit/cursor): a cursor is only valid for the same query."""
        parts = asdict(self)
        for key in ("limit", "cursor", "since", "until", "raw"):
            parts.pop(key)
        return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class Position:
    """Where a page starts: after the row (time_us, uri), with `served` results already returned."""

    time_us: int
    uri: str
    served: int


def parse_search(pairs: Sequence[tuple[str, str]], settings: Settings, *, export: bool = False) -> SearchQuery:
    """Validate request parameters (name, value pairs, already decoded) into a `SearchQuery`."""
    values, sent = _collect(pairs, export=export)

    def name(key: str) -> str:  # errors name the parameter as the client sent it (text or q, start or since...)
        return sent.get(key) or _BY_KEY[key].names[0]

    text = _text(name("text"), values.get("text"), settings.api_max_text_length)
    exact = _boolean("exact", values.get("exact"))
    words = () if text is None or exact else tuple(dict.fromkeys(text.split()))
    if len(words) > MAX_WORDS:
        raise BadParameter(name("text"), f"at most {MAX_WORDS} words are matched; shorten the search text")
    since_us, since = _instant(name("since"), values.get("since"), end=False)
    until_us, until = _instant(name("until"), values.get("until"), end=True)
    if since_us is not None and until_us is not None and until_us <= since_us:
        raise BadParameter(name("until"), f"the end ({until}) must be after the start ({since})")
    return SearchQuery(
        text=text,
        words=words,
        exact=exact and text is not None,
        author=_identifier(name("author"), values.get("author")),
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
        limit=_limit(values.get("limit"), max_limit(settings, export=export)),
        cursor=_plain("cursor", values.get("cursor")),
        raw=_boolean("raw", values.get("raw")),
    )


def _collect(pairs: Sequence[tuple[str, str]], *, export: bool) -> tuple[dict[str, Any], dict[str, str]]:
    """Group parameters by key (`Parameter.key`), and say which name the client used for each key; reject unknown
    names, NUL bytes and repeats of single ones."""
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for name, value in pairs:
        known = _BY_NAME.get(name)
        if known is None or not (known.export if export else known.search):
            allowed = ", ".join(n for p in accepted(export=export) for n in p.names)
            raise BadParameter(name[:64], f"unknown parameter; accepted: {allowed}")
        if "\x00" in value:
            raise BadParameter(name, "contains a NUL character; remove it")
        if known.repeat:
            repeated = values.setdefault(known.key, [])
            if len(repeated) >= MAX_TAGS:
                raise BadParameter(name, f"give at most {MAX_TAGS} values")
            repeated.append(value)
            continue
        if known.key in given:
            other = given[known.key]
            what = "more than once" if other == name else f"together with {other} (they are synonyms)"
            raise BadParameter(name, f"given {what}; give it once")
        given[known.key] = name
        values[known.key] = value
    return values, given


def _text(name: str, value: str | None, max_length: int) -> str | None:
    if value is None:
        return None
    if len(value) > max_length:
        raise BadParameter(name, f"is {len(value)} characters long; the maximum is {max_length}")
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
    if value is None or not value.strip():
        return None
    raw = value.strip()
    if is_did(raw):
        return raw
    handle = normalise_handle(raw)
    if handle is None:
        raise BadParameter(name, f"{raw[:80]!r} is neither a handle (alice.bsky.social) nor a DID (did:plc:...)")
    return handle


def _lang(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    lang = value.strip().lower()
    if not _LANG_RE.match(lang):
        raise BadParameter("lang", f"{value[:40]!r} is not a BCP-47 language code (en, pt-BR, ja)")
    return lang


def _domain(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    domain = value.strip().lower().rstrip(".")
    if len(domain) > MAX_DOMAIN_LENGTH or not _DOMAIN_RE.match(domain):
        raise BadParameter("domain", f"{value[:80]!r} is not a host name (example.com)")
    return domain


def _tag(value: str) -> str:
    tag = value.strip().removeprefix("#").strip()
    if not tag or len(tag) > MAX_TAG_LENGTH or any(c.isspace() for c in tag):
        raise BadParameter("tag", f"{value[:40]!r} is not a hashtag: one word, with or without '#', "
                           f"<= {MAX_TAG_LENGTH} characters")
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
