"""Filters: what a search matches, and the one translation of it into SQL.

`Filters` holds a `SearchQuery` and what it resolves to: handles as DIDs, the text as `matching.Needle`s.
`where_clause` turns it into fixed SQL fragments and bound parameters; the same clause runs over the Parquet files
and over the hot tier (an Arrow table of the posts still in the buffer). For the text it is only a pre-filter
(each needle's tokens as case-insensitive RE2 literals): the rows it lets through are checked by
`matching.matches`, the one definition of a word match, which the full-text index implements too. Every user
value is a bound parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from firehose.matching import Needle
from firehose.params import Position, SearchQuery

# Host of a URL (scheme://[userinfo@]host[:port]...). A constant: a regex passed as a parameter is slow.
_HOST_RE_SQL = r"'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'"


@dataclass(frozen=True)
class Filters:
    """What a search filters on: its `SearchQuery`, and what the query's text, handles and tags became.

    The query's time range, language, domain, URL and sort apply as they are; its `text`, `author`, `mentions` and
    `tags` apply only in the forms below (needles, resolved DIDs, tags lower-cased by DuckDB).
    """

    query: SearchQuery = SearchQuery()
    needles: tuple[Needle, ...] = ()
    author_did: str | None = None
    mentions_did: str | None = None
    tags: tuple[str, ...] = ()

    def without_text(self) -> Filters:
        """These filters without the needles (what is left once the index has matched the text)."""
        return replace(self, needles=())


def where_clause(filters: Filters, after: Position | None) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed SQL fragments) and its bound parameters for `filters` after `after`."""
    query = filters.query
    conds: list[str] = []
    params: list[Any] = []
    for needle in filters.needles:
        # a pre-filter: RE2's case-insensitive match of each token (folds while it scans, no lower-cased copy);
        # the rows it keeps are checked token by token with `matching.matches`
        for pattern in needle.prefilter():
            conds.append("regexp_matches(text, ?)")
            params.append(pattern)
    if filters.author_did is not None:
        conds.append("did = ?")
        params.append(filters.author_did)
    if query.since_us is not None:
        conds.append("time_us >= ?")
        params.append(query.since_us)
    if query.until_us is not None:
        conds.append("time_us < ?")
        params.append(query.until_us)
    if query.lang is not None:
        conds.append("len(list_filter(langs, lambda x: lower(x) = ? OR starts_with(lower(x), ?))) > 0")
        params += [query.lang, query.lang + "-"]
    if filters.mentions_did is not None:
        conds.append("list_contains(mentions, ?)")
        params.append(filters.mentions_did)
    if query.domain is not None:
        conds.append(
            f"len(list_filter(list_transform(links, lambda l: lower(regexp_extract(l, {_HOST_RE_SQL}, 1))), "
            "lambda h: h = ? OR ends_with(h, ?))) > 0"
        )
        params += [query.domain, "." + query.domain]
    if query.url is not None:
        conds.append("len(list_filter(links, lambda l: starts_with(l, ?))) > 0")
        params.append(query.url)
    for tag in filters.tags:
        conds.append("len(list_filter(tags, lambda t: lower(t) = ?)) > 0")
        params.append(tag)
    if after is not None:
        op = "<" if query.sort == "latest" else ">"
        conds.append(f"(time_us {op} ? OR (time_us = ? AND uri {op} ?))")
        params += [after.time_us, after.time_us, after.uri]
    return (" AND ".join(conds) or "TRUE"), params


def order_by(sort: str) -> str:
    """The ORDER BY of a sort: newest first for `latest`, oldest first for `oldest`; `uri` breaks ties."""
    return "time_us DESC, uri DESC" if sort == "latest" else "time_us ASC, uri ASC"


