"""Trusted search, measured in a day run: nothing hidden is served, and how fresh the served view is.

- `hidden_truth(generator, n)`: the generator's ground truth of what must never be served: the posts a delete
  event names, and the accounts whose latest account event says inactive.
- `served_hidden(base_url, ...)`: every row the /search suite's first pages and a full /export return, checked
  against that truth; the count of hidden rows served must be 0, and so must the rows served twice (a URI twice
  in one page or one export).
- `fresh_post(base_url, ...)`: the newest post of the run that may be served, looked up by its author right after
  the ingester stored it (from the hot tier, before any flush): it must be found.
- `FreshnessProbe`: while the ingester works, polls /search for the newest post and times a common-word search
  (served from the hot tier and the archive together). With the stream samples (cursor `time_us` over wall time),
  `freshness_figures` turns the polls into the lag between the ingester storing an event and /search showing it.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson

from firehose.simulator.generator import EventGenerator
from firehose.simulator.vocabulary import COMMON_WORD
from tests.validation.probe import percentiles

POST = "app.bsky.feed.post"


@dataclass
class Truth:
    """What the generator's events say must never be served."""

    deleted_uris: set[str] = field(default_factory=set)
    inactive_dids: set[str] = field(default_factory=set)
    created_and_deleted: int = 0  # posts of the run that a delete event names: they are in Parquet, to be hidden
    created_by_inactive: int = 0  # posts of the run by accounts inactive at its end

    def hides(self, uri: str, did: str) -> bool:
        return uri in self.deleted_uris or did in self.inactive_dids


def hidden_truth(generator: EventGenerator, events: int) -> Truth:
    """Deleted post URIs and inactive accounts (latest account event per DID) among events [0, events)."""
    truth = Truth()
    latest: dict[str, tuple[int, bool]] = {}
    created: list[tuple[str, str]] = []
    for g in generator.iter_generated(0, events):
        if g.kind == "account":
            event = orjson.loads(g.json)
            seen = latest.get(g.did)
            if seen is None or g.time_us >= seen[0]:
                latest[g.did] = (g.time_us, bool(event["account"]["active"]))
        elif g.kind == "commit" and g.collection == POST:
            event = orjson.loads(g.json)
            uri = f"at://{g.did}/{POST}/{event['commit']['rkey']}"
            if event["commit"]["operation"] == "delete":
                truth.deleted_uris.add(uri)
            elif event["commit"]["operation"] == "create":
                created.append((uri, g.did))
    truth.inactive_dids = {did for did, (_, active) in latest.items() if not active}
    truth.created_and_deleted = sum(uri in truth.deleted_uris for uri, _ in created)
    truth.created_by_inactive = sum(did in truth.inactive_dids for _, did in created)
    return truth


def _get(url: str, timeout: float = 600.0) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.headers.get("Content-Type", ""), response.read()


def served_hidden(base_url: str, searches: list[dict[str, str]], export_params: dict[str, str],
                  truth: Truth) -> dict[str, Any]:
    """Rows served by the first page of each search and by one export, and how many of them are hidden."""
    checked = deleted = inactive = doubled = 0
    for params in searches:
        _, body = _get(f"{base_url}/search?" + urllib.parse.urlencode(params))
        page = json.loads(body)["results"]
        doubled += len(page) - len({row["uri"] for row in page})
        for row in page:
            checked += 1
            deleted += row["uri"] in truth.deleted_uris
            inactive += row["did"] in truth.inactive_dids
    _, body = _get(f"{base_url}/export?" + urllib.parse.urlencode({**export_params, "raw": "true"}))
    exported = 0
    seen: set[str] = set()
    for row in csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")):
        if not row.get("uri", "").startswith("at://"):
            continue  # the trailer row of a cut export (there is none within the cap)
        exported += 1
        doubled += row["uri"] in seen
        seen.add(row["uri"])
        deleted += row["uri"] in truth.deleted_uris
        inactive += row["did"] in truth.inactive_dids
    return {"rows_checked": checked + exported, "rows_exported": exported, "served_deleted": deleted,
            "served_inactive": inactive, "served_hidden": deleted + inactive, "served_doubled": doubled,
            "deleted_posts_in_truth": len(truth.deleted_uris), "inactive_accounts_in_truth": len(truth.inactive_dids),
            "archived_posts_deleted": truth.created_and_deleted,
            "archived_posts_by_inactive": truth.created_by_inactive}


def newest_servable_post(generator: EventGenerator, events: int, truth: Truth, look_back: int = 20_000
                         ) -> tuple[str, str, int] | None:
    """(uri, did, time_us) of the last post created among events [0, events) that the truth lets be served."""
    newest = None
    for g in generator.iter_generated(max(0, events - look_back), events):
        if g.kind == "commit" and g.collection == POST:
            event = orjson.loads(g.json)
            uri = f"at://{g.did}/{POST}/{event['commit']['rkey']}"
            if event["commit"]["operation"] == "create" and not truth.hides(uri, g.did):
                newest = (uri, g.did, g.time_us)
    return newest


def fresh_post(base_url: str, newest: tuple[str, str, int] | None, window: dict[str, str],
               deadline_s: float = 60.0) -> dict[str, Any]:
    """Look the run's newest servable post (`newest_servable_post`) up by its author (`author=<did>`) until it is
    served or `deadline_s` passes: {"found": bool, "seconds": time to find it, "uri": ...}. Called as soon as the
    ingester has stored the last event, so the post is served from the hot tier (the flush may not have run yet)."""
    if newest is None:
        return {"found": None, "seconds": None, "uri": None, "note": "the run made no servable post"}
    uri, did, _ = newest
    url = f"{base_url}/search?" + urllib.parse.urlencode({"author": did, "limit": "50", **window})
    started = time.monotonic()
    while True:
        try:
            _, body = _get(url, timeout=60)
            if any(row["uri"] == uri for row in json.loads(body)["results"]):
                return {"found": True, "seconds": round(time.monotonic() - started, 2), "uri": uri}
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                raise  # the request is wrong: waiting will not help
        except OSError:
            pass  # the API is busy or restarting: try again until the deadline
        if time.monotonic() - started > deadline_s:
            return {"found": False, "seconds": None, "uri": uri}
        time.sleep(0.5)  # polling cadence of a wait on a condition (the post being served), bounded by the deadline


class FreshnessProbe:
    """Polls the API while the ingester works (in a thread): the newest post shown, and a timed search, both
    within the run's simulated time range `window` (start/end parameters): a test host also serves its own live
    posts, newer than any simulated one."""

    def __init__(self, base_url: str, window: dict[str, str], interval: float = 1.0) -> None:
        self.base_url = base_url
        self.window = window
        self.interval = interval
        self.polls: list[tuple[float, int]] = []  # (wall time of the answer, newest time_us shown)
        self.search_ms: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="freshness-probe", daemon=True)

    def __enter__(self) -> FreshnessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        newest = f"{self.base_url}/search?" + urllib.parse.urlencode({"limit": "1", **self.window})
        word = f"{self.base_url}/search?" + urllib.parse.urlencode({"text": COMMON_WORD, **self.window})
        while not self._stop.wait(self.interval):  # sampling cadence, not a wait on a condition
            try:
                _, body = _get(newest, timeout=60)
                results = json.loads(body)["results"]
                if results:
                    self.polls.append((time.time(), int(results[0]["time_us"])))
                t0 = time.perf_counter()
                _get(word, timeout=60)
                self.search_ms.append((time.perf_counter() - t0) * 1000)
            except (OSError, ValueError, KeyError):
                self.errors += 1


def freshness_figures(probe: FreshnessProbe, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Lag (s) between the ingester storing an event (the first stream sample whose cursor reached its time) and
    /search showing it, over every poll; and the latency of the searches run meanwhile."""
    stored = sorted((s["cursor_time_us"], s["t"]) for s in samples if s.get("cursor_time_us"))
    times = [c for c, _ in stored]
    firsts: list[float] = []
    earliest = float("inf")
    for _, t in reversed(stored):  # earliest wall time at which the cursor was at or past each value
        earliest = min(earliest, t)
        firsts.append(earliest)
    firsts.reverse()
    lags = []
    for answered, shown in probe.polls:
        at = bisect.bisect_left(times, shown)
        if at < len(times):
            lags.append(max(0.0, answered - firsts[at]))
    interval = percentiles([b["t"] - a["t"] for a, b in itertools.pairwise(samples)] or [0.0])["p50"]
    return {"lag_s": percentiles(lags) if lags else None, "polls": len(probe.polls), "probe_errors": probe.errors,
            "search_during_ingest_ms": percentiles(probe.search_ms) if probe.search_ms else None,
            "sample_interval_s": round(interval, 2)}
