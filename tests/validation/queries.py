"""The frontend query suite, run through the HTTP API, cold and warm.

- warm: `warm_reps` requests in a row against an API that has already answered the same query;
- cold: the first request a freshly started API process answers (the API is restarted before every cold
  sample; the operating system's page cache is not dropped: this machine is shared, so "cold" means a fresh
  API process with empty DuckDB and handle caches, not a cold disk).

Latency is measured on the client from sending the request to having read the whole body.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from firehose.simulator.vocabulary import CJK_WORD, COMMON_WORD, CYRILLIC_WORD, PHRASE, RARE_WORD, TAG
from tests.validation.probe import percentiles

RANGES = (1, 7, 30)
NO_MATCH_WORD = "zyzzyvaquux"  # occurs in no generated post


class Api(Protocol):
    """An API under test: where it answers, and how to restart it (blocking until it answers again)."""

    base_url: str

    def restart(self) -> None: ...


@dataclass(frozen=True)
class HttpQuery:
    """One named request of the suite."""

    name: str
    path: str
    params: dict[str, str]
    range_days: int | None

    def url(self, base_url: str) -> str:
        query = urllib.parse.urlencode(self.params)
        return f"{base_url}{self.path}" + (f"?{query}" if query else "")


def iso(day: dt.date) -> str:
    """Midnight UTC of a day, as the API's start/end parameters take it."""
    return f"{day.isoformat()}T00:00:00Z"


def build_suite(end_day: dt.date, data_days: int, username: str | None,
                ranges: tuple[int, ...] = RANGES) -> list[HttpQuery]:
    """Searches over the last `ranges` days the data covers (up to `end_day`, exclusive), and a 1000-row export."""
    searches: list[tuple[str, dict[str, str]]] = [
        ("common_word", {"text": COMMON_WORD}),
        ("rare_word", {"text": RARE_WORD}),
        # both words in one post: ~1e-4 x 0.3% of posts, about 8 in a full-scale month
        ("very_rare_words", {"text": f"{RARE_WORD} {CYRILLIC_WORD}"}),
        ("no_match", {"text": NO_MATCH_WORD}),
        ("cjk_substring", {"text": CJK_WORD}),
        ("phrase_exact", {"text": PHRASE, "exact": "true"}),
        ("hashtag", {"tag": TAG}),
    ]
    if username:
        searches.append(("username", {"username": username}))
    suite = []
    for days in (d for d in ranges if d <= max(data_days, 1)):
        window = {"start": iso(end_day - dt.timedelta(days=days)), "end": iso(end_day)}
        suite += [HttpQuery(f"{name}_{days}d", "/search", {**params, **window}, days) for name, params in searches]
    suite.append(HttpQuery("stats", "/stats", {}, None))
    suite.append(HttpQuery("export_1000", "/export", {"limit": "1000", "start": iso(end_day - dt.timedelta(
        days=min(data_days, 30))), "end": iso(end_day)}, min(data_days, 30)))
    return suite


def timed_request(url: str, timeout: float = 120.0) -> tuple[float, int]:
    """(milliseconds, result rows) of one GET; raises on a non-200 answer."""
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
        content_type = response.headers.get("Content-Type", "")
    elapsed = (time.perf_counter() - t0) * 1000
    if content_type.startswith("text/csv"):
        rows = max(0, sum(1 for _ in csv.reader(io.StringIO(body.decode("utf-8")))) - 1)
    else:
        document = json.loads(body)
        rows = len(document["results"]) if "results" in document else len(document.get("tables", {}))
    return elapsed, rows


def run_suite(api: Api, suite: list[HttpQuery], warm_reps: int, cold_reps: int,
              progress: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Cold and warm timings of every query: {name: {p50, p95, rows}} and {name_cold: ...}."""
    cold: dict[str, list[float]] = {q.name: [] for q in suite}
    rows: dict[str, int] = {}
    for rep in range(cold_reps):
        for q in suite:
            api.restart()
            ms, rows[q.name] = timed_request(q.url(api.base_url))
            cold[q.name].append(ms)
        progress(f"  cold round {rep + 1}/{cold_reps} done")
    out: dict[str, dict[str, Any]] = {}
    for q in suite:
        timed_request(q.url(api.base_url))  # make sure it is warm even with cold_reps = 0
        warm = []
        for _ in range(warm_reps):
            ms, rows[q.name] = timed_request(q.url(api.base_url))
            warm.append(ms)
        out[q.name] = {**percentiles(warm), "rows": rows[q.name]}
        if cold[q.name]:
            out[f"{q.name}_cold"] = {**percentiles(cold[q.name]), "rows": rows[q.name]}
        progress(f"  {q.name:24} warm p50 {out[q.name]['p50']:8.1f} ms p95 {out[q.name]['p95']:8.1f} ms "
                 f"rows {rows[q.name]}" + (f"; cold p50 {out[q.name + '_cold']['p50']:.1f} ms" if cold[q.name]
                                            else ""))
    return out
